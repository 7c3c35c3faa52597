"""The controller loop, with the real store and translator and no cluster: when it publishes,
how it coalesces, what it keeps when a table is refused, and the start-up LISTs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import pytest

from tests.operator import objects as o
from vallum.core import config, errors
from vallum.operator import controller as controller_mod
from vallum.operator import snapshot as snap
from vallum.operator import store as store_mod
from vallum.operator import translate

PUBLIC = {"ingress.pomerium.io/allow_public_unauthenticated_access": "true"}
BASE = {"address": "127.0.0.1:0", "insecure_server": True}


class Published:
    """A publish callback that serves nothing: it keeps what it was given, and can refuse."""

    def __init__(self) -> None:
        self.tables: list[config.RouteTable] = []
        self.refuse: str | None = None
        self.arrived = asyncio.Event()

    async def __call__(self, table: config.RouteTable) -> None:
        if self.refuse is not None:
            raise errors.ConfigError([self.refuse])
        self.tables.append(table)
        self.arrived.set()

    async def next(self, timeout: float = 5.0) -> config.RouteTable:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        return self.tables[-1]


def hosts(table: config.RouteTable) -> list[str]:
    return sorted(route.from_url for route in table.settings.routes)


def backend(store: store_mod.Store, name: str = "app") -> None:
    store.apply(store_mod.SERVICES, o.service(name))
    store.apply(store_mod.ENDPOINT_SLICES, o.endpoint_slice(name))


def make(
    store: store_mod.Store, published: Published, **kwargs: Any
) -> controller_mod.Controller:
    translator = translate.Translator(translate.Options(base=BASE))
    return controller_mod.Controller(store, translator, published, **kwargs)


@contextlib.asynccontextmanager
async def running(controller: controller_mod.Controller) -> AsyncIterator[None]:
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def list_everything(store: store_mod.Store, *skip: str) -> None:
    for kind in store_mod.KINDS:
        if kind not in skip:
            listed = [o.ingress_class()] if kind == store_mod.INGRESS_CLASSES else []
            store.load_listed(kind, listed)


async def test_nothing_is_published_until_every_kind_is_listed() -> None:
    store, published = store_mod.Store(), Published()
    controller = make(store, published)
    async with running(controller):
        list_everything(store, store_mod.POLICIES)
        backend(store)
        store.apply(store_mod.INGRESSES, o.ingress(annotations=PUBLIC))
        await asyncio.sleep(0.2)
        assert published.tables == []
        assert controller.published == 0
        store.load_listed(store_mod.POLICIES, ())
        table = await published.next()
        assert hosts(table) == ["https://app.example.com"]
        assert controller.table is table
        assert controller.ready and controller.became_ready.is_set()


async def test_a_burst_of_changes_is_one_translation() -> None:
    store, published = store_mod.Store(), Published()
    list_everything(store)
    backend(store)
    controller = make(store, published, window=0.05)
    async with running(controller):
        await published.next()
        rounds = controller.rounds
        for i in range(50):
            store.apply(store_mod.INGRESSES, o.ingress(f"app{i}", host=f"h{i}.example.com",
                                                       annotations=PUBLIC))
            await asyncio.sleep(0)  # events arrive one by one, as kopf delivers them
        table = await published.next()
        await asyncio.sleep(0.15)
        assert len(hosts(table)) == 50
        assert controller.rounds == rounds + 1


async def test_an_unchanged_table_is_not_published_again() -> None:
    store, published = store_mod.Store(), Published()
    list_everything(store)
    backend(store)
    store.apply(store_mod.INGRESSES, o.ingress(annotations=PUBLIC))
    controller = make(store, published, window=0)
    await controller.round()
    # A Secret nothing references changes: a new round, the same table.
    store.apply(store_mod.SECRETS, o.secret("unrelated", {"k": "v"}))
    assert await controller.round() is False
    assert len(published.tables) == 1 and controller.rounds == 2


async def test_an_invalid_settings_object_keeps_the_last_good_table() -> None:
    store, published = store_mod.Store(), Published()
    list_everything(store)
    backend(store)
    store.apply(store_mod.INGRESSES, o.ingress(annotations=PUBLIC))
    controller = make(store, published, window=0)
    assert await controller.round()
    good = controller.table
    bad = {"kind": "Settings", "metadata": {"name": "global", "resourceVersion": "1"},
           "spec": {"authenticate": {"url": "nope"}}}
    store.apply(store_mod.SETTINGS, bad)
    store.apply(store_mod.INGRESSES, o.ingress("b", host="b.example.com", annotations=PUBLIC))
    assert await controller.round() is False
    assert controller.table is good and published.tables == [good]
    assert controller.last_error is not None and "spec.authenticate.url" in controller.last_error
    assert controller.ready  # still serving the last good table
    store.delete(store_mod.SETTINGS, ("", "global"))
    assert await controller.round()
    assert controller.table is not None
    assert hosts(controller.table) == ["https://app.example.com", "https://b.example.com"]
    assert controller.last_error is None


async def test_a_refused_table_is_not_taken_and_the_next_change_tries_again() -> None:
    store, published = store_mod.Store(), Published()
    list_everything(store)
    backend(store)
    store.apply(store_mod.INGRESSES, o.ingress(annotations=PUBLIC))
    controller = make(store, published, window=0)
    published.refuse = "certificates[0]: does not load"
    assert await controller.round() is False
    assert controller.table is None and not controller.ready
    assert controller.last_error == "certificates[0]: does not load"
    published.refuse = None
    assert await controller.round()
    assert controller.ready


async def test_a_publish_returning_false_is_a_refusal() -> None:
    store = store_mod.Store()
    list_everything(store)
    seen: list[config.RouteTable] = []

    async def publish(table: config.RouteTable) -> bool:
        seen.append(table)
        return False

    translator = translate.Translator(translate.Options(base=BASE))
    controller = controller_mod.Controller(store, translator, publish, window=0)
    assert await controller.round() is False
    assert len(seen) == 1 and controller.table is None and not controller.ready


async def test_a_new_reference_to_a_secret_without_data_is_read_before_publishing() -> None:
    store, published = store_mod.Store(), Published()
    list_everything(store)
    backend(store)
    cluster = {("default", "tls"): o.secret("tls", {"tls.crt": "not pem", "tls.key": "x"})}
    reads: list[snap.ObjectKey] = []

    async def read_secret(key: snap.ObjectKey) -> Mapping[str, Any] | None:
        reads.append(key)
        return cluster.get(key)

    store.apply(store_mod.SECRETS, cluster[("default", "tls")])  # unreferenced: no data kept
    controller = make(store, published, window=0, read_secret=read_secret)
    await controller.round()
    assert reads == []
    tls = [{"hosts": ["app.example.com"], "secretName": "tls"}]
    store.apply(store_mod.INGRESSES, o.ingress(annotations=PUBLIC, tls=tls))
    await controller.round()
    assert reads == [("default", "tls")]
    assert controller.result is not None
    problems = controller.result.ingresses[("default", "app")].problems
    assert problems and all("not found" not in p for p in problems)  # read, then judged
    assert "data" in store.snapshot().secrets[("default", "tls")]


async def test_report_gets_every_result() -> None:
    store, published = store_mod.Store(), Published()
    list_everything(store)
    reports: list[tuple[snap.Snapshot, translate.Result]] = []

    async def report(shot: snap.Snapshot, result: translate.Result) -> None:
        reports.append((shot, result))

    controller = make(store, published, window=0, report=report)
    await controller.round()
    await controller.round()
    assert len(reports) == 2 and reports[0][1] is not reports[1][1]


async def test_initial_list_counts_an_unserved_kind_as_empty() -> None:
    store = store_mod.Store()
    cluster: dict[str, list[dict[str, Any]]] = {
        store_mod.INGRESSES: [o.ingress(annotations=PUBLIC)],
        store_mod.SERVICES: [o.service()],
        store_mod.ENDPOINT_SLICES: [o.endpoint_slice()],
        store_mod.INGRESS_CLASSES: [o.ingress_class()],
        store_mod.SECRETS: [],
    }

    async def list_kind(kind: str) -> Iterable[Mapping[str, Any]] | None:
        return cluster.get(kind)  # Policy and Settings: CRDs not installed

    published = Published()
    controller = make(store, published, window=0, list_objects=list_kind)
    await controller.load_initial()  # LISTs, then publishes the first table
    assert store.complete and controller.ready
    assert controller.table is not None and hosts(controller.table) == ["https://app.example.com"]
    assert published.tables == [controller.table]


async def test_load_initial_needs_a_lister() -> None:
    with pytest.raises(RuntimeError, match="list_objects"):
        await make(store_mod.Store(), Published()).load_initial()


async def test_confirm_listed_prunes_what_the_watch_never_saw_then_settles() -> None:
    store = store_mod.Store()
    store.load_listed(store_mod.INGRESSES, [o.ingress("gone"), o.ingress("late")])
    calls: list[str] = []

    async def list_keys(kind: str) -> Iterable[snap.ObjectKey] | None:
        calls.append(kind)
        if len(calls) == 2:  # "gone" was dropped by the first LIST; "late" is still pending
            assert set(store.snapshot().ingresses) == {("default", "late")}
            store.apply(store_mod.INGRESSES, o.ingress("late", rv="2"))  # kopf speaks
        return [("default", "late")]

    await asyncio.wait_for(controller_mod.confirm_listed(store, list_keys, interval=0.01), 5)
    assert calls == [store_mod.INGRESSES, store_mod.INGRESSES]
    assert set(store.snapshot().ingresses) == {("default", "late")}
    assert store.provisional(store_mod.INGRESSES) == frozenset()


async def test_a_failing_round_does_not_stop_the_loop() -> None:
    store = store_mod.Store()
    list_everything(store)
    backend(store)
    attempts = 0
    published = Published()

    async def publish(table: config.RouteTable) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("a bug in the proxy side")
        await published(table)

    translator = translate.Translator(translate.Options(base=BASE))
    controller = controller_mod.Controller(store, translator, publish, window=0, retry=0.05)
    async with running(controller):
        store.apply(store_mod.INGRESSES, o.ingress(annotations=PUBLIC))
        table = await published.next()  # tried again without another change
        assert hosts(table) == ["https://app.example.com"]
        assert attempts == 2 and controller.ready and controller.last_error is None
