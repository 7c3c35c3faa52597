"""Client certificates (downstream mTLS) under each of Pomerium's enforcement modes, through a real
Vallum server: a valid certificate, one from the wrong CA, a revoked one, and none.

The server defers client-certificate verification to the identity gate in the policy modes
(:func:`vallum.proxy.server.server_context`, :mod:`vallum.proxy.tls_deferred`), so, as in
Pomerium, an invalid certificate reaches the gate: 495 under ``policy_with_default_deny``, the
route's policy under ``policy``; ``reject_connection`` refuses the handshake. Where deferral is
unavailable an invalid certificate fails the handshake in every mode (closed, never open).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.login_env import World, route, world
from tests.integration.serve_process import serve
from tests.support.browser import Browser
from tests.support.certs import Leaf, TestCA
from tests.support.net import free_port
from vallum.core import config
from vallum.proxy import tls_deferred

MODES = ("policy_with_default_deny", "policy", "reject_connection")
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def client_ca() -> TestCA:
    return TestCA.create("Vallum Client CA")


async def _get(ca: TestCA, url: str, tmp: Path, cert: Leaf | None = None) -> Any:
    """The JSON page's status and body, or ``"refused: ..."`` when the handshake fails."""
    try:
        async with Browser(ca, client_cert=cert, tmp=tmp) as b:
            page = await b.get(url, headers=JSON, follow=False)
            return page.status, page.json()
    except (aiohttp.ClientError, OSError) as exc:
        return f"refused: {type(exc).__name__}", None


async def _status(ca: TestCA, url: str, tmp: Path, cert: Leaf | None = None) -> int | str:
    status: int | str = (await _get(ca, url, tmp, cert))[0]
    return status


def _routes(upstream_port: int) -> tuple[config.Route, ...]:
    return (
        route("public.example.test", upstream_port, allow_public_unauthenticated_access=True),
        route("app.example.test", upstream_port, policy=[{
            "allow": {"or": [{"accept": True}]},
            "deny": {"or": [{"invalid_client_certificate": True}]},
        }]),
    )


def _mtls(client_ca: TestCA, revoked: Leaf, mode: str) -> config.DownstreamMTLS:
    return config.DownstreamMTLS(
        ca_pem=client_ca.cert_pem, crl_pem=client_ca.crl_pem([revoked]),
        enforcement=mode,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("mode", MODES)
async def test_client_certificates_under_each_enforcement_mode(
    mode: str, test_ca: TestCA, client_ca: TestCA, tmp_path: Path
) -> None:
    assert tls_deferred.available(), "deferral self-check failed on this interpreter"
    valid = client_ca.issue("alice-laptop", client=True)
    revoked = client_ca.issue("stolen-laptop", client=True)
    stranger = TestCA.create("Some Other CA").issue("mallory", client=True)
    async with world(
        test_ca, tmp_path, downstream_mtls=_mtls(client_ca, revoked, mode), routes=_routes
    ) as w:
        public, guarded = w.url("public.example.test", "/"), w.url("app.example.test", "/")
        before = len(w.upstream.seen)

        assert await _status(test_ca, public, tmp_path, valid) == 200
        assert await _status(test_ca, guarded, tmp_path, valid) == 200
        reached = len(w.upstream.seen)
        assert reached == before + 2

        for bad, why in ((stranger, "not signed by a trusted"), (revoked, "revoked")):
            on_public = await _get(test_ca, public, tmp_path, bad)
            on_guarded = await _get(test_ca, guarded, tmp_path, bad)
            if mode == "reject_connection":
                assert str(on_public[0]).startswith("refused"), on_public
                assert str(on_guarded[0]).startswith("refused"), on_guarded
                continue
            # The route's policy denies an invalid certificate in both policy modes: 495.
            assert on_guarded[0] == 495, on_guarded
            assert why in on_guarded[1]["message"], on_guarded
            assert on_guarded[1]["error"] == "SSL Certificate Error"
            if mode == "policy_with_default_deny":  # the default deny covers every route
                assert on_public[0] == 495 and why in on_public[1]["message"], on_public
            else:  # under "policy", a public route's policy lets anyone in
                assert on_public[0] == 200, on_public
                reached += 1
        assert len(w.upstream.seen) == reached  # 495s are never forwarded

        none_public = await _status(test_ca, public, tmp_path)
        none_guarded = await _status(test_ca, guarded, tmp_path)
        if mode == "policy_with_default_deny":
            assert (none_public, none_guarded) == (495, 495)
        elif mode == "policy":
            assert (none_public, none_guarded) == (200, 495)  # the route's policy decides
        else:
            assert str(none_public).startswith("refused")
            assert str(none_guarded).startswith("refused")


@pytest.mark.parametrize("mode", ("policy_with_default_deny", "policy"))
async def test_without_deferral_an_invalid_certificate_fails_the_handshake(
    mode: str, test_ca: TestCA, client_ca: TestCA, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the ctypes self-check fails, the server still starts and fails closed."""
    monkeypatch.setattr(tls_deferred, "_openssl", lambda: None)
    valid = client_ca.issue("alice-laptop", client=True)
    revoked = client_ca.issue("stolen-laptop", client=True)
    stranger = TestCA.create("Some Other CA").issue("mallory", client=True)
    async with world(
        test_ca, tmp_path, downstream_mtls=_mtls(client_ca, revoked, mode), routes=_routes
    ) as w:
        w_: World = w
        public, guarded = w_.url("public.example.test", "/"), w_.url("app.example.test", "/")
        assert await _status(test_ca, guarded, tmp_path, valid) == 200
        for bad in (stranger, revoked):
            for url in (public, guarded):
                outcome = await _status(test_ca, url, tmp_path, bad)
                assert str(outcome).startswith("refused"), (url, outcome)


async def test_vallum_serve_answers_495_for_wrong_ca_and_revoked_certificates(
    test_ca: TestCA, client_ca: TestCA, tmp_path: Path
) -> None:
    """The real CLI process, configured from a file (ca_file, crl_file), defers verification."""
    valid = client_ca.issue("alice-laptop", client=True)
    revoked = client_ca.issue("stolen-laptop", client=True)
    stranger = TestCA.create("Some Other CA").issue("mallory", client=True)
    crl = tmp_path / "clients.crl"
    crl.write_text(client_ca.crl_pem([revoked]))
    cert_file, key_file = test_ca.issue("vallum", sans=["public.example.test"]).write(tmp_path)
    port = free_port()
    config_file = tmp_path / "vallum.yaml"
    config_file.write_text(json.dumps({
        "address": f"127.0.0.1:{port}",
        "certificates": [{"cert_file": str(cert_file), "key_file": str(key_file)}],
        "downstream_mtls": {"ca_file": str(client_ca.write(tmp_path, "client-ca")),
                            "crl_file": str(crl)},
        "routes": [{"from": "https://public.example.test", "to": "http://127.0.0.1:9",
                    "allow_public_unauthenticated_access": True}],
    }))
    url = f"https://public.example.test:{port}/"
    async with serve(config_file, port):
        assert await _status(test_ca, url, tmp_path, valid) == 502  # admitted; no upstream
        for bad, why in ((stranger, "not signed by a trusted"), (revoked, "revoked")):
            status, body = await _get(test_ca, url, tmp_path, bad)
            assert status == 495 and why in body["message"], (status, body)
        assert await _status(test_ca, url, tmp_path) == 495  # none presented
