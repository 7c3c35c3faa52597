"""A recording upstream for attack tests: every TCP read logged raw, every request parsed by
llhttp itself and answered with a small response that names it.

Why not aiohttp or another framework: a framework parses a smuggled second request as a normal
one and hides it, and it normalises exactly what an attack test needs to see (duplicate
headers, their spelling and order, a missing ``Content-Length``, trailers). Here an
``asyncio.Protocol`` on 127.0.0.1 keeps, per connection, the bytes of each read and the
requests it parsed from them; each request gets the number ``N`` (1, 2, ... across the
recorder) and the answer ``200`` with the body ``resp-N <name> <target>``, so a client can tell
whether the response it got is the one to its own request.

Misbehaviour for pool tests: ``extra`` bytes (e.g. :func:`unsolicited_response`) are sent right
after every response, in the same write; ``late`` bytes are sent ``late_delay`` seconds after
every response, when no request is outstanding.

Usage::

    async with Recorder("public") as rec:          # rec.port, rec.url
        ...
        await rec.wait_for(1)                       # at least one request parsed
        req = rec.requests[0]
        req.header("host"), req.body, req.trailers, req.connection
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

import httptools


@dataclass
class Request:
    """One request as the upstream parsed it (names and values verbatim, in order)."""

    number: int
    connection: int
    method: str = ""
    target: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        lowered = name.lower()
        return [v for n, v in self.headers if n.lower() == lowered]

    def header(self, name: str) -> str | None:
        """The value of a header that must appear at most once (an assertion otherwise)."""
        found = self.values(name)
        assert len(found) <= 1, f"{name} appears {len(found)} times: {self.headers}"
        return found[0] if found else None

    @property
    def names(self) -> list[str]:
        """Header names, lower-case, in order."""
        return [n.lower() for n, _ in self.headers]

    @property
    def framed(self) -> bool:
        """Whether the head says how long the body is (``Content-Length`` or chunked)."""
        return "content-length" in self.names or "chunked" in ",".join(
            self.values("transfer-encoding")
        ).lower()


@dataclass
class Connection:
    """One TCP connection to the recorder: its reads, its requests, how it ended."""

    number: int
    reads: list[bytes] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None  # the parser's complaint, if it gave up on the stream
    closed: bool = False

    @property
    def received(self) -> bytes:
        return b"".join(self.reads)


def unsolicited_response(tag: str = "unsolicited") -> bytes:
    """A complete response no request asked for (body ``tag``)."""
    body = tag.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Unsolicited: 1\r\n\r\n%s" % (
        len(body), body,
    )


class _Protocol(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.conn = recorder._new_connection()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: Request | None = None
        self.in_head = False
        self._late: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.reads.append(data)
        if self.conn.error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the head is recorded; the rest of the stream only in reads
        except httptools.HttpParserError as exc:
            self.conn.error = f"{type(exc).__name__}: {exc}"
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.closed = True
        if self._late is not None:
            self._late.cancel()
        self.recorder._changed()

    # -- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = self.recorder._new_request(self.conn)
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        pair = (name.decode("latin-1"), value.decode("latin-1"))
        (self.current.headers if self.in_head else self.current.trailers).append(pair)

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.in_head = False
        self.current.method = self.parser.get_method().decode("latin-1")

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        req, self.current = self.current, None
        assert req is not None
        req.complete = True
        self.recorder._changed()
        self._answer(req)

    def _answer(self, req: Request) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        rec = self.recorder
        body = f"resp-{req.number} {rec.name} {req.target}".encode("latin-1", "replace")
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"X-Recorder: %s\r\nX-Request-Number: %d\r\n\r\n"
            % (len(body), rec.name.encode(), req.number)
        )
        transport.write(head + (b"" if req.method == "HEAD" else body) + rec.extra)
        if rec.late:
            loop = asyncio.get_running_loop()
            self._late = loop.call_later(rec.late_delay, self._send_late)

    def _send_late(self) -> None:
        self._late = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.recorder.late)


class Recorder:
    """The recording upstream (see module doc)."""

    def __init__(
        self,
        name: str = "upstream",
        *,
        extra: bytes = b"",
        late: bytes = b"",
        late_delay: float = 0.1,
    ) -> None:
        self.name = name
        self.extra = extra
        self.late = late
        self.late_delay = late_delay
        self.connections: list[Connection] = []
        self.requests: list[Request] = []  # in the order their heads began
        self.port = 0
        self._server: asyncio.Server | None = None
        self._event: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Recorder:
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> Recorder:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- what the tests read --------------------------------------------------------------
    @property
    def complete(self) -> list[Request]:
        return [r for r in self.requests if r.complete]

    @property
    def errors(self) -> list[str]:
        return [c.error for c in self.connections if c.error is not None]

    def with_target(self, fragment: str) -> list[Request]:
        """Requests whose target contains ``fragment``."""
        return [r for r in self.requests if fragment in r.target]

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Until at least ``count`` requests are complete (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while len(self.complete) < count:
                await self._wait_change()

    async def settle(self, quiet: float = 0.2, timeout: float = 5.0) -> None:
        """Until nothing has arrived for ``quiet`` seconds: anything smuggled is in by then."""
        async with asyncio.timeout(timeout):
            while True:
                before = sum(len(c.reads) for c in self.connections), len(self.connections)
                await asyncio.sleep(quiet)
                if (sum(len(c.reads) for c in self.connections), len(self.connections)) == before:
                    return

    async def _wait_change(self) -> None:
        assert self._event is not None
        await self._event.wait()
        self._event.clear()

    def _changed(self) -> None:
        if self._event is not None:
            self._event.set()

    def _new_connection(self) -> Connection:
        conn = Connection(len(self.connections) + 1)
        self.connections.append(conn)
        self._changed()
        return conn

    def _new_request(self, conn: Connection) -> Request:
        req = Request(len(self.requests) + 1, conn.number)
        self.requests.append(req)
        conn.requests.append(req)
        return req


@contextlib.asynccontextmanager
async def recorders(*names: str) -> AsyncIterator[dict[str, Recorder]]:
    """Several recorders at once, by name."""
    started: dict[str, Recorder] = {}
    try:
        for name in names:
            started[name] = await Recorder(name).start()
        yield started
    finally:
        for rec in started.values():
            await rec.close()
