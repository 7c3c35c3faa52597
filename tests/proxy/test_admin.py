"""The admin listener on a real port: liveness, readiness with reasons, Prometheus metrics."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from vallum.core import config
from vallum.proxy import admin, metrics, state

Running = tuple[str, state.TableHolder, metrics.Metrics, "Ready"]


class Ready:
    def __init__(self) -> None:
        self.value: bool | None = False

    def __call__(self) -> bool:
        if self.value is None:
            raise RuntimeError("probe broke")
        return bool(self.value)


@pytest.fixture
async def running(port: int) -> AsyncIterator[Running]:
    settings = config.Settings(address=":8443")
    holder = state.TableHolder(config.RouteTable(settings, settings.checksum()))
    collected = metrics.Metrics()
    ready = Ready()
    runner = await admin.start_admin("127.0.0.1", port, holder, collected, ready)
    try:
        yield f"http://127.0.0.1:{port}", holder, collected, ready
    finally:
        await runner.cleanup()


async def test_healthz_readyz_and_metrics(
    running: Running,
) -> None:
    base, holder, collected, ready = running
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok"}
        async with session.get(f"{base}/readyz") as r:
            body = await r.json()
            assert r.status == 503
            assert body["ready"] is False and "not loaded" in body["reason"]
        ready.value = True
        async with session.get(f"{base}/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["ready"] is True
            assert body["checksum"] == holder.current.checksum and body["generation"] == 1
        holder.reject("vallum.yaml:4: unknown key 'frm'")
        async with session.get(f"{base}/readyz") as r:
            body = await r.json()
            # A rejected reload keeps serving the old table: still ready, error reported.
            assert r.status == 200 and body["last_error"] == "vallum.yaml:4: unknown key 'frm'"
        ready.value = None
        async with session.get(f"{base}/readyz") as r:
            body = await r.json()
            assert r.status == 503 and "RuntimeError" in body["reason"]
        collected.observe("app", "GET", 200, 0.004)
        async with session.get(f"{base}/metrics") as r:
            text = await r.text()
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            assert 'vallum_requests_total{method="GET",route="app",status="200"} 1.0' in text
            assert "vallum_route_table_generation 1.0" in text
            # The rejected reload above is still the latest word on the config.
            assert "vallum_config_last_reload_success 0.0" in text
        async with session.get(f"{base}/anything") as r:
            assert r.status == 404


async def test_occupied_port_raises(port: int) -> None:
    settings = config.Settings()
    holder = state.TableHolder(config.RouteTable(settings, settings.checksum()))
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(OSError):
            await admin.start_admin("127.0.0.1", port, holder, metrics.Metrics(), lambda: True)


async def test_second_admin_on_the_same_port_fails(running: Running) -> None:
    base, holder, collected, _ = running
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        await admin.start_admin("127.0.0.1", port, holder, collected, lambda: True)
