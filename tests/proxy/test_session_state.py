"""Revocations and refresh coordination shared by the processes of one Vallum
(``vallum.proxy.session_state``): the directory the workers of ``vallum serve --workers N``
share, exercised across real forked processes, and the in-process state."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vallum.proxy import session_state
from vallum.proxy.session_state import DirectoryState, LocalState

FORK = multiprocessing.get_context("fork")


def _revoke_in_child(directory: str, session_id: str, until: float) -> None:
    state = DirectoryState(directory)
    asyncio.run(state.revoke(session_id, until))
    state.close()


def _hold_in_child(directory: str, held: object, release: object) -> None:
    async def main() -> None:
        state = DirectoryState(directory)
        async with state.hold("sid-1"):
            held.set()  # type: ignore[attr-defined]
            await asyncio.get_running_loop().run_in_executor(
                None, release.wait, 10  # type: ignore[attr-defined]
            )
            await asyncio.sleep(0.3)
        state.close()

    asyncio.run(main())


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[str]:
    directory = str(tmp_path / "shared")
    os.mkdir(directory, 0o700)
    yield directory


def _run(target: Callable[..., None], *args: object) -> None:
    child = FORK.Process(target=target, args=args)
    child.start()
    child.join(10)
    assert child.exitcode == 0


def test_another_process_revocation_is_read_at_most_every_poll(shared: str) -> None:
    worker = DirectoryState(shared)
    start = time.time()
    _run(_revoke_in_child, shared, "sid-1", start + 3600)
    # Until the poll interval has passed nothing is read: a request costs a set lookup only.
    assert not worker.is_revoked("sid-1", start + session_state.POLL_SECONDS / 2)
    assert worker.is_revoked("sid-1", start + session_state.POLL_SECONDS + 0.01)
    assert not worker.is_revoked("sid-2", start + session_state.POLL_SECONDS + 0.02)
    # A worker started later reads every revocation so far.
    late = DirectoryState(shared)
    assert late.is_revoked("sid-1", time.time())
    # Entries are forgotten once the session would have ended anyway.
    _run(_revoke_in_child, shared, "sid-old", start - 1)
    later = start + session_state.PRUNE_SECONDS + 1
    assert not worker.is_revoked("sid-old", later)
    assert worker.is_revoked("sid-1", later)
    worker.close()
    late.close()


async def test_the_revoking_process_sees_it_at_once(shared: str) -> None:
    for state in (DirectoryState(shared), LocalState()):
        now = time.time()
        assert not state.is_revoked("sid-9", now)
        await state.revoke("sid-9", now + 60)
        assert state.is_revoked("sid-9", now)
        state.close()


async def test_one_refresh_at_a_time_across_processes(shared: str) -> None:
    held, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hold_in_child, args=(shared, held, release))
    child.start()
    try:
        assert await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
        state = DirectoryState(shared)
        release.set()
        began = time.monotonic()
        async with state.hold("sid-1"):
            waited = time.monotonic() - began
        assert waited >= 0.2, waited  # the child kept the lock for its refresh
        async with state.hold("sid-2"), state.hold("sid-3"):  # other sessions do not wait
            pass
        state.close()
    finally:
        child.join(10)
    assert child.exitcode == 0


async def test_latest_session_is_shared_until_it_ends_or_is_revoked(shared: str) -> None:
    one, two = DirectoryState(shared), DirectoryState(shared)
    local = LocalState()
    for writer, reader in ((one, two), (local, local)):
        assert await reader.latest("sid-1") is None
        await writer.publish("sid-1", "sealed-v1", time.time() + 60)
        await writer.publish("sid-1", "sealed-v2", time.time() + 60)
        assert await reader.latest("sid-1") == "sealed-v2"
        await writer.publish("sid-2", "sealed-x", time.time() - 1)
        assert await reader.latest("sid-2") is None
        await reader.revoke("sid-1", time.time() + 60)
        assert await writer.latest("sid-1") is None
    one.close()
    two.close()


async def test_local_hold_serialises_one_session() -> None:
    state = LocalState()
    order: list[str] = []

    async def refresh(name: str) -> None:
        async with state.hold("sid-1"):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(refresh("a"), refresh("b"))
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])


def test_environment_chooses_the_shared_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(session_state.ENV, raising=False)
    assert isinstance(session_state.from_environment(), LocalState)
    path = session_state.enable_shared_directory()
    try:
        assert os.stat(path).st_mode & 0o077 == 0  # private to the user running Vallum
        state = session_state.from_environment()
        assert isinstance(state, DirectoryState) and state.directory == path
        state.close()
    finally:
        session_state.disable_shared_directory(path)
    assert session_state.ENV not in os.environ and not os.path.exists(path)


def test_only_session_ids_vallum_mints_are_shared() -> None:
    assert session_state.valid_session_id("ye6azduRy5yxVjnzz1q2-A")
    for bad in ("", "a b", "a\nb", "x" * 129, "bearer.1"):
        assert not session_state.valid_session_id(bad)
