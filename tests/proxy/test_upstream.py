"""The upstream leg: weighted round-robin, passive ejection, pooling per TLS profile, retries."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.proxy import dataplane as dp
from tests.support.net import free_port
from tests.support.transports import RecordingTransport
from vallum.proxy import upstream


def test_weighted_round_robin_is_smooth_and_proportional() -> None:
    route = dp.route("app.test", "http://a:1", "http://b:1", "http://c:1", weights=(5, 1, 1))
    pool = upstream.Pool()
    picks = [pool.pick(route) for _ in range(70)]
    counts = collections.Counter(picks)
    assert counts == {0: 50, 1: 10, 2: 10}
    assert picks[:7] == [0, 0, 1, 0, 2, 0, 0]  # interleaved (nginx's smooth WRR), not 5 in a row


def test_ejected_endpoints_are_skipped_until_cool_down_and_panic_mode() -> None:
    route = dp.route("app.test", "http://a:1", "http://b:1")
    pool = upstream.Pool()
    pool.eject(route.to[0])
    assert {pool.pick(route) for _ in range(10)} == {1}
    pool.eject(route.to[1])
    assert pool.pick(route) in (0, 1)  # all ejected: try anyway rather than fail everything
    assert pool.pick(route, exclude=frozenset({0, 1})) is None
    pool._ejected = {k: 0.0 for k in pool._ejected}  # cool-down over
    assert {pool.pick(route) for _ in range(10)} == {0, 1}
    single = dp.route("one.test", "http://a:1")
    assert pool.pick(single) == 0 and pool.pick(single, exclude=frozenset({0})) is None


async def test_a_dead_endpoint_is_ejected_and_requests_go_to_the_live_one() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with (
        dp.upstream_app(dp.echo_app("live")) as live,
        dp.serve(dp.table(dp.route("app.test", dead, live))) as p,
    ):
        client = await dp.RawClient.connect(p.port)
        names = []
        for _ in range(6):
            await client.send(dp.get("/"))
            status, _, body = await client.response()
            assert status == 200  # the failed connect is retried on the other endpoint
            names.append(json.loads(body)["name"])
        await client.close()
        assert names == ["live"] * 6
        assert p.ctx.pool.is_ejected(p.holder.current.settings.routes[0].to[0])


async def test_pool_is_shared_per_endpoint_and_tls_profile_and_idle_connections_close() -> None:
    async with dp.upstream_app(dp.echo_app()) as url:
        tbl = dp.table(dp.route("a.test", url), dp.route("b.test", url))
        async with dp.serve(tbl) as p:
            client = await dp.RawClient.connect(p.port)
            for host in ("a.test", "b.test", "a.test"):
                await client.send(dp.get("/", host=host))
                assert (await client.response())[0] == 200
            await client.close()
            assert p.ctx.pool.connects == 1 and p.ctx.pool.idle_count() == 1
            upstream.POOL_IDLE_SECONDS, saved = 0.0, upstream.POOL_IDLE_SECONDS
            try:
                p.ctx.pool._sweep()
            finally:
                upstream.POOL_IDLE_SECONDS = saved
            assert p.ctx.pool.idle_count() == 0


@contextlib.asynccontextmanager
async def one_shot_upstream(
    reply: bytes, linger: float = 0.0, served: list[int] | None = None
) -> AsyncIterator[dp.Proxy]:
    """A raw TCP upstream that reads one request head, writes ``reply`` and closes (after
    ``linger`` seconds), behind a proxy with one route to it; yields the proxy."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if served is not None:
            served.append(1)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(linger)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with dp.serve(dp.table(dp.route("app.test", f"http://127.0.0.1:{port}"))) as p:
            yield p
    finally:
        server.close()
        await server.wait_closed()


async def test_a_pooled_connection_closed_by_the_upstream_is_retried_once() -> None:
    # An upstream that closes each kept-alive connection right after its response was read:
    # the proxy's next request on the pooled connection finds it dead and must retry.
    served: list[int] = []
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with one_shot_upstream(reply, linger=0.05, served=served) as p:
        client = await dp.RawClient.connect(p.port)
        for _ in range(3):
            await client.send(dp.get("/"))
            status, _, body = await client.response()
            assert (status, body) == (200, b"ok")
            await asyncio.sleep(0.15)  # let the upstream close the idle connection
        await client.close()
        assert len(served) == 3


async def test_upstream_closing_mid_body_cuts_the_client_connection() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    async with one_shot_upstream(reply) as p:
        raw = await dp.raw_request(p.port, dp.get("/"))
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"partial")


async def test_upstream_garbage_is_502() -> None:
    async with one_shot_upstream(b"SSH-2.0-OpenSSH\r\n\r\n") as p:
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/"))
        assert (await client.response())[0] == 502
        await client.close()


