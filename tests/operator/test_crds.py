"""The CRDs in crds/: structural schemas described at every depth (``kubectl explain``),
printer columns and a status subresource with metav1.Condition-shaped conditions, enums and
patterns that agree with the loader, Settings fields that agree with ``settings_crd``, and a
Policy schema that fits the policy language. Then, against a real kube-apiserver when one can
be started here (``e2e/control-plane``): valid objects are applied, invalid ones refused with
the schema's or the CEL rule's message."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.certs import TestCA
from vallum.core import config, configfile, errors, policy
from vallum.core.policy import parser
from vallum.core.policy.criteria import REGISTRY
from vallum.operator import settings_crd

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
SETTINGS_FILE = CRDS / "vallum.dev_settings.yaml"
POLICIES_FILE = CRDS / "vallum.dev_policies.yaml"


def crd(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


SETTINGS = crd(SETTINGS_FILE)
POLICIES = crd(POLICIES_FILE)
BOTH = pytest.mark.parametrize("doc", [SETTINGS, POLICIES], ids=["settings", "policies"])


def schema(doc: dict[str, Any]) -> dict[str, Any]:
    (version,) = doc["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def at(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at ``spec.cookie.expire`` (``[]`` steps into items)."""
    node = schema(doc)
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node``: properties, items, additionalProperties."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}".lstrip("."), child
        yield from walk(child, f"{path}.{name}".lstrip("."))
    if isinstance(node.get("items"), dict):
        yield f"{path}[]", node["items"]
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield f"{path}{{}}", node["additionalProperties"]
        yield from walk(node["additionalProperties"], f"{path}{{}}")


# --- the files ---------------------------------------------------------------------------------


