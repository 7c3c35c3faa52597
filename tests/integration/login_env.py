"""A whole sign-in world on 127.0.0.1: the test OpenID provider, a real Vallum server with the
identity gate (in this process: :func:`world`; or the real ``vallum serve`` from a YAML file:
:func:`served_with_provider`), and an upstream that verifies the assertion like an app would.

The upstream fetches Vallum's JWKS over HTTPS from the route host (through Vallum, trusting the
test CA) and verifies ``X-Vallum-Jwt-Assertion`` with PyJWT (ES256, audience and issuer = the
route host); it answers with what it verified and the identity headers it received.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from tests.integration.serve_process import Served, serve
from tests.support import oidc as oidc_support
from tests.support.browser import LoopbackResolver
from tests.support.certs import TestCA
from tests.support.net import free_port
from vallum.core import config, routing
from vallum.proxy import jwt as vjwt
from vallum.proxy import server
from vallum.proxy.identity import build_gate

COOKIE_SECRET = "dmFsbHVtLXRlc3QtY29va2llLXNlY3JldC0zMmJ5dGVzISE="
HOSTS = ("auth.example.test", "app.example.test", "admin.example.test", "public.example.test",
         "api.example.test", "chain.example.test", "app.other.test")


@dataclass
class Upstream:
    """Records what arrived and verifies the assertion against the route host's JWKS."""

    port: int
    ca: TestCA
    spki: str = ""
    vallum_port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    jwks_fetches: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        host = request.headers.get("X-Forwarded-Host", "").split(":")[0]
        token = request.headers.get("X-Vallum-Jwt-Assertion")
        verified: dict[str, Any] | None = None
        error = None
        if token:
            try:
                verified = await self.verify(token, host)
            except jwt.PyJWTError as exc:
                error = str(exc)
        record = {
            "path": request.path_qs,
            "host": host,
            "verified": verified,
            "error": error,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
        self.seen.append(record)
        return web.json_response(record)

    async def verify(self, token: str, host: str) -> dict[str, Any]:
        context = ssl.create_default_context(cadata=self.ca.cert_pem)
        url = f"https://{host}:{self.vallum_port}/.well-known/vallum/jwks.json"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver())
        ) as session, session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            jwks = await resp.json()
        self.jwks_fetches += 1
        kid = jwt.get_unverified_header(token)["kid"]
        key = jwt.PyJWKSet.from_dict(jwks)[kid]
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=["ES256"], audience=host, issuer=host
        )
        return claims


def route(host: str, upstream_port: int, **options: Any) -> config.Route:
    url = f"http://127.0.0.1:{upstream_port}"
    return config.Route(
        from_url=f"https://{host}", host=config.Host(host),
        to=(config.Upstream(url=url, scheme="http", host="127.0.0.1", port=upstream_port),),
        name=host.split(".")[0], **options,
    )


@dataclass
class World:
    provider: oidc_support.Provider
    upstream: Upstream
    vallum: server.Server
    port: int
    ca: TestCA
    spki: str = ""

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"


def default_routes(upstream_port: int) -> tuple[config.Route, ...]:
    return (
        route("app.example.test", upstream_port, allow_any_authenticated_user=True),
        route("admin.example.test", upstream_port, policy=[{"allow": {"or": [
            {"groups": {"has": "admins"}}]}}]),
        route("public.example.test", upstream_port, allow_public_unauthenticated_access=True),
        route("api.example.test", upstream_port, allow_any_authenticated_user=True),
        route("chain.example.test", upstream_port, allow_any_authenticated_user=True),
        route("app.other.test", upstream_port, allow_any_authenticated_user=True),
    )


