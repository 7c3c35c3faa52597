"""A raw-socket HTTP/1.1 client for attack tests: the bytes go out exactly as written.

Why not an HTTP client library: clients normalise exactly what an attacker does not (duplicate
``Host``, absolute-form targets, ``Connection`` tokens, trailers, header case and spelling).
Requests are written as given; responses are read back with llhttp (``httptools``) and
returned in order, so a test can check that each pipelined request got its own answer.

``send(port, data, responses=n)`` (asyncio) and ``send_sync`` (blocking sockets, for code that
runs outside an event loop, such as hypothesis examples) both return the responses that arrived
before the count was reached, the server closed, or the timeout passed. Responses to ``HEAD``
are not supported (llhttp would wait for a body).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for n, v in self.headers:
            if n.lower() == lowered:
                return v
        return None

    @property
    def text(self) -> str:
        return self.body.decode("latin-1")


class ResponseReader:
    """Feed it bytes; it collects complete responses (``done``) in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.error: str | None = None
        self._current: Response | None = None

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def on_message_begin(self) -> None:
        self._current = Response(0)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self._current is not None
        self._current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body += body

    def on_message_complete(self) -> None:
        assert self._current is not None
        if 100 <= self._current.status < 200:  # 100 Continue: not an answer
            self._current = None
            return
        self.done.append(self._current)
        self._current = None


async def send(
    port: int,
    data: bytes,
    responses: int = 1,
    timeout: float = 5.0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> list[Response]:
    """Connect to 127.0.0.1:``port``, write ``data``, read up to ``responses`` responses."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context, server_hostname=server_hostname
        ),
        timeout,
    )
    parsed = ResponseReader()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        writer.write(data)
        with contextlib.suppress(OSError, TimeoutError):  # a server may stop reading: fine
            await asyncio.wait_for(writer.drain(), timeout)
        while len(parsed.done) < responses and parsed.error is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            parsed.feed(chunk)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
    return parsed.done


def send_sync(port: int, data: bytes, responses: int = 1, timeout: float = 5.0) -> list[Response]:
    """:func:`send` with a blocking socket (plain TCP only)."""
    parsed = ResponseReader()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        while len(parsed.done) < responses and parsed.error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            parsed.feed(chunk)
    return parsed.done


def request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request exactly as given (no header added: framing is the caller's)."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    return "".join(lines).encode("latin-1") + b"\r\n" + body
