"""The HTTP/1.1 hot path: an ``asyncio.Protocol`` parsed by ``httptools`` (llhttp).

Why a protocol and not ``aiohttp.web``: measured here, aiohttp's request/response objects cost
half of what a Python proxy can do per core (see the performance guide). This module does only
what the wire needs: parse, ask :mod:`vallum.proxy.pipeline` what to do, and pass bytes between
the client and an :class:`~vallum.proxy.upstream.UpstreamConnection`.

* Keep-alive and pipelining: requests parsed while another is in flight wait in a queue with
  their body bytes; responses go out strictly in order, one
  :class:`~vallum.proxy.exchange.Exchange` (request and response) at a time.
* Flow control, so bodies of any size pass in constant memory: the client's reading pauses while
  the upstream's write buffer is full (or too much is buffered before the upstream is ready);
  the upstream's reading pauses while the client's write buffer is full.
* Framing: Vallum writes the framing of both legs itself from what llhttp framed
  (``Content-Length`` bodies pass through as they are; chunked and read-until-close bodies are
  re-chunked for HTTP/1.1 peers; HTTP/1.0 clients get close-delimited responses).
* Bounds: a request head has at most ``MAX_FIELDS`` fields and ``MAX_HEAD`` bytes (each field
  counted with its overhead, so 65,000 empty ``x:`` lines are as large as they look), checked as
  the bytes arrive -- llhttp's binding buffers a header's value until it ends, so a single
  endless header is cut off too -- and answered 431. The head is frozen when it ends: trailer
  fields of a chunked body are dropped (counted against the same bounds), never added to the
  headers the gate judged and the upstream receives.
* ``Expect: 100-continue`` is answered by Vallum once the request is authorized and an upstream
  connection is ready (Envoy's default); refused requests get their answer and a closed
  connection instead, so an unsent body is never read.
* Websockets: with ``allow_websockets`` the upgrade is forwarded on a fresh connection and, on
  ``101``, both transports are spliced byte for byte; otherwise the upgrade is refused (403).
* The route ``timeout`` runs from the end of the request to the end of the response (504 if no
  response head came, else the connection is cut); ``idle_timeout`` cuts a stream with no bytes
  either way for that long; ``timeout_idle`` closes idle keep-alive connections, and a request
  head must arrive within ``HEAD_TIMEOUT`` (no slowloris).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol, cast

import httptools

from vallum.core.config import RouteTable
from vallum.core.request import ClientCertificate
from vallum.proxy import batching, exchange, pipeline, tls, upstream
from vallum.proxy import forward as fwd

BUFFER_LIMIT = 256 * 1024  # request bytes held before an upstream is ready
QUEUE_LIMIT = 32  # pipelined requests held before reading pauses
MAX_HEAD = 64 * 1024  # request line + headers, each field counted with its ": " and CRLF
MAX_FIELDS = 100  # header fields in one request head (Envoy's and Pomerium's default)
_FIELD_OVERHEAD = 4
HEAD_TIMEOUT = 30.0  # seconds a client may take to send one request head (slowloris)
LINGER_SECONDS = 2.0  # after refusing a request, read (and drop) what the client still sends ...
LINGER_BYTES = 1 << 20  # ... up to this much, so that it reads the answer instead of a reset
_PAUSE_BUFFER = 2
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}

class TableSource(Protocol):
    """Where the current route table comes from (``vallum.proxy.state.TableHolder``)."""

    @property
    def current(self) -> RouteTable: ...


class Observer(Protocol):
    """Told about every finished exchange (access log, metrics)."""

    def finished(self, ex: exchange.Exchange) -> None: ...


class Context:
    """What every connection of one listener shares."""

    def __init__(
        self,
        tables: TableSource,
        gate: pipeline.Gate,
        pool: upstream.Pool,
        *,
        scheme: str = "https",
        observer: Observer | None = None,
    ) -> None:
        self.tables = tables
        self.gate = gate
        self.pool = pool
        self.scheme = scheme
        self.observer = observer
        self.quick = pipeline.quick_gate(gate)
        self.plans = fwd.Plans(gate.strip_request_headers())
        self.connections: set[HTTP1] = set()
        self.round = batching.Round()  # connections whose corked writes go out this round
        self.deadlines: exchange.Deadlines | None = None
        self.closing = False  # draining: finish running requests, keep no connection alive
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> HTTP1:
        """The protocol factory for ``loop.create_server``."""
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(1.0, self._sweep)
            self.deadlines = exchange.Deadlines(loop)
        return HTTP1(self)

    def close(self) -> None:
        """Start draining: idle connections close now, busy ones after their response."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.connections):
            conn.close_when_idle()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        limit = now - self.tables.current.settings.timeout_idle
        slow_head = now - HEAD_TIMEOUT
        for conn in list(self.connections):
            if conn.active is None and conn.last_active < limit:
                conn.close_when_idle()
            elif 0 < conn.head_started < slow_head:
                conn.abort()
        self._sweeper = loop.call_later(1.0, self._sweep)


