"""charts/vallum against a real API server: every rendered object passes a server-side dry run.

``kubectl apply --dry-run=server`` runs the API server's whole admission path (schema, defaults,
CEL rules of the CRDs, RBAC escalation checks) without storing anything. The objects of
prometheus-operator (ServiceMonitor, PrometheusRule) go in only where their CRDs are installed
(not on the local control plane): elsewhere they are left out here and checked statically in
tests/charts/test_chart.py, which the test says in its output rather than pretending.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest
import yaml
from tests.charts import helm as chart

from e2e.conftest import Cluster

MONITORING = "monitoring.coreos.com"


def _served(cluster: Cluster, group: str) -> bool:
    out = cluster.kubectl("api-resources", f"--api-group={group}", "-o", "name")
    return bool(out.strip())


def _dry_run(cluster: Cluster, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --dry-run=server`` of docs, stderr kept (PodSecurity warns there)."""
    return subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, "apply", "--dry-run=server",
         "-o", "name", "-f", "-"],
        input=yaml.safe_dump_all(docs), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("everything", [False, True], ids=["defaults", "everything-on"])
def test_rendered_chart_passes_a_server_side_dry_run(
        cluster: Cluster, tmp_path: pathlib.Path, everything: bool) -> None:
    with cluster.temporary_namespace() as namespace:
        # Pod Security's "restricted" level warns about a Deployment whose pods break it.
        cluster.kubectl("label", "namespace", namespace,
                        "pod-security.kubernetes.io/enforce=restricted",
                        "pod-security.kubernetes.io/warn=restricted")
        flags = ["--include-crds"]
        if everything:
            flags += ["-f", chart.values_file(tmp_path, chart.EVERYTHING)]
        docs = chart.objects(chart.template(*flags, namespace=namespace))
        monitoring = [d for d in docs if d["apiVersion"].startswith(f"{MONITORING}/")]
        if everything:
            assert monitoring, "the everything-on values render a ServiceMonitor"
        if monitoring and not _served(cluster, MONITORING):
            print(f"\n{len(monitoring)} {MONITORING} objects left out of the dry run (no CRDs "
                  "here); tests/charts checks them")
            docs = [d for d in docs if d not in monitoring]
        done = _dry_run(cluster, docs)
        assert done.returncode == 0, done.stderr
        assert "PodSecurity" not in done.stderr, done.stderr
        applied = [line for line in done.stdout.splitlines() if line.strip()]
        assert len(applied) == len(docs), done.stdout
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "ClusterRole", "Role", "IngressClass",
                "CustomResourceDefinition", "PodDisruptionBudget"} <= kinds
        if everything:
            assert {"Settings", "NetworkPolicy"} <= kinds
        # A dry run stores nothing.
        assert not cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").strip()


def test_a_settings_value_the_crd_refuses_fails_the_dry_run(
        cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """The values schema keeps types and enums; the CRD's CEL rules are the API server's: an
    identity provider without `secrets` passes helm and is refused on apply, with the reason."""
    values = {"settings": {"create": True, "spec": {
        "authenticate": {"url": "https://authenticate.example.com"},
        "identityProvider": {"provider": "oidc", "url": "https://idp.example.com",
                             "secret": "vallum/idp"}}}}
    with cluster.temporary_namespace() as namespace:
        docs = chart.objects(chart.template("-f", chart.values_file(tmp_path, values),
                                            namespace=namespace))
        settings = [d for d in docs if d["kind"] == "Settings"]
        assert len(settings) == 1
        done = _dry_run(cluster, settings)
        assert done.returncode != 0, done.stdout
        assert "secrets is required when identityProvider is set" in done.stderr, done.stderr


def test_pod_security_warns_about_a_loosened_pod(cluster: Cluster) -> None:
    """The PodSecurity check above can fail: privilege escalation allowed is reported."""
    with cluster.temporary_namespace() as namespace:
        cluster.kubectl("label", "namespace", namespace,
                        "pod-security.kubernetes.io/warn=restricted")
        loosened = ("--set", "securityContext.allowPrivilegeEscalation=true")
        docs = chart.objects(chart.template(*loosened, namespace=namespace))
        done = _dry_run(cluster, [d for d in docs if d["kind"] == "Deployment"])
        assert done.returncode == 0, done.stderr
        assert "would violate PodSecurity" in done.stderr, done.stderr
        assert "allowPrivilegeEscalation" in done.stderr, done.stderr


def test_install_notes_name_the_service_and_the_secret_command(
        cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """NOTES.txt (``helm install --dry-run`` needs a reachable cluster, even client-side, and
    the CRDs of what it renders: so no ServiceMonitor or PrometheusRule here)."""
    values = chart.values_file(tmp_path, {"settings": chart.EVERYTHING["settings"]})
    with cluster.temporary_namespace() as namespace:
        done = chart.helm("install", "vallum", str(chart.CHART), "--dry-run=client", "-f", values,
                          "--namespace", namespace, kubeconfig=cluster.kubeconfig)
        notes = done.stdout.split("NOTES:", 1)[1]
        assert f"kubectl -n {namespace} get service vallum-proxy\n" in notes, notes
        assert "kubectl -n vallum create secret generic bootstrap" in notes, notes
        assert "vallum keys generate" in notes, notes
