"""End to end: a user signs in through the real ``vallum serve`` process, whose route points at
the sidecar, which fetches Vallum's JWKS over HTTPS from the route host and forwards to the app.
The app gets the request only through Vallum: the same sidecar refuses a direct caller."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

import vallum.verify as api
from tests.integration.login_env import served_with_provider
from tests.support.browser import Browser, LoopbackResolver
from tests.support.certs import TestCA
from tests.support.net import free_port
from tests.verify import world

HOST = "app.example.test"


async def test_vallum_serve_then_the_sidecar_then_the_app(
    test_ca: TestCA, tmp_path: Path
) -> None:
    sidecar_port = free_port()
    to = f"http://127.0.0.1:{sidecar_port}"
    routes = [{"from": f"https://{HOST}", "to": to, "allow_any_authenticated_user": True}]
    async with world.app_server() as app, served_with_provider(
        test_ca, tmp_path, routes=routes
    ) as (port, _up, _served):
        context = ssl.create_default_context(cadata=test_ca.cert_pem)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver())
        )
        cache = api.JwksCache(
            f"https://{HOST}:{port}/.well-known/vallum/jwks.json", session=session
        )
        verifier = api.Verifier(cache, HOST)
        try:
            async with world.sidecar_running(verifier, app.url, port=sidecar_port), \
                    Browser(test_ca) as browser:
                page = await browser.sign_in(f"https://{HOST}:{port}/hello?x=1", "alice")
                assert page.status == 200, page.text
                record = page.json()
                assert record["path"] == "/hello?x=1"
                tokens = [v for k, v in record["headers"] if k.lower() == "x-vallum-jwt-assertion"]
                assert len(tokens) == 1
                assert cache.fetches >= 1  # the sidecar loaded Vallum's JWKS to verify it
                claims = api.verify(tokens[0], await cache.refresh(), HOST)
                assert claims["sub"] == "alice" and claims["email"] == "alice@example.test"
                async with aiohttp.ClientSession() as direct, direct.get(
                    f"http://127.0.0.1:{sidecar_port}/hello"
                ) as response:
                    assert response.status == 401  # straight to the sidecar: no assertion
                assert len(app.seen) == 1
        finally:
            await cache.close()
            await session.close()
