"""The aiohttp middleware (in a real aiohttp server) and the ASGI middleware (driven through the
ASGI interface itself: no ASGI server is installed here): valid assertions reach the handler with
their claims, refused ones get 401 and never do, no keys gives 503."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

import vallum.verify as api
from tests.support.net import free_port
from tests.verify import world
from vallum.verify import middleware

HOST = world.HOST


@contextlib.asynccontextmanager
async def aiohttp_app(verifier: api.Verifier) -> AsyncIterator[tuple[int, list[Any]]]:
    reached: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        reached.append(request[middleware.CLAIMS])
        return web.json_response(request[middleware.CLAIMS])

    app = web.Application(middlewares=[middleware.aiohttp_middleware(verifier)])
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, reached
    finally:
        await runner.cleanup()


async def get(port: int, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/", headers=headers
    ) as response:
        return response.status, await response.text()


async def test_aiohttp_middleware_passes_claims_and_refuses_the_rest() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as jwks:
        cache = api.JwksCache(jwks.url)
        try:
            async with aiohttp_app(api.Verifier(cache, HOST)) as (port, reached):
                status, text = await get(port, {api.DEFAULT_HEADER: world.mint(signer)})
                assert status == 200 and json.loads(text)["sub"] == "alice"
                other = world.mint(signer, host="other.example.test")
                assert await get(port, {api.DEFAULT_HEADER: other}) == (401, "wrong audience\n")
                assert await get(port, {}) == (401, "missing assertion\n")
                assert len(reached) == 1
        finally:
            await cache.close()


async def test_aiohttp_middleware_is_closed_without_keys() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer), status=500) as jwks:
        cache = api.JwksCache(jwks.url)
        try:
            async with aiohttp_app(api.Verifier(cache, HOST)) as (port, reached):
                status, _ = await get(port, {api.DEFAULT_HEADER: world.mint(signer)})
                assert status == 503 and reached == []
        finally:
            await cache.close()


async def call_asgi(
    app: Any, scope_type: str, headers: list[tuple[bytes, bytes]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drive one connection through the ASGI interface; returns (messages sent, scopes seen)."""
    sent: list[dict[str, Any]] = []
    scopes: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": scope_type, "path": "/", "headers": headers}
    await app(inner)(scope, receive, send)
    return sent, scopes


async def test_asgi_middleware_passes_claims_and_refuses_the_rest() -> None:
    signer = world.minter()
    verifier = api.Verifier(api.KeySet.from_jwks(world.jwks(signer)), HOST)

    def wrap(inner: Any) -> Any:
        return middleware.AsgiMiddleware(inner, verifier)

    name = api.DEFAULT_HEADER.lower().encode()
    sent, scopes = await call_asgi(wrap, "http", [(name, world.mint(signer).encode())])
    assert sent[0]["status"] == 200 and scopes[0][middleware.CLAIMS_KEY]["sub"] == "alice"

    forged = world.hs256_with_public_key(signer, world.claims())
    sent, scopes = await call_asgi(wrap, "http", [(name, forged.encode())])
    assert sent[0]["status"] == 401 and sent[1]["body"] == b"unsupported algorithm\n"
    assert scopes == []

    token = world.mint(signer).encode()
    sent, scopes = await call_asgi(wrap, "http", [(name, token), (name, token)])
    assert sent[0]["status"] == 401 and scopes == []

    sent, scopes = await call_asgi(wrap, "websocket", [])
    assert sent == [{"type": "websocket.close", "code": 1008}] and scopes == []
