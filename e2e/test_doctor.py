"""``vallum doctor`` against a real API server (issue 13's acceptance): a healthy setup passes,
and for each check one deliberately broken variant fails exactly that check with a message that
names what is wrong.

The healthy setup is this module's own: an IngressClass and controller name, a Settings object
(its Secrets in a namespace of the module's, a certificate valid for 60 days, an identity
provider whose discovery document a local HTTP server answers), an Ingress with a TLS Secret, a
CA Secret and a Policy, and a Lease renewed just before each run (no controller runs: the
checks read what a controller would have written). Each test breaks one thing and restores it.
The CRDs are the session's (applied from crds/ by the conftest): the "missing" and "outdated"
variants use a renamed copy of the Settings CRD (a group of the test's own) passed with
``--crds``, so the session's CRDs and the objects of other tests are never touched.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import http.server
import io
import json
import pathlib
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.support.certs import TestCA

from e2e import conftest
from vallum.cli import main as cli
from vallum.operator import leadership

CHECKS = ("crds", "ingress-class", "settings", "references", "identity-provider",
          "certificates", "leader", "replicas")
CA = TestCA.create("Doctor e2e CA")


class Discovery(http.server.ThreadingHTTPServer):
    """An identity provider's discovery document on 127.0.0.1 (its own thread)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = self.server.url  # type: ignore[attr-defined]
        if self.path != "/.well-known/openid-configuration":
            self.send_error(404)
            return
        body = json.dumps({"issuer": url, "authorization_endpoint": f"{url}/auth",
                           "token_endpoint": f"{url}/token", "jwks_uri": f"{url}/jwks"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def micro_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Setup:
    """The healthy install, and how to break and mend each part of it."""

    def __init__(self, cluster: conftest.Cluster, namespace: str, idp: Discovery,
                 crds: pathlib.Path) -> None:
        suffix = secrets.token_hex(4)
        self.cluster, self.ns, self.idp, self.crds = cluster, namespace, idp, crds
        self.class_name = f"doctor-{suffix}"
        self.controller = f"vallum.dev/doctor-{suffix}"
        self.settings = f"doctor-{suffix}"
        self.lease = leadership.lease_name(self.controller)

    def args(self, *extra: str) -> list[str]:
        return ["doctor", "--kubeconfig", self.cluster.kubeconfig, "--namespace", self.ns,
                "--settings", self.settings, "--controller-name", self.controller,
                "--crds", str(self.crds), "--idp-timeout", "2", "--output", "json", *extra]

    def run(self, *extra: str, renew: bool = True) -> tuple[int, dict[str, dict[str, Any]]]:
        """``vallum doctor`` (in this process): exit status, checks by name."""
        if renew:
            self.renew_lease()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = cli.main(self.args(*extra))
        found = json.loads(out.getvalue())
        return status, {check["name"]: check for check in found["checks"]}

    def only_failing(self, *extra: str, renew: bool = True,
                     status: str = "fail") -> dict[str, Any]:
        """Run; exactly one check is not ok, with ``status`` (the exit status follows)."""
        code, checks = self.run(*extra, renew=renew)
        bad = [c for c in checks.values() if c["status"] != "ok" and c["name"] != "replicas"]
        assert len(bad) == 1, bad
        assert bad[0]["status"] == status, bad[0]
        assert code == (1 if status == "fail" else 0)
        assert bad[0]["fix"], bad[0]
        return bad[0]

    # --- the objects ----------------------------------------------------------------------------

    def create(self) -> None:
        cert = CA.issue("auth.example.test", days=60)
        self.apply_secret("bootstrap", cookie_secret=b"c" * 32, signing_key=_signing_key())
        self.apply_secret("idp", client_id="doctor", client_secret="s3cret")
        self.apply_secret("auth-tls", **{"tls.crt": cert.cert_pem, "tls.key": cert.key_pem})
        self.apply_secret("corp-ca", **{"ca.crt": CA.cert_pem})
        self.app_certificate(days=90)
        self.cluster.apply(f"""
            apiVersion: networking.k8s.io/v1
            kind: IngressClass
            metadata: {{name: {self.class_name}}}
            spec: {{controller: {self.controller}}}
        """)
        self.apply_settings(self.idp.url)
        self.cluster.apply(f"""
            apiVersion: vallum.dev/v1alpha1
            kind: Policy
            metadata: {{name: admins}}
            spec: {{allow: {{or: [{{accept: true}}]}}}}
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata:
              name: app
              annotations:
                ingress.vallum.dev/policy-ref: admins
            spec:
              ingressClassName: {self.class_name}
              tls: [{{hosts: [app.example.test], secretName: app-tls}}]
              rules:
                - host: app.example.test
                  http:
                    paths:
                      - path: /
                        pathType: Prefix
                        backend: {{service: {{name: app, port: {{number: 80}}}}}}
        """, self.ns)

    def apply_settings(self, idp_url: str) -> None:
        ns = self.ns
        self.cluster.apply(f"""
            apiVersion: vallum.dev/v1alpha1
            kind: Settings
            metadata: {{name: {self.settings}}}
            spec:
              secrets: {ns}/bootstrap
              authenticate: {{url: "https://auth.example.test"}}
              identityProvider: {{provider: oidc, url: "{idp_url}", secret: {ns}/idp}}
              certificates: [{ns}/auth-tls]
              caSecrets: [{ns}/corp-ca]
        """)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "Serving", "lastTransitionTime": now,
            "message": "served by the e2e doctor test"}]}}
        self.cluster.kubectl("patch", "settings", self.settings, "--subresource=status",
                             "--type=merge", "-p", json.dumps(ready))

    def apply_secret(self, name: str, **data: str | bytes) -> None:
        manifest = {"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": self.ns},
                    "data": {key: b64(value) for key, value in data.items()}}
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def app_certificate(self, days: int, *, ends_in: dt.timedelta | None = None) -> None:
        """The Ingress's TLS Secret: valid ``days`` from now, or ending ``ends_in`` from now."""
        now = dt.datetime.now(dt.UTC)
        if ends_in is None:
            cert = CA.issue("app.example.test", days=days)
        else:
            cert = CA.issue("app.example.test", days=days,
                            not_before=now + ends_in - dt.timedelta(days=days))
        self.apply_secret("app-tls", **{"tls.crt": cert.cert_pem, "tls.key": cert.key_pem})

    def renew_lease(self, ago: float = 0.0, holder: str = "doctor-e2e-replica") -> None:
        renewed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago)
        manifest = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.lease, "namespace": self.ns},
                    "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10,
                             "renewTime": micro_time(renewed)}}
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def remove(self) -> None:
        for kind, name in (("settings", self.settings), ("ingressclass", self.class_name)):
            self.cluster.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false",
                                 check=False)


