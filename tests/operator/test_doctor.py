"""``vallum doctor``'s pure checks: a healthy install passes every one, and each thing a newcomer
gets wrong fails (or warns) exactly the check about it, with a message naming the object and a
fix. Plus the CRDs shipped with this version, found from the installed package."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import http.server
import json
import pathlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.operator import objects
from tests.support.certs import TestCA
from vallum.operator import doctor, doctor_gather

NOW = dt.datetime(2026, 12, 6, 4, 0, 0, tzinfo=dt.UTC)
CA = TestCA.create("Doctor Test CA")
GOOD_CERT = CA.issue("auth.example.test", days=60, not_before=NOW - dt.timedelta(days=1))
SIGNING_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
CRDS = doctor_gather.load_crds(doctor_gather.crd_directory())
IDP = "https://idp.example.test"


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def secret(**data: str | bytes) -> dict[str, Any]:
    return {"kind": "Secret", "data": {k: b64(v) for k, v in data.items()}}


def tls(cert_pem: str, key_pem: str) -> dict[str, Any]:
    return secret(**{"tls.crt": cert_pem, "tls.key": key_pem})


def installed(crd: dict[str, Any]) -> dict[str, Any]:
    """A CRD as the API server returns it: the file's spec plus server fields."""
    out = copy.deepcopy(crd)
    out["metadata"] |= {"resourceVersion": "7", "uid": "u"}
    out["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
    return out


def healthy() -> doctor.Facts:
    expected, files = CRDS
    settings = {
        "apiVersion": "vallum.dev/v1alpha1",
        "kind": "Settings",
        "metadata": {"name": "global", "generation": 2},
        "spec": {
            "secrets": "vallum/bootstrap",
            "authenticate": {"url": "https://auth.example.test"},
            "identityProvider": {"provider": "oidc", "url": IDP, "secret": "vallum/idp"},
            "certificates": ["vallum/auth-tls"],
            "caSecrets": ["vallum/corp-ca"],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                   "message": "serving 1 route"}]},
    }
    app_cert = CA.issue("app.example.test", days=90, not_before=NOW - dt.timedelta(days=1))
    return doctor.Facts(
        options=doctor.Options(lease_name="vallum-dev-ingress-controller-1234abcd"),
        now=NOW,
        expected_crds=expected,
        crd_files=files,
        crds={name: installed(crd) for name, crd in expected.items()},
        ingress_classes=[objects.ingress_class("vallum")],
        settings=settings,
        ingresses=[
            objects.ingress(
                "app", "apps", class_name="vallum",
                tls=[{"hosts": ["app.example.test"], "secretName": "app-tls"}],
                annotations={"ingress.vallum.dev/tls_custom_ca_secret": "upstream-ca",
                             "ingress.vallum.dev/policy-ref": "admins"},
            ),
            objects.ingress("other", "apps", class_name="nginx",
                            tls=[{"secretName": "not-ours"}]),
        ],
        secrets={
            ("vallum", "bootstrap"): secret(cookie_secret=b"k" * 32, signing_key=SIGNING_KEY),
            ("vallum", "idp"): secret(client_id="client", client_secret="s3cret"),
            ("vallum", "auth-tls"): tls(GOOD_CERT.cert_pem, GOOD_CERT.key_pem),
            ("vallum", "corp-ca"): secret(**{"ca.crt": CA.cert_pem}),
            ("apps", "app-tls"): tls(app_cert.cert_pem, app_cert.key_pem),
            ("apps", "upstream-ca"): secret(**{"ca.crt": CA.cert_pem}),
        },
        policies=frozenset({("apps", "admins")}),
        discovery=doctor.Discovery(IDP, document={
            "issuer": IDP, "authorization_endpoint": f"{IDP}/auth",
            "token_endpoint": f"{IDP}/token", "jwks_uri": f"{IDP}/jwks",
        }),
        lease={"metadata": {"name": "vallum"}, "spec": {
            "holderIdentity": "vallum-7d9f-abc", "leaseDurationSeconds": 10,
            "renewTime": (NOW - dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }},
        deployments=[{"metadata": {"name": "vallum"}, "spec": {"replicas": 2},
                      "status": {"readyReplicas": 2}}],
        pods=[_pod("vallum-a", ready=True), _pod("vallum-b", ready=True)],
    )


def _pod(name: str, *, ready: bool, waiting: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if waiting:
        status["containerStatuses"] = [
            {"name": "vallum", "state": {"waiting": {"reason": waiting, "message": "back-off"}}}
        ]
    return {"metadata": {"name": name}, "status": status}


def by_name(facts: doctor.Facts) -> dict[str, doctor.Check]:
    return {check.name: check for check in doctor.run(facts)}


def only_failing(facts: doctor.Facts, status: str = "fail") -> doctor.Check:
    """The one check not ok (all others ok), with ``status``."""
    checks = by_name(facts)
    bad = [c for c in checks.values() if c.status != "ok"]
    assert len(bad) == 1, [(c.name, c.status, c.message, c.details) for c in bad]
    assert bad[0].status == status, bad[0]
    return bad[0]


def test_a_healthy_install_passes_every_check() -> None:
    checks = doctor.run(healthy())
    assert [(c.name, c.status) for c in checks] == [
        (name, "ok") for name in (
            "crds", "ingress-class", "settings", "references", "identity-provider",
            "certificates", "leader", "replicas",
        )
    ], [(c.name, c.message, c.details) for c in checks if c.status != "ok"]
    assert doctor.exit_status(checks) == 0
    assert "2 certificate(s) valid" in by_name(healthy())["certificates"].message


def test_a_missing_crd_fails_with_the_file_to_apply() -> None:
    facts = healthy()
    facts.crds = {**facts.crds, "policies.vallum.dev": None}
    check = only_failing(facts)
    assert check.name == "crds"
    assert check.details == ("CRD policies.vallum.dev is not installed",)
    assert check.fix.startswith("kubectl apply --server-side")
    assert check.fix.endswith("vallum.dev_policies.yaml")


def test_a_crd_of_another_version_names_where_its_schema_differs() -> None:
    facts = healthy()
    changed = installed(CRDS[0]["settings.vallum.dev"])
    schema = changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    del schema["properties"]["spec"]["properties"]["caSecrets"]
    schema["properties"]["spec"]["properties"]["cookie"]["description"] = "old words"
    facts.crds = {**facts.crds, "settings.vallum.dev": changed}
    check = only_failing(facts)
    assert check.name == "crds"
    (detail,) = check.details
    assert "CRD settings.vallum.dev is not this version's" in detail
    assert "openAPIV3Schema.properties.spec.properties.caSecrets: missing in the cluster" in detail
    assert "properties.cookie.description: differs" in detail
    assert doctor.digest(schema) in detail


def test_a_crd_not_serving_v1alpha1_fails() -> None:
    facts = healthy()
    old = installed(CRDS[0]["policies.vallum.dev"])
    old["spec"]["versions"][0]["name"] = "v1alpha0"
    facts.crds = {**facts.crds, "policies.vallum.dev": old}
    assert only_failing(facts).details == ("CRD policies.vallum.dev does not serve v1alpha1",)


def test_no_ingress_class_for_the_controller_names_the_classes_there_are() -> None:
    facts = healthy()
    facts.ingress_classes = [objects.ingress_class("nginx", controller="k8s.io/ingress-nginx")]
    facts.ingresses = []  # (their Secrets would no longer be ours to check either way)
    check = only_failing(facts)
    assert check.name == "ingress-class"
    assert "no IngressClass has spec.controller vallum.dev/ingress-controller" in check.message
    assert "nginx (k8s.io/ingress-nginx)" in check.message
    assert "controller: vallum.dev/ingress-controller" in check.fix


def test_the_default_ingress_class_is_said() -> None:
    facts = healthy()
    facts.ingress_classes = [objects.ingress_class("vallum", default=True)]
    assert by_name(facts)["ingress-class"].message == "IngressClass vallum (default: vallum)"
    facts.ingress_classes = [objects.ingress_class("vallum")]
    assert "not the default class" in by_name(facts)["ingress-class"].message


def test_a_missing_settings_object_fails() -> None:
    facts = healthy()
    facts.settings = None
    facts.discovery = None
    check = only_failing(facts)
    assert check.name == "settings"
    assert check.message == "Settings global not found: the controller serves without sign-in"


def test_an_invalid_settings_object_fails_with_the_readers_problems() -> None:
    facts = healthy()
    assert facts.settings is not None
    facts.settings = copy.deepcopy(facts.settings)
    facts.settings["spec"]["cookei"] = {"name": "x"}
    facts.settings["spec"]["timeouts"] = {"idle": "forever"}
    check = only_failing(facts)
    assert check.name == "settings"
    assert "spec.cookei: unknown field (did you mean 'cookie'?)" in check.details
    assert any(d.startswith("spec.timeouts.idle:") for d in check.details), check.details
    assert check.fix == "kubectl edit settings global"


def test_settings_without_a_ready_condition_or_not_ready_warn() -> None:
    facts = healthy()
    assert facts.settings is not None
    facts.settings = {**facts.settings, "status": {}}
    check = only_failing(facts, "warn")
    assert "no controller has reported on it" in check.message
    facts.settings = {**facts.settings, "status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "Invalid", "message": "spec.x: bad"}]}}
    check = only_failing(facts, "warn")
    assert "reported Ready False (Invalid: spec.x: bad)" in check.message
    assert doctor.exit_status(doctor.run(facts)) == 0


def test_a_missing_secret_fails_the_references_check_only() -> None:
    facts = healthy()
    facts.secrets = {k: v for k, v in facts.secrets.items() if k != ("vallum", "idp")}
    check = only_failing(facts)
    assert check.name == "references"
    assert check.details == (
        "Settings spec.identityProvider.secret: Secret vallum/idp not found",
    )
    assert check.fix == ("kubectl -n vallum create secret generic idp "
                         "--from-literal=client_id=... --from-literal=client_secret=...")


def test_a_secret_missing_a_key_names_the_key_and_what_it_has() -> None:
    facts = healthy()
    facts.secrets = {**facts.secrets,
                     ("vallum", "bootstrap"): secret(cookie_secret=b"k" * 32, shared_secret="x")}
    check = only_failing(facts)
    assert check.name == "references"
    assert check.details == (
        "Settings spec.secrets: Secret vallum/bootstrap has no key signing_key "
        "(it has: cookie_secret, shared_secret)",
    )
    assert "vallum keys generate" in check.fix


def test_ingress_references_of_our_class_only() -> None:
    facts = healthy()
    facts.secrets = {k: v for k, v in facts.secrets.items() if k[0] != "apps"}
    facts.policies = frozenset()
    check = only_failing(facts)
    assert check.name == "references"
    assert check.details == (
        "Ingress apps/app spec.tls[0].secretName: Secret apps/app-tls not found",
        "Ingress apps/app annotation tls_custom_ca_secret: Secret apps/upstream-ca not found",
        "Ingress apps/app policy-ref: Policy apps/admins not found",
    )  # apps/not-ours belongs to the nginx Ingress: not named


def test_a_certificate_secret_not_issued_yet_is_a_warning() -> None:
    facts = healthy()
    facts.secrets = {k: v for k, v in facts.secrets.items() if k != ("vallum", "auth-tls")}
    check = only_failing(facts, "warn")
    assert check.name == "references"
    assert check.details == ("Settings spec.certificates[0]: Secret vallum/auth-tls not found "
                             "(skipped until it exists)",)


def test_an_unreachable_identity_provider_fails() -> None:
    facts = healthy()
    facts.discovery = doctor.Discovery(IDP, error="unreachable (Connection refused) within 5 s")
    check = only_failing(facts)
    assert check.name == "identity-provider"
    assert check.message == (f"discovery document {IDP}/.well-known/openid-configuration: "
                             "unreachable (Connection refused) within 5 s")
    assert check.fix.startswith(f"curl -sS {IDP}/.well-known/openid-configuration")


def test_a_discovery_document_of_another_issuer_fails() -> None:
    facts = healthy()
    assert facts.discovery is not None and facts.discovery.document is not None
    doc = {**facts.discovery.document, "issuer": "https://login.example.test/tenant"}
    facts.discovery = doctor.Discovery(IDP, document=doc)
    check = only_failing(facts)
    assert "names issuer 'https://login.example.test/tenant', not" in check.message
    assert "spec.identityProvider.url: https://login.example.test/tenant" in check.fix
    facts.discovery = doctor.Discovery(IDP + "/", document={"issuer": IDP})
    assert "lacks authorization_endpoint, token_endpoint, jwks_uri" in only_failing(facts).message


def test_no_identity_provider_is_fine() -> None:
    facts = healthy()
    facts.discovery = None
    assert by_name(facts)["identity-provider"].status == "ok"


@pytest.mark.parametrize(
    ("days_left", "status", "said"),
    [(-2, "fail", "expired 2026-12-04"), (3, "warn", "expires 2026-12-09"), (20, "ok", "")],
)
def test_certificates_expired_or_expiring(days_left: int, status: str, said: str) -> None:
    facts = healthy()
    cert = CA.issue("app.example.test", days=30,
                    not_before=NOW + dt.timedelta(days=days_left - 30))
    facts.secrets = {**facts.secrets, ("apps", "app-tls"): tls(cert.cert_pem, cert.key_pem)}
    if status == "ok":
        assert by_name(facts)["certificates"].status == "ok"
        return
    check = only_failing(facts, status)
    assert check.name == "certificates"
    (detail,) = check.details
    assert detail.startswith("Ingress apps/app spec.tls[0].secretName: Secret apps/app-tls "
                             "tls.crt: CN=app.example.test " + said), detail
    assert "renew it" in check.fix


def test_a_certificate_that_is_not_pem_fails() -> None:
    facts = healthy()
    facts.secrets = {**facts.secrets, ("apps", "app-tls"): secret(**{"tls.crt": "garbage",
                                                                       "tls.key": "x"})}
    check = only_failing(facts)
    assert check.name == "certificates"
    assert "Secret apps/app-tls tls.crt: not a PEM certificate" in check.details[0]


def test_no_lease_fails() -> None:
    facts = healthy()
    facts.lease = None
    check = only_failing(facts)
    assert check.name == "leader"
    assert check.message.startswith(
        "Lease vallum/vallum-dev-ingress-controller-1234abcd not found: no vallum controller")
    assert "kubectl -n vallum get pods -l app.kubernetes.io/name=vallum" in check.fix


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"holderIdentity": "a", "leaseDurationSeconds": 10, "renewTime":
          "2026-12-06T03:59:00.000000Z"}, "a last renewed it 60 s ago (duration 10 s)"),
        ({"holderIdentity": None, "renewTime": "2026-12-06T03:59:59Z"}, "has no holder"),
        ({"holderIdentity": "a"}, "has no renewTime"),
    ],
)
def test_a_stale_or_released_lease_fails(spec: dict[str, Any], said: str) -> None:
    facts = healthy()
    facts.lease = {"spec": spec}
    check = only_failing(facts)
    assert check.name == "leader"
    assert said in check.message


