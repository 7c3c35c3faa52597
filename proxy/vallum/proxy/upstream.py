"""The upstream leg: pooled keep-alive connections, load balancing and passive ejection.

Why not ``aiohttp.ClientSession``: measured on this machine it costs more per request than the
whole rest of the proxy (see the performance guide). An upstream connection here is an
``asyncio.Protocol`` whose responses are parsed by ``httptools`` (llhttp) and pushed straight to a
:class:`Sink` -- the downstream exchange -- with flow control both ways:

* the upstream transport's write buffer filling up (``pause_writing``) tells the sink to stop
  reading the client's request body (``Sink.upstream_writable(False)``), and
* the sink pauses this connection's reading while the client is slow to take the response
  (:meth:`UpstreamConnection.pause_reading`),

so bodies of any size pass through in constant memory. The connection keeps its own reading
state: a connection handed back to the pool always reads again (a connection returned paused
would hold its next response until the route timeout).

A connection serves exactly one response per request and is pooled exactly once per response:
bytes from the upstream when no response is expected (an idle pooled connection, a second
response, a body after a ``HEAD`` response) mean it is out of step with us -- it is closed and
dropped from the pool, never reused, so no client can receive a response meant for another.

Pools are keyed by ``(scheme, host, port, TLS profile)``: two routes that reach the same endpoint
with the same TLS settings share connections. Idle connections are closed after
``POOL_IDLE_SECONDS``; a connection the upstream closed is dropped from the pool as it closes.

Load balancing is smooth weighted round-robin over a route's ``to`` URLs. An endpoint that
refuses or times out a connection is ejected for ``EJECT_SECONDS`` (passive health checking);
when every endpoint of a route is ejected, they are all tried anyway (Envoy's panic mode) rather
than failing every request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Hashable
from typing import Protocol, cast

import httptools

from vallum.core.config import Route, Upstream
from vallum.proxy import batching

MAX_RESPONSE_HEAD = 256 * 1024  # bytes an upstream may send before its response head ends
POOL_IDLE_SECONDS = 60.0
POOL_MAX_IDLE_PER_KEY = 512
EJECT_SECONDS = 10.0
CONNECT_TIMEOUT = 10.0

PoolKey = Hashable

log = logging.getLogger("vallum.upstream")


def _describe(key: PoolKey) -> str:
    if isinstance(key, tuple) and len(key) >= 3:
        return f"{key[0]}://{key[1]}:{key[2]}"
    return str(key)


class TLSProvider(Protocol):
    """Upstream TLS contexts (``vallum.proxy.upstream_tls.UpstreamTLS`` implements it)."""

    def context_for(self, route: Route) -> ssl.SSLContext: ...

    def server_hostname(self, route: Route, upstream: Upstream) -> str: ...


class Sink(Protocol):
    """Where an upstream response goes (the downstream exchange)."""

    def upstream_head(
        self, status: int, headers: list[tuple[bytes, bytes]], no_body: bool, keep_alive: bool
    ) -> int:
        """Pass the response head on; returns its body framing (a ``FRAMING_*`` value)."""
        ...

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_done(self) -> None: ...

    def upstream_failed(self, exc: BaseException | None) -> None: ...

    def upstream_upgraded(self, rest: bytes) -> None: ...

    def upstream_raw(self, data: bytes) -> None: ...

    def upstream_writable(self, writable: bool) -> None: ...


class Writer(Protocol):
    """The client side's write batching: writes between ``cork`` and ``uncork`` go out as one."""

    def cork(self) -> None: ...

    def uncork(self) -> None: ...


# Response body framing, as announced by the upstream's headers.
FRAMING_NONE = 0  # no body (HEAD, 1xx, 204, 304)
FRAMING_LENGTH = 1  # Content-Length
FRAMING_CHUNKED = 2  # Transfer-Encoding: chunked
FRAMING_EOF = 3  # until the connection closes