def _signing_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def setup(cluster: conftest.Cluster, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[Setup]:
    crds = tmp_path_factory.mktemp("crds")
    for path in (conftest.ROOT / "crds").glob("vallum.dev_*.yaml"):
        shutil.copy(path, crds / path.name)
    idp = Discovery()
    with cluster.temporary_namespace() as namespace:
        found = Setup(cluster, namespace, idp, crds)
        try:
            found.create()
            yield found
        finally:
            found.remove()
            idp.shutdown()
            idp.server_close()


def test_a_healthy_install_passes(setup: Setup) -> None:
    code, checks = setup.run()
    assert list(checks) == list(CHECKS)
    bad = {name: c for name, c in checks.items() if c["status"] != "ok"}
    # No Deployment runs here (no kubelet): that check only warns, the rest pass.
    assert list(bad) == ["replicas"], bad
    assert bad["replicas"]["status"] == "warn"
    assert code == 0
    assert "schemas current" in checks["crds"]["message"]
    assert checks["settings"]["message"].endswith("Ready True (Serving: served by the e2e "
                                                  "doctor test)")
    assert "5 Secret reference(s)" in checks["references"]["message"]
    assert f"names issuer {setup.idp.url}" in checks["identity-provider"]["message"]
    assert "2 certificate(s) valid" in checks["certificates"]["message"]
    assert "held by doctor-e2e-replica" in checks["leader"]["message"]


# --- CRDs ----------------


@contextlib.contextmanager
def renamed_settings_crd(setup: Setup, *, change: bool) -> Iterator[str]:
    """A copy of the Settings CRD in a group of this test's own, in ``--crds``' directory (as
    shipped), and, with ``change``, installed in the cluster with a changed schema."""
    group = f"d{secrets.token_hex(3)}.vallum.dev"
    original = setup.crds / "vallum.dev_settings.yaml"
    shipped = yaml.safe_load(original.read_text())
    shipped["metadata"]["name"] = f"settings.{group}"
    shipped["spec"]["group"] = group
    kept = original.read_text()
    original.write_text(yaml.safe_dump(shipped))
    name = shipped["metadata"]["name"]
    try:
        if change:
            old = copy.deepcopy(shipped)
            schema = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            del schema["properties"]["spec"]["properties"]["caSecrets"]
            setup.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(old))
        yield name
    finally:
        original.write_text(kept)
        setup.cluster.kubectl("delete", "crd", name, "--ignore-not-found", "--wait=false",
                              check=False)


