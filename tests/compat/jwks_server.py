"""A real HTTPS server on 127.0.0.1 that publishes an ``AssertionMinter``'s JWKS.

Why this exists: the compatibility tests must fetch the JWKS the way upstream apps do, over real
TLS from the route host name, before the proxy itself serves it. It serves the minter's bytes at
both ``/.well-known/vallum/jwks.json`` and ``/.well-known/pomerium/jwks.json`` (what
``pomerium_compatibility`` publishes) and runs in a thread of its own, so tests can call the
verifier processes synchronously.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.support.certs import TestCA
from tests.support.net import free_port

JWKS_PATHS = ("/.well-known/vallum/jwks.json", "/.well-known/pomerium/jwks.json")


@dataclass(frozen=True)
class JWKSServer:
    host: str
    port: int
    ca_file: Path

    def url(self, path: str = JWKS_PATHS[0]) -> str:
        return f"https://{self.host}:{self.port}{path}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def serve_jwks(jwks: bytes, ca: TestCA, host: str, folder: Path) -> Iterator[JWKSServer]:
    """Serve ``jwks`` over HTTPS for ``host`` on a free loopback port until the block ends."""
    leaf = ca.issue(host, sans=[host, "127.0.0.1"])
    cert_file, key_file = leaf.write(folder, stem="jwks-server")
    ca_file = ca.write(folder, stem="jwks-ca")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    port = free_port()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=jwks, content_type="application/json")

    app = web.Application()
    for path in JWKS_PATHS:
        app.router.add_get(path, handle)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("JWKS server did not start")
    try:
        yield JWKSServer(host, port, ca_file)
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
