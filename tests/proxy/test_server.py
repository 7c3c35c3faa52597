"""``vallum.proxy.server``: the listeners, live reload under traffic, certificate rotation,
the admin listener, and ``--workers N`` processes sharing one port."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.proxy import dataplane as dp
from tests.support.certs import TestCA
from tests.support.net import free_port
from vallum.core import errors
from vallum.proxy import accesslog, server


def write_config(path: Path, text: str) -> None:
    """Replace the file atomically (as editors and ConfigMap mounts do)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def config_text(port: int, upstream: str, *, extra: str = "", route_extra: str = "") -> str:
    return (
        f"address: 127.0.0.1:{port}\n{extra}routes:\n"
        f"  - from: https://app.test\n    to: {upstream}\n"
        f"    allow_public_unauthenticated_access: true\n{route_extra}"
    )


@asynccontextmanager
async def running(path: Path, *, poll: bool = True) -> AsyncIterator[server.Server]:
    """A started ``Server`` for ``path``; its reloader polls every 0.1 s, or not at all
    (``poll=False``: the test says when to reload)."""
    srv = server.Server(
        server.compile_file(str(path)),
        config_path=str(path),
        access_log=accesslog.AccessLog(enabled=False),
    )
    await srv.start()
    assert srv.reloader is not None
    if poll:
        srv.reloader.interval = 0.1
    else:
        await srv.reloader.stop()
    try:
        yield srv
    finally:
        await srv.close(drain=1)


def parse_address_cases() -> None:
    assert server.parse_address(":443", "address") == (None, 443)
    assert server.parse_address("127.0.0.1:8443", "address") == ("127.0.0.1", 8443)
    assert server.parse_address("[::1]:80", "address") == ("::1", 80)


def test_parse_address() -> None:
    parse_address_cases()
    with pytest.raises(errors.ConfigError, match="http_redirect_addr: expected HOST:PORT"):
        server.parse_address("localhost", "http_redirect_addr")