async def test_read_until_close_response_is_chunked_to_the_client() -> None:
    reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof"
    async with one_shot_upstream(reply) as p:
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/"))
        status, headers, body = await client.response()
        assert (status, body, headers["transfer-encoding"]) == (200, b"until-eof", "chunked")
        await client.send(dp.get("/"))  # the client connection stays usable
        status, _, body = await client.response()
        assert (status, body) == (200, b"until-eof")
        await client.close()


async def test_writes_are_queued_to_the_end_of_the_round_in_order() -> None:
    pool = upstream.Pool()
    first, second = upstream.UpstreamConnection(pool, "a"), upstream.UpstreamConnection(pool, "b")
    one, two = RecordingTransport(), RecordingTransport()
    first.connection_made(one)
    second.connection_made(two)
    first.write(b"GET / HTTP/1.1\r\n\r\n")
    second.writelines([b"POST ", b"/ HTTP/1.1\r\n\r\n"])
    first.write(b"tail")
    assert one.calls == [] and two.calls == []
    await asyncio.sleep(0)  # the round ends: one write each
    assert one.calls == [b"GET / HTTP/1.1\r\n\r\ntail"]
    assert two.calls == [b"POST / HTTP/1.1\r\n\r\n"]
    big = b"x" * (64 * 1024)
    first.write(b"head")
    first.write(big)  # a body chunk goes now, after what was queued
    assert one.calls[1:] == [b"head", big]
    first.write(b"last")
    first.close()  # closing writes the queue first
    assert one.calls[-1] == b"last" and one.closed
    second.write(b"dropped")
    second.abort()  # an aborted connection sends nothing more
    await asyncio.sleep(0)
    assert two.calls == [b"POST / HTTP/1.1\r\n\r\n"]


# -- a connection is pooled once per response and never out of step (issue 11) --------------


@contextlib.asynccontextmanager
async def scripted_upstream(
    replies: list[bytes], late: bytes = b""
) -> AsyncIterator[tuple[dp.Proxy, list[int]]]:
    """A raw keep-alive upstream that answers the N-th request head on a connection with
    ``replies[N]`` (as is, extra bytes included) and, 50 ms after the first, sends ``late``
    unasked; yields the proxy and the connections made."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            for position, reply in enumerate(replies):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(reply)
                await writer.drain()
                if position == 0 and late:
                    await asyncio.sleep(0.05)
                    writer.write(late)
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with dp.serve(dp.table(dp.route("app.test", f"http://127.0.0.1:{port}"))) as p:
            yield p, connections
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("reply", "late", "head"),
    [
        # Two responses to one request, in one write: the second one is nobody's.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\n"
         b"Content-Length: 6\r\n\r\nstolen", b"", False),
        # ... or arriving a moment later, while the connection sits in the pool.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
         b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen", False),
        # A body after the response to HEAD.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen", b"", True),
    ],
)
async def test_a_response_nobody_asked_for_is_never_delivered(
    reply: bytes, late: bytes, head: bool
) -> None:
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine"
    async with scripted_upstream([reply, second], late) as (p, connections):
        client = await dp.RawClient.connect(p.port)
        first = b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n" if head else dp.get("/")
        await client.send(first)
        if head:  # a HEAD response has no body, whatever its Content-Length says
            answer = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(b"HTTP/1.1 200")
        else:
            assert (await client.response())[:3:2] == (200, b"first")
        await asyncio.sleep(0.15)
        assert p.ctx.pool.idle_count() == 0  # out of step: closed, out of the pool
        await client.send(dp.get("/"))
        status, _, body = await client.response()
        # A fresh connection answers with the script's first reply: never "mine" on a reused
        # connection that still held the stolen response.
        assert (status, body) == (200, b"stolen" if head else b"first")
        await client.close()
    assert len(connections) == 2  # the second request needed a new connection


async def test_a_connection_is_released_once_and_reads_again_when_pooled() -> None:
    async with scripted_upstream([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]) as (p, _):
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/"))
        assert (await client.response())[2] == b"ok"
        await client.close()
        pool = p.ctx.pool
        (conn,) = next(iter(pool._idle.values()))
        assert conn.transport is not None and conn.transport.is_reading()
        pool.release(conn)  # a second release of the same response: ignored
        assert pool.idle_count() == 1
        taken = pool.take(conn.key)
        assert taken is conn and pool.take(conn.key) is None
        # Paused for a slow client when its response ended: the pool resumes it.
        conn.pause_reading()
        assert not conn.transport.is_reading()
        pool.release(conn)
        assert conn.transport.is_reading() and not conn.reading_paused
