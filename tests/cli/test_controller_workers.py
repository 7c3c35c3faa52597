"""``vallum controller --workers N``'s processes, for real: a zygote forking workers that serve
the tables the parent sends, the parent never listening, refusals, replaced workers, and workers
ending with the parent. (Against a real API server: ``e2e/test_controller_workers.py``.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from tests.proxy import dataplane as dp
from tests.support import certs, procnet
from tests.support.net import free_port
from vallum.cli import controller_workers
from vallum.core import config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


class Running:
    def __init__(self, workers: controller_workers.Workers, port: int, admin_port: int,
                 fatal: list[str]) -> None:
        self.workers = workers
        self.port = port
        self.admin_port = admin_port
        self.fatal = fatal

    def table(self, *routes: config.Route, **settings: object) -> config.RouteTable:
        values: dict[str, object] = {"address": f"127.0.0.1:{self.port}",
                                     "insecure_server": True}
        values.update(settings)
        return dp.table(*routes, **values)  # type: ignore[arg-type]

    def pids(self) -> set[int]:
        return {w.pid for w in self.workers.workers.values()}

    async def readyz(self) -> tuple[int, dict[str, object]]:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{self.admin_port}/readyz"
        ) as response:
            return response.status, await response.json()

    async def answers(self, host: str, connections: int = 16) -> list[tuple[int, str, int]]:
        """(status, body, pid of the worker that answered) over ``connections`` connections
        open at once (the kernel spreads them over the workers)."""
        opened = []
        out = []
        try:
            for _ in range(connections):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                opened.append(writer)
                writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status, body = await _response(reader)
                client_port = writer.get_extra_info("sockname")[1]
                owners = procnet.serving(self.port, client_port, self.pids())
                out.append((status, body, owners.pop() if len(owners) == 1 else 0))
        finally:
            for writer in opened:
                writer.close()
        return out


async def _response(reader: asyncio.StreamReader) -> tuple[int, str]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return int(lines[0].split()[1]), body.decode("utf-8", "replace")


@asynccontextmanager
async def running(count: int = 2) -> AsyncIterator[Running]:
    fatal: list[str] = []
    workers = controller_workers.Workers(count, fatal.append)
    admin_port = free_port()
    try:
        await workers.start(f"127.0.0.1:{admin_port}")
        yield Running(workers, free_port(), admin_port, fatal)
    finally:
        await workers.close()
        workers.cleanup()


async def eventually(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s")


async def test_every_worker_serves_and_the_parent_does_not_listen() -> None:
    async with dp.upstream_app(dp.echo_app("a")) as url, running(2) as run:
        assert len(run.pids()) == 2
        status, body = await run.readyz()
        assert status == 503 and body["ready"] is False
        assert await run.workers.publish(run.table(dp.route("a.test", url))) is True
        await eventually(run.workers.ready)
        status, body = await run.readyz()
        assert status == 200 and body["ready"] is True

        processes = {os.getpid(), run.workers.zygote.pid, *run.pids()}
        assert procnet.listening(run.port, processes) == run.pids()
        got = await run.answers("a.test")
        assert {status for status, _, _ in got} == {200}
        assert all(json.loads(body)["name"] == "a" for _, body, _ in got)
        assert {pid for _, _, pid in got} == run.pids()  # both workers answered

        # /metrics (the parent's) counts the requests of both (each flushes within a second).
        async def counted() -> float:
            async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{run.admin_port}/metrics"
            ) as response:
                text = await response.text()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("vallum_requests_total{"))

        deadline = time.monotonic() + 5
        while await counted() < len(got) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await counted() == len(got)


async def test_a_new_table_reaches_every_worker_and_a_refused_one_changes_nothing() -> None:
    async with dp.upstream_app(dp.echo_app("a")) as url_a, dp.upstream_app(
        dp.echo_app("b")
    ) as url_b, running(2) as run:
        assert await run.workers.publish(run.table(dp.route("a.test", url_a)))
        assert await run.workers.publish(run.table(dp.route("b.test", url_b)))
        got = await run.answers("b.test")
        assert {status for status, _, _ in got} == {200}
        assert {pid for _, _, pid in got} == run.pids()
        assert {status for status, _, _ in await run.answers("a.test", 6)} == {404}

        # Every worker refuses to switch the listener to HTTPS: both keep serving b.test.
        refused = run.table(dp.route("c.test", url_a), insecure_server=False)
        assert await run.workers.publish(refused) is False
        error = run.workers.holder.last_error or ""
        assert "worker 0:" in error and "worker 1:" in error and "insecure_server" in error
        status, body = await run.readyz()
        assert status == 200 and "insecure_server" in str(body["last_error"])
        assert {status for status, _, _ in await run.answers("b.test", 6)} == {200}
        assert run.workers.holder.current.checksum != refused.checksum
        # And the next good table goes through (as a whole table or a delta, as each needs).
        assert await run.workers.publish(run.table(dp.route("a.test", url_a)))
        assert {status for status, _, _ in await run.answers("a.test", 6)} == {200}


async def test_a_killed_worker_is_replaced_with_the_current_table() -> None:
    async with dp.upstream_app(dp.echo_app("a")) as url_a, dp.upstream_app(
        dp.echo_app("b")
    ) as url_b, running(2) as run:
        assert await run.workers.publish(run.table(dp.route("a.test", url_a)))
        assert await run.workers.publish(run.table(dp.route("b.test", url_b)))
        await eventually(run.workers.ready)
        victim = run.workers.workers[0].pid
        survivor = run.workers.workers[1].pid
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: 0 not in run.workers.workers)
        assert run.workers.ready()  # the other worker still serves
        await eventually(lambda: 0 in run.workers.workers and run.workers.workers[0].served)
        replacement = run.workers.workers[0].pid
        assert replacement not in (victim, survivor)
        assert run.workers.workers[1].pid == survivor
        got = await run.answers("b.test")
        assert {status for status, _, _ in got} == {200}
        assert replacement in {pid for _, _, pid in got}
        # Later tables reach the replacement too.
        assert await run.workers.publish(run.table(dp.route("a.test", url_a)))
        got = await run.answers("a.test")
        assert {status for status, _, _ in got} == {200}
        assert {pid for _, _, pid in got} == {replacement, survivor}


async def test_a_worker_fed_garbage_is_replaced_and_the_others_keep_serving() -> None:
    async with dp.upstream_app(dp.echo_app("a")) as url, running(2) as run:
        assert await run.workers.publish(run.table(dp.route("a.test", url)))
        await eventually(run.workers.ready)
        broken, survivor = run.workers.workers[0].pid, run.workers.workers[1].pid
        run.workers.workers[0].writer.write(b"GET / HTTP/1.1\r\n\r\n" * 10)
        await eventually(lambda: 0 in run.workers.workers
                         and run.workers.workers[0].pid != broken
                         and run.workers.workers[0].served)
        assert run.workers.workers[1].pid == survivor
        assert run.fatal == []
        got = await run.answers("a.test")
        assert {status for status, _, _ in got} == {200}


async def test_a_worker_that_cannot_listen_stops_the_controller_with_the_reason() -> None:
    async with running(2) as run:
        taken = socket.socket()
        taken.bind(("127.0.0.1", run.port))
        taken.listen()
        try:
            assert await run.workers.publish(run.table(dp.route("a.test", "http://127.0.0.1:1")))\
                is False
            await eventually(lambda: bool(run.fatal))
        finally:
            taken.close()
        assert "before it served its first table" in run.fatal[0]
        assert "address already in use" in run.fatal[0].lower()
        assert not run.workers.ready()


PARENT = textwrap.dedent("""
    import asyncio, json, sys
    from vallum.cli import controller_workers
    from vallum.core import config, routing

    async def main():
        workers = controller_workers.Workers(2, print)
        await workers.start(None)
        table = routing.build_table(config.Settings(address="127.0.0.1:" + sys.argv[1],
                                                    insecure_server=True))
        assert await workers.publish(table)
        pids = [w.pid for w in workers.workers.values()]
        print(json.dumps({"zygote": workers.zygote.pid, "workers": pids}), flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


def test_the_workers_end_when_the_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(free_port())],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        pids = json.loads(line)
        everyone = [pids["zygote"], *pids["workers"]]
        assert all(os.path.exists(f"/proc/{pid}") for pid in everyone)
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in everyone):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in everyone)
    finally:
        if parent.poll() is None:
            parent.kill()
        if parent.stdout is not None:
            parent.stdout.close()