async def test_https_listener_redirect_listener_and_admin(tmp_path: Path, test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.test", sans=["app.test"])
    cert, key = leaf.write(tmp_path)
    port, redirect, admin = free_port(), free_port(), free_port()
    path = tmp_path / "vallum.yaml"
    async with dp.upstream_app(dp.echo_app("a")) as url:
        write_config(
            path,
            config_text(
                port,
                url,
                extra=(
                    f"http_redirect_addr: 127.0.0.1:{redirect}\n"
                    f"metrics_address: 127.0.0.1:{admin}\n"
                    f"certificates:\n  - cert_file: {cert}\n    key_file: {key}\n"
                ),
            ),
        )
        async with running(path) as srv, aiohttp.ClientSession() as session:
            client_ctx = ssl.create_default_context(cadata=test_ca.cert_pem)
            client = await dp.RawClient.connect(srv.port, client_ctx)
            await client.send(dp.get("/x"))
            status, _, body = await client.response()
            assert status == 200 and b'"name":"a"' in body.replace(b" ", b"")
            await client.close()
            async with session.get(
                f"http://127.0.0.1:{redirect}/p?q=1",
                headers={"Host": "app.test"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 301
                assert resp.headers["Location"] == f"https://app.test:{port}/p?q=1"
            async with session.get(f"http://127.0.0.1:{admin}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                text = await resp.text()
                assert (
                    'vallum_requests_total{method="GET",route="https://app.test",status="200"}'
                    in text
                )


async def test_live_reload_under_traffic_has_zero_failed_requests(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "vallum.yaml"
    async with (
        dp.upstream_app(dp.echo_app("old")) as old,
        dp.upstream_app(dp.echo_app("new")) as new,
    ):
        write_config(path, config_text(port, old, extra="insecure_server: true\n"))
        async with running(path) as srv:
            seen: list[tuple[int, str]] = []
            stop = asyncio.Event()

            async def traffic() -> None:
                async with aiohttp.ClientSession() as session:
                    while not stop.is_set():
                        async with session.get(
                            f"http://127.0.0.1:{srv.port}/t", headers={"Host": "app.test"}
                        ) as resp:
                            data = await resp.json() if resp.status == 200 else {}
                            seen.append((resp.status, data.get("name", "")))

            workers = [asyncio.create_task(traffic()) for _ in range(4)]
            await asyncio.sleep(0.3)
            write_config(path, "routes: [this is: not valid")  # rejected: old table stays
            await asyncio.sleep(0.4)
            assert srv.holder.last_error is not None
            write_config(path, config_text(port, new, extra="insecure_server: true\n"))
            deadline = time.monotonic() + 5
            while not any(name == "new" for _, name in seen[-5:]):
                assert time.monotonic() < deadline, "the new table was never served"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*workers)
    statuses = {status for status, _ in seen}
    names = [name for _, name in seen]
    assert statuses == {200}, "a request failed during reload"
    assert names[0] == "old" and names[-1] == "new" and len(seen) > 50
    first_new = names.index("new")
    assert "old" not in names[first_new + 8 :]  # after the swap only a few in-flight stragglers


async def test_certificate_change_on_reload_serves_the_new_certificate(
    tmp_path: Path, test_ca: TestCA
) -> None:
    first = test_ca.issue("app.test", sans=["app.test"])
    second = test_ca.issue("app.test", sans=["app.test"])
    c1, k1 = first.write(tmp_path, "one")
    c2, k2 = second.write(tmp_path, "two")
    port = free_port()
    path = tmp_path / "vallum.yaml"

    def cfg(cert: Path, key: Path) -> str:
        return config_text(
            port,
            "http://127.0.0.1:9",
            extra=f"certificates:\n  - cert_file: {cert}\n    key_file: {key}\n",
        )

    write_config(path, cfg(c1, k1))
    async with running(path):
        assert await _served_certificate(port, test_ca) == first.der
        write_config(path, cfg(c2, k2))
        deadline = time.monotonic() + 5
        while await _served_certificate(port, test_ca) != second.der:
            assert time.monotonic() < deadline, "the new certificate was never served"
            await asyncio.sleep(0.1)


async def test_a_reload_with_a_broken_certificate_is_rejected_before_the_swap(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """The TLS context is compiled with the table: a certificate that does not load rejects the
    whole reload (old table and certificate keep serving, /readyz names the problem)."""
    first, second = test_ca.issue("app.test", sans=["app.test"]), test_ca.issue(
        "app.test", sans=["app.test"]
    )
    cert, key = first.write(tmp_path, "app")
    port, admin = free_port(), free_port()
    path = tmp_path / "vallum.yaml"

    def cfg(upstream: str) -> str:
        return config_text(
            port, upstream,
            extra=(f"metrics_address: 127.0.0.1:{admin}\n"
                   f"certificates:\n  - cert_file: {cert}\n    key_file: {key}\n"),
        )

    async with dp.upstream_app(dp.echo_app("old")) as old_url, dp.upstream_app(
        dp.echo_app("new")
    ) as new_url:
        write_config(path, cfg(old_url))
        async with running(path) as srv, aiohttp.ClientSession() as session:
            generation = srv.holder.generation
            # A route change and a certificate that does not match its key (the loader reads
            # both; only building the TLS context finds out): neither is taken.
            write_config(cert, second.cert_pem)
            write_config(path, cfg(new_url))
            readyz = f"http://127.0.0.1:{admin}/readyz"
            deadline = time.monotonic() + 5
            while srv.holder.last_error is None:
                assert time.monotonic() < deadline, "the broken reload was never noticed"
                await asyncio.sleep(0.05)
            assert "certificates[0]" in srv.holder.last_error
            assert srv.holder.generation == generation  # not swapped in
            async with session.get(readyz) as resp:
                state = await resp.json()
                assert "certificates[0]" in state["last_error"]
                assert state["generation"] == generation
            assert await _served_certificate(port, test_ca) == first.der
            assert await _name_served(port, test_ca) == b"old"

            # Fixed: the reload goes through, with the new certificate and route.
            write_config(key, second.key_pem)
            deadline = time.monotonic() + 5
            while srv.holder.generation == generation:
                assert time.monotonic() < deadline, "the fixed config was never loaded"
                await asyncio.sleep(0.05)
            assert srv.holder.last_error is None
            assert await _served_certificate(port, test_ca) == second.der
            assert await _name_served(port, test_ca) == b"new"


async def _name_served(port: int, ca: TestCA) -> bytes:
    client = await dp.RawClient.connect(port, ssl.create_default_context(cadata=ca.cert_pem))
    try:
        await client.send(dp.get("/x"))
        status, _, body = await client.response()
    finally:
        await client.close()
    assert status == 200, body
    return body.replace(b" ", b"").split(b'"name":"')[1].split(b'"')[0]


async def _served_certificate(port: int, ca: TestCA) -> bytes:
    ctx = ssl.create_default_context(cadata=ca.cert_pem)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="app.test"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return bytes(der)


def test_workers_share_the_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "vallum.yaml"
    write_config(path, config_text(port, "http://127.0.0.1:9", extra="insecure_server: true\n"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vallum.cli", "serve", "--config", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        prefixes = asyncio.run(_worker_prefixes(port))
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        # Each worker stamps its own request-id prefix: both answered.
        assert len(prefixes) == 2, prefixes
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


async def _worker_prefixes(port: int) -> set[str]:
    deadline = time.monotonic() + 10
    prefixes: set[str] = set()
    while len(prefixes) < 2 and time.monotonic() < deadline:
        try:
            raw = await dp.raw_request(
                port, dp.get("/", host="no-route.test", extra="Connection: close\r\n")
            )
        except OSError:
            await asyncio.sleep(0.05)
            continue
        assert raw.startswith(b"HTTP/1.1 404")
        rid = raw.split(b"X-Request-Id: ")[1].split(b"\r\n")[0].decode()
        prefixes.add(rid[:12])
    return prefixes


async def test_close_drains_running_requests_and_closes_kept_alive_connections(
    tmp_path: Path,
) -> None:
    from aiohttp import web

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/", slow)
    path = tmp_path / "vallum.yaml"
    async with dp.upstream_app(app) as url:
        write_config(path, config_text(free_port(), url, extra="insecure_server: true\n"))
        srv = server.Server(
            server.compile_file(str(path)), access_log=accesslog.AccessLog(enabled=False)
        )
        await srv.start()
        idle = await dp.RawClient.connect(srv.port)
        busy = await dp.RawClient.connect(srv.port)
        await busy.send(dp.get("/"))
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(srv.close(drain=5))
        status, headers, body = await busy.response()
        assert (status, body, headers.get("connection")) == (200, b"done", "close")
        assert await asyncio.wait_for(idle.reader.read(), 5) == b""  # closed while idle
        await closing
        assert not srv.ctx.connections
        await idle.close()
        await busy.close()


async def test_a_supplied_gate_is_used_and_closed_with_the_server(tmp_path: Path) -> None:
    from vallum.proxy import pipeline

    class Gate:
        closed = False

        async def authorize(self, req, match, table):  # type: ignore[no-untyped-def]
            raise AssertionError("intercept answers every request")

        def strip_request_headers(self) -> frozenset[str]:
            return frozenset()

        async def intercept(self, req, table):  # type: ignore[no-untyped-def]
            return pipeline.Respond(418, (("Content-Type", "text/plain"),), b"gate")

        async def close(self) -> None:
            self.closed = True

    path = tmp_path / "vallum.yaml"
    write_config(
        path, config_text(free_port(), "http://127.0.0.1:9", extra="insecure_server: true\n")
    )
    gate = Gate()
    srv = server.Server(
        server.compile_file(str(path)), gate=gate, access_log=accesslog.AccessLog(enabled=False)
    )
    await srv.start()
    client = await dp.RawClient.connect(srv.port)
    await client.send(dp.get("/"))
    assert (await client.response())[::2] == (418, b"gate")
    await client.close()
    await srv.close(drain=1)
    assert gate.closed


async def test_without_a_gate_the_server_uses_the_identity_gate(tmp_path: Path) -> None:
    from vallum.proxy.identity import gate as identity_gate

    path = tmp_path / "vallum.yaml"
    write_config(
        path, config_text(free_port(), "http://127.0.0.1:9", extra="insecure_server: true\n")
    )
    quiet = accesslog.AccessLog(enabled=False)
    srv = server.Server(server.compile_file(str(path)), access_log=quiet)
    assert isinstance(srv.ctx.gate, identity_gate.IdentityGate)
