"""The OIDC client works when its coroutine starts outside a task, as the hot path runs gates.

``vallum.proxy.exchange`` drives ``pipeline.decide`` with ``coro.send(None)`` from the protocol
callback and wraps the rest in a task only when it suspends. aiohttp's client timeouts need a
current task; :meth:`OIDCClient._json` moves the request into one. Without that, sign-in and
bearer-token checks answered 500 ("Timeout context manager should be used inside a task").
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.support.net import free_port
from vallum.core import config
from vallum.proxy import exchange, oidc


async def _discovery_server(port: int) -> web.AppRunner:
    issuer = f"http://127.0.0.1:{port}"

    async def discovery(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.01)  # a real round trip: the first step must suspend
        return web.json_response({
            "issuer": issuer, "authorization_endpoint": f"{issuer}/auth",
            "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks",
        })

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_provider_request_started_outside_a_task_completes() -> None:
    port = free_port()
    runner = await _discovery_server(port)
    settings = config.Settings(
        idp_provider_url=f"http://127.0.0.1:{port}", idp_client_id="vallum"
    )
    client = oidc.OIDCClient(settings)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    tasks: list[asyncio.Task[Any]] = []

    def protocol_callback() -> None:  # what Exchange.start does, outside any task
        assert asyncio.current_task() is None
        coro = client.metadata()
        try:
            first = coro.send(None)
        except StopIteration as stop:  # pragma: no cover - discovery always suspends
            done.set_result(stop.value)
            return
        except BaseException as exc:  # pragma: no cover - the failure this test guards
            done.set_exception(exc)
            return

        async def resume() -> None:
            try:
                done.set_result(await exchange._Resume(coro, first))
            except BaseException as exc:
                done.set_exception(exc)

        tasks.append(loop.create_task(resume()))

    try:
        loop.call_soon(protocol_callback)
        meta = await asyncio.wait_for(done, 10)
        assert meta.token_endpoint == f"http://127.0.0.1:{port}/token"
    finally:
        await client.close()
        await runner.cleanup()
