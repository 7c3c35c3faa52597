"""Our own watches of the bulk kinds against a real API server: they go on from the LIST's
resourceVersion (nothing missed, nothing listed twice), see adds, edits and deletes, and a
resourceVersion too old to watch from makes them list again and drop what is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from e2e import conftest
from vallum.operator import handlers, watches
from vallum.operator import store as store_mod


def service(name: str, port: int = 80) -> str:
    return f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}}}
        spec: {{ports: [{{port: {port}}}]}}
    """


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.02)


def start(
    api: Any, store: store_mod.Store, kind: str, scope: str, version: str,
    get: watches.Get | None = None,
) -> Any:
    def lister(kind: str, scope: str | None) -> tuple[list[dict[str, Any]], str] | None:
        listed = handlers.list_objects(api, kind, None if scope is None else [scope])
        return None if listed is None else (list(listed), listed.versions[scope])

    own = watches.Watches(
        store,
        asyncio.get_running_loop(),
        get or watches.client_get(api),
        lister,
        lambda kind, scope: handlers.RESOURCES[kind].path(scope),
    )
    own.start(kind, scope, version)
    return own


async def test_a_watch_goes_on_from_the_list(
    cluster: conftest.Cluster, namespace: str, api: Any
) -> None:
    cluster.apply(service("before"), namespace)
    listed = handlers.list_objects(api, store_mod.SERVICES, [namespace])
    assert listed is not None and listed.versions[namespace]
    store = store_mod.Store()
    store.load_listed(store_mod.SERVICES, listed)
    assert store.list_versions[store_mod.SERVICES] == listed.versions
    assert not store.provisional(store_mod.SERVICES)  # the watch goes on from the LIST
    cluster.apply(service("after"), namespace)  # between the LIST and the watch: not missed
    own = start(api, store, store_mod.SERVICES, namespace, listed.versions[namespace])
    try:
        services = lambda: store.snapshot().services  # noqa: E731
        await until(lambda: (namespace, "after") in services())
        cluster.apply(service("before", 81), namespace)
        await until(
            lambda: services()[(namespace, "before")]["spec"]["ports"][0]["port"] == 81
        )
        cluster.delete("service", "after", namespace)
        await until(lambda: (namespace, "after") not in services())
    finally:
        own.stop()
    # Stopped at once, not at the next byte the API server sends (a bookmark a minute later).
    await until(lambda: not any(thread.is_alive() for thread in own.threads), 3.0)


class _Expired:
    """The answer the API server gives a watch whose resourceVersion is too old: 200 and one
    ERROR event carrying a 410 ``Expired`` Status (what kube-apiserver v1.34 streams then)."""

    status = 200
    EVENT = (
        b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
        b'"status":"Failure","message":"too old resource version: 1 (4242)",'
        b'"reason":"Expired","code":410}}\n'
    )

    def stream(self) -> Iterator[bytes]:
        yield self.EVENT

    def read(self) -> bytes:
        return self.EVENT

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        pass


async def test_a_resource_version_too_old_lists_again(
    cluster: conftest.Cluster, namespace: str, api: Any
) -> None:
    # The API server answers 410 only once its watch cache has rolled past the version asked
    # for; a fresh test cluster's has not (it replays its whole state as ADDED instead, which
    # would never show a deletion missed meanwhile). So the first watch answer is the 410 the
    # API server sends then; the LIST that follows and the watch after it are the real server's.
    cluster.apply(service("kept"), namespace)
    store = store_mod.Store()
    gone = {"metadata": {"name": "gone", "namespace": namespace, "resourceVersion": "1"}}
    elsewhere = {"metadata": {"name": "other", "namespace": "elsewhere", "resourceVersion": "1"}}
    store.apply(store_mod.SERVICES, gone)
    store.apply(store_mod.SERVICES, elsewhere)
    real_get = watches.client_get(api)
    answers: list[str] = []

    def get(path: str, query: list[tuple[str, Any]]) -> Any:
        if not answers:
            answers.append("410")
            return _Expired()
        answers.append("real")
        return real_get(path, query)

    own = start(api, store, store_mod.SERVICES, namespace, "1", get)
    try:
        services = lambda: store.snapshot().services  # noqa: E731
        await until(lambda: (namespace, "kept") in services() and (namespace, "gone") not in
                    services())
        assert ("elsewhere", "other") in services()  # another scope's objects stay
        cluster.apply(service("later"), namespace)  # and it watches on from the new LIST
        await until(lambda: (namespace, "later") in services())
        assert answers[0] == "410" and "real" in answers
    finally:
        own.stop()