class _HeadTooLarge(Exception):
    pass


class HTTP1(asyncio.Protocol):
    """One client connection."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = ""
        self.client_cert: ClientCertificate | None = None
        self.sni: str | None = None  # the TLS server name the client asked for
        self.active: exchange.Exchange | None = None
        self.parsing: exchange.Exchange | None = None
        self.queue: collections.deque[exchange.Exchange] = collections.deque()
        self.buffered = 0
        self.write_paused = False
        self.raw = False
        self.closed = False
        self.last_active = self.loop.time()
        self.head_started = 0.0  # when the head being received began (0: none pending)
        self.paused = 0  # why reading is paused: a bit per reason (PAUSE_UPSTREAM, _PAUSE_BUFFER)
        self._lingering = -1  # bytes dropped while lingering after a refusal (-1: not lingering)
        self._corked: list[bytes] | None = None
        self._flush_due = False  # in ctx.round: its corked writes go out at the round's end
        self._starting = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_bytes = 0  # bytes received since the head being parsed began
        self._underscored = False  # a header name of this head has an "_"

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            settings = self.ctx.tables.current.settings
            self.client_cert = tls.client_certificate(ssl_object, settings)
            self.sni = tls.sni_of(ssl_object)
        self.ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        active, self.active = self.active, None
        if active is not None:
            active.downstream_lost()
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.raw:  # after an upgrade request: bytes for the upgraded stream
            if self._lingering >= 0:  # (or after a refusal, while lingering: dropped)
                self._lingering += len(data)
                if self._lingering > LINGER_BYTES:
                    self.abort()
                return
            ex = self.queue[-1] if self.queue else self.active
            if ex is not None:
                ex.downstream_raw(data)
            return
        if self.head_started:  # a head in progress: count what arrives for it
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.raw = True
            ex = self.queue[-1] if self.queue else self.active
            if ex is not None:
                if self.parsing is ex:  # upgrade without on_message_complete
                    ex.body_end()
                    self.parsing = None
                rest = data[exc.args[0] :]
                if rest:
                    ex.downstream_raw(rest)
        except httptools.HttpParserError as exc:
            self._refuse(431 if isinstance(exc.__context__, _HeadTooLarge) else 400)
            return
        # Still inside a head that began before this read: every byte since was head (a head
        # ending resets head_started, one beginning resets the count), so this bounds a single
        # endless header that llhttp's binding would buffer before on_header sees it.
        if self.head_started and self._head_bytes > MAX_HEAD:
            self._refuse(431)
            return
        if self.queue and self.active is None:
            self._start_next()

    def _refuse(self, status: int) -> None:
        """Stop parsing this connection: answer ``status`` in turn, or cut off a request whose
        body is being forwarded (its framing can no longer be trusted)."""
        self.raw = True  # nothing more is parsed on this connection
        self.head_started = 0.0
        self.pause(_PAUSE_BUFFER)
        if self.parsing is not None and self.parsing not in self.queue:
            self.abort()
            return
        bad = exchange.Exchange.bad(self, status)
        if self.parsing is not None and self.parsing in self.queue:
            self.queue.remove(self.parsing)
        self.parsing = None
        self.queue.append(bad)
        if self.active is None:
            self._start_next()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.active is not None:
            self.active.client_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.active is not None:
            self.active.client_writable(True)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.head_started = self.loop.time()
        self._url = b""
        if self._headers:  # trailers of the previous message (and their underscore flag)
            self._headers = []
            self._underscored = False
        self._head_size = self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        # Also called for the trailer fields of a chunked body: they land in the throwaway
        # list on_headers_complete leaves behind, under the same bounds.
        headers = self._headers
        headers.append((name, value))
        if b"_" in name:
            self._underscored = True
        self._head_size += len(name) + len(value) + _FIELD_OVERHEAD
        if self._head_size > MAX_HEAD or len(headers) > MAX_FIELDS:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self.head_started = 0.0
        headers, self._headers = self._headers, []  # frozen: trailers go to the new list
        parser = self.parser
        method = parser.get_method()
        ex = exchange.Exchange(
            self,
            _METHODS.get(method) or method.decode("ascii"),
            self._url,
            headers,
            parser.should_keep_alive(),
            parser.get_http_version() == "1.0",
            parser.should_upgrade(),
        )
        if self._underscored:  # (reset here, not per message: it is rarely set)
            ex.underscored = True
            self._underscored = False
        self.parsing = ex
        self.queue.append(ex)
        if len(self.queue) > QUEUE_LIMIT:
            self.pause(_PAUSE_BUFFER)

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        if self.parsing is not None:
            self.parsing.body_end()
            self.parsing = None

    # -- flow control and sequencing --------------------------------------------------------
    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def buffer_changed(self, delta: int) -> None:
        self.buffered += delta
        if self.buffered > BUFFER_LIMIT:
            self.pause(_PAUSE_BUFFER)
        elif self.paused & _PAUSE_BUFFER and len(self.queue) <= QUEUE_LIMIT and not self.raw:
            self.resume(_PAUSE_BUFFER)

    def exchange_done(self, ex: exchange.Exchange, close: bool) -> None:
        if self.active is not ex:
            return
        self.active = None
        self.last_active = self.loop.time()
        if close:
            self.flush_writes()
            lingering = self.raw or self.parsing is not None  # the client may still be sending
            self.closed = True
            self.queue.clear()
            if self.transport is not None:
                if lingering and self.transport.can_write_eof():
                    self._linger(self.transport)
                else:
                    self.transport.close()
            return
        if self.queue:  # a pipelined request waits (_start_next would check the same)
            self._start_next()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after a refusal the way nginx's ``lingering_close`` does: send our side's end,
        then read and drop what the client still sends for a little while. Closing at once
        with unread bytes makes the kernel send a reset, which can destroy the answer (431,
        400, 403 ...) before the client has read it."""
        self._lingering = 0
        self.raw = True  # data_received drops what arrives
        self.parsing = None
        transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def eof_received(self) -> bool | None:
        return None  # the client finished: let the transport close (also while lingering)

    def _start_next(self) -> None:
        if self._starting:
            return
        self._starting = True
        try:
            while self.active is None and self.queue and not self.closed:
                ex = self.active = self.queue.popleft()
                if self.paused & _PAUSE_BUFFER and not self.raw:
                    self.buffer_changed(0)
                ex.start()
        finally:
            self._starting = False

    def write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
            if len(data) >= batching.JOIN_BYTES:  # a body streaming: now, for flow control
                self.flush_writes()
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self._corked is not None:
            self._corked.extend(parts)
            if sum(map(len, parts)) >= batching.JOIN_BYTES:
                self.flush_writes()
        elif self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    def cork(self) -> None:
        """Collect writes until :meth:`uncork`: one system call for a response head and body
        that arrived together (each ``send`` on loopback costs as much as the parsing)."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        """The end of a batch of writes: they go out when the event loop has run this round's
        callbacks (:class:`~vallum.proxy.batching.Round`), with every other connection's, so
        that the peers woken by these writes are woken once, in a burst, rather than once per
        connection with Python work in between. Writes made meanwhile join the batch."""
        if self._corked is None or self._flush_due:
            return
        self._flush_due = True
        self.ctx.round.add(self)

    def flush_writes(self) -> None:
        """Write what :meth:`cork` collected, now."""
        self._flush_due = False
        out, self._corked = self._corked, None
        if out and self.transport is not None and not self.closed:
            batching.send(self.transport, out)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def close_when_idle(self) -> None:
        if self.active is None and not self.queue and self.transport is not None:
            self.flush_writes()
            self.closed = True
            self.transport.close()