def test_replicas_not_ready_name_the_pod_and_why() -> None:
    facts = healthy()
    facts.deployments = [{"metadata": {"name": "vallum"}, "spec": {"replicas": 2},
                          "status": {"readyReplicas": 1}}]
    facts.pods = [_pod("vallum-a", ready=True),
                  _pod("vallum-b", ready=False, waiting="CrashLoopBackOff")]
    check = only_failing(facts)
    assert check.name == "replicas"
    assert check.details == (
        "Deployment vallum/vallum: 1/2 replicas ready",
        "Pod vallum-b: container vallum waiting: CrashLoopBackOff back-off",
    )


def test_no_deployment_only_warns() -> None:
    facts = healthy()
    facts.deployments, facts.pods = [], []
    check = only_failing(facts, "warn")
    assert check.name == "replicas"
    assert "only the Lease was checked" in check.message


def test_text_and_json_output() -> None:
    facts = healthy()
    facts.lease = None
    checks = doctor.run(facts)
    text = doctor.render_text(checks)
    assert "FAIL  leader" in text
    assert "      fix: kubectl -n vallum get pods" in text
    assert text.endswith("8 checks: 1 failed, 0 warnings\n")
    assert "OK    crds" in text
    data = json.loads(doctor.render_json(checks))
    assert data["ok"] is False
    leader = next(c for c in data["checks"] if c["name"] == "leader")
    assert set(leader) == {"name", "status", "message", "fix", "details"}
    assert leader["status"] == "fail"