@BOTH
def test_crd_identity(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["kind"] == "CustomResourceDefinition"
    spec = doc["spec"]
    assert spec["group"] == "vallum.dev"
    assert doc["metadata"]["name"] == f"{spec['names']['plural']}.vallum.dev"
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert "vallum" in spec["names"]["categories"]


def test_scopes_and_names() -> None:
    assert SETTINGS["spec"]["scope"] == "Cluster"
    assert SETTINGS["spec"]["names"]["kind"] == "Settings"
    assert POLICIES["spec"]["scope"] == "Namespaced"
    assert POLICIES["spec"]["names"]["kind"] == "Policy"


def test_kustomization_lists_both_crds() -> None:
    kustomization = yaml.safe_load((CRDS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted([SETTINGS_FILE.name, POLICIES_FILE.name])


@BOTH
def test_every_field_at_every_depth_has_a_description(doc: dict[str, Any]) -> None:
    root = schema(doc)
    assert root.get("description")
    missing = [
        path
        for path, node in walk(root)
        if path != "metadata" and not str(node.get("description", "")).strip()
    ]
    assert missing == []
    assert at(doc, "metadata") == {"type": "object"}  # the API server allows nothing more


@BOTH
def test_every_node_has_a_type(doc: dict[str, Any]) -> None:
    """Structural: every node says its type (the API server refuses the CRD otherwise)."""
    assert [path for path, node in walk(schema(doc)) if "type" not in node] == []


@BOTH
def test_printer_columns_ready_and_age(doc: dict[str, Any]) -> None:
    (version,) = doc["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "description": columns["Age"]["description"],
        "jsonPath": ".metadata.creationTimestamp",
    }
    for column in columns.values():
        assert column.get("description")
        path = column["jsonPath"]
        if path.startswith((".spec.", ".status.")):
            plain = re.sub(r"\[\?\(.*?\)\]", ".[]", path).lstrip(".")
            at(doc, plain.rsplit(".", 1)[0] if plain.endswith(".[]") else plain)


@BOTH
def test_status_subresource_with_standard_conditions(doc: dict[str, Any]) -> None:
    (version,) = doc["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    status = at(doc, "status")
    assert status["properties"]["observedGeneration"]["type"] == "integer"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    # metav1.Condition's fields and required ones
    assert set(item["properties"]) == {
        "type",
        "status",
        "observedGeneration",
        "lastTransitionTime",
        "reason",
        "message",
    }
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


# --- Settings agrees with settings_crd and the loader --------------------------------------------


def test_settings_spec_fields_are_those_settings_crd_reads() -> None:
    spec = at(SETTINGS, "spec")
    assert set(spec["properties"]) == set(settings_crd.SPEC_FIELDS)
    sections = {
        "cookie": set(settings_crd.COOKIE),
        "timeouts": {*settings_crd.TIMEOUTS, "read", "write"},
        "identityProvider": {*settings_crd.IDENTITY_PROVIDER, "secret", "requestParams"},
        "downstreamMtls": {*settings_crd.DOWNSTREAM_MTLS, "matchSubjectAltNames"},
        "authenticate": {"url"},
    }
    for section, fields in sections.items():
        assert set(at(SETTINGS, f"spec.{section}")["properties"]) == fields, section


def test_unsupported_pomerium_fields_are_refused_by_a_rule() -> None:
    """Declared (so ``kubectl explain`` says why) and refused by a CEL rule, as read() does."""
    for place in settings_crd.UNSUPPORTED:
        parent, _, field = place.rpartition(".")
        rules = at(SETTINGS, parent)["x-kubernetes-validations"]
        assert any(r["rule"] == f"!has(self.{field})" for r in rules), place
        assert "Not supported by Vallum" in at(SETTINGS, place)["description"], place


def literal(cls: type, field: str) -> set[str]:
    return set(typing.get_args(typing.get_type_hints(cls)[field]))


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("spec.cookie.sameSite", literal(config.Settings, "cookie_same_site")),
        ("spec.downstreamMtls.enforcement", literal(config.DownstreamMTLS, "enforcement")),
        (
            "spec.headersWithUnderscoresAction",
            literal(config.Settings, "headers_with_underscores_action"),
        ),
        ("spec.jwtIssuerFormat", literal(config.Settings, "jwt_issuer_format")),
    ],
)
def test_enums_match_the_loader(path: str, allowed: set[str]) -> None:
    enum = at(SETTINGS, path)["enum"]
    assert set(enum) == allowed
    for value in enum:  # and each reads through settings_crd and the loader
        section, _, field = path.removeprefix("spec.").rpartition(".")
        spec: dict[str, Any] = {field: value}
        if section:
            spec = {section: spec}
            if section == "downstreamMtls":
                spec[section]["ca"] = base64.b64encode(CA.cert_pem.encode()).decode()
        got = settings_crd.read({"spec": spec}, {})
        assert got.problems == ()
        configfile.loads(json.dumps({**got.values, "routes": []}), "x.yaml")


def test_namespaced_name_pattern_is_settings_crd_s() -> None:
    patterns = {
        node["pattern"]
        for path, node in walk(schema(SETTINGS))
        if path
        in {
            "spec.secrets",
            "spec.identityProvider.secret",
            "spec.certificates[]",
            "spec.caSecrets[]",
        }
    }
    assert patterns == {settings_crd.NAMESPACED_NAME.pattern}


DURATIONS_OK = ["0", "30s", "1m30s", "1.5h", ".5s", "300ms", "14h0m0s", "5us", "2µs", "2μs"]
DURATIONS_BAD = ["", "fast", "5 minutes", "-1s", "1d", "00", "1.s", "s", "30", "1h 30m"]


def test_duration_pattern_matches_the_loader() -> None:
    patterns = {n["pattern"] for p, n in walk(schema(SETTINGS)) if "0|" in n.get("pattern", "")}
    (pattern,) = patterns  # cookie.expire, timeouts.idle, defaultUpstreamTimeout
    for text in DURATIONS_OK:
        assert re.fullmatch(pattern, text), text
        config.parse_duration(text)
    for text in DURATIONS_BAD:
        assert not re.fullmatch(pattern, text), text


def test_every_settings_string_with_a_rule_is_bounded() -> None:
    """CEL's cost estimate needs a maxLength on every string a rule reads."""
    for path in ("spec.authenticate.url", "spec.identityProvider.url"):
        assert at(SETTINGS, path)["maxLength"] <= 2048


# --- Policy fits the language ------------------------------------------------------------------


def test_policy_actions_and_operators_are_the_language_s() -> None:
    spec = at(POLICIES, "spec")
    assert set(spec["properties"]) == set(parser.ACTIONS)
    for action in parser.ACTIONS:
        assert set(spec["properties"][action]["properties"]) == set(parser.OPERATORS)
        for op in parser.OPERATORS:
            item = spec["properties"][action]["properties"][op]["items"]
            assert item["x-kubernetes-preserve-unknown-fields"] is True
            assert (item["minProperties"], item["maxProperties"]) == (1, 1)


def test_policy_unknown_keys_are_kept_for_the_compiler_to_report() -> None:
    """Never pruned: a dropped ``deny`` typo would let people in."""
    for path in ("spec", "spec.allow", "spec.deny"):
        assert at(POLICIES, path)["x-kubernetes-preserve-unknown-fields"] is True, path


def test_policy_condition_description_names_every_criterion() -> None:
    text = at(POLICIES, "spec.allow.or.[]")["description"]
    for name in REGISTRY:
        assert re.search(rf"\b{re.escape(name)}\b", text), name


# --- the examples -------------------------------------------------------------------------------

CA = TestCA.create("CRD examples CA")
LEAF = CA.issue("authenticate.example.com")


def example_secrets() -> dict[tuple[str, str], dict[str, Any]]:
    """Secrets for crds/examples/settings.yaml, as its comment lists them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    def data(**values: str | bytes) -> dict[str, Any]:
        return {
            "data": {
                k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
                for k, v in values.items()
            }
        }

    return {
        ("vallum", "bootstrap"): data(cookie_secret=os.urandom(32), signing_key=key),
        ("vallum", "idp"): data(client_id="id", client_secret="secret"),
        ("vallum", "wildcard"): data(**{"tls.crt": LEAF.cert_pem, "tls.key": LEAF.key_pem}),
        ("vallum", "corp-ca"): data(**{"ca.crt": CA.cert_pem}),
    }


def test_settings_example_reads_and_loads() -> None:
    obj = yaml.safe_load((CRDS / "examples" / "settings.yaml").read_text())
    assert (obj["apiVersion"], obj["kind"]) == ("vallum.dev/v1alpha1", "Settings")
    got = settings_crd.read(obj, example_secrets())
    assert (got.problems, got.warnings) == ((), ())
    loaded = configfile.loads(json.dumps({**got.values, "routes": []}), "x.yaml")
    assert loaded.authenticate_service_url == obj["spec"]["authenticate"]["url"]


def test_policy_example_compiles() -> None:
    obj = yaml.safe_load((CRDS / "examples" / "policy.yaml").read_text())
    assert (obj["apiVersion"], obj["kind"]) == ("vallum.dev/v1alpha1", "Policy")
    policy.compile_policy(obj["spec"])


# --- a real API server -------------------------------------------------------------------------

K8S_BIN = (
    Path(os.environ.get("VALLUM_K8S_CACHE", Path.home() / ".cache/vallum/k8s")) / "v1.34.2/bin"
)
KUBECTL = K8S_BIN / "kubectl"


def _why_no_cluster() -> str | None:
    for binary in ("kubectl", "kube-apiserver"):
        if not (K8S_BIN / binary).exists():
            return f"{K8S_BIN / binary} is missing (build it with e2e/build-k8s)"
    if shutil.which("etcd") is None:
        return "etcd is not on PATH (apt-get install etcd-server, or run e2e/control-plane up once)"
    return None


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A control plane of this module's own (no controllers), with both CRDs applied."""
    why = _why_no_cluster()
    if why:
        pytest.skip(why)
    state = tmp_path_factory.mktemp("control-plane")
    env = {**os.environ, "VALLUM_CP_DIR": str(state), "VALLUM_CP_CONTROLLERS": "0"}
    script = str(ROOT / "e2e" / "control-plane")
    try:
        subprocess.run([script, "up"], env=env, check=True, capture_output=True, timeout=120)
        env["KUBECONFIG"] = str(state / "kubeconfig")
        kubectl(env, "apply", "--server-side", "-k", str(CRDS))  # crds/kustomization.yaml
        kubectl(
            env, "wait", "--for=condition=established", "--timeout=30s",
            "crd/settings.vallum.dev", "crd/policies.vallum.dev",
        )  # fmt: skip
        yield env
    finally:
        subprocess.run([script, "reset"], env=env, capture_output=True, timeout=60)


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(KUBECTL), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def apply(env: dict[str, str], obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "apply", "--server-side", "-f", "-"],
        env=env,
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vallum.dev/v1alpha1",
        "kind": "Settings",
        "metadata": {"name": name},
        "spec": spec,
    }


def policy_obj(name: str, spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vallum.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


SIGN_IN = {
    "secrets": "vallum/bootstrap",
    "authenticate": {"url": "https://authenticate.example.com"},
    "identityProvider": {"provider": "oidc", "url": "https://id.example.com", "secret": "v/idp"},
}

VALID_SETTINGS = [
    ("empty", {}),
    ("sign-in", SIGN_IN),
    (
        "loopback-http",
        {
            **SIGN_IN,
            "authenticate": {"url": "http://authenticate.localhost:8443"},
            "identityProvider": {"provider": "oidc", "url": "http://[::1]:9000/", "secret": "v/i"},
        },
    ),
    (
        "every-own-field",
        {
            "xffNumTrustedHops": 1,
            "defaultUpstreamTimeout": "1m30s",
            "idpGroupsClaim": "roles",
            "idpAllowUnverifiedEmail": False,
            "jwtIssuerFormat": "uri",
            "jwtGroupsFilter": ["a"],
            "pomeriumCompatibility": True,
            "headersWithUnderscoresAction": "allow",
            "idpAccessTokenAllowedAudiences": ["x"],
            "cookie": {"secure": True, "expire": "14h0m0s", "sameSite": "none"},
            "timeouts": {"idle": "0"},
            "downstreamMtls": {"ca": "LS0tLQ==", "maxVerifyDepth": 2, "enforcement": "policy"},
        },
    ),
]

# (id, spec, text the refusal must contain)
INVALID_SETTINGS = [
    (
        "authenticate-without-idp",
        {"authenticate": {"url": "https://a.example.com"}},
        "spec.identityProvider: Required value: identityProvider is required when authenticate",
    ),
    (
        "idp-without-authenticate",
        {
            "secrets": "v/b",
            "identityProvider": {"provider": "oidc", "url": "https://i.test", "secret": "v/i"},
        },
        "spec.authenticate: Required value: authenticate is required when identityProvider",
    ),
    (
        "idp-without-secrets",
        {k: v for k, v in SIGN_IN.items() if k != "secrets"},
        "spec.secrets: Required value: secrets is required when identityProvider is set",
    ),
    (
        "idp-without-url",
        {**SIGN_IN, "identityProvider": {"provider": "google", "secret": "v/i"}},
        "spec.identityProvider.url: Required value: url is required",
    ),
    (
        "plain-http-authenticate",
        {**SIGN_IN, "authenticate": {"url": "http://authenticate.example.com"}},
        'spec.authenticate.url: Invalid value: "string": must be an https:// URL',
    ),
    (
        "not-a-url",
        {**SIGN_IN, "authenticate": {"url": "authenticate.example.com"}},
        "must be an https:// URL",
    ),
    (
        "hosted-provider",
        {
            **SIGN_IN,
            "identityProvider": {"provider": "hosted", "url": "https://x.test", "secret": "v/i"},
        },
        'spec.identityProvider.provider: Unsupported value: "hosted"',
    ),
    (
        "not-namespace-name",
        {"secrets": "bootstrap"},
        "spec.secrets in body should match",
    ),
    (
        "bad-certificate-ref",
        {"certificates": ["a/b/c"]},
        "spec.certificates[0] in body should match",
    ),
    ("bad-duration", {"cookie": {"expire": "14 hours"}}, "spec.cookie.expire in body should match"),
    (
        "bad-same-site",
        {"cookie": {"sameSite": "Lax"}},
        'spec.cookie.sameSite: Unsupported value: "Lax"',
    ),
    (
        "bad-enforcement",
        {"downstreamMtls": {"ca": "LS0tLQ==", "enforcement": "strict"}},
        "spec.downstreamMtls.enforcement: Unsupported value",
    ),
    ("mtls-ca-not-base64", {"downstreamMtls": {"ca": "not base64!"}}, "must be of type byte"),
    (
        "mtls-without-ca",
        {"downstreamMtls": {"enforcement": "policy"}},
        "spec.downstreamMtls.ca: Required value",
    ),
    ("negative-hops", {"xffNumTrustedHops": -1}, "spec.xffNumTrustedHops: Invalid value: -1"),
    (
        "set-response-headers",
        {"setResponseHeaders": {"X-Frame-Options": "DENY"}},
        "setResponseHeaders is not supported by Vallum",
    ),
    ("timeouts-read", {"timeouts": {"read": "30s"}}, "timeouts.read is not supported by Vallum"),
    (
        "request-params",
        {
            **SIGN_IN,
            "identityProvider": {**SIGN_IN["identityProvider"], "requestParams": {"a": "b"}},
        },
        "requestParams is not supported by Vallum",
    ),
    (
        "match-subject-alt-names",
        {"downstreamMtls": {"ca": "LS0tLQ==", "matchSubjectAltNames": {"dns": "x"}}},
        "matchSubjectAltNames is not supported by Vallum",
    ),
    (
        "unknown-field",
        {"storage": {"file": {"path": "/x"}}},
        ".spec.storage: field not declared in schema",
    ),
]

VALID_POLICIES = [
    ("example", yaml.safe_load((CRDS / "examples" / "policy.yaml").read_text())["spec"]),
    ("empty", {}),
    ("allow-any-user", {"allow": {"and": [{"authenticated_user": True}]}}),
    (
        "every-criterion",
        {
            "allow": {
                "or": [
                    {"accept": True},
                    {"email": {"is": "a@example.com"}},
                    {"domain": {"is": "example.com"}},
                    {"user": {"is": "u1"}},
                    {"groups": {"has": "admins"}},
                    {"claim/example.com/role": "oncall"},
                    {"http_method": {"is": "GET"}},
                    {"http_path": {"starts_with": "/api"}},
                    {"client_certificate": {"fingerprint": "ab" * 32}},
                    {"date": {"after": "2020-01-01T00:00:00Z"}},
                    {"day_of_week": "mon-fri"},
                    {"time_of_day": {"timezone": "UTC", "after": "8:00", "before": "17:00"}},
                    {"source_ip": "10.0.0.0/8"},
                    {"cors_preflight": True},
                    {"or": [{"email": "x@y.z"}, {"not": [{"reject": True}]}]},
                ],
                "nor": [{"invalid_client_certificate": True}],
            },
            "deny": {"not": [{"groups": {"has": "staff"}}]},
        },
    ),
]

INVALID_POLICIES = [
    ("operator-not-a-list", {"allow": {"or": {"email": "x"}}}, ".spec.allow.or: expected list"),
    ("action-not-a-mapping", {"allow": [{"or": []}]}, ".spec.allow: expected map"),
    (
        "condition-with-two-criteria",
        {"allow": {"and": [{"email": "x", "domain": "y"}]}},
        "spec.allow.and[0]: Too many: 2: must have at most 1 item",
    ),
    ("empty-condition", {"deny": {"or": [{}]}}, "spec.deny.or[0]: Invalid value: 0"),
]


@pytest.mark.parametrize("spec", [c[1] for c in VALID_SETTINGS], ids=[c[0] for c in VALID_SETTINGS])
def test_valid_settings_are_accepted(kube: dict[str, str], spec: dict[str, Any]) -> None:
    name = f"ok-{len(kubectl(kube, 'get', 'settings', '-o', 'name').split())}"
    done = apply(kube, settings_obj(name, **spec))
    assert done.returncode == 0, done.stderr
    stored = json.loads(kubectl(kube, "get", "settings", name, "-o", "json"))
    assert stored["spec"] == spec  # nothing pruned


@pytest.mark.parametrize(
    ("spec", "message"),
    [c[1:] for c in INVALID_SETTINGS],
    ids=[c[0] for c in INVALID_SETTINGS],
)
def test_invalid_settings_are_refused(kube: dict[str, str], spec: Any, message: str) -> None:
    done = apply(kube, settings_obj("refused", **spec))
    assert done.returncode != 0
    assert message in done.stderr
    assert "refused" not in kubectl(kube, "get", "settings", "-o", "name")


@pytest.mark.parametrize("spec", [c[1] for c in VALID_POLICIES], ids=[c[0] for c in VALID_POLICIES])
def test_every_policy_the_language_accepts_is_accepted(kube: dict[str, str], spec: Any) -> None:
    policy.compile_policy(spec)  # the language accepts it ...
    name = f"ok-{len(kubectl(kube, 'get', 'vpolicy', '-o', 'name').split())}"
    done = apply(kube, policy_obj(name, spec))  # ... and so does the API server, unchanged
    assert done.returncode == 0, done.stderr
    stored = json.loads(kubectl(kube, "get", "vpolicy", name, "-o", "json"))
    assert stored["spec"] == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [c[1:] for c in INVALID_POLICIES],
    ids=[c[0] for c in INVALID_POLICIES],
)
def test_invalid_policies_are_refused(kube: dict[str, str], spec: Any, message: str) -> None:
    with pytest.raises(errors.PolicyError):  # the language refuses it too
        policy.compile_policy(spec)
    done = apply(kube, policy_obj("refused", spec))
    assert done.returncode != 0
    assert message in done.stderr


def test_policy_typos_are_kept_for_the_controller_to_report(kube: dict[str, str]) -> None:
    spec = {"allow": {"or": [{"email": "a@x.com"}]}, "denny": {"or": [{"email": "b@x.com"}]}}
    assert apply(kube, policy_obj("typo", spec)).returncode == 0
    stored = json.loads(kubectl(kube, "get", "vpolicy", "typo", "-o", "json"))
    assert stored["spec"] == spec
    with pytest.raises(errors.PolicyError, match="unknown action 'denny'"):
        policy.compile_policy(stored["spec"])


def test_status_conditions_show_in_the_ready_column(kube: dict[str, str]) -> None:
    assert apply(kube, settings_obj("global", **SIGN_IN)).returncode == 0
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Invalid",
                "message": "spec.secrets: Secret vallum/bootstrap not found",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    kubectl(
        kube, "patch", "settings", "global", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    stored = json.loads(kubectl(kube, "get", "settings", "global", "-o", "json"))
    assert stored["status"] == status  # declared, so not pruned
    table = kubectl(kube, "get", "settings", "global").splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "REASON", "AUTHENTICATE", "PROVIDER"]
    assert table[1].split()[:4] == ["global", "False", "Invalid", SIGN_IN["authenticate"]["url"]]


def test_kubectl_explain_reads_the_descriptions(kube: dict[str, str]) -> None:
    text = kubectl(kube, "explain", "settings.spec.cookie.expire")
    assert "How long a session lasts (cookie_expire)" in text
    text = kubectl(kube, "explain", "policy.spec.allow")
    assert "and\t<[]Object>" in text and "Who is let in" in text
