"""``vallum controller``: upstream mTLS material from Secrets -- rotated, broken, fixed.

Issue 12, item 6: "When any referenced Secret changes (cert-manager renewal, key rotation), new
connections use the new material within 2 s, with no restart and no failed request", and item 8:
a broken Ingress (here: a Secret whose certificate cannot be used) makes only its own routes deny
with the reason while the rest of the table keeps going live.

The upstream is a real aiohttp server on 10.200.0.1 speaking TLS with a certificate of a test CA
and *requiring* a client certificate of that CA; it answers with the common name of the client
certificate the connection presented. The Ingresses use Pomerium's annotations
(``secure_upstream``, ``tls_client_secret``, ``tls_custom_ca_secret``) and the Secrets are in
cert-manager's format (``tls.crt``, ``tls.key``, ``ca.crt``).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support import certs

from e2e import conftest, test_controller

SERVER_NAME = "upstream.e2e.test"
"""The name in the upstream's certificate, checked through ``tls_server_name`` (by default the
proxy checks the Service's ``<name>.<namespace>.svc.cluster.local``)."""


class MutualUpstream:
    """An aiohttp server (own thread) that requires a client certificate of ``ca`` and answers
    ``{"client": <its common name>, "connection": <a number per TLS connection>}``."""

    def __init__(self, ip: str, ca: certs.TestCA) -> None:
        self.ip = ip
        self.port = conftest._free_port(ip)
        self.ca = ca
        self.handshakes: list[str] = []
        """The client certificate's common name of each TLS connection, in order of first use."""
        self._connections: dict[int, int] = {}
        self._transports: list[asyncio.Transport] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2e-mtls-upstream")

    def _context(self) -> ssl.SSLContext:
        server = self.ca.issue(SERVER_NAME)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.ca.cert_pem)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(*server.write(self._folder, "upstream"))
        return ctx

    def _run(self) -> None:
        from aiohttp import web
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        async def answer(request: web.Request) -> web.Response:
            transport = request.transport
            assert transport is not None
            tls = transport.get_extra_info("ssl_object")
            der = tls.getpeercert(binary_form=True)
            name = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
                NameOID.COMMON_NAME)[0].value
            number = self._connections.get(id(transport))
            if number is None:
                self._transports.append(transport)
                number = self._connections[id(transport)] = len(self.handshakes)
                self.handshakes.append(str(name))
            return web.json_response({"upstream": self.ip, "client": name,
                                      "connection": number})

        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self.ip, self.port, ssl_context=self._context()).start()
            self._ready.set()
            self._stop = asyncio.Event()
            await self._stop.wait()
            await runner.cleanup()
            for transport in self._transports:  # TLS close waits on the peer: do not
                transport.abort()
            await asyncio.sleep(0.05)

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def start(self, folder: Any) -> None:
        self._folder = folder
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the e2e mTLS upstream did not start")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def mutual(upstream_address: str, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[MutualUpstream]:
    server = MutualUpstream(upstream_address, certs.TestCA.create("Vallum e2e upstream CA"))
    server.start(tmp_path_factory.mktemp("mtls"))
    try:
        yield server
    finally:
        server.stop()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def client_secret(cluster: conftest.Cluster, namespace: str, cert: str, key: str,
                  name: str = "client", kind: str = "kubernetes.io/tls") -> None:
    """Secret ``name`` with ``tls.crt`` and ``tls.key``, as cert-manager writes (and rewrites on
    renewal) a Certificate's Secret."""
    cluster.apply(f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: {name}}}
        type: {kind}
        data:
          tls.crt: {b64(cert)}
          tls.key: {b64(key)}
    """, namespace)


def secure_ingress(cluster: conftest.Cluster, namespace: str, ingress_class: str,
                   mutual: MutualUpstream, host: str, name: str = "web",
                   client: str = "client") -> None:
    """A CA Secret, a selector-less Service to the mTLS upstream, and a public Ingress reaching
    it over TLS with the client certificate of Secret ``client``."""
    cluster.apply(f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: upstream-ca}}
        data:
          ca.crt: {b64(mutual.ca.cert_pem)}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: secure}}
        spec:
          ports: [{{name: https, port: 443, targetPort: {mutual.port}}}]
    """, namespace)
    conftest.endpoint_slice(cluster, namespace, "secure-1", "secure", "https", mutual.port,
                            mutual.ip, ready=True)
    test_controller.ingress(cluster, namespace, ingress_class, host, service="secure", port=443,
                            name=name, annotations=test_controller.PUBLIC | {
                                "ingress.pomerium.io/secure_upstream": "true",
                                "ingress.pomerium.io/tls_client_secret": client,
                                "ingress.pomerium.io/tls_custom_ca_secret": "upstream-ca",
                                "ingress.pomerium.io/tls_server_name": SERVER_NAME,
                            })