def test_the_shipped_crds_are_found_and_loaded() -> None:
    expected, files = CRDS
    assert sorted(expected) == ["policies.vallum.dev", "settings.vallum.dev"]
    assert files["settings.vallum.dev"].endswith("crds/vallum.dev_settings.yaml")
    assert doctor.served_schema(expected["settings.vallum.dev"])


def test_a_crds_directory_without_crds_is_an_error(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError, match=r"no vallum\.dev_\*\.yaml CRDs in "):
        doctor_gather.crd_directory(str(tmp_path))


def test_fetching_discovery_from_a_closed_port_says_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    got = doctor_gather.fetch_discovery(f"http://127.0.0.1:{port}", timeout=2)
    assert got.document is None
    assert got.error.startswith("unreachable (")


def test_a_missing_settings_object_points_at_the_shipped_example() -> None:
    facts = healthy()
    facts.settings, facts.discovery = None, None
    fix = by_name(facts)["settings"].fix
    example = fix.split()[3]
    assert example.endswith("crds/examples/settings.yaml")
    assert pathlib.Path(example).is_file()


def test_the_docs_page_describes_every_check() -> None:
    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "doctor.md").read_text()
    for check in doctor.run(healthy()):
        assert f"| `{check.name}` |" in page, check.name


def test_what_could_not_be_read_fails_its_checks_and_the_others_run() -> None:
    facts = healthy()
    said = 'GET /api/v1/namespaces/vallum/secrets/idp: 403 Forbidden: secrets "idp" is forbidden'
    facts.unreadable = {"references": said, "certificates": said}
    checks = by_name(facts)
    assert [n for n, c in checks.items() if c.status != "ok"] == ["references", "certificates"]
    assert checks["references"].message == f"cannot read what this check needs: {said}"
    assert "kubectl auth can-i --list" in checks["references"].fix


