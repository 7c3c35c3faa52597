"""manifests/ read as files (no cluster; e2e/test_manifests.py applies them with a server-side
dry run and e2e/test_rbac.py runs the controller with their RBAC): the Deployment's flags are
ones `vallum controller` accepts and agree with the ports, probes and Services, the security
context is the restricted one, and the IngressClass names the controller's default name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vallum.cli import controller, main

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def rendered() -> list[dict[str, Any]]:
    """The objects of the kustomization's own files (not ../crds), in order."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = MANIFESTS / entry
        if path.is_dir():
            assert (path / "kustomization.yaml").exists(), entry
            continue
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in rendered()
             if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container() -> dict[str, Any]:
    spec = one("Deployment")["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    found: dict[str, Any] = spec["containers"][0]
    return found


def test_the_kustomization_lists_every_file_and_the_crds() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert "../crds" in listed
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk <= listed, on_disk - listed


def test_namespaced_objects_are_in_namespace_vallum() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"}
    for obj in rendered():
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == "vallum", obj["metadata"]


def test_the_deployments_flags_are_the_controllers() -> None:
    args = main.build_parser().parse_args(["controller", *container()["args"]])
    assert args.workers == 1
    assert args.publish_service == ("vallum", "vallum-proxy")
    assert one("Service", "vallum-proxy")["metadata"]["namespace"] == "vallum"
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert args.address == f":{ports['https']}"
    assert args.http_redirect_address == f":{ports['http']}"
    assert args.metrics_address == f":{ports['metrics']}"
    assert min(ports.values()) > 1024  # non-root, no NET_BIND_SERVICE
    assert not args.insecure_server


def test_probes_on_the_admin_port() -> None:
    live, ready = container()["livenessProbe"]["httpGet"], container()["readinessProbe"]["httpGet"]
    assert (live["path"], live["port"]) == ("/healthz", "metrics")
    assert (ready["path"], ready["port"]) == ("/readyz", "metrics")


def test_services_map_443_and_80_to_the_containers_named_ports() -> None:
    proxy = {p["port"]: p["targetPort"] for p in one("Service", "vallum-proxy")["spec"]["ports"]}
    assert proxy == {443: "https", 80: "http"}
    metrics = one("Service", "vallum-metrics")["spec"]["ports"]
    assert [p["targetPort"] for p in metrics] == ["metrics"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for name in ("vallum-proxy", "vallum-metrics"):
        selector = one("Service", name)["spec"]["selector"]
        assert selector.items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_restricted_security_context() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    own = container()["securityContext"]
    assert own == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                   "capabilities": {"drop": ["ALL"]}}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the image's HOME and TMPDIR
    assert container()["resources"]["requests"] and container()["resources"]["limits"]


def test_pod_name_and_namespace_from_the_downward_api() -> None:
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container()["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def test_two_replicas_spread_and_a_budget() -> None:
    spec = one("Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["template"]["spec"]["topologySpreadConstraints"]
    assert spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_the_ingress_class_names_the_controllers_default() -> None:
    assert one("IngressClass")["spec"]["controller"] == controller.DEFAULT_CONTROLLER_NAME
    assert not any(arg.startswith("--controller-name") for arg in container()["args"])


def test_the_bindings_name_the_service_account_the_pods_use() -> None:
    account = one("ServiceAccount")["metadata"]
    assert one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    for kind, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role,
                                      "name": one(role)["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]
