"""Client certificates (downstream mTLS) under each of Pomerium's enforcement modes, through a real
Vallum server: a valid certificate, one from the wrong CA, a revoked one, and none.

What Python's ``ssl`` allows (see :mod:`vallum.proxy.tls`): a presented certificate that fails
verification ends the handshake in every mode, so "wrong CA" and "revoked" never reach the
upstream - the client sees the TLS connection refused rather than Pomerium's 495 page. A missing
certificate reaches the gate: 495 under ``policy_with_default_deny``, the route's policy under
``policy``, and a refused handshake under ``reject_connection``.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.integration.login_env import route, world
from tests.support.browser import Browser
from tests.support.certs import TestCA
from vallum.core import config

MODES = ("policy_with_default_deny", "policy", "reject_connection")
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def client_ca() -> TestCA:
    return TestCA.create("Vallum Client CA")


async def _status(ca: TestCA, url: str, tmp: Path, cert: object = None) -> int | str:
    try:
        async with Browser(ca, client_cert=cert, tmp=tmp) as b:  # type: ignore[arg-type]
            return (await b.get(url, headers=JSON, follow=False)).status
    except (aiohttp.ClientError, OSError) as exc:
        return f"refused: {type(exc).__name__}"


@pytest.mark.parametrize("mode", MODES)
async def test_client_certificates_under_each_enforcement_mode(
    mode: str, test_ca: TestCA, client_ca: TestCA, tmp_path: Path
) -> None:
    valid = client_ca.issue("alice-laptop", client=True)
    revoked = client_ca.issue("stolen-laptop", client=True)
    stranger = TestCA.create("Some Other CA").issue("mallory", client=True)
    mtls = config.DownstreamMTLS(
        ca_pem=client_ca.cert_pem, crl_pem=client_ca.crl_pem([revoked]),
        enforcement=mode,  # type: ignore[arg-type]
    )

    def routes(upstream_port: int) -> tuple[config.Route, ...]:
        return (
            route("public.example.test", upstream_port, allow_public_unauthenticated_access=True),
            route("app.example.test", upstream_port, policy=[{
                "allow": {"or": [{"accept": True}]},
                "deny": {"or": [{"invalid_client_certificate": True}]},
            }]),
        )
    async with world(test_ca, tmp_path, downstream_mtls=mtls, routes=routes) as w:
        public, guarded = w.url("public.example.test", "/"), w.url("app.example.test", "/")
        before = len(w.upstream.seen)

        assert await _status(test_ca, public, tmp_path, valid) == 200
        assert await _status(test_ca, guarded, tmp_path, valid) == 200
        reached = len(w.upstream.seen)
        assert reached == before + 2

        for bad in (stranger, revoked):
            outcome = await _status(test_ca, public, tmp_path, bad)
            assert outcome == 495 or str(outcome).startswith("refused"), outcome
        assert len(w.upstream.seen) == reached  # never forwarded

        none_public = await _status(test_ca, public, tmp_path)
        none_guarded = await _status(test_ca, guarded, tmp_path)
        if mode == "policy_with_default_deny":
            assert (none_public, none_guarded) == (495, 495)
        elif mode == "policy":
            assert (none_public, none_guarded) == (200, 495)  # the route's policy decides
        else:
            assert str(none_public).startswith("refused")
            assert str(none_guarded).startswith("refused")