def _alive(pid: int) -> bool:
    """Still running (a zombie waiting for its parent to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_hung_worker_is_killed_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller_workers, "ANSWER_SECONDS", 1.0)
    async with dp.upstream_app(dp.echo_app("a")) as url_a, dp.upstream_app(
        dp.echo_app("b")
    ) as url_b, running(2) as run:
        assert await run.workers.publish(run.table(dp.route("a.test", url_a)))
        await eventually(run.workers.ready)
        hung, survivor = run.workers.workers[0].pid, run.workers.workers[1].pid
        os.kill(hung, signal.SIGSTOP)
        started = time.monotonic()
        assert await run.workers.publish(run.table(dp.route("b.test", url_b))) is False
        assert time.monotonic() - started < 5
        assert "no answer after 1 s" in (run.workers.holder.last_error or "")
        await eventually(lambda: 0 in run.workers.workers
                         and run.workers.workers[0].pid != hung
                         and run.workers.workers[0].served)
        assert not os.path.exists(f"/proc/{hung}") or not procnet.socket_inodes(hung)
        assert run.workers.workers[1].pid == survivor
        assert await run.workers.publish(run.table(dp.route("b.test", url_b)))
        got = await run.answers("b.test")
        assert {status for status, _, _ in got} == {200}
        assert {pid for _, _, pid in got} == run.pids()


async def _peer_certificate(port: int, ca_pem: str, name: str) -> bytes:
    context = ssl.create_default_context(cadata=ca_pem)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                              server_hostname=name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return bytes(der)
    finally:
        writer.close()


async def test_a_rotated_certificate_reaches_every_worker() -> None:
    ca = certs.TestCA.create()
    first, second = ca.issue("a.test", ["a.test"]), ca.issue("a.test", ["a.test"])
    async with running(2) as run:
        def table(leaf: certs.Leaf) -> config.RouteTable:
            cert = config.Certificate(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem)
            return run.table(dp.route("a.test", "http://127.0.0.1:1"), insecure_server=False,
                             certificates=(cert,))

        assert await run.workers.publish(table(first))
        seen = {await _peer_certificate(run.port, ca.cert_pem, "a.test") for _ in range(12)}
        assert seen == {first.der}
        assert await run.workers.publish(table(second))
        for _ in range(3):  # new handshakes, spread over both workers, get the new one
            seen = {await _peer_certificate(run.port, ca.cert_pem, "a.test") for _ in range(12)}
            assert seen == {second.der}
        assert run.fatal == []


async def test_the_parent_process_is_left_as_it_was() -> None:
    from prometheus_client import values

    from vallum.proxy import metrics, session_state

    before = (dict(os.environ), values.ValueClass)
    async with running(1) as run:
        directories = (os.environ[metrics.MULTIPROC_ENV], run.workers.sessions_directory)
        assert os.environ[session_state.ENV] == directories[1]
    assert (dict(os.environ), values.ValueClass) == before
    assert not any(os.path.exists(path) for path in directories)


async def test_a_killed_zygote_ends_the_workers_and_stops_the_controller() -> None:
    async with running(2) as run:
        assert await run.workers.publish(run.table(dp.route("a.test", "http://127.0.0.1:1")))
        workers = run.pids()
        os.kill(run.workers.zygote.pid, signal.SIGKILL)
        await eventually(lambda: bool(run.fatal))
        assert "cannot be started again" in run.fatal[0]
        await eventually(lambda: not any(_alive(pid) for pid in workers))