def test_a_crd_not_installed_fails(setup: Setup) -> None:
    with renamed_settings_crd(setup, change=False) as name:
        check = setup.only_failing()
    assert check["name"] == "crds"
    assert check["details"] == [f"CRD {name} is not installed"]
    assert check["fix"].startswith("kubectl apply --server-side --force-conflicts -f ")


def test_a_crd_of_another_version_fails(setup: Setup) -> None:
    with renamed_settings_crd(setup, change=True) as name:
        check = setup.only_failing()
    assert check["name"] == "crds"
    (detail,) = check["details"]
    assert detail.startswith(f"CRD {name} is not this version's (schema ")
    assert "openAPIV3Schema.properties.spec.properties.caSecrets: missing in the cluster" in detail


# --- IngressClass, Settings ----------------


def test_no_ingress_class_fails(setup: Setup) -> None:
    setup.cluster.kubectl("delete", "ingressclass", setup.class_name)
    try:
        check = setup.only_failing()
    finally:
        setup.cluster.apply(f"""
            apiVersion: networking.k8s.io/v1
            kind: IngressClass
            metadata: {{name: {setup.class_name}}}
            spec: {{controller: {setup.controller}}}
        """)
    assert check["name"] == "ingress-class"
    assert check["message"].startswith(f"no IngressClass has spec.controller {setup.controller}")


def test_settings_missing_fails(setup: Setup) -> None:
    check = setup.only_failing("--settings", "doctor-nobody")
    assert check["name"] == "settings"
    assert check["message"] == ("Settings doctor-nobody not found: the controller serves "
                                "without sign-in")


def test_settings_that_do_not_read_fail(setup: Setup) -> None:
    setup.apply_secret("bootstrap", cookie_secret=b"c" * 32, signing_key="not a key")
    try:
        check = setup.only_failing()
    finally:
        setup.apply_secret("bootstrap", cookie_secret=b"c" * 32, signing_key=_signing_key())
    assert check["name"] == "settings"
    assert any(d.startswith(f"spec.secrets: Secret {setup.ns}/bootstrap key signing_key")
               for d in check["details"]), check["details"]


# --- references ----------------


def test_a_missing_secret_fails(setup: Setup) -> None:
    setup.cluster.kubectl("delete", "secret", "idp", "-n", setup.ns)
    try:
        check = setup.only_failing()
    finally:
        setup.apply_secret("idp", client_id="doctor", client_secret="s3cret")
    assert check["name"] == "references"
    assert check["details"] == [
        f"Settings spec.identityProvider.secret: Secret {setup.ns}/idp not found"]
    assert check["fix"].startswith(f"kubectl -n {setup.ns} create secret generic idp ")


def test_a_secret_missing_a_key_fails(setup: Setup) -> None:
    setup.cluster.kubectl("delete", "secret", "corp-ca", "-n", setup.ns)
    setup.apply_secret("corp-ca", **{"ca.pem": CA.cert_pem})
    try:
        check = setup.only_failing()
    finally:
        setup.cluster.kubectl("delete", "secret", "corp-ca", "-n", setup.ns)
        setup.apply_secret("corp-ca", **{"ca.crt": CA.cert_pem})
    assert check["name"] == "references"
    assert check["details"] == [f"Settings spec.caSecrets[0]: Secret {setup.ns}/corp-ca has no "
                                "key ca.crt (it has: ca.pem)"]


# --- identity provider, certificates ----------------


def test_an_unreachable_identity_provider_fails(setup: Setup) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    setup.apply_settings(closed)
    try:
        check = setup.only_failing()
    finally:
        setup.apply_settings(setup.idp.url)
    assert check["name"] == "identity-provider"
    assert check["message"].startswith(
        f"discovery document {closed}/.well-known/openid-configuration: unreachable (")


