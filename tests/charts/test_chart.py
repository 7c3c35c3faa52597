"""charts/vallum: lint, render, schema and the objects' wiring, without a cluster.

The server-side dry run of the same renders against a real API server is e2e/test_chart.py.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest
import yaml

from tests.charts import helm as chart

ROOT = chart.ROOT
CHART = chart.CHART

DEFAULT_KINDS = sorted([
    "ClusterRole", "ClusterRoleBinding", "Deployment", "IngressClass", "PodDisruptionBudget",
    "Role", "RoleBinding", "Service", "Service", "ServiceAccount",
])


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A values file turning every optional object on."""
    return chart.values_file(tmp_path_factory.mktemp("values"), chart.EVERYTHING)


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return chart.objects(chart.template())


@pytest.fixture(scope="module")
def all_docs(everything: str) -> list[dict[str, Any]]:
    return chart.objects(chart.template("-f", everything, namespace="edge"))


def _args(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = chart.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


# -- the CRDs -----------------------------------------------------------------------------------


def test_the_charts_crds_are_the_repositorys_crds() -> None:
    """charts/vallum/crds/ holds copies (a packaged chart cannot follow symlinks out of itself):
    they must stay byte-identical to crds/. Fix: cp crds/vallum.dev_*.yaml charts/vallum/crds/"""
    ours = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    repo = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("vallum.dev_*.yaml")}
    assert sorted(ours) == sorted(repo)
    for name, content in repo.items():
        assert ours[name] == content, f"charts/vallum/crds/{name} differs from crds/{name}"


def test_include_crds_renders_both_crds(default_docs: list[dict[str, Any]]) -> None:
    with_crds = chart.objects(chart.template("--include-crds"))
    crds = sorted(d["metadata"]["name"] for d in with_crds
                  if d["kind"] == "CustomResourceDefinition")
    assert crds == ["policies.vallum.dev", "settings.vallum.dev"]
    assert len(with_crds) == len(default_docs) + 2


# -- lint and render ----------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_lint_passes_with_default_values(strict: bool) -> None:
    done = chart.helm("lint", str(CHART), *(["--strict"] if strict else []))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout, done.stdout


def test_lint_strict_passes_with_everything_on(everything: str) -> None:
    done = chart.helm("lint", str(CHART), "--strict", "-f", everything)
    assert "0 chart(s) failed" in done.stdout, done.stdout


def test_default_values_render_the_manifests_objects(default_docs: list[dict[str, Any]]) -> None:
    assert chart.kinds(default_docs) == DEFAULT_KINDS
    for doc in default_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "vallum", doc["kind"]
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "IngressClass"):
            assert doc["metadata"]["namespace"] == "vallum", doc["kind"]


def test_everything_on_adds_the_optional_objects(all_docs: list[dict[str, Any]]) -> None:
    extra = ["NetworkPolicy", "ServiceMonitor", "Settings"]
    if chart.EVERYTHING["prometheusRule"]["create"]:
        extra.append("PrometheusRule")
    if chart.EVERYTHING["grafanaDashboard"]["create"]:
        extra.append("ConfigMap")
    assert chart.kinds(all_docs) == sorted(DEFAULT_KINDS + extra)
    for doc in all_docs:
        assert doc["metadata"]["labels"]["team"] == "edge", doc["kind"]
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "IngressClass", "Settings"):
            assert doc["metadata"]["namespace"] == "edge", doc["kind"]


def test_settings_are_the_values_spec(all_docs: list[dict[str, Any]]) -> None:
    settings = chart.one(all_docs, "Settings")
    assert settings["apiVersion"] == "vallum.dev/v1alpha1"
    assert settings["metadata"]["name"] == _args(all_docs)["settings"] == "global"
    assert "namespace" not in settings["metadata"]   # cluster-scoped
    assert settings["spec"] == chart.EVERYTHING["settings"]["spec"]


def test_settings_with_an_empty_spec_render_an_empty_spec(tmp_path: pathlib.Path) -> None:
    values = chart.values_file(tmp_path, {"settings": {"create": True, "name": "edge"}})
    settings = chart.one(chart.objects(chart.template("-f", values)), "Settings", "edge")
    assert settings["spec"] == {}