def test_a_crd_not_established_fails() -> None:
    facts = healthy()
    crd = installed(CRDS[0]["policies.vallum.dev"])
    crd["status"] = {"conditions": [{"type": "Established", "status": "False",
                                     "reason": "NotAccepted", "message": "names conflict"}]}
    facts.crds = {**facts.crds, "policies.vallum.dev": crd}
    check = only_failing(facts)
    assert check.details == ("CRD policies.vallum.dev is not Established: NotAccepted names "
                             "conflict",)
    assert check.fix == "kubectl describe crd policies.vallum.dev"


class _Provider(http.server.BaseHTTPRequestHandler):
    """/good: a discovery document; /text: not JSON; /list: JSON but not an object; else 404."""

    def do_GET(self) -> None:
        bodies = {"/good": json.dumps({"issuer": "x"}), "/text": "<html>", "/list": "[]"}
        base = self.path.removesuffix("/.well-known/openid-configuration")
        if base not in bodies:
            self.send_error(404, "Not Found")
            return
        body = bodies[base].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("path", "document", "error"),
    [("/good", {"issuer": "x"}, ""), ("/text", None, "not JSON"),
     ("/list", None, "not a JSON object"), ("/gone", None, "HTTP 404 Not Found")],
)
def test_fetching_discovery(provider: str, path: str, document: Any, error: str) -> None:
    got = doctor_gather.fetch_discovery(provider + path, timeout=5)
    assert (got.document, got.error) == (document, error)


def test_the_fix_for_a_ca_secret_reads_the_file() -> None:
    facts = healthy()
    facts.secrets = {**facts.secrets, ("vallum", "corp-ca"): secret(**{"ca.pem": CA.cert_pem})}
    check = only_failing(facts)
    assert check.fix == ("kubectl -n vallum create secret generic corp-ca --from-file=ca.crt=FILE "
                         "--dry-run=client -o yaml | kubectl apply -f -")
