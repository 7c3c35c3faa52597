"""Shared pieces for the data-plane tests: real upstreams, a proxy listener, a raw client.

Everything is real: aiohttp upstreams on 127.0.0.1, the HTTP/1.1 protocol of
:mod:`vallum.proxy.http1` on a free port, sockets speaking bytes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vallum.core import config, routing
from vallum.core.request import RequestInfo
from vallum.proxy import exchange, http1, pipeline, upstream, upstream_tls


def route(
    host: str,
    *urls: str,
    weights: tuple[int, ...] = (),
    public: bool = True,
    **options: Any,
) -> config.Route:
    """A route from ``http(s)://host`` to ``urls`` (weights optional)."""
    ups = []
    for position, url in enumerate(urls):
        scheme, rest = url.split("://", 1)
        netloc, slash, path = rest.partition("/")
        name, _, port = netloc.rpartition(":")
        ups.append(
            config.Upstream(
                url=url,
                scheme=scheme,  # type: ignore[arg-type]
                host=name,
                port=int(port),
                path=slash + path if slash else "",
                weight=weights[position] if weights else 1,
            )
        )
    return config.Route(
        from_url=f"https://{host}",
        host=config.Host(host),
        to=tuple(ups),
        allow_public_unauthenticated_access=public,
        **options,
    )


class PublicOnlyGate:
    """A minimal gate for data-plane tests: public routes pass, every other route gets 403.

    (Production always runs the identity gate; this keeps data-plane tests free of sign-in.)
    """

    async def intercept(
        self, req: RequestInfo, table: config.RouteTable
    ) -> pipeline.Respond | None:
        return None

    async def authorize(
        self, req: RequestInfo, match: routing.Match, table: config.RouteTable
    ) -> pipeline.Allow | pipeline.Respond:
        if match.route.allow_public_unauthenticated_access:
            return pipeline.ALLOW
        return pipeline.error(req, 403, "This route requires sign-in (not in this test).")

    def strip_request_headers(self) -> frozenset[str]:
        return pipeline.IDENTITY_HEADERS


def table(*routes: config.Route, **settings: Any) -> config.RouteTable:
    return routing.build_table(config.Settings(routes=routes, **settings))


class Holder:
    def __init__(self, current: config.RouteTable) -> None:
        self.current = current


@dataclass
class Recorder:
    """An :class:`http1.Observer` keeping every finished exchange's summary."""

    done: list[dict[str, Any]] = field(default_factory=list)

    def finished(self, ex: exchange.Exchange) -> None:
        self.done.append(
            {
                "status": ex.status,
                "route": ex.route_name,
                "request_id": ex.request_id,
                "bytes": ex.sent,
                "upstream": ex.upstream_url,
                "client_ip": ex.req.client_ip if ex.req is not None else "",
            }
        )


@dataclass
class Proxy:
    port: int
    ctx: http1.Context
    holder: Holder
    recorder: Recorder


@asynccontextmanager
async def serve(
    tbl: config.RouteTable,
    *,
    ssl_context: ssl.SSLContext | None = None,
    gate: pipeline.Gate | None = None,
) -> AsyncIterator[Proxy]:
    """Run the proxy's HTTP/1.1 protocol on a free port of 127.0.0.1."""
    holder = Holder(tbl)
    recorder = Recorder()
    pool = upstream.Pool(upstream_tls.UpstreamTLS(tbl.settings.certificate_authority_pem))
    ctx = http1.Context(
        holder,
        gate or PublicOnlyGate(),
        pool,
        scheme="https" if ssl_context else "http",
        observer=recorder,
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ctx.protocol, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Proxy(port, ctx, holder, recorder)
    finally:
        server.close()
        ctx.close()
        pool.close()
        await server.wait_closed()


@asynccontextmanager
async def upstream_app(
    app: web.Application, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run ``app`` on a free port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def echo_app(name: str = "up") -> web.Application:
    """An upstream that echoes what it received as JSON (method, path, query, headers, body)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response(
            {
                "name": name,
                "method": request.method,
                "path": request.raw_path.split("?")[0],
                "query": request.query_string,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "header_list": [[k.lower(), v] for k, v in request.headers.items()],
                "body": body.decode("latin-1"),
                "peer": request.transport.get_extra_info("peername")[1]
                if request.transport
                else None,
            },
            headers={"X-Upstream": name, "Connection-Token": "x", "Keep-Alive": "timeout=5"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def raw_request(
    port: int, data: bytes, *, read_until_close: bool = True, timeout: float = 5.0
) -> bytes:
    """Send raw bytes, return everything the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        if read_until_close:
            return await asyncio.wait_for(reader.read(-1), timeout)
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


class RawClient:
    """A keep-alive client speaking HTTP/1.1 bytes over one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context, server_hostname="app.test" if ssl_context else None
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """Read one response (Content-Length or chunked framing)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()


def get(path: str = "/", host: str = "app.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


Handler = Callable[[web.Request], Any]
