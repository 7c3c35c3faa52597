"""``vallum controller --workers 2`` against a real API server (issue 12, item 1).

The API server is watched once, by the parent process; the workers only serve. Which process
answered a request is read from ``/proc`` (the server side of the client's connection), never
from anything the response says. Each test runs against replicas of its module: ``workers``
(``--workers 2``) and ``single`` (one process), sharing a Lease and the sign-outs in a
namespace of their own, with a Settings object that signs users in.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support import procnet

from e2e import conftest, signed_in, test_controller

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

SIGNED_IN = {"ingress.pomerium.io/allow_any_authenticated_user": "true"}


class Setup:
    def __init__(self, cluster: conftest.Cluster, home: str, class_name: str,
                 controller_name: str, settings_name: str, cookie_secret: str) -> None:
        self.cluster = cluster
        self.home = home
        self.class_name = class_name
        self.controller_name = controller_name
        self.settings_name = settings_name
        self.cookie_secret = cookie_secret
        self.running: dict[str, conftest.Controller] = {}

    @property
    def workers(self) -> conftest.Controller:
        return self.running["workers"]


def processes(running: conftest.Controller) -> tuple[int, int, set[int]]:
    """(parent, zygote, workers) of a ``--workers N`` controller."""
    assert running.process is not None
    parent = running.process.pid
    (zygote,) = procnet.children(parent)
    return parent, zygote, procnet.children(zygote)


def answers(running: conftest.Controller, host: str, connections: int = 16,
            headers: dict[str, str] | None = None) -> list[tuple[int, dict[str, Any], int]]:
    """(status, JSON body, pid that answered) for ``connections`` connections open at once."""
    _, _, workers = processes(running)
    opened: list[socket.socket] = []
    out = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            opened.append(sock)
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
                         f"{extra}\r\n".encode())
            status, body = _response(sock)
            owners = procnet.serving(running.port, sock.getsockname()[1], workers)
            out.append((status, body, owners.pop() if len(owners) == 1 else 0))
    finally:
        for sock in opened:
            sock.close()
    return out


def _response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                   if k.lower() == "content-length"), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the body"
        body += chunk
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {"text": body.decode("utf-8", "replace")}
    return int(lines[0].split()[1]), parsed if isinstance(parsed, dict) else {}


@pytest.fixture(scope="module")
def setup(cluster: conftest.Cluster, upstream: conftest.Upstream,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with cluster.temporary_namespace() as home, conftest.own_ingress_class(cluster) as (
        class_name, controller_name
    ), signed_in.settings(cluster, home, "e2e-workers", pomerium_compatibility=True) as (
        settings_name, cookie_secret
    ):
        found = Setup(cluster, home, class_name, controller_name, settings_name,
                      cookie_secret)
        logs = tmp_path_factory.mktemp("workers")
        with conftest.replicas(cluster, controller_name, logs, settings_name, home,
                               {"workers": ("--workers", "2"),
                                "single": ("--workers", "1")}) as running:
            found.running.update(running)
            yield found


def test_only_the_workers_listen_and_both_answer(
    setup: Setup, upstream: conftest.Upstream, namespace: str,
) -> None:
    running = setup.workers
    parent, zygote, workers = processes(running)
    assert len(workers) == 2
    assert procnet.listening(running.port, {parent, zygote, *workers}) == workers
    assert procnet.listening(running.admin_port, {parent, zygote, *workers}) == {parent}
    host = f"both.{namespace}.e2e.test"
    test_controller.backend(setup.cluster, namespace, upstream)
    test_controller.ingress(setup.cluster, namespace, setup.class_name, host)
    running.wait_for(host, test_controller.reached)
    conftest.wait_until(
        lambda: all(test_controller.reached(s, b) for s, b, _ in answers(running, host, 4)),
        what="every worker serving the new Ingress")
    got = answers(running, host)
    assert all(test_controller.reached(status, body) for status, body, _ in got), got
    assert {pid for _, _, pid in got} == workers


def test_a_changed_ingress_is_live_in_every_worker(
    setup: Setup, upstream: conftest.Upstream, namespace: str,
) -> None:
    running = setup.workers
    host = f"edit.{namespace}.e2e.test"
    test_controller.backend(setup.cluster, namespace, upstream)
    test_controller.ingress(setup.cluster, namespace, setup.class_name, host)
    running.wait_for(host, test_controller.reached)
    test_controller.ingress(setup.cluster, namespace, setup.class_name, host, annotations={
        **test_controller.PUBLIC,
        "ingress.pomerium.io/set_request_headers": '{"X-Team": "blue"}',
    })

    def everywhere() -> list[tuple[int, dict[str, Any], int]] | None:
        got = answers(running, host)
        teams = {b.get("headers", {}).get("X-Team") for _, b, _ in got}
        return got if teams == {"blue"} else None

    got = conftest.wait_until(everywhere, what="X-Team: blue from every connection")
    assert {pid for _, _, pid in got} == processes(running)[2]


def test_a_killed_worker_is_replaced_with_the_current_table(
    setup: Setup, upstream: conftest.Upstream, namespace: str,
) -> None:
    running = setup.workers
    host = f"kill.{namespace}.e2e.test"
    test_controller.backend(setup.cluster, namespace, upstream)
    test_controller.ingress(setup.cluster, namespace, setup.class_name, host, annotations={
        **test_controller.PUBLIC,
        "ingress.pomerium.io/set_request_headers": '{"X-Generation": "two"}',
    })
    conftest.wait_until(
        lambda: {b.get("headers", {}).get("X-Generation") for _, b, _ in answers(running, host)}
        == {"two"}, what="the Ingress live in every worker")
    _, zygote, before = processes(running)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # The other worker keeps serving meanwhile, and the controller stays ready.
    conftest.wait_until(lambda: victim not in procnet.children(zygote), what="the kill")
    assert test_controller.reached(*running.request(host))
    assert running.admin("/readyz")[0] == 200
    replaced = conftest.wait_until(
        lambda: (lambda now: now if len(now) == 2 and victim not in now
                 and procnet.listening(running.port, now) == now else None)(
            procnet.children(zygote)),
        what="a new worker listening")
    (new,) = replaced - before
    got = conftest.wait_until(
        lambda: (lambda a: a if new in {pid for _, _, pid in a} else None)(answers(running, host)),
        what="the new worker answering")
    assert {b.get("headers", {}).get("X-Generation") for _, b, _ in got} == {"two"}
    assert "worker_restart" in running.log()


def test_a_sign_out_crosses_between_workers_and_the_other_replica_within_two_seconds(
    setup: Setup, upstream: conftest.Upstream, namespace: str,
) -> None:
    host = f"signed.{namespace}.e2e.test"
    test_controller.backend(setup.cluster, namespace, upstream)
    test_controller.ingress(setup.cluster, namespace, setup.class_name, host,
                            annotations=SIGNED_IN)
    workers, single = setup.running["workers"], setup.running["single"]
    for one in (workers, single):
        cookie = signed_in.cookie(setup.cookie_secret)
        headers = {"Cookie": cookie, "Accept": "application/json"}
        for running in (workers, single):
            conftest.wait_until(lambda r=running, h=headers: r.send("GET", host, "/", h)[0] == 200,
                                what="the signed-in request served")
        conftest.wait_until(
            lambda h=headers: {s for s, _, _ in answers(workers, host, 8, h)} == {200},
            what="every worker serving the signed-in route")
        status, answer = one.send("POST", host, "/.pomerium/sign_out",
                                  {"Cookie": cookie, "Origin": f"http://{host}"})
        signed_out = time.monotonic()
        assert status == 302, (status, answer, one.log())
        # Refused on the other replica and by every worker (the one that signed it out reads
        # it at once, its siblings within DirectoryState's half second).
        conftest.wait_until(
            lambda h=headers: single.send("GET", host, "/", h)[0] == 401
            and {s for s, _, _ in answers(workers, host, 8, h)} == {401},
            timeout=2.0, interval=0.02, what="the cookie refused everywhere")
        assert time.monotonic() - signed_out < 2.0


def test_not_ready_and_not_listening_until_a_first_table(
    cluster: conftest.Cluster, ingress_class: str, upstream: conftest.Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with conftest.waiting_for_settings(
        cluster, ingress_class, tmp_path_factory.mktemp("workers-wait"), ("--workers", "2")
    ) as (running, name):
        conftest.wait_until(lambda: running.admin("/healthz")[0] == 200, what="alive")
        time.sleep(3)  # time enough to list everything: the Settings object does not load
        parent, zygote, workers = processes(running)
        assert len(workers) == 2  # forked, waiting for a table
        assert running.admin("/readyz")[0] == 503
        assert procnet.listening(running.port, {parent, zygote, *workers}) == set()
        cluster.delete("settings", name)  # defaults: a table, served by both
        running.wait_ready()
        assert procnet.listening(running.port, {parent, zygote, *workers}) == workers
        assert running.stop() == 0, running.log()


def test_the_workers_memory_holds_no_credential(setup: Setup) -> None:
    """The workers are forked before the kubeconfig is read: its client key (or token) is in
    the parent's memory, and in no worker's."""
    import yaml

    with open(setup.cluster.kubeconfig) as file:
        user = yaml.safe_load(file)["users"][0]["user"]
    secret = user.get("client-key-data") or user.get("token")
    if not secret:
        pytest.skip("the kubeconfig has neither client-key-data nor a token")
    needles = [secret.encode()]
    if "client-key-data" in user:
        pem = base64.b64decode(secret).decode()
        needles.append(pem.splitlines()[1].encode())  # a line of the key itself
    parent, zygote, workers = processes(setup.workers)
    try:
        assert any(procnet.memory_contains(parent, n) for n in needles)  # the scan works
    except PermissionError:
        pytest.skip("cannot read another process's memory here (ptrace)")
    for pid in (zygote, *workers):
        assert not any(procnet.memory_contains(pid, n) for n in needles), pid