@contextlib.asynccontextmanager
async def world(
    ca: TestCA, folder: Path, *, ttl: dict[str, int] | None = None,
    routes: Callable[[int], Sequence[config.Route]] | None = None,
    rotate_refresh_tokens: bool = False, **settings: Any,
) -> AsyncIterator[World]:
    vport = free_port()
    callback = f"https://auth.example.test:{vport}/.vallum/callback"
    logouts = [f"https://{h}:{vport}/" for h in HOSTS]
    async with oidc_support.start_provider(
        ca, folder, redirect_uris=[callback], post_logout_redirect_uris=logouts, ttl=ttl,
        rotate_refresh_tokens=rotate_refresh_tokens,
    ) as provider:
        up = Upstream(port=free_port(), ca=ca, vallum_port=vport)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", up.handle)
        # Group-heavy assertions exceed aiohttp's 8 KB header default; apps raise it (or set
        # jwt_groups_filter in Vallum).
        runner = web.AppRunner(app, access_log=None, max_field_size=65536, max_line_size=65536)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", up.port).start()
        leaf = ca.issue("vallum", sans=[*HOSTS, "127.0.0.1"])
        values: dict[str, Any] = {
            "address": f"127.0.0.1:{vport}",
            "certificates": (config.Certificate(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem),),
            "authenticate_service_url": f"https://auth.example.test:{vport}",
            "cookie_secret": COOKIE_SECRET,
            "signing_key": (vjwt.private_key_pem(vjwt.generate_private_key()),),
            "pass_identity_headers": True,
            "pomerium_compatibility": True,
            "jwt_claims_headers": (("x-pomerium-claim-email", "email"),),
            "routes": tuple((routes or default_routes)(up.port)),
            **provider.settings(),
            **settings,
        }
        table = routing.build_table(config.Settings(**values))
        gate = build_gate(table.settings)
        vallum = server.Server(table, gate=gate, admin=False)
        await vallum.start()
        try:
            yield World(provider, up, vallum, vport, ca, oidc_support.spki_pin(leaf.cert))
        finally:
            await vallum.close(drain=0.5)
            await gate.close()
            await runner.cleanup()


# --- the real ``vallum serve`` ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def upstream(ca: TestCA, vallum_port: int) -> AsyncIterator[Upstream]:
    up = Upstream(port=free_port(), ca=ca, vallum_port=vallum_port)
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
    cert_file, key_file = ca.issue("vallum", sans=[*HOSTS, "127.0.0.1"]).write(folder, "vallum")
    key = folder / "signing_key.pem"
    key.write_text(vjwt.private_key_pem(vjwt.generate_private_key()))
    secret = folder / "idp_client_secret"
    secret.write_text(provider.client_secret)
    to = f"http://127.0.0.1:{upstream_port}"
    config_file = folder / "vallum.yaml"
    # JSON is YAML: the values are quoted exactly, whatever characters they hold.
    config_file.write_text(json.dumps({
        "address": f"127.0.0.1:{port}",
        "certificates": [{"cert_file": str(cert_file), "key_file": str(key_file)}],
        "authenticate_service_url": f"https://auth.example.test:{port}",
        "idp_provider": "oidc",
        "idp_provider_url": provider.issuer,
        "idp_client_id": provider.client_id,
        "idp_client_secret_file": str(secret),
        "certificate_authority_file": str(ca.write(folder, "test-ca")),
        "cookie_secret": COOKIE_SECRET,
        "signing_key_file": str(key),
        "pass_identity_headers": True,
        "routes": [
            {"from": "https://app.example.test", "to": to, "allow_any_authenticated_user": True},
            {"from": "https://admin.example.test", "to": to,
             "policy": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}]},
            {"from": "https://public.example.test", "to": to,
             "allow_public_unauthenticated_access": True},
            {"from": "https://app.other.test", "to": to, "allow_any_authenticated_user": True},
        ],
    }))
    return config_file


@contextlib.asynccontextmanager
async def served_with_provider(
    ca: TestCA, folder: Path, *serve_args: str, ttl: dict[str, int] | None = None,
    rotate_refresh_tokens: bool = False, **extra: object,
) -> AsyncIterator[tuple[int, Upstream, Served]]:
    """The test provider, a verifying upstream and ``vallum serve`` (with ``serve_args``, e.g.
    ``--workers 2``) from a YAML config (with ``extra`` top-level settings); yields (Vallum's
    port, the upstream, the served process)."""
    port = free_port()
    callback = f"https://auth.example.test:{port}/.vallum/callback"
    logouts = [f"https://{h}:{port}/" for h in HOSTS]
    async with oidc_support.start_provider(
        ca, folder, redirect_uris=[callback], post_logout_redirect_uris=logouts, ttl=ttl,
        rotate_refresh_tokens=rotate_refresh_tokens,
    ) as provider, upstream(ca, port) as up:
        config_file = write_config(folder, ca, port, provider, up.port)
        if extra:
            config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **extra}))
        async with serve(config_file, port, *serve_args) as served:
            yield port, up, served
