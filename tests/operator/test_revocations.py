"""Sign-out across replicas through the API server (ConfigMaps watched by every replica).

The pure parts always run; the replicas run against a real API server when ``KUBECONFIG``
names one (``eval "$(e2e/control-plane up)"``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import pytest

from vallum.operator import revocations
from vallum.proxy import session_state


def test_the_configmap_names_a_digest_and_carries_the_id_and_its_end() -> None:
    body = revocations.revocation("Abc_123-x", 1_000.2, "vallum")
    assert body["metadata"]["name"].startswith("vallum-revoked-")
    assert "Abc" not in body["metadata"]["name"] and len(body["metadata"]["name"]) <= 63
    assert body["metadata"]["labels"][revocations.LABEL] == "true"
    assert revocations.read(body) == ("Abc_123-x", 1_001.0)
    assert revocations.read({"data": {"session": "x"}}) is None
    assert revocations.read({"data": {"session": "x", "until": "soon"}}) is None
    assert revocations.read({}) is None


needs_cluster = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="no KUBECONFIG: start one with eval \"$(e2e/control-plane up)\"",
)


def _core() -> Any:
    from kubernetes import client, config

    config.load_kube_config()
    return client.CoreV1Api()


@pytest.fixture
def namespace() -> Any:
    core = _core()
    name = f"rev-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@needs_cluster
async def test_a_sign_out_on_one_replica_is_refused_on_another_within_two_seconds(
    namespace: str,
) -> None:
    a = revocations.ClusterState(session_state.LocalState(), _core(), namespace)
    b = revocations.ClusterState(session_state.LocalState(), _core(), namespace)
    for state in (a, b):
        state.start()
        assert await asyncio.to_thread(state.synced.wait, 10)
    try:
        now = time.time()
        assert not a.is_revoked("alice-session", now) and not b.is_revoked("alice-session", now)
        started = time.monotonic()
        await a.revoke("alice-session", now + 3600)
        assert a.is_revoked("alice-session", time.time())  # at once where it happened
        while not b.is_revoked("alice-session", time.time()):
            assert time.monotonic() - started < 2.0, "not seen by the other replica within 2 s"
            await asyncio.sleep(0.02)
        assert not b.is_revoked("bob-session", time.time())
        # A replica started later learns it from the list, before it serves.
        c = revocations.ClusterState(session_state.LocalState(), _core(), namespace)
        c.start()
        assert await asyncio.to_thread(c.synced.wait, 10)
        assert c.is_revoked("alice-session", time.time())
        c.close()
        # Signing out twice (two tabs, two replicas) is fine.
        await b.revoke("alice-session", now + 3600)
    finally:
        a.close()
        b.close()


@needs_cluster
async def test_revocations_expire_with_their_sessions_so_their_number_stays_bounded(
    namespace: str,
) -> None:
    core = _core()
    a = revocations.ClusterState(session_state.LocalState(), core, namespace)
    now = time.time()
    await a.revoke("ended", now - 10)
    await a.revoke("running", now + 3600)
    core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "vallum-revoked-garbage", "labels": {revocations.LABEL: "true"}},
        "data": {"until": "x"},
    })
    assert await asyncio.to_thread(a.prune_expired, now) == 2
    left = core.list_namespaced_config_map(namespace, label_selector=revocations.LABEL).items
    assert [revocations.read(i) for i in left] == [("running", float(int(now + 3600) + 1))]
    assert a.is_revoked("running", now) and not a.is_revoked("other", now)
    a.close()


@needs_cluster
async def test_configmaps_written_by_others_neither_crash_the_watch_nor_get_deleted(
    namespace: str,
) -> None:
    """Anyone who may write ConfigMaps there can label one: malformed ones revoke nothing and
    the watch goes on (a later sign-out still arrives); a well-formed one revokes (fail-safe);
    pruning deletes only the revocations this module names."""
    core = _core()
    state = revocations.ClusterState(session_state.LocalState(), core, namespace)
    state.start()
    try:
        assert await asyncio.to_thread(state.synced.wait, 10)
        junk: list[dict[str, Any]] = [
            {"binaryData": {"session": "eA=="}},
            {"data": {"session": "x"}},
            {"data": {"until": "9999999999"}},
            {"data": {"session": "nan-session", "until": "nan"}},
            {"data": {"session": "", "until": "soon"}},
            {"data": {"session": "theirs", "until": str(int(time.time()) + 3600)}},
        ]
        for index, body in enumerate(junk):
            core.create_namespaced_config_map(namespace, {
                "metadata": {"name": f"foreign-{index}", "labels": {revocations.LABEL: "x"}},
                **body,
            })
        started = time.monotonic()
        await state.revoke("after-junk", time.time() + 3600)
        other = revocations.ClusterState(session_state.LocalState(), core, namespace)
        other.start()
        try:
            assert await asyncio.to_thread(other.synced.wait, 10)
            while not other.is_revoked("theirs", time.time()):
                assert time.monotonic() - started < 5
                await asyncio.sleep(0.05)
            assert other.is_revoked("after-junk", time.time())
            assert not other.is_revoked("nan-session", time.time())
            assert not other.is_revoked("x", time.time())
            await state.revoke("later", time.time() + 3600)  # the watch still runs
            while not other.is_revoked("later", time.time()):
                assert time.monotonic() - started < 5, "the watch stopped"
                await asyncio.sleep(0.05)
        finally:
            other.close()
        assert await asyncio.to_thread(state.prune_expired) == 0
        names = {i.metadata.name for i in core.list_namespaced_config_map(namespace).items}
        assert {f"foreign-{i}" for i in range(len(junk))} <= names
    finally:
        state.close()


@needs_cluster
async def test_without_rights_to_the_configmaps_it_never_counts_as_synced_and_says_why(
    namespace: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail-closed: a replica that cannot read the shared sign-outs must not serve (the CLI
    waits for ``synced``); the reason is one short line, repeated less and less often."""
    from kubernetes import client, config

    core = _core()
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    conf = client.Configuration()
    config.load_kube_config(client_configuration=conf)
    conf.api_key = {"authorization": f"Bearer {token}"}
    conf.cert_file = conf.key_file = None
    state = revocations.ClusterState.connect(
        session_state.LocalState(), client.ApiClient(conf), namespace
    )
    state.start()
    try:
        assert not await asyncio.to_thread(state.synced.wait, 3.5)
    finally:
        state.close()
    lines = [r.getMessage() for r in caplog.records if "revocations watch" in r.getMessage()]
    assert 2 <= len(lines) <= 3, lines  # after 1 s, then 2 s: backing off
    assert all("403 Forbidden" in line and "\n" not in line for line in lines), lines
    assert "retrying in 1 s" in lines[0] and "retrying in 2 s" in lines[1]
