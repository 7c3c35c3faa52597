"""The Lease that picks the one replica writing status: the pure rule, then a real API server.

The second half runs when ``KUBECONFIG`` names a cluster (the e2e control plane:
``eval "$(e2e/control-plane up)"``); it is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from vallum.operator import lease

ME, OTHER = "vallum-a", "vallum-b"


def test_no_lease_is_created_and_our_own_is_renewed() -> None:
    seen = lease.Observed()
    assert lease.decide(None, ME, seen, now=0.0) == "create"
    assert lease.decide(lease.Record(ME, "1"), ME, seen, now=1.0) == "renew"


def test_another_holders_lease_is_taken_only_after_it_stopped_changing_for_duration() -> None:
    seen = lease.Observed()
    assert lease.decide(lease.Record(OTHER, "5"), ME, seen, now=100.0) == "wait"
    assert lease.decide(lease.Record(OTHER, "6"), ME, seen, now=108.0) == "wait"  # renewed
    assert lease.decide(lease.Record(OTHER, "6"), ME, seen, now=117.9) == "wait"
    assert lease.decide(lease.Record(OTHER, "6"), ME, seen, now=118.0) == "take"


def test_expiry_is_judged_by_our_clock_from_first_sight_not_by_the_holders_renew_time() -> None:
    # A replica that starts late sees a lease it has never seen change: it waits a full duration.
    seen = lease.Observed()
    assert lease.decide(lease.Record(OTHER, "9"), ME, seen, now=5_000.0) == "wait"
    assert lease.decide(lease.Record(OTHER, "9"), ME, seen, now=5_009.0) == "wait"
    assert lease.decide(lease.Record(OTHER, "9"), ME, seen, now=5_010.0) == "take"


def test_a_lease_handed_back_is_taken_at_once() -> None:
    assert lease.decide(lease.Record(None, "3"), ME, lease.Observed(), now=0.0) == "take"
    assert lease.decide(lease.Record("", "3"), ME, lease.Observed(), now=0.0) == "take"


# -- against a real API server ----------------------------------------------------------------

needs_cluster = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="no KUBECONFIG: start one with eval \"$(e2e/control-plane up)\"",
)


def _api() -> Any:
    from kubernetes import client, config

    config.load_kube_config()
    return client.CoordinationV1Api()


async def _until(check: Any, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.05)
    return loop.time() - start


@needs_cluster
async def test_exactly_one_of_three_leads_and_another_takes_over_when_it_dies() -> None:
    api, name = _api(), f"vallum-test-{uuid.uuid4().hex[:8]}"
    electors = [
        lease.Elector(api, "default", name, f"replica-{i}", duration=3, renew=0.5, retry=0.3)
        for i in range(3)
    ]
    tasks = [asyncio.create_task(e.run()) for e in electors]
    try:
        await _until(lambda: sum(e.leader for e in electors) == 1, 10)
        await asyncio.sleep(1.5)  # renewals keep it with one holder
        leaders = [e for e in electors if e.leader]
        assert len(leaders) == 1
        first = leaders[0]
        held = api.read_namespaced_lease(name, "default")
        assert held.spec.holder_identity == first.identity
        assert held.spec.lease_duration_seconds == 3
        # The leader dies without handing the Lease back (a crashed pod): its task stops, the
        # Lease stays as it was, and another replica takes it once it expired.
        index = electors.index(first)
        first.release = lambda: None  # type: ignore[method-assign]  # (a crash releases nothing)
        tasks[index].cancel()
        await asyncio.gather(tasks[index], return_exceptions=True)
        rest = [e for e in electors if e is not first]
        took = await _until(lambda: sum(e.leader for e in rest) == 1, 10)
        assert 2.0 <= took <= 3 + 0.3 + 2.0, took  # not before expiry, soon after it
        now_held = api.read_namespaced_lease(name, "default")
        assert now_held.spec.holder_identity in {e.identity for e in rest}
        assert now_held.spec.lease_transitions == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        api.delete_namespaced_lease(name, "default")


@needs_cluster
async def test_a_replica_that_stops_cleanly_hands_over_at_the_next_read() -> None:
    api, name = _api(), f"vallum-test-{uuid.uuid4().hex[:8]}"
    a = lease.Elector(api, "default", name, "replica-a", duration=30, renew=0.5, retry=0.3)
    b = lease.Elector(api, "default", name, "replica-b", duration=30, renew=0.5, retry=0.3)
    changes: list[bool] = []
    a.on_change = changes.append
    ta = asyncio.create_task(a.run())
    tb: asyncio.Task[None] | None = None
    try:
        await _until(lambda: a.leader, 10)
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(1.0)
        assert a.leader and not b.leader
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)
        took = await _until(lambda: b.leader, 5)  # far sooner than the 30 s duration
        assert took < 2.0
        assert changes == [True, False]
    finally:
        for task in (ta, tb):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        api.delete_namespaced_lease(name, "default")


class _Refusing:
    """A coordination API that refuses every call, as the API server does without RBAC."""

    def __init__(self) -> None:
        self.calls = 0

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        self.calls += 1
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = '{"message": "leases.coordination.k8s.io is forbidden"}'
        raise exc


def test_a_refusal_is_logged_once_in_one_line_while_it_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = _Refusing()
    elector = lease.Elector(api, "ns", "name", "me", retry=0.01, renew=0.01)

    async def briefly() -> None:
        task = asyncio.create_task(elector.run())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level("WARNING", logger="vallum.operator.lease"):
        asyncio.run(briefly())
    assert api.calls >= 5 and not elector.leader
    said = [r.getMessage() for r in caplog.records]
    assert said == ["lease ns/name: 403 Forbidden"]
