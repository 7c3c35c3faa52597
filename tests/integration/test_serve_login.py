"""Sign-in through the real ``vallum serve`` process: the CLI wires the identity gate.

A YAML config file (the user's form, no Python objects) points the child process at the test
OpenID provider; a scripted browser signs in as alice; the upstream verifies the identity
assertion with PyJWT against the JWKS it fetches over HTTPS from the route host, through Vallum.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from tests.integration import login_env
from tests.integration.serve_process import Served, serve
from tests.support import oidc as oidc_support
from tests.support.browser import Browser
from tests.support.certs import TestCA
from tests.support.net import free_port
from vallum.proxy import jwt as vjwt


@contextlib.asynccontextmanager
async def upstream(ca: TestCA, vallum_port: int) -> AsyncIterator[login_env.Upstream]:
    up = login_env.Upstream(port=free_port(), ca=ca, vallum_port=vallum_port)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", up.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", up.port).start()
    try:
        yield up
    finally:
        await runner.cleanup()


def write_config(
    folder: Path, ca: TestCA, port: int, provider: oidc_support.Provider, upstream_port: int
) -> Path:
    cert_file, key_file = ca.issue("vallum", sans=[*login_env.HOSTS, "127.0.0.1"]).write(
        folder, "vallum"
    )
    key = folder / "signing_key.pem"
    key.write_text(vjwt.private_key_pem(vjwt.generate_private_key()))
    secret = folder / "idp_client_secret"
    secret.write_text(provider.client_secret)
    to = f"http://127.0.0.1:{upstream_port}"
    config = folder / "vallum.yaml"
    # JSON is YAML: the values are quoted exactly, whatever characters they hold.
    config.write_text(json.dumps({
        "address": f"127.0.0.1:{port}",
        "certificates": [{"cert_file": str(cert_file), "key_file": str(key_file)}],
        "authenticate_service_url": f"https://auth.example.test:{port}",
        "idp_provider": "oidc",
        "idp_provider_url": provider.issuer,
        "idp_client_id": provider.client_id,
        "idp_client_secret_file": str(secret),
        "certificate_authority_file": str(ca.write(folder, "test-ca")),
        "cookie_secret": login_env.COOKIE_SECRET,
        "signing_key_file": str(key),
        "pass_identity_headers": True,
        "routes": [
            {"from": "https://app.example.test", "to": to, "allow_any_authenticated_user": True},
            {"from": "https://admin.example.test", "to": to,
             "policy": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}]},
            {"from": "https://public.example.test", "to": to,
             "allow_public_unauthenticated_access": True},
        ],
    }))
    return config


@contextlib.asynccontextmanager
async def served_with_provider(
    ca: TestCA, folder: Path, **extra: object
) -> AsyncIterator[tuple[int, login_env.Upstream, Served]]:
    """The test provider, a verifying upstream and ``vallum serve`` from a YAML config (with
    ``extra`` top-level settings); yields (Vallum's port, the upstream, the served process)."""
    port = free_port()
    callback = f"https://auth.example.test:{port}/.vallum/callback"
    async with oidc_support.start_provider(
        ca, folder, redirect_uris=[callback]
    ) as provider, upstream(ca, port) as up:
        config_file = write_config(folder, ca, port, provider, up.port)
        if extra:
            config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **extra}))
        async with serve(config_file, port) as served:
            yield port, up, served


async def test_sign_in_through_vallum_serve_reaches_an_upstream_that_verifies_it(
    test_ca: TestCA, tmp_path: Path
) -> None:
    async with served_with_provider(test_ca, tmp_path) as (port, up, served):
        url = f"https://app.example.test:{port}/hello?x=1"
        async with Browser(test_ca) as anonymous:
            page = await anonymous.get(url, headers={"Accept": "application/json"})
            assert page.status == 401, page.text  # an API client is not redirected
            public = await anonymous.get(f"https://public.example.test:{port}/p")
            assert public.status == 200 and public.json()["verified"] is None
        async with Browser(test_ca) as b:
            page = await b.sign_in(url, "alice")
            assert page.status == 200, page.text
            assert page.url == url
            seen = page.json()
            assert seen["error"] is None, seen["error"]
            claims = seen["verified"]
            assert claims["sub"] == "alice" and claims["email"] == "alice@example.test"
            assert claims["aud"] == "app.example.test"
            assert up.jwks_fetches >= 1  # fetched over HTTPS from the route host
            admin = await b.get(f"https://admin.example.test:{port}/")
            assert admin.status == 200 and admin.json()["verified"]["sub"] == "alice"
        async with Browser(test_ca) as bob:
            denied = await bob.sign_in(f"https://admin.example.test:{port}/", "bob")
            assert denied.status == 403, denied.text
    assert b"alice" in served.stdout  # the access log names the user
