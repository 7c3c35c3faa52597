"""``Server.publish``: a table built elsewhere (``vallum controller``) swapped in through a file
reload's checks, or rejected with the current table still serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from tests.proxy import dataplane as dp
from tests.support.net import free_port
from vallum.core import config
from vallum.proxy import accesslog, server


@asynccontextmanager
async def started(table: config.RouteTable) -> AsyncIterator[server.Server]:
    srv = server.Server(
        table, gate=dp.PublicOnlyGate(), access_log=accesslog.AccessLog(enabled=False)
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close(drain=1)


async def status_of(port: int, host: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/", headers={"Host": host}
    ) as response:
        return response.status, await response.text()


async def test_publish_swaps_and_an_equal_table_is_no_swap() -> None:
    port = free_port()
    async with dp.upstream_app(dp.echo_app("a")) as url_a, dp.upstream_app(
        dp.echo_app("b")
    ) as url_b:
        first = dp.table(dp.route("a.test", url_a), address=f"127.0.0.1:{port}",
                         insecure_server=True)
        second = dp.table(dp.route("b.test", url_b), address=f"127.0.0.1:{port}",
                          insecure_server=True)
        async with started(first) as srv:
            assert (await status_of(port, "a.test"))[0] == 200
            assert await srv.publish(second) is True
            assert srv.holder.generation == 2
            assert srv.holder.current is second
            assert (await status_of(port, "b.test"))[0] == 200
            assert (await status_of(port, "a.test"))[0] == 404
            again = dp.table(dp.route("b.test", url_b), address=f"127.0.0.1:{port}",
                             insecure_server=True)
            assert await srv.publish(again) is True
            assert srv.holder.generation == 2  # same checksum: nothing to swap


async def test_a_table_the_listener_cannot_take_is_rejected() -> None:
    port = free_port()
    async with dp.upstream_app(dp.echo_app("a")) as url:
        first = dp.table(dp.route("a.test", url), address=f"127.0.0.1:{port}",
                         insecure_server=True)
        # Switching the listener from HTTP to HTTPS needs a restart: the reload refuses it.
        https = dp.table(dp.route("b.test", url), address=f"127.0.0.1:{port}")
        async with started(first) as srv:
            assert await srv.publish(https) is False
            assert srv.holder.current is first
            assert srv.holder.generation == 1
            assert srv.holder.last_error is not None
            assert "insecure_server" in srv.holder.last_error
            assert (await status_of(port, "a.test"))[0] == 200
