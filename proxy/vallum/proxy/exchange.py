"""One request's life on a client connection: decision, upstream leg, response, timeouts.

An :class:`Exchange` is created by :class:`vallum.proxy.http1.HTTP1` for every request head it
parses and is the :class:`~vallum.proxy.upstream.Sink` of the upstream connection serving it:

* ``start`` builds the pipeline's ``RequestInfo`` and asks
  :func:`vallum.proxy.pipeline.decide_now` (no coroutine: public routes, known sessions), else
  runs :func:`~vallum.proxy.pipeline.decide` directly, making a task only if the gate really
  suspends (:class:`_Resume`);
* ``dispatch``/``send`` pick an endpoint (retrying another one when a connect fails), take a
  pooled connection or open one, and write the request head and body (re-chunked if chunked);
* the ``upstream_*`` callbacks frame the response for the client (``Content-Length`` passed
  through, chunked or read-until-close re-chunked, close-delimited for HTTP/1.0), splice a
  websocket after ``101``, and turn failures into the error page (502) or a cut connection;
* route ``timeout`` (from the end of the request to the end of the response, 504 when no head
  came) is tracked by :class:`Deadlines`, ``idle_timeout`` by a timer that checks activity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Generator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from vallum.core.config import RouteTable, Settings
from vallum.proxy import errors, pipeline, upstream
from vallum.proxy import forward as fwd

if TYPE_CHECKING:  # the connection that owns the exchange (imports this module)
    from vallum.proxy.http1 import HTTP1

log = logging.getLogger("vallum.http")

PAUSE_UPSTREAM = 1  # reason bit for pausing the client: the upstream's write buffer is full

_STATUS_LINES = {
    status: f"HTTP/1.1 {status} {errors.reason(status)}\r\n".encode()
    for status in (*(s.value for s in HTTPStatus), *errors.EXTRA_PHRASES)
}


_CLOSING = frozenset({400, 405, 421, 431, 501})
"""Statuses Vallum answers and then closes the connection: the client sent something it must
not send again on this connection (malformed, refused framing, the wrong connection)."""


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode()


class Deadlines:
    """Route timeouts without a timer per request: exchanges grouped by deadline tick.

    One loop timer per ``TICK`` that has deadlines in it, instead of creating and cancelling a
    timer for every request; a timeout fires up to ``TICK`` late.
    """

    TICK = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, set[Exchange]] = {}

    def add(self, ex: Exchange, seconds: float) -> int:
        tick = int((self.loop.time() + seconds) / self.TICK) + 1
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = set()
            self.loop.call_at(tick * self.TICK, self._fire, tick)
        bucket.add(ex)
        return tick

    def remove(self, ex: Exchange, tick: int) -> None:
        bucket = self.buckets.get(tick)
        if bucket is not None:
            bucket.discard(ex)

    def _fire(self, tick: int) -> None:
        for ex in self.buckets.pop(tick, ()):
            ex.deadline_passed()


class _Resume:
    """Await a coroutine that already ran up to its first suspension (``coro.send(None)``).

    The pipeline usually finishes without suspending (public routes, cached sessions); running
    it directly and making a task only when it does suspend saves a task per request.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Exchange:
    """One request and its response on a client connection: the sink of an upstream leg.

    Most state starts at a class-level default and is set on the instance only when it
    changes: a request costs a handful of attribute stores instead of forty.
    """

    # Set when known; class-level defaults keep the constructor short (hot path).
    body_done = False
    chunked = False  # the request body is chunked (set in start)
    underscored = False  # a header name has an "_" (set by the parser)
    framing = b""  # the upstream request's framing line, Vallum's own (forward.request_framing)
    expect = False  # the client sent "Expect: 100-continue" (set in start)
    buffered = 0
    conn: upstream.UpstreamConnection | None = None
    req: Any = None
    table: RouteTable | None = None
    match: Any = None
    plan: fwd.RoutePlan | None = None
    allow: pipeline.Allow = pipeline.ALLOW
    status = 0
    sent = 0
    head_sent = False
    resp_chunked = False
    resp_close = False
    upgraded = False
    finished = False
    retried = False
    route_name = ""
    upstream_url = ""
    upstream_index = 0
    tried: frozenset[int] = frozenset()
    timer: asyncio.TimerHandle | None = None
    tick = 0
    task: asyncio.Task[None] | None = None
    # Request bytes held until an upstream connection is ready (body; after an upgrade, the
    # raw stream): the shared empty tuple until the first chunk, so most requests allocate none.
    buffer: tuple[bytes, ...] | list[bytes] = ()
    raw_in: tuple[bytes, ...] | list[bytes] = ()

    def __init__(
        self,
        proto: HTTP1,
        method: str,
        url: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        http10: bool = False,
        upgrade: bool = False,
    ) -> None:
        self.proto = proto
        self.method = method
        self.url = url
        self.raw_headers = raw_headers
        self.keep_alive = keep_alive
        self.http10 = http10
        self.upgrade = upgrade
        self.request_id = errors.new_request_id()
        self.started = time.perf_counter()
        self.last_activity = proto.last_active

    @classmethod
    def bad(cls, proto: HTTP1, status: int) -> Exchange:
        """A placeholder exchange that answers a request the parser rejected."""
        ex = cls(proto, "GET", b"", [], keep_alive=False)
        ex.status = -status
        ex.body_done = True
        return ex

    # -- the decision -----------------------------------------------------------------------
    def start(self) -> None:
        if self.status < 0:
            self.respond_error(-self.status, "The request is malformed.")
            return
        if self.upgrade and self.method == "CONNECT":  # llhttp: an upgrade; never a tunnel
            self.respond_error(405, "CONNECT is not supported.")
            return
        ctx = self.proto.ctx
        table = self.table = ctx.tables.current
        settings = table.settings
        try:
            headers = pipeline.header_map(self.raw_headers)
        except pipeline.BadRequest as exc:
            self.respond_error(400, str(exc))
            return
        req = self.req = pipeline.request_info(  # positional, in its order (hot path)
            self.method,
            self.url.decode("latin-1"),
            headers,
            ctx.scheme,
            self.proto.peer_ip,
            settings.xff_num_trusted_hops,
            self.request_id,
            self.proto.client_cert,
        )
        if req is None:
            self.respond_error(400, "The request has no valid Host or target.")
            return
        if (  # the common GET costs these few checks; the rest only when they may matter
            "content-length" in headers
            or "transfer-encoding" in headers
            or "expect" in headers
            or self.underscored
            or (self.proto.sni is not None and self.proto.sni != req.host)
        ):
            problem = _refusal(self, headers, req.host, settings)
            if problem is not None:
                self.respond_error(*problem)
                return
        quick = ctx.quick
        if quick is not None:  # decided without a coroutine when no I/O is needed
            try:
                verdict = pipeline.decide_now(req, table, quick)
            except Exception:
                self._pipeline_failed()
                return
            if verdict is not None:
                self.decided(verdict)
                return
        coro = pipeline.decide(req, table, ctx.gate)
        try:
            first = coro.send(None)
        except StopIteration as stop:
            self.decided(stop.value)
            return
        except Exception:
            self._pipeline_failed()
            return
        self.task = self.proto.loop.create_task(self._decide_later(coro, first))

    def _pipeline_failed(self) -> None:
        log.exception("pipeline failed (request %s)", self.request_id)
        self.respond_error(500, "Vallum failed to handle this request.")

    async def _decide_later(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        try:
            verdict = await _Resume(coro, first)
        except asyncio.CancelledError:
            return
        except Exception:
            self._pipeline_failed()
            return
        if not self.finished:
            self.decided(verdict)

    def decided(self, verdict: pipeline.Forward | pipeline.Respond) -> None:
        if isinstance(verdict, pipeline.Respond):
            self.respond(verdict.status, verdict.headers, verdict.body)
            return
        match = self.match = verdict.match
        route = match.route
        self.route_name = route.name or route.from_url
        self.allow = verdict.allow
        assert self.table is not None
        self.plan = self.proto.ctx.plans.get(self.table, match.route_index, route)
        if self.upgrade:
            kind = self.req.headers.get("upgrade", "").lower()
            if not route.allow_websockets or kind != "websocket":
                self.respond_error(403, "Protocol upgrades (websockets) are not allowed here.")
                return
        self.dispatch()

    # -- the upstream leg -------------------------------------------------------------------
    def dispatch(self) -> None:
        assert self.plan is not None
        pool = self.proto.ctx.pool
        route = self.plan.route
        # One endpoint, not tried yet: pool.pick's answer (0) without the call (hot path).
        index = 0 if len(route.to) == 1 and not self.tried else pool.pick(route, self.tried)
        if index is None:
            self.respond_error(502, "The upstream service is unreachable.")
            return
        self.upstream_index = index
        key = self.plan.pool_keys[index]
        conn = None if self.upgrade else pool.take(key)
        if conn is not None:
            self.send(conn)
            return
        self.task = self.proto.loop.create_task(self._connect(key, index))

    async def _connect(self, key: upstream.PoolKey, index: int) -> None:
        assert self.plan is not None
        route = self.plan.route
        timeout = upstream.CONNECT_TIMEOUT
        if 0 < self.plan.timeout < timeout:
            timeout = self.plan.timeout
        try:
            conn = await self.proto.ctx.pool.connect(key, route, route.to[index], timeout)
        except asyncio.CancelledError:
            return
        except (OSError, TimeoutError) as exc:
            log.info("upstream %s unreachable: %r", route.to[index].url, exc)
            self.tried = self.tried | {index}
            if not self.finished:
                self.dispatch()
            return
        if self.finished:
            conn.close()
            return
        self.send(conn)

    def send(self, conn: upstream.UpstreamConnection) -> None:
        plan, req, proto = self.plan, self.req, self.proto
        assert plan is not None and self.table is not None
        index = self.upstream_index
        self.conn = conn
        self.upstream_url = plan.route.to[index].url
        conn.attach(self, self.method == "HEAD", proto)
        target = plan.rewrite_path(self.match.path, index)
        if req.query:
            target = f"{target}?{req.query}"
        conn.write(
            plan.request_head(  # positional, in request_head's order (hot path)
                self.method,
                target,
                self.raw_headers,
                req.headers.get("connection"),
                index,
                req.headers["host"],  # the one host matched and authorised (request_info)
                proto.ctx.scheme,
                proto.peer_ip,
                self.request_id,
                self.table.settings.xff_num_trusted_hops,
                self.allow.request_headers,
                self.framing,
                req.headers.get("upgrade") if self.upgrade else None,
            )
        )
        if proto.write_paused:
            conn.pause_reading()
        if self.expect and not self.body_done and not self.buffer:
            proto.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.buffer:
            for chunk in self.buffer:
                self._write_body(chunk)
            self.buffer = ()
            proto.buffer_changed(-self.buffered)
            self.buffered = 0
        if self.body_done:
            self._request_sent()
        idle = plan.idle_timeout
        # The idle timer also guards a request body still arriving (the route timeout only
        # starts once the request is complete).
        if idle > 0 and (
            plan.timeout <= 0 or plan.timeout > idle or self.upgrade or not self.body_done
        ):
            self.timer = proto.loop.call_later(idle, self._idle_check)

    def _write_body(self, data: bytes) -> None:
        assert self.conn is not None
        if self.chunked:
            self.conn.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.conn.write(data)

    def _request_sent(self) -> None:
        conn = self.conn
        assert conn is not None and self.plan is not None
        if self.chunked:
            conn.write(b"0\r\n\r\n")
        conn.request_complete = True
        timeout = self.plan.timeout
        if timeout > 0 and not self.upgrade and not self.tick:
            deadlines = self.proto.ctx.deadlines
            assert deadlines is not None
            self.tick = deadlines.add(self, timeout)

    # -- request body from the client -------------------------------------------------------
    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.last_activity = self.proto.last_active
        if self.conn is not None:
            self._write_body(data)
            return
        if isinstance(self.buffer, list):
            self.buffer.append(data)
        else:
            self.buffer = [data]
        self.buffered += len(data)
        self.proto.buffer_changed(len(data))

    def body_end(self) -> None:
        self.body_done = True
        if self.conn is not None and not self.finished:
            self._request_sent()

    def downstream_raw(self, data: bytes) -> None:
        """Bytes after an upgrade request: the websocket stream towards the upstream."""
        self.last_activity = self.proto.last_active
        if self.upgraded and self.conn is not None:
            self.conn.write(data)
        elif not self.finished:
            if isinstance(self.raw_in, list):
                self.raw_in.append(data)
            else:
                self.raw_in = [data]
            self.proto.buffer_changed(len(data))

    def downstream_lost(self) -> None:
        if self.finished:
            return
        if not self.head_sent and not self.status:
            self.status = 499  # nginx's "client closed request"
        conn, self.conn = self.conn, None
        if conn is not None:
            if self.upgraded:
                conn.close()
            else:
                conn.abort()
        self._end()

    # -- the response (upstream.Sink) -------------------------------------------------------
    def upstream_head(
        self, status: int, headers: list[tuple[bytes, bytes]], no_body: bool, keep_alive: bool
    ) -> int:
        assert self.plan is not None
        self.status = status
        self.last_activity = self.proto.loop.time()
        lines, length, chunked = self.plan.response_headers(headers)  # framing lines ours
        if no_body:
            framing = upstream.FRAMING_NONE
        elif chunked:
            framing = upstream.FRAMING_CHUNKED
        elif length is not None:
            framing = upstream.FRAMING_LENGTH
        else:
            framing = upstream.FRAMING_EOF
        if status == 101:
            kind = b"websocket"
            for name, value in headers:
                if name.lower() == b"upgrade":
                    kind = value
            lines.append(b"Connection: upgrade\r\nUpgrade: " + kind + b"\r\n")
        elif framing == upstream.FRAMING_CHUNKED or framing == upstream.FRAMING_EOF:
            if self.http10:
                self.resp_close = True
            else:
                self.resp_chunked = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
        if status != 101:
            if not self.keep_alive or self.upgrade or self.proto.ctx.closing:
                self.resp_close = True
            if self.resp_close:
                lines.append(b"Connection: close\r\n")
            elif self.http10:
                lines.append(b"Connection: keep-alive\r\n")
        for name_s, value_s in self.allow.response_headers:
            lines.append(fwd.header_line(name_s, value_s))
        lines.append(b"\r\n")
        self.proto.write((_STATUS_LINES.get(status) or status_line(status)) + b"".join(lines))
        self.head_sent = True
        return framing

    def upstream_body(self, data: bytes) -> None:
        self.sent += len(data)
        self.last_activity = self.proto.loop.time()  # a download in progress is not idle
        if self.resp_chunked:
            self.proto.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.proto.write(data)

    def upstream_done(self) -> None:
        self.conn = None
        if self.upgraded:
            self.resp_close = True
        elif self.resp_chunked:
            self.proto.write(b"0\r\n\r\n")
        if not self.body_done:
            self.resp_close = True  # the rest of the request body would desynchronise us
        self._end()

    def upstream_failed(self, exc: BaseException | None) -> None:
        conn, self.conn = self.conn, None
        if self.finished:
            return
        if self.head_sent:
            log.info("upstream %s failed mid-response: %r", self.upstream_url, exc)
            self.resp_close = True
            self.proto.abort()
            self._end()
            return
        if (
            conn is not None
            and conn.reused
            and not self.retried
            and self.body_done
            and not self.chunked
            and "content-length" not in self.req.headers
        ):
            self.retried = True  # a pooled connection the upstream had just closed: retry once
            self._cancel_timer()
            self.dispatch()
            return
        log.info("upstream %s failed: %r", self.upstream_url, exc)
        self.respond_error(502, "The upstream service closed the connection or is unreachable.")

    def upstream_upgraded(self, rest: bytes) -> None:
        self.upgraded = True
        self._cancel_timer()
        assert self.plan is not None
        idle = self.plan.idle_timeout
        if idle > 0:
            self.timer = self.proto.loop.call_later(idle, self._idle_check)
        if rest:
            self.upstream_raw(rest)
        conn = self.conn
        if conn is not None and self.raw_in:
            for chunk in self.raw_in:
                conn.write(chunk)
            self.proto.buffer_changed(-sum(len(c) for c in self.raw_in))
            self.raw_in = ()

    def upstream_raw(self, data: bytes) -> None:
        self.last_activity = self.proto.loop.time()
        self.sent += len(data)
        self.proto.write(data)

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.proto.resume(PAUSE_UPSTREAM)
        else:
            self.proto.pause(PAUSE_UPSTREAM)

    def client_writable(self, writable: bool) -> None:
        """The client's write buffer drained (or filled): read the upstream's response on (or
        stop). The other half of :meth:`upstream_writable`; the connection keeps the state, so a
        connection handed back to the pool is reading again (``upstream.Pool.release``)."""
        conn = self.conn
        if conn is not None:
            if writable:
                conn.resume_reading()
            else:
                conn.pause_reading()

    # -- answers Vallum makes itself --------------------------------------------------------
    def respond_error(self, status: int, message: str) -> None:
        if status in _CLOSING:
            self.keep_alive = False  # a client that sent garbage: do not read on from it
        accept = self.req.headers.get("accept") if self.req is not None else None
        page = errors.page(status, self.request_id, accept=accept, message=message)
        self.respond(page.status, page.headers, page.body)

    def respond(self, status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        if self.finished:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.head_sent:
            self.resp_close = True
            self.proto.abort()
            self._end()
            return
        self.status = status
        close = (
            not self.keep_alive
            or not self.body_done
            or self.upgrade
            or self.proto.raw
            or self.proto.ctx.closing
        )
        self.resp_close = close
        parts = [status_line(status)]
        for name, value in headers:
            parts.append(fwd.header_line(name, value))
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if self.method != "HEAD":
            parts.append(body)
            self.sent = len(body)
        self.proto.write(b"".join(parts))
        self.head_sent = True
        self._end()

    # -- timers and the end -----------------------------------------------------------------
    def deadline_passed(self) -> None:
        self.tick = 0
        self._timed_out()

    def _timed_out(self) -> None:
        if self.finished:
            return
        log.info("upstream %s timed out (request %s)", self.upstream_url, self.request_id)
        if self.head_sent:
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.abort()
            self.resp_close = True
            self.proto.abort()
            self._end()
        else:
            self.status = 504
            self.respond_error(504, "The upstream service did not answer in time.")

    def _idle_check(self) -> None:
        self.timer = None
        if self.finished or self.plan is None:
            return
        loop = self.proto.loop
        idle = self.plan.idle_timeout
        last = max(self.last_activity, self.proto.last_active)
        if loop.time() - last >= idle:
            self._timed_out()
        else:
            self.timer = loop.call_at(last + idle, self._idle_check)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.tick:
            deadlines = self.proto.ctx.deadlines
            if deadlines is not None:
                deadlines.remove(self, self.tick)
            self.tick = 0

    def _end(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None or self.tick:
            self._cancel_timer()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.buffered:
            self.proto.buffer_changed(-self.buffered)
            self.buffered = 0
            self.buffer = ()
        # The upstream leg is over: its full write buffer no longer holds the client back.
        if self.proto.paused & PAUSE_UPSTREAM:
            self.proto.resume(PAUSE_UPSTREAM)
        observer = self.proto.ctx.observer
        if observer is not None:
            try:
                observer.finished(self)
            except Exception:
                log.exception("access log / metrics failed")
        self.proto.exchange_done(self, self.resp_close)

    @property
    def duration(self) -> float:
        return time.perf_counter() - self.started


def _refusal(
    ex: Exchange, headers: Mapping[str, str], host: str, settings: Settings
) -> tuple[int, str] | None:
    """Why a parsed request is refused before the gate sees it (status, message), else
    ``None``; also sets the exchange's framing. The common case costs a few dict look-ups."""
    coding = headers.get("transfer-encoding")
    if coding is not None:
        # llhttp frames a body only when "chunked" comes last; other codings ("gzip, chunked")
        # would reach the upstream mislabelled once Vallum re-chunks: refuse (RFC 9112 6.1).
        if coding.strip().lower() != "chunked":
            return 501, "Transfer codings other than chunked are not supported."
        ex.chunked = True
    ex.framing = fwd.request_framing(ex.chunked, headers.get("content-length"))
    expect = headers.get("expect")
    if expect is not None and expect.lower() == "100-continue":
        ex.expect = True
    sni = ex.proto.sni
    if sni is not None and sni != host and settings.downstream_mtls is not None:
        # Client certificates are asked for per connection: a connection made for one name may
        # not carry requests for another (Envoy's answer to the same question).
        return 421, "This connection was made for another host name (TLS SNI); reconnect."
    if ex.underscored and settings.headers_with_underscores_action == "reject_request":
        return 400, "Header names with underscores are not accepted here."
    return None
