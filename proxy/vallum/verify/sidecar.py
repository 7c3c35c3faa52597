"""The ``vallum verify`` sidecar: a reverse proxy that forwards only requests whose assertion
verifies.

Why this module exists: many apps cannot check a JWT themselves. Put this in front of such an app
(same pod, the app listening on localhost only): every request is checked with the same code as
:mod:`vallum.verify` and either refused (401; 503 while no keys could be loaded: closed) or
forwarded unchanged except for hop-by-hop headers, bodies streamed both ways. The assertion
header goes on to the app so it can read the claims. The other assertion header (Pomerium's or
Vallum's) goes on only when it holds the very token that was verified; otherwise it is removed, so
the app cannot be fooled by reading the wrong one.

Not supported: protocol upgrades (WebSocket) -- the ``Upgrade`` header is hop-by-hop and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import vallum.verify as api
from vallum.verify import check as check_mod
from vallum.verify import middleware

log = logging.getLogger("vallum.verify")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
CHUNK = 64 * 1024
MAX_HEADER_FIELD = 64 * 1024
_SESSION = web.AppKey("session", aiohttp.ClientSession)


@dataclass(frozen=True, slots=True)
class Options:
    """Everything the sidecar needs besides its :class:`~vallum.verify.Verifier` (which holds
    the keys, audience, issuer and leeway)."""

    upstream: str
    header: str = check_mod.DEFAULT_HEADER
    connect_timeout: float = 10.0


def make_app(verifier: api.Verifier, options: Options) -> web.Application:
    """The sidecar as an aiohttp application (run it with :func:`serve` or any aiohttp runner)."""
    upstream = upstream_url(options.upstream)
    other_headers = tuple(
        h for h in (check_mod.DEFAULT_HEADER, check_mod.POMERIUM_HEADER)
        if h.lower() != options.header.lower()
    )
    base = str(upstream.origin()) + upstream.raw_path.rstrip("/")
    app = web.Application(client_max_size=0)

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=options.connect_timeout)
        app[_SESSION] = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            max_field_size=MAX_HEADER_FIELD, max_line_size=MAX_HEADER_FIELD,
        )
        yield
        await app[_SESSION].close()

    app.cleanup_ctx.append(client_session)

    async def handle(request: web.Request) -> web.StreamResponse:
        status, reason, _claims = await middleware.judge(
            verifier, request.headers.getall(options.header, [])
        )
        if status != 200:
            return middleware.refusal(status, reason)
        token = request.headers[options.header].strip(" \t")
        headers = forward_headers(request.headers, other_headers, token)
        target = URL(base + request.rel_url.raw_path_qs, encoded=True)
        body = request.content.iter_chunked(CHUNK) if request.body_exists else None
        response: web.StreamResponse | None = None
        try:
            async with request.app[_SESSION].request(
                request.method, target, headers=headers, data=body, allow_redirects=False,
                compress=None, skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            ) as upstream_response:
                response = web.StreamResponse(
                    status=upstream_response.status, reason=upstream_response.reason,
                    headers=response_headers(upstream_response.headers),
                )
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("upstream %s: %s", options.upstream, exc or type(exc).__name__)
            if response is not None and response.prepared:
                # Cut off mid-body: the client must not take a truncated body for a whole one.
                if request.transport is not None:
                    request.transport.close()
                return response
            return web.Response(status=502, text="upstream unavailable\n")

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def upstream_url(value: str) -> URL:
    """The app's URL; :class:`ValueError` unless it is ``http(s)://HOST[:PORT][/prefix]``."""
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ValueError(f"--upstream {value!r}: expected http://HOST:PORT")
    return url


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    named: set[str] = set()
    for value in headers.getall("Connection", []):
        named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def forward_headers(
    headers: CIMultiDictProxy[str], other_assertion_headers: Iterable[str], token: str
) -> CIMultiDict[str]:
    """The request headers for the app: hop-by-hop ones (and those ``Connection`` names) removed,
    another assertion header kept only when it carries the verified ``token``."""
    # Expect: 100-continue was answered by this server already (aiohttp does when the body is
    # read); passing it on would make the app answer it a second time.
    drop = HOP_BY_HOP | _connection_tokens(headers) | {"expect"}
    out: CIMultiDict[str] = CIMultiDict()
    others = {h.lower() for h in other_assertion_headers}
    for name, value in headers.items():
        lower = name.lower()
        if lower in drop:
            continue
        if lower in others and value.strip(" \t") != token:
            continue
        out.add(name, value)
    return out


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The app's response headers without hop-by-hop ones (aiohttp frames the body itself)."""
    drop = HOP_BY_HOP | _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


async def serve(
    verifier: api.Verifier,
    options: Options,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the sidecar on ``host:port`` until ``stop`` is set (or the task is cancelled)."""
    runner = web.AppRunner(
        make_app(verifier, options), access_log=None, handler_cancellation=True,
        max_field_size=MAX_HEADER_FIELD, max_line_size=MAX_HEADER_FIELD,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        log.info("vallum verify listening on %s:%d, forwarding to %s", host, port,
                 options.upstream)
        keys = verifier.keys
        if isinstance(keys, api.JwksCache):
            with contextlib.suppress(api.KeysUnavailable):
                await keys.refresh()  # load early; requests retry if this failed
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