class UpstreamError(Exception):
    """The upstream could not be reached (connect refused, reset, TLS failure)."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream endpoint, serving one exchange at a time."""

    def __init__(self, pool: Pool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.sink: Sink | None = None
        self.writer: Writer | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.framing = FRAMING_EOF
        self.head_only = False  # the request was HEAD: no body follows the head
        self.got_response = False
        self.request_complete = False
        self.expecting = False  # a request was written whose response has not ended
        self.pooled = False  # in the pool's idle list (released exactly once per response)
        self.reading_paused = False
        self.reused = False
        self.closed = False
        self.raw = False
        self.idle_since = 0.0
        self._head_size = 0
        self._skip_interim = False
        self._pending: list[bytes] | None = None  # written at the end of the loop round

    # -- used by the exchange -------------------------------------------------------------
    def attach(self, sink: Sink, head_only: bool, writer: Writer | None = None) -> None:
        self.sink = sink
        self.writer = writer
        self.head_only = head_only
        self.got_response = False
        self.request_complete = False
        self.expecting = True
        self.headers = []
        self._head_size = 0
        self.framing = FRAMING_EOF

    def write(self, data: bytes) -> None:
        """Queue ``data``: it goes out at the end of the loop round (``Pool.round``),
        with whatever else this connection writes until then, in order."""
        if len(data) >= batching.JOIN_BYTES:  # a body streaming: now, for flow control
            self._write_now([data])
            return
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self.pool.round.add(self)
        else:
            pending.append(data)

    def writelines(self, parts: list[bytes]) -> None:
        if sum(map(len, parts)) >= batching.JOIN_BYTES:
            self._write_now(parts)
            return
        pending = self._pending
        if pending is None:
            self._pending = list(parts)
            self.pool.round.add(self)
        else:
            pending.extend(parts)

    def _write_now(self, parts: list[bytes]) -> None:
        if self._pending is not None:
            self.flush_writes()  # what was queued goes first
        if self.transport is not None and not self.closed:
            batching.send(self.transport, parts)

    def flush_writes(self) -> None:
        """Write what is queued, now."""
        out, self._pending = self._pending, None
        if out and self.transport is not None and not self.closed:
            batching.send(self.transport, out)

    def pause_reading(self) -> None:
        """Stop reading the response (the client is slow to take it). Idempotent."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read on. Idempotent; :meth:`Pool.release` calls it for a connection pooled paused."""
        if self.reading_paused:
            self.reading_paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        """Close and forget (the exchange gave up on it)."""
        self.sink = None
        if self.transport is not None and not self.closed:
            self.flush_writes()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.sink = None
        self._pending = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.raw:
            if self.sink is not None:
                self.sink.upstream_raw(data)
            return
        if not self.expecting:
            self._out_of_step("bytes from the upstream while no response was expected")
            return
        corked = self.writer if self.sink is not None else None
        if corked is not None:
            corked.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            sink = self.sink
            if sink is not None and self.parser.get_status_code() == 101:
                self.raw = True
                sink.upstream_upgraded(data[exc.args[0] :])
            else:
                self._fail(UpstreamError("unexpected protocol upgrade from upstream"))
        except httptools.HttpParserError as exc:
            if not self.closed:
                self._fail(UpstreamError(f"malformed response from upstream: {exc}"))
        finally:
            if corked is not None:
                corked.uncork()
        if not self.got_response and self.expecting:
            # The head did not end in this read: bound what llhttp's binding buffers for it
            # (one check a read, and none at all when the head ends in the read it began in).
            self._head_size += len(data)
            if self._head_size > MAX_RESPONSE_HEAD:
                self._fail(UpstreamError("response head too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.expecting = False
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if self.raw or (self.got_response and self.framing == FRAMING_EOF):
            sink.upstream_done()
        else:
            sink.upstream_failed(exc)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_writable(True)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.expecting:  # a second response in the same read as the first one's end
            self._out_of_step("a response nobody asked for")
            raise UpstreamError("response out of step")
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._skip_interim = True  # 100 Continue / 103 Early Hints: not passed on
            self.headers = []
            return
        self.got_response = True
        sink = self.sink
        if sink is None:
            return
        keep_alive = self.parser.should_keep_alive()
        no_body = self.head_only or status in (204, 304) or status == 101
        # The sink reads the framing headers while it filters them anyway.
        self.framing = sink.upstream_head(status, self.headers, no_body, keep_alive)
        if self.head_only and status != 101:
            # llhttp cannot be told the request was HEAD: it would wait for a body. End here and
            # give the connection a fresh parser.
            self.parser = httptools.HttpResponseParser(self)
            self._complete(keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_body(body)
        elif not self.expecting:  # a body after a HEAD response, or after a response ended
            self._out_of_step("response body bytes after the response ended")
            raise UpstreamError("response out of step")

    def on_message_complete(self) -> None:
        if self._skip_interim:
            self._skip_interim = False
            return
        if self.head_only or self.parser.get_status_code() == 101:
            return  # HEAD: completed in on_headers_complete; 101: the stream goes on raw
        self._complete(self.parser.should_keep_alive())

    # -- internals ----------------------------------------------------------------------------
    def _complete(self, keep_alive: bool) -> None:
        if not self.expecting:
            return
        self.expecting = False
        sink, self.sink = self.sink, None
        if keep_alive and self.request_complete and not self.closed:
            self.pool.release(self)
        else:
            self.close()
        if sink is not None:
            sink.upstream_done()

    def _out_of_step(self, what: str) -> None:
        """The upstream sent what no request asked for: never reuse this connection."""
        if not self.closed:
            log.warning(
                "upstream %s: %s; connection closed, not reused", _describe(self.key), what
            )
        sink, self.sink = self.sink, None
        self.expecting = False
        self.pool.forget(self)
        self.abort()
        if sink is not None:
            sink.upstream_failed(UpstreamError(what))

    def _fail(self, exc: BaseException) -> None:
        sink, self.sink = self.sink, None
        self.expecting = False
        self.pool.forget(self)
        self.abort()
        if sink is not None:
            sink.upstream_failed(exc)


class Pool:
    """Keep-alive connections by ``(scheme, host, port, TLS profile)``, plus endpoint health."""

    def __init__(self, tls: TLSProvider | None = None) -> None:
        self.tls = tls
        self._idle: dict[PoolKey, list[UpstreamConnection]] = {}
        self._ejected: dict[tuple[str, str, int], float] = {}
        self._rr: dict[tuple[Upstream, ...], _RoundRobin] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.connects = 0  # connections opened (tests and metrics)
        self.round = batching.Round()  # connections with request writes due this round

    # -- connections --------------------------------------------------------------------------
    def take(self, key: PoolKey) -> UpstreamConnection | None:
        """An idle pooled connection for ``key``, or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(
        self, key: PoolKey, route: Route, upstream: Upstream, timeout: float = CONNECT_TIMEOUT
    ) -> UpstreamConnection:
        """Open a new connection (TLS per the route's profile); raises on failure."""
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        server_hostname: str | None = None
        if upstream.scheme == "https":
            if self.tls is None:
                raise UpstreamError("no upstream TLS configured")
            context = self.tls.context_for(route)
            server_hostname = self.tls.server_hostname(route, upstream)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self, key),
                    upstream.host,
                    upstream.port,
                    ssl=context,
                    server_hostname=server_hostname,
                ),
                timeout,
            )
        except (OSError, TimeoutError):
            self.eject(upstream)
            raise
        self.connects += 1
        self._ejected.pop((upstream.scheme, upstream.host, upstream.port), None)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Pool a connection whose response ended; once per response (a second release of
        the same connection would hand it to two exchanges at once)."""
        if conn.pooled:  # (the caller checked that it is open)
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        elif len(idle) >= POOL_MAX_IDLE_PER_KEY:
            conn.close()
            return
        if conn.reading_paused:  # an idle connection must see the upstream close, or misbehave
            conn.resume_reading()
        conn.idle_since = time.monotonic()
        conn.pooled = True
        idle.append(conn)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(POOL_IDLE_SECONDS / 4, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        if not conn.pooled:
            return
        conn.pooled = False
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def idle_count(self, key: PoolKey | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.pooled = False
                conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        self._sweeper = None
        limit = time.monotonic() - POOL_IDLE_SECONDS
        remaining = 0
        for idle in self._idle.values():
            stale = [c for c in idle if c.idle_since < limit]
            for conn in stale:
                idle.remove(conn)
                conn.pooled = False
                conn.close()
            remaining += len(idle)
        if remaining:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(POOL_IDLE_SECONDS / 4, self._sweep)

    # -- balancing and health -----------------------------------------------------------------
    def eject(self, upstream: Upstream) -> None:
        """Take an endpoint out of rotation for ``EJECT_SECONDS``."""
        self._ejected[(upstream.scheme, upstream.host, upstream.port)] = (
            time.monotonic() + EJECT_SECONDS
        )

    def is_ejected(self, upstream: Upstream) -> bool:
        until = self._ejected.get((upstream.scheme, upstream.host, upstream.port))
        if until is None:
            return False
        if until <= time.monotonic():
            del self._ejected[(upstream.scheme, upstream.host, upstream.port)]
            return False
        return True

    def pick(self, route: Route, exclude: frozenset[int] = frozenset()) -> int | None:
        """The index in ``route.to`` to use next; None when every endpoint was tried."""
        to = route.to
        if len(to) == 1:
            if exclude:
                return None
            return 0
        rr = self._rr.get(to)
        if rr is None:
            rr = self._rr[to] = _RoundRobin(tuple(u.weight for u in to))
        fallback: int | None = None
        for _ in range(len(rr.order)):
            index = rr.next()
            if index in exclude:
                continue
            if not self._ejected or not self.is_ejected(to[index]):
                return index
            if fallback is None:
                fallback = index
        return fallback  # every candidate ejected: panic mode, try one anyway


class _RoundRobin:
    """Smooth weighted round-robin (nginx's): weights 5,1,1 give a,a,b,a,c,a,a -- interleaved."""

    __slots__ = ("order", "position")

    def __init__(self, weights: tuple[int, ...]) -> None:
        current = [0] * len(weights)
        total = sum(max(w, 1) for w in weights)
        order: list[int] = []
        for _ in range(min(total, 10_000)):
            for i, w in enumerate(weights):
                current[i] += max(w, 1)
            best = max(range(len(weights)), key=current.__getitem__)
            current[best] -= total
            order.append(best)
        self.order = tuple(order)
        self.position = 0

    def next(self) -> int:
        index = self.order[self.position]
        self.position = (self.position + 1) % len(self.order)
        return index
