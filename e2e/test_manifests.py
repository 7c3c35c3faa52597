"""``kubectl apply -k manifests/ --dry-run=server`` against the suite's API server (issue 13,
item 2): the API server validates every object of the kustomization (schemas, the CRDs, the
RBAC, the Deployment under the namespace's `restricted` Pod Security level) without running
anything. The namespace has to exist for the namespaced objects' dry run, so it is created
when missing (and deleted afterwards if it was).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e import conftest

MANIFESTS = conftest.ROOT / "manifests"


def kubectl(cluster: conftest.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def vallum_namespace(cluster: conftest.Cluster) -> Iterator[str]:
    exists = kubectl(cluster, "get", "namespace", "vallum").returncode == 0
    if not exists:  # the one object a namespaced dry run cannot do without
        cluster.kubectl("apply", "-f", str(MANIFESTS / "namespace.yaml"))
    try:
        yield "vallum"
    finally:
        if not exists:
            # waited for: a later `kubectl apply -k manifests/` must not meet it terminating
            cluster.kubectl("delete", "namespace", "vallum", "--timeout=60s", check=False)


def test_the_kustomization_passes_a_server_side_dry_run(
    cluster: conftest.Cluster, vallum_namespace: str,
) -> None:
    done = kubectl(cluster, "apply", "-k", str(MANIFESTS), "--dry-run=server")
    assert done.returncode == 0, done.stderr
    applied = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    for kind_and_name in (
        "namespace/vallum",
        "customresourcedefinition.apiextensions.k8s.io/settings.vallum.dev",
        "customresourcedefinition.apiextensions.k8s.io/policies.vallum.dev",
        "serviceaccount/vallum",
        "clusterrole.rbac.authorization.k8s.io/vallum-controller",
        "clusterrolebinding.rbac.authorization.k8s.io/vallum-controller",
        "role.rbac.authorization.k8s.io/vallum-controller",
        "rolebinding.rbac.authorization.k8s.io/vallum-controller",
        "deployment.apps/vallum",
        "service/vallum-proxy",
        "service/vallum-metrics",
        "ingressclass.networking.k8s.io/vallum",
        "poddisruptionbudget.policy/vallum",
    ):
        assert kind_and_name in applied, done.stdout
    # The namespace enforces and warns at the restricted level: a Deployment that would
    # violate it is named in a warning by this very dry run.
    # (other warnings are expected: the suite applies the CRDs server-side, so client-side
    # apply says they lack its last-applied annotation)
    assert "would violate PodSecurity" not in done.stderr, done.stderr


def pod_of_the_deployment(**changes: Any) -> dict[str, Any]:
    """A Pod with the Deployment's pod template (its spec updated with ``changes``)."""
    docs = yaml.safe_load_all((MANIFESTS / "deployment.yaml").read_text(encoding="utf-8"))
    template = next(d for d in docs if d and d["kind"] == "Deployment")["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "vallum-dry-run", "namespace": "vallum",
                         "labels": template["metadata"]["labels"]},
            "spec": {**template["spec"], **changes}}


def dry_run(cluster: conftest.Cluster, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, "apply", "--dry-run=server",
         "-f", "-"], input=json.dumps(obj), capture_output=True, text=True, timeout=60)


def test_its_pods_are_admitted_at_the_restricted_level(
    cluster: conftest.Cluster, vallum_namespace: str,
) -> None:
    """Pod Security admission checks Pods, not Deployments: a Pod of the Deployment's template,
    dry-run in the namespace that enforces `restricted`, is admitted -- and the same Pod
    without its security context is refused, so this check can fail."""
    done = dry_run(cluster, pod_of_the_deployment())
    assert done.returncode == 0, done.stderr
    loosened = pod_of_the_deployment(securityContext={})
    loosened["spec"]["containers"] = [{**c, "securityContext": {}}
                                      for c in loosened["spec"]["containers"]]
    refused = dry_run(cluster, loosened)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr
