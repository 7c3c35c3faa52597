"""Sign-outs carried between the workers' directory and the replicas' ConfigMaps.

The directory side is always real (DirectoryState, as the workers use it, in this process or a
forked one); the cluster side is a real ClusterState against a real API server when
``KUBECONFIG`` names one (``eval "$(e2e/control-plane up)"``), else a recorder of what would go
to it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from vallum.cli import revocation_bridge
from vallum.proxy import session_state


class Recorder:
    """Stands for ClusterState where no API server is at hand: what would be written."""

    def __init__(self) -> None:
        self.revoked: list[tuple[str, float]] = []

    async def revoke(self, session_id: str, until: float) -> None:
        self.revoked.append((session_id, until))


@pytest.fixture
def directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="vallum-sessions-") as path:
        yield path


def revoke_in_another_process(directory: str, session_id: str, until: float) -> None:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            asyncio.run(session_state.DirectoryState(directory).revoke(session_id, until))
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


async def test_a_workers_sign_out_goes_to_the_cluster_once(directory: str) -> None:
    cluster = Recorder()
    bridge = revocation_bridge.Bridge(cluster, directory, asyncio.get_running_loop())
    try:
        until = time.time() + 3600
        revoke_in_another_process(directory, "session-A", until)
        assert await bridge.step() == 1
        assert cluster.revoked == [("session-A", float(f"{until:.0f}"))]
        assert await bridge.step() == 0  # read once
        revoke_in_another_process(directory, "session-A", until)  # signed out again elsewhere
        revoke_in_another_process(directory, "ended", time.time() - 10)
        with open(os.path.join(directory, revocation_bridge.LOG_NAME), "ab") as log:
            log.write(b"not/a valid id 99999999999\nsession-B soon\nsession-C ")
        assert await bridge.step() == 0
        with open(os.path.join(directory, revocation_bridge.LOG_NAME), "ab") as log:
            log.write(f"{until:.0f}\n".encode())  # the rest of session-C's line
        assert await bridge.step() == 1
        assert [s for s, _ in cluster.revoked] == ["session-A", "session-C"]
    finally:
        bridge.close()


async def test_a_revocation_from_the_cluster_reaches_the_workers_and_does_not_come_back(
    directory: str,
) -> None:
    cluster = Recorder()
    worker = session_state.DirectoryState(directory)
    bridge = revocation_bridge.Bridge(cluster, directory, asyncio.get_running_loop())
    try:
        until = time.time() + 3600
        assert not worker.is_revoked("session-X", time.time())
        # The watch calls from its own thread.
        await asyncio.to_thread(bridge.from_cluster, "session-X", until)
        await asyncio.to_thread(bridge.from_cluster, "session-X", until)  # a resync repeats
        await asyncio.sleep(0.05)
        later = time.time() + session_state.POLL_SECONDS
        assert worker.is_revoked("session-X", later)
        assert await bridge.step() == 0
        assert cluster.revoked == []
        with open(os.path.join(directory, revocation_bridge.LOG_NAME), "rb") as log:
            assert log.read().count(b"session-X") == 1
    finally:
        bridge.close()
        worker.close()


# -- against a real API server -------------------------------------------------------------------

needs_cluster = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="no KUBECONFIG: start one with eval \"$(e2e/control-plane up)\"",
)


def _core() -> Any:
    from kubernetes import client, config

    config.load_kube_config()
    return client.CoreV1Api()


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    core = _core()
    name = f"bridge-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


async def _until(check: Any, timeout: float = 2.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


@needs_cluster
async def test_sign_outs_cross_between_workers_and_another_replica_within_two_seconds(
    namespace: str, directory: str
) -> None:
    from vallum.operator import revocations

    parent = revocations.ClusterState(session_state.LocalState(), _core(), namespace)
    other = revocations.ClusterState(session_state.LocalState(), _core(), namespace)
    bridge = revocation_bridge.Bridge(parent, directory, asyncio.get_running_loop())
    parent.on_revoked = bridge.from_cluster
    worker = session_state.DirectoryState(directory)
    running = asyncio.create_task(bridge.run())
    try:
        for state in (parent, other):
            state.start()
            assert await asyncio.to_thread(state.synced.wait, 10)
        until = time.time() + 3600

        # Signed out on the other replica: this replica's workers refuse it.
        await other.revoke("from-other-replica", until)
        await _until(lambda: worker.is_revoked("from-other-replica", time.time() + 1))

        # Signed out in a worker (another process): the other replica refuses it.
        revoke_in_another_process(directory, "from-a-worker", until)
        await _until(lambda: other.is_revoked("from-a-worker", time.time()))
        names = [c.metadata.name for c in _core().list_namespaced_config_map(
            namespace, label_selector=revocations.LABEL).items]
        assert sorted(names) == sorted(
            revocations.object_name(s) for s in ("from-other-replica", "from-a-worker"))
        with open(os.path.join(directory, revocation_bridge.LOG_NAME), "rb") as log:
            text = log.read()
        assert text.count(b"from-a-worker") == 1 and text.count(b"from-other-replica") == 1
    finally:
        running.cancel()
        for state in (parent, other):
            state.close()
        bridge.close()
        worker.close()