def test_an_expired_certificate_fails(setup: Setup) -> None:
    setup.app_certificate(days=30, ends_in=-dt.timedelta(days=1))
    try:
        check = setup.only_failing()
    finally:
        setup.app_certificate(days=90)
    assert check["name"] == "certificates"
    (detail,) = check["details"]
    assert detail.startswith(f"Ingress {setup.ns}/app spec.tls[0].secretName: Secret "
                             f"{setup.ns}/app-tls tls.crt: CN=app.example.test expired ")


def test_a_certificate_expiring_soon_warns(setup: Setup) -> None:
    setup.app_certificate(days=30, ends_in=dt.timedelta(days=3, hours=1))
    try:
        check = setup.only_failing(status="warn")
    finally:
        setup.app_certificate(days=90)
    assert check["name"] == "certificates"
    assert check["message"] == "1 certificate(s) expire within 14 days"
    assert "(in 3 d)" in check["details"][0]


# --- controller ----------------


def test_a_stale_lease_fails(setup: Setup) -> None:
    setup.renew_lease(ago=45)
    check = setup.only_failing(renew=False)
    assert check["name"] == "leader"
    assert "doctor-e2e-replica last renewed it 4" in check["message"]
    assert "(duration 10 s)" in check["message"]


def test_no_lease_fails(setup: Setup) -> None:
    setup.cluster.kubectl("delete", "lease", setup.lease, "-n", setup.ns)
    check = setup.only_failing(renew=False)
    assert check["name"] == "leader"
    assert check["message"].startswith(f"Lease {setup.ns}/{setup.lease} not found")


def test_a_deployment_whose_pods_are_not_ready_fails(setup: Setup) -> None:
    setup.cluster.apply("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: vallum, labels: {app.kubernetes.io/name: vallum}}
        spec:
          replicas: 1
          selector: {matchLabels: {app.kubernetes.io/name: vallum}}
          template:
            metadata: {labels: {app.kubernetes.io/name: vallum}}
            spec: {containers: [{name: vallum, image: vallum:doctor-e2e}]}
    """, setup.ns)
    try:
        code, checks = setup.run()
    finally:
        setup.cluster.kubectl("delete", "deployment", "vallum", "-n", setup.ns, "--wait=false")
    assert code == 1
    assert [n for n, c in checks.items() if c["status"] != "ok"] == ["replicas"]
    check = checks["replicas"]
    assert check["message"] == f"Deployment {setup.ns}/vallum: 0/1 replicas ready"
    assert check["fix"] == f"kubectl -n {setup.ns} describe pods -l app.kubernetes.io/name=vallum"


# --- permissions ----------------------------------------------------------------------------


def test_reads_refused_fail_their_checks_and_the_others_still_run(
    setup: Setup, tmp_path: pathlib.Path,
) -> None:
    """A ServiceAccount that may only read Leases in the namespace: every other check fails
    naming the refusal (the API server's own words), the Lease's passes, no traceback."""
    account = "doctor-reader"
    setup.cluster.apply(f"""
        apiVersion: v1
        kind: ServiceAccount
        metadata: {{name: {account}}}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata: {{name: {account}}}
        rules: [{{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get]}}]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {{name: {account}}}
        roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {account}}}
        subjects: [{{kind: ServiceAccount, name: {account}, namespace: {setup.ns}}}]
    """, setup.ns)
    token = setup.cluster.kubectl("create", "token", account, "-n", setup.ns,
                                  "--duration=10m").strip()
    admin = json.loads(setup.cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    kubeconfig = tmp_path / "reader.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "e2e", "user": account}}],
        "current-context": account,
    }))
    code, checks = setup.run("--kubeconfig", str(kubeconfig))
    assert code == 1
    assert checks["leader"]["status"] == "ok", checks["leader"]
    refused = {name: c for name, c in checks.items() if name != "leader"}
    for name, check in refused.items():
        assert check["status"] == "fail", (name, check)
        assert check["message"].startswith("cannot read what this check needs: GET "), check
        assert " 403 Forbidden: " in check["message"], check
        assert f"system:serviceaccount:{setup.ns}:{account}" in check["message"], check