# -- the Deployment -----------------------------------------------------------------------------


def test_deployment_runs_the_controller_as_the_issue_asks(
        default_docs: list[dict[str, Any]]) -> None:
    deployment = chart.one(default_docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    appversion = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/vallum-dev/vallum:{appversion}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = _args(default_docs)
    assert args["address"] == f":{ports['https']}"
    assert args["http-redirect-address"] == f":{ports['http']}"
    assert args["metrics-address"] == f":{ports['metrics']}"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    account = chart.one(default_docs, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    # The pod's labels select it for the Services and the PodDisruptionBudget.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for doc in [*[d for d in default_docs if d["kind"] == "Service"],
                chart.one(default_docs, "PodDisruptionBudget")]:
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), doc["metadata"]["name"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_deployment_meets_the_restricted_pod_security_standard(
        default_docs: list[dict[str, Any]]) -> None:
    """The checks of Pod Security's "restricted" profile that a pod spec can fail."""
    pod = chart.one(default_docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ctx = {**pod["securityContext"], **container["securityContext"]}
    assert ctx["runAsNonRoot"] is True
    assert ctx.get("runAsUser", 1) != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    assert all(p.get("hostPort") is None for p in container["ports"])
    # A read-only root filesystem needs somewhere to write: /tmp is an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_flags_name_the_objects_the_chart_renders(all_docs: list[dict[str, Any]]) -> None:
    args = _args(all_docs)
    proxy = [d for d in all_docs if d["kind"] == "Service" and
             any(p["name"] == "https" for p in d["spec"]["ports"])]
    assert len(proxy) == 1
    assert args["publish-service"] == f"edge/{proxy[0]['metadata']['name']}"
    ingress_class = chart.one(all_docs, "IngressClass")
    assert args["controller-name"] == ingress_class["spec"]["controller"]
    assert ingress_class["metadata"]["annotations"] == {
        "ingressclass.kubernetes.io/is-default-class": "true"}
    assert args["namespaces"] == "default,apps"
    assert args["workers"] == "2"
    pod = chart.one(all_docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == chart.EVERYTHING["nodeSelector"]
    assert pod["tolerations"] == chart.EVERYTHING["tolerations"]


def test_image_digest_wins_over_tag(tmp_path: pathlib.Path) -> None:
    digest = "sha256:" + "ab" * 32
    values = chart.values_file(tmp_path, {"image": {"repository": "r.example/vallum",
                                                    "tag": "9.9", "digest": digest}})
    deployment = chart.one(chart.objects(chart.template("-f", values)), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"r.example/vallum@{digest}"


# -- the schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "complaint"), [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"workers": 0}, "workers"),
    ({"replicas": 2}, "replicas"),   # a typo of replicaCount is refused, not ignored
    ({"settings": {"spec": {"cookie": {"sameSite": "sometimes"}}}}, "sameSite"),
    ({"settings": {"spec": {"storage": {}}}}, "storage"),
    ({"service": {"type": "Ingress"}}, "type"),
], ids=["replicas-text", "pull-policy", "workers-0", "unknown-key", "same-site",
        "unknown-settings-field", "service-type"])
def test_schema_refuses_a_bad_value(tmp_path: pathlib.Path, values: dict[str, Any],
                                    complaint: str) -> None:
    done = chart.helm("template", "vallum", str(CHART), "-f", chart.values_file(tmp_path, values),
                      check=False)
    assert done.returncode != 0, done.stdout
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert complaint in done.stderr, done.stderr


_KEEP = ("type", "enum", "required", "minimum", "maximum", "minLength", "maxLength",
         "description")


def _json_schema_of(node: dict[str, Any]) -> dict[str, Any]:
    """The JSON-schema part of a CRD's OpenAPI schema: no CEL rules, formats or patterns (the API
    server checks those on apply), and no unknown fields where the CRD has properties."""
    out: dict[str, Any] = {k: node[k] for k in _KEEP if k in node}
    if "properties" in node:
        out["properties"] = {k: _json_schema_of(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _json_schema_of(node["additionalProperties"])
    if "items" in node:
        out["items"] = _json_schema_of(node["items"])
    return out


def test_settings_spec_schema_follows_the_crd() -> None:
    """values.schema.json's settings.spec is the CRD's spec schema (so helm refuses a typo
    before the API server does); a changed CRD must change it too."""
    crd = yaml.safe_load((ROOT / "crds" / "vallum.dev_settings.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    want = _json_schema_of(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    schema = json.loads((CHART / "values.schema.json").read_text())
    got = dict(schema["properties"]["settings"]["properties"]["spec"])
    got.pop("description")
    want.pop("description")
    assert got == want, "regenerate settings.spec in values.schema.json from the CRD:\n" + \
        json.dumps(want, indent=2)[:4000]


def test_every_value_has_a_schema_entry() -> None:
    """values.yaml's keys are all declared (additionalProperties is false at the top)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])


# -- RBAC ---------------------------------------------------------------------------------------


def _rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb)
            for rule in doc["rules"]
            for group in rule.get("apiGroups", [""])
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_rbac_binds_the_pods_service_account(default_docs: list[dict[str, Any]]) -> None:
    account = chart.one(default_docs, "ServiceAccount")["metadata"]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = chart.one(default_docs, kind)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]
        assert binding["roleRef"]["name"] == chart.one(default_docs, role_kind)["metadata"]["name"]
    assert chart.one(default_docs, "Role")["metadata"]["namespace"] == account["namespace"]


def _manifest_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "manifests").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text())
                    if d and d.get("kind") not in (None, "Kustomization"))
    assert docs, "manifests/ holds no objects"
    return docs


def test_rbac_equals_the_manifests_rbac(default_docs: list[dict[str, Any]]) -> None:
    """manifests/rbac.yaml's rules are the proven least privilege (e2e/test_rbac.py runs the
    controller with them): the chart grants exactly the same, no more, no less."""
    manifests = _manifest_docs()
    for kind in ("ClusterRole", "Role"):
        (want,) = [_rules(d) for d in manifests if d["kind"] == kind]
        assert _rules(chart.one(default_docs, kind)) == want, kind


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = chart.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_default_render_is_the_manifests_objects(default_docs: list[dict[str, Any]]) -> None:
    """Same kinds (less the Namespace, which is the release's), and the same pod: flags,
    ports, probes, resources, security contexts, volumes, Services' ports, IngressClass."""
    manifests = _manifest_docs()
    assert chart.kinds(default_docs) == chart.kinds(
        d for d in manifests if d["kind"] != "Namespace")
    ours, theirs = _container(default_docs), _container(manifests)
    for key in ("ports", "livenessProbe", "readinessProbe", "resources", "securityContext",
                "volumeMounts", "env", "image"):
        assert ours[key] == theirs[key], key
    assert set(theirs["args"]) <= set(ours["args"]), "a flag of manifests/ is missing"
    pods = [chart.one(d, "Deployment")["spec"] for d in (default_docs, manifests)]
    assert pods[0]["replicas"] == pods[1]["replicas"]
    assert pods[0]["strategy"] == pods[1]["strategy"]
    for key in ("securityContext", "volumes", "terminationGracePeriodSeconds",
                "automountServiceAccountToken"):
        assert pods[0]["template"]["spec"][key] == pods[1]["template"]["spec"][key], key
    for service in ("vallum-proxy", "vallum-metrics"):
        ours_svc, theirs_svc = (chart.one(d, "Service", service)["spec"]
                                for d in (default_docs, manifests))
        for key in ("type", "ports", "externalTrafficPolicy"):
            assert ours_svc.get(key) == theirs_svc.get(key), (service, key)
    ours_class, theirs_class = (chart.one(d, "IngressClass") for d in (default_docs, manifests))
    assert ours_class["spec"] == theirs_class["spec"]
    assert ours_class["metadata"]["annotations"] == theirs_class["metadata"]["annotations"]


# -- prometheus-operator objects (their CRDs are not on the local control plane) -----------------


def test_service_monitor_scrapes_the_metrics_service(all_docs: list[dict[str, Any]]) -> None:
    monitor = chart.one(all_docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [d for d in all_docs if d["kind"] == "Service"
                and selector.items() <= d["metadata"]["labels"].items()]
    assert len(services) == 1, "the ServiceMonitor must select the metrics Service only"
    ports = {p["name"] for p in services[0]["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["edge"]}


def test_prometheus_rule_holds_the_files_rules(all_docs: list[dict[str, Any]]) -> None:
    path = CHART / "files" / "prometheus-rules.yaml"
    if not path.exists():
        pytest.skip("charts/vallum/files/prometheus-rules.yaml is not written yet")
    source = yaml.safe_load(path.read_text())
    groups = source.get("groups") or source["spec"]["groups"]
    rule = chart.one(all_docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == groups
    for group in groups:
        assert group["name"] and group["rules"]
        for each in group["rules"]:
            assert ("alert" in each) != ("record" in each), each
            assert str(each["expr"]).strip(), each


def test_grafana_dashboard_is_the_files_json(all_docs: list[dict[str, Any]]) -> None:
    path = CHART / "files" / "grafana-dashboard.json"
    if not path.exists():
        pytest.skip("charts/vallum/files/grafana-dashboard.json is not written yet")
    config_map = chart.one(all_docs, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["vallum.json"]) == json.loads(path.read_text())


def test_missing_files_fail_only_what_needs_them(tmp_path: pathlib.Path) -> None:
    """Without files/ the chart renders, but asking for the alerts or the dashboard fails with
    the missing file's name (never an empty PrometheusRule)."""
    copy = tmp_path / "vallum"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("files"))
    assert chart.kinds(chart.objects(chart.template(chart=copy))) == DEFAULT_KINDS
    for key, path in (("prometheusRule", "files/prometheus-rules.yaml"),
                      ("grafanaDashboard", "files/grafana-dashboard.json")):
        done = chart.helm("template", "vallum", str(copy), "--set", f"{key}.create=true",
                          check=False)
        assert done.returncode != 0
        assert f"{path} is not in the chart: it is needed by {key}.create" in done.stderr


def test_network_policy_opens_the_proxy_and_limits_metrics(
        all_docs: list[dict[str, Any]]) -> None:
    policy = chart.one(all_docs, "NetworkPolicy")["spec"]
    container = chart.one(all_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    names = {p["name"] for p in container["ports"]}
    proxy, metrics = policy["ingress"]
    assert "from" not in proxy
    assert {p["port"] for p in proxy["ports"]} == {"https", "http"}
    assert metrics["from"] == chart.EVERYTHING["networkPolicy"]["metricsFrom"]
    assert {p["port"] for p in metrics["ports"]} == {"metrics"}
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} <= names


def test_one_replica_gets_no_disruption_budget() -> None:
    """minAvailable 1 over one replica would block every node drain."""
    docs = chart.objects(chart.template("--set", "replicaCount=1"))
    assert "PodDisruptionBudget" not in chart.kinds(docs)
    assert chart.one(docs, "Deployment")["spec"]["replicas"] == 1


def test_replicas_are_spread_unless_told_otherwise(
        default_docs: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    pod = chart.one(default_docs, "Deployment")["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    spread = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname",
                                                  "topology.kubernetes.io/zone"]
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "edge", "operator": "Exists"}]}]}}}
    values = chart.values_file(tmp_path, {"affinity": own, "spreadReplicas": False})
    pod = chart.one(chart.objects(chart.template("-f", values)), "Deployment")["spec"]["template"]
    assert pod["spec"]["affinity"] == own
    assert "topologySpreadConstraints" not in pod["spec"]


def test_packaged_chart_renders_the_same(tmp_path: pathlib.Path, everything: str) -> None:
    """`helm package` (what a chart repository serves) keeps every file the render needs:
    the CRD copies, files/ and the schema."""
    chart.helm("package", str(CHART), "--destination", str(tmp_path))
    (packaged,) = tmp_path.glob("vallum-*.tgz")
    for flags in ((), ("-f", everything), ("--include-crds",)):
        assert chart.template(*flags, chart=packaged) == chart.template(*flags)
    bad = chart.helm("template", "vallum", str(packaged), "--set", "replicaCount=two",
                     check=False)
    assert "replicaCount" in bad.stderr and bad.returncode != 0
