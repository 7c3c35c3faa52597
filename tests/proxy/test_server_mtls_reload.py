"""A reload that changes ``downstream_mtls`` (issue 11, finding 17), with real TLS: the new client
CA needs a new listening socket, and when that socket cannot be made the whole reload is
rejected -- the old table and the old listener keep serving together, ``/readyz`` names the
problem, the failure is counted and logged -- instead of a new table served behind a listener
that still checks certificates against the old CA. Also: a listener on port 0 keeps its port.

The listen failure is the kernel's own: the process's file-descriptor limit is lowered to the
descriptors already open, between the compile step and the swap, so ``socket()`` fails with
EMFILE exactly where a real rebind would."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import ssl
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest

from tests.proxy import dataplane as dp
from tests.proxy import test_server
from tests.support.certs import Leaf, TestCA
from tests.support.net import free_port
from vallum.core import config
from vallum.proxy import server


@pytest.fixture(scope="module")
def ca_a() -> TestCA:
    return TestCA.create("Client CA A")


@pytest.fixture(scope="module")
def ca_b() -> TestCA:
    return TestCA.create("Client CA B")


def _config(
    address: str, cert: Path, key: Path, client_ca: Path, upstream: str, admin: int | None = None
) -> str:
    return (
        f"address: {address}\n"
        + (f"metrics_address: 127.0.0.1:{admin}\n" if admin else "")
        + f"certificates:\n  - cert_file: {cert}\n    key_file: {key}\n"
        f"downstream_mtls:\n  ca_file: {client_ca}\n  enforcement: reject_connection\n"
        f"routes:\n  - from: https://app.test\n    to: {upstream}\n"
        "    allow_public_unauthenticated_access: true\n"
    )


def _replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _serving(path: Path) -> AbstractAsyncContextManager[server.Server]:
    return test_server.running(path, poll=False)


async def _outcome(port: int, server_ca: TestCA, client: Leaf, tmp: Path) -> str:
    """``"200"`` when a request with ``client``'s certificate is served, else ``"refused"``."""
    cert, key = client.write(tmp, f"client-{port}")
    ctx = ssl.create_default_context(cadata=server_ca.cert_pem)
    ctx.load_cert_chain(cert, key)
    try:
        conn = await asyncio.wait_for(dp.RawClient.connect(port, ctx), 5)
        try:
            await conn.send(dp.get("/x"))
            status, _, _ = await conn.response(timeout=5)
        finally:
            await conn.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return "refused"
    return str(status)


def _exhausting_descriptors(compile_: Callable[[str], config.RouteTable]) -> Callable[
    [str], config.RouteTable
]:
    """The real compile step, then no file descriptor left: the lowest free descriptor becomes
    the soft limit, so the next ``socket()`` fails with EMFILE."""

    def compile_then_exhaust(path: str) -> config.RouteTable:
        table = compile_(path)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        return table

    return compile_then_exhaust


