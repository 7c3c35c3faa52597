"""What the verify tests share: assertions minted by Vallum's own code, forged ones made with
PyJWT/cryptography/hmac by hand, a real JWKS server and a real upstream app on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from tests.support.net import free_port
from vallum.core.config import Settings
from vallum.core.identity import Identity
from vallum.proxy import jwt as vjwt
from vallum.verify import check, sidecar

HOST = "app.example.test"
ALICE = Identity(user="alice", email="alice@example.test", groups=("staff",), session_id="s-1")


def minter(**settings: Any) -> vjwt.AssertionMinter:
    """Vallum's minter with a fresh signing key (``settings``: e.g. ``jwt_issuer_format``)."""
    pem = vjwt.private_key_pem(vjwt.generate_private_key())
    return vjwt.AssertionMinter(Settings(signing_key=(pem,), **settings))


def jwks(*minters: vjwt.AssertionMinter) -> dict[str, Any]:
    """The JWKS document publishing the keys of ``minters`` (as Vallum serves it)."""
    keys: list[Any] = []
    for m in minters:
        keys.extend(json.loads(m.jwks_json())["keys"])
    return {"keys": keys}


def mint(m: vjwt.AssertionMinter, host: str = HOST, now: float | None = None) -> str:
    """A fresh assertion from Vallum's minter (a new session each time: no cached token)."""
    who = dataclasses.replace(ALICE, session_id=str(uuid.uuid4()))
    return m.mint(who, host, time.time() if now is None else now)


def claims(host: str = HOST, **overrides: Any) -> dict[str, Any]:
    """A payload shaped like Vallum's, valid now unless ``overrides`` say otherwise."""
    now = int(time.time())
    base: dict[str, Any] = {"iss": host, "aud": host, "sub": "alice", "iat": now,
                            "exp": now + 300, "jti": "j-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(m: vjwt.AssertionMinter, payload: Mapping[str, Any], **header: Any) -> str:
    """``payload`` signed ES256 with ``m``'s real key (kid ``m.kid`` unless ``header`` says)."""
    private = m.keys[0].private
    assert private is not None
    return pyjwt.encode(dict(payload), private, algorithm="ES256",
                        headers={"kid": m.kid, "typ": "JWT", **header})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: Mapping[str, Any], kid: str) -> str:
    """A token with ``alg: none`` and an empty signature."""
    header = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(dict(payload)).encode())}."


def hs256_with_public_key(m: vjwt.AssertionMinter, payload: Mapping[str, Any]) -> str:
    """The classic confusion attack: HS256 whose HMAC key is the public key (PEM and JWK-ish)."""
    pem = m.keys[0].public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": m.kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(dict(payload)).encode())
    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


@dataclass
class JwksServer:
    """A real HTTP server publishing ``document`` at ``/jwks.json``; ``status`` != 200 to fail."""

    document: dict[str, Any]
    status: int = 200
    fetches: int = 0
    port: int = 0
    delay: float = 0.0
    raw: bytes | None = None
    """Served instead of ``document`` when set (garbage, oversized)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    async def handle(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response(self.document)


@contextlib.asynccontextmanager
async def jwks_server(document: dict[str, Any], status: int = 200) -> AsyncIterator[JwksServer]:
    server = JwksServer(document, status, port=free_port())
    app = web.Application()
    app.router.add_get("/jwks.json", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


@dataclass
class App:
    """The protected app: records every request that reaches it and echoes it back as JSON."""

    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
        }
        self.seen.append(record)
        if request.path == "/broken":  # promises 1000 bytes, sends 10, hangs up
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b"0123456789")
            assert request.transport is not None
            request.transport.close()
            return response
        if request.path == "/stream":
            response = web.StreamResponse(headers={"X-App": "yes"})
            await response.prepare(request)
            for i in range(5):
                await response.write(f"part {i}\n".encode())
            await response.write_eof()
            return response
        return web.json_response(record, headers={"X-App": "yes", "Connection": "close"})


@contextlib.asynccontextmanager
async def app_server() -> AsyncIterator[App]:
    app = App(port=free_port())
    web_app = web.Application(client_max_size=64 * 1024 * 1024)
    web_app.router.add_route("*", "/{tail:.*}", app.handle)
    runner = web.AppRunner(web_app, access_log=None, max_field_size=65536)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", app.port).start()
    try:
        yield app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def sidecar_running(
    verifier: Any, upstream: str, *, header: str | None = None, ssl_context: Any = None,
    port: int | None = None,
) -> AsyncIterator[int]:
    """``vallum.verify.sidecar.serve`` in this process (on ``port`` or a free one); yields the
    port."""
    port = port or free_port()
    options = sidecar.Options(upstream=upstream, header=header or check.DEFAULT_HEADER)
    stop = asyncio.Event()
    task = asyncio.create_task(
        sidecar.serve(verifier, options, "127.0.0.1", port, ssl_context=ssl_context, stop=stop)
    )
    try:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            break
        yield port
    finally:
        stop.set()
        await task