def from_client(name: str) -> Any:
    def want(status: int, body: dict[str, Any]) -> bool:
        return status == 200 and body.get("client") == name
    return want


class Loop:
    """Requests to ``host`` one after another on a thread: (monotonic time, status, client)."""

    def __init__(self, running: conftest.Controller, host: str) -> None:
        self.running, self.host = running, host
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2e-loop")

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = self.running.request(self.host)
            self.answers.append((time.monotonic(), status, str(body.get("client", body))))
            time.sleep(0.01)

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_rotated_client_certificate_is_used_by_new_connections_within_two_seconds(
    cluster: conftest.Cluster, controller: conftest.Controller, mutual: MutualUpstream,
    namespace: str, ingress_class: str,
) -> None:
    host = f"mtls.{namespace}.e2e.test"
    first, renewed = mutual.ca.issue("client-one", client=True), mutual.ca.issue(
        "client-two", client=True)
    client_secret(cluster, namespace, first.cert_pem, first.key_pem)
    secure_ingress(cluster, namespace, ingress_class, mutual, host)
    controller.wait_for(host, from_client("client-one"))
    pid = controller.process.pid if controller.process else None
    with Loop(controller, host) as loop:
        time.sleep(0.5)  # requests on the old certificate, on pooled connections
        client_secret(cluster, namespace, renewed.cert_pem, renewed.key_pem)  # a renewal
        applied = time.monotonic()
        conftest.wait_until(lambda: any(a[2] == "client-two" for a in loop.answers),
                            timeout=5.0, interval=0.02, what="the renewed certificate used")
        time.sleep(0.5)  # and requests after it
    answers = loop.answers
    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:5]
    switched = next(t for t, _, who in answers if who == "client-two")
    assert switched - applied < 2.0, f"{switched - applied:.2f} s"
    after = [who for t, _, who in answers if t > switched]
    assert after and set(after) == {"client-two"}, after  # no request goes back to the old one
    assert {who for t, _, who in answers if t < applied} == {"client-one"}
    assert "client-two" in mutual.handshakes[mutual.handshakes.index("client-one"):]
    assert controller.process is not None and controller.process.pid == pid
    assert controller.process.poll() is None  # no restart


BAD = {
    "not-pem": ("Opaque", "this is not a certificate", "nor is this a key"),
    "mismatched-key": ("kubernetes.io/tls", "CERT", "OTHER_KEY"),
}
"""Secret type, tls.crt and tls.key of each bad client Secret (CERT: a good certificate,
OTHER_KEY: the key of another)."""
REASONS = {
    "not-pem": ("Secret", "/bad-client key tls.crt: expected PEM", "/bad-client key tls.key"),
    "mismatched-key": ("private key does not match the certificate", "Secret", "/bad-client"),
}
"""What the 503 page must say for each."""


@pytest.mark.parametrize("case", sorted(BAD))
def test_one_bad_secret_denies_its_route_alone_until_fixed(
    cluster: conftest.Cluster, controller: conftest.Controller, mutual: MutualUpstream,
    upstream: conftest.Upstream, namespace: str, ingress_class: str, case: str,
) -> None:
    broken, later = f"bad.{namespace}.e2e.test", f"later.{namespace}.e2e.test"
    good, other = mutual.ca.issue("client-good", client=True), mutual.ca.issue(
        "client-other", client=True)
    kind, cert, key = BAD[case]
    cert = good.cert_pem if cert == "CERT" else cert
    key = other.key_pem if key == "OTHER_KEY" else key
    client_secret(cluster, namespace, cert, key, name="bad-client", kind=kind)
    secure_ingress(cluster, namespace, ingress_class, mutual, broken, name="bad",
                   client="bad-client")
    status, body = controller.wait_for(broken, lambda status, _body: status != 404)
    assert status == 503, body
    text = str(body)
    assert f"Ingress {namespace}/bad" in text, text
    for reason in REASONS[case]:
        assert reason in text, text

    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, ingress_class, later, name="later")
    controller.wait_for(later, test_controller.reached)  # the table is still being published
    assert controller.request(broken)[0] == 503

    client_secret(cluster, namespace, good.cert_pem, good.key_pem, name="bad-client", kind=kind)
    controller.wait_for(broken, from_client("client-good"))
    assert controller.request(later)[0] == 200