async def test_a_failed_rebind_rejects_the_reload_and_keeps_table_and_listener_together(
    tmp_path: Path,
    test_ca: TestCA,
    ca_a: TestCA,
    ca_b: TestCA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = test_ca.issue("app.test", sans=["app.test"]).write(tmp_path, "server")
    key.chmod(0o600)
    ca_file = tmp_path / "clients.pem"
    ca_file.write_text(ca_a.cert_pem)
    alice, mallory = ca_a.issue("alice", client=True), ca_b.issue("mallory", client=True)
    port, admin = free_port(), free_port()
    path = tmp_path / "vallum.yaml"
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with dp.upstream_app(dp.echo_app("up")) as upstream:
        path.write_text(_config(f"127.0.0.1:{port}", cert, key, ca_file, upstream, admin))
        async with _serving(path) as srv, aiohttp.ClientSession() as session:
            assert srv.reloader is not None
            assert await _outcome(port, test_ca, alice, tmp_path) == "200"
            assert await _outcome(port, test_ca, mallory, tmp_path) == "refused"
            generation = srv.holder.generation

            # The client CA is replaced: A is no longer trusted, B is.
            _replace(ca_file, ca_b.cert_pem)
            real_compile = srv.reloader.compile
            srv.reloader.compile = _exhausting_descriptors(real_compile)
            try:
                with caplog.at_level(logging.INFO, logger="vallum"):
                    swapped = await srv.reloader.reload()
                    await asyncio.sleep(0.3)  # anything scheduled by the swap runs out of fds too
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                srv.reloader.compile = real_compile

            # Rejected whole, visibly: the reload says so, the table is not swapped, /readyz
            # and /metrics show it, the log has the event.
            assert swapped is False  # 4704c96: True, the table swapped, the listener kept A
            assert srv.holder.generation == generation
            assert srv.holder.current.settings.downstream_mtls is not None
            assert srv.holder.current.settings.downstream_mtls.ca_pem == ca_a.cert_pem
            assert srv.holder.last_error is not None
            assert "downstream_mtls" in srv.holder.last_error
            assert "Too many open files" in srv.holder.last_error
            async with session.get(f"http://127.0.0.1:{admin}/readyz") as resp:
                ready = await resp.json()
            assert ready["generation"] == generation
            assert "downstream_mtls" in (ready["last_error"] or "")
            async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                text = await resp.text()
            assert "vallum_config_last_reload_success 0.0" in text
            assert any(
                getattr(r, "event", None) == "tls_rebind_failed" for r in caplog.records
            )
            # Table and listener agree: A's certificate still gets in, B's does not.
            assert await _outcome(port, test_ca, alice, tmp_path) == "200"
            assert await _outcome(port, test_ca, mallory, tmp_path) == "refused"

            # With descriptors to spare the same file reloads: B in, A out, error cleared.
            assert await srv.reloader.reload() is True
            assert srv.holder.generation == generation + 1
            assert srv.holder.last_error is None
            assert await _outcome(port, test_ca, mallory, tmp_path) == "200"
            assert await _outcome(port, test_ca, alice, tmp_path) == "refused"


async def test_a_listener_on_port_0_keeps_its_port_when_the_client_ca_changes(
    tmp_path: Path, test_ca: TestCA, ca_a: TestCA, ca_b: TestCA
) -> None:
    cert, key = test_ca.issue("app.test", sans=["app.test"]).write(tmp_path, "server")
    key.chmod(0o600)
    ca_file = tmp_path / "clients.pem"
    ca_file.write_text(ca_a.cert_pem)
    bob = ca_b.issue("bob", client=True)
    path = tmp_path / "vallum.yaml"
    async with dp.upstream_app(dp.echo_app("up")) as upstream:
        path.write_text(_config("127.0.0.1:0", cert, key, ca_file, upstream))
        async with _serving(path) as srv:
            assert srv.reloader is not None
            port = srv.port
            assert await _outcome(port, test_ca, bob, tmp_path) == "refused"
            _replace(ca_file, ca_b.cert_pem)
            assert await srv.reloader.reload() is True
            await asyncio.sleep(0.1)
            assert srv.port == port  # 4704c96: a new random port, and the old one closed
            assert await _outcome(port, test_ca, bob, tmp_path) == "200"


async def test_switching_insecure_server_needs_a_restart(tmp_path: Path) -> None:
    """What ``address`` speaks (HTTP or HTTPS) is not changed under running clients: such a
    reload is rejected with the reason, and plain HTTP keeps being served."""
    port = free_port()
    path = tmp_path / "vallum.yaml"
    route = (
        "routes:\n  - from: https://app.test\n    to: http://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
    )
    path.write_text(f"address: 127.0.0.1:{port}\ninsecure_server: true\n{route}")
    async with _serving(path) as srv:
        assert srv.reloader is not None
        _replace(path, f"address: 127.0.0.1:{port}\n{route}")
        assert await srv.reloader.reload() is False  # 4704c96: swapped, HTTPS on an HTTP server
        assert srv.holder.last_error is not None
        assert "insecure_server: changed from true to false; restart vallum" in (
            srv.holder.last_error
        )
        assert srv.holder.current.settings.insecure_server is True
        conn = await dp.RawClient.connect(port)
        await conn.send(dp.get("/x"))
        status, _, _ = await conn.response()
        await conn.close()
        assert status == 502  # plain HTTP, to an upstream that is not there
