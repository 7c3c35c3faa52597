"""Middlewares that let only requests with a valid assertion reach an app: aiohttp and ASGI.

Why this module exists: most apps should not call :func:`vallum.verify.verify` by hand in every
handler; a middleware checks every request before any handler runs, answers ``401`` (``503``
while no keys could be loaded) and hands the verified claims to the app:
``request[middleware.CLAIMS]`` in aiohttp, ``scope["vallum_claims"]`` in ASGI (Starlette:
``request.scope["vallum_claims"]``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

import vallum.verify as api
from vallum.verify import check as check_mod
from vallum.verify import keys as keys_mod

log = logging.getLogger("vallum.verify")

CLAIMS_KEY = "vallum_claims"
CLAIMS: Any = (
    web.RequestKey(CLAIMS_KEY, dict) if hasattr(web, "RequestKey") else CLAIMS_KEY
)
"""aiohttp: ``request[CLAIMS]`` holds the verified claims (a ``RequestKey`` on aiohttp >= 3.14)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def judge(verifier: api.Verifier, values: list[str]) -> tuple[int, str, dict[str, Any]]:
    """(status, reason, claims) for a request whose assertion header has ``values``:
    (200, "", claims) when it verifies, else 401 (or 503 without keys) and a short reason."""
    try:
        return 200, "", await verifier.verify_values(values)
    except check_mod.VerificationError as exc:
        log.info("assertion refused: %s", exc.detail)
        return 401, exc.reason, {}
    except keys_mod.KeysUnavailable as exc:
        log.warning("assertion not checked: %s", exc)
        return 503, "verification keys unavailable", {}


def refusal(status: int, reason: str) -> web.Response:
    """The aiohttp answer to a refused request: plain text, never cached."""
    response = web.Response(status=status, text=f"{reason}\n")
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="vallum"'
    return response


def aiohttp_middleware(
    verifier: api.Verifier, header: str = check_mod.DEFAULT_HEADER
) -> Any:
    """An aiohttp middleware: ``web.Application(middlewares=[aiohttp_middleware(v)])``."""

    @web.middleware
    async def vallum_verify(request: web.Request, handler: Handler) -> web.StreamResponse:
        status, reason, claims = await judge(verifier, request.headers.getall(header, []))
        if status != 200:
            return refusal(status, reason)
        request[CLAIMS] = claims
        return await handler(request)

    return vallum_verify


class AsgiMiddleware:
    """An ASGI middleware: ``app = AsgiMiddleware(app, verifier)``. HTTP requests that fail get
    401/503 without reaching ``app``; WebSocket handshakes that fail are closed (HTTP 403)."""

    def __init__(
        self, app: AsgiApp, verifier: api.Verifier, header: str = check_mod.DEFAULT_HEADER
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [
            value.decode("latin-1") for name, value in scope.get("headers", ())
            if name.lower() == self.header
        ]
        status, reason, claims = await judge(self.verifier, values)
        if status == 200:
            scope[CLAIMS_KEY] = claims
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            body = f"{reason}\n".encode()
            headers = [(b"content-type", b"text/plain; charset=utf-8"),
                       (b"content-length", str(len(body)).encode()),
                       (b"cache-control", b"no-store")]
            if status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="vallum"'))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
