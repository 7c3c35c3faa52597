"""The controller's loop: collect (the store) -> translate (pure) -> publish (a callback).

Why a loop of its own and not work inside kopf's handlers: a handler per object would translate
once per event, and a burst of 1,000 changes (a Helm upgrade, a namespace applied at once) would
compile 1,000 tables. Here the handlers only fill :class:`vallum.operator.store.Store`; this loop
wakes on the store's change signal, waits a short **coalescing window** (:data:`WINDOW`, 10 ms:
the events of one ``kubectl apply -f`` of many objects arrive within a few milliseconds of each
other; it was 30 ms while a translation cost ~190 ms with 5,000 Ingresses, and is shorter since a
one-object change costs ~10 ms: every millisecond here is one of the 150 ms from apply to a live
route), then translates one snapshot of everything and publishes the table. Changes that arrive
during a round are picked up by the next one, all together; the window is not extended by a
steady stream, so a change waits at most one window plus one round.

The translation (:class:`vallum.operator.translate.Translator`) runs in a worker thread so the
proxy on this event loop keeps serving; it reads an immutable snapshot, and rounds never overlap.
The table is published only when its checksum changed. When the Settings object is invalid,
``Result.table`` is None: the last good table keeps serving. A ``publish`` that raises
``ConfigError`` (a certificate that does not load, a listener the proxy cannot open) is a
rejected table, kept out the same way.

**The first table and readiness.** kopf tells its handlers nothing about when the initial list of
a kind is complete, and its per-object workers need seconds for thousands of objects. So the CLI
starts kopf's watches first and then, with the ``kubernetes`` client, LISTs every kind itself
(:func:`initial_list`, paginated, in threads): the store takes each LIST whole
(:meth:`Store.load_listed`), and only when every kind is listed (:attr:`Store.complete`) may a
table be published; :attr:`Controller.ready` turns true with the first published table, and the
CLI's ``/readyz`` follows it. Objects known only from our LIST are *provisional* until kopf's
watch speaks about them: an object deleted between our LIST and kopf's own list would get no
DELETED event, so :func:`confirm_listed` LISTs the keys again every few seconds while any remain
provisional and drops the ones that are gone, then settles the store. A LISTed object never
overrides what the watch already said (the watch is newer).

**Secrets** (:meth:`Store.use_secrets`): after each translation the store keeps data only for the
Secrets the result references; a newly referenced Secret whose data was dropped is re-read with
``read_secret`` (a GET) and the snapshot translated again before anything is published, so a new
reference never shows as a missing Secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from vallum.core import config, errors
from vallum.operator import snapshot as snap
from vallum.operator import store as store_mod
from vallum.operator import translate

log = logging.getLogger("vallum.operator.controller")

WINDOW = 0.01
"""Seconds a round waits after the first change, gathering a burst into one translation."""

RETRY = 5.0
"""Seconds before a round that failed unexpectedly is tried again."""

CONFIRM_INTERVAL = 5.0
"""Seconds between the LISTs of keys that settle provisional objects (:func:`confirm_listed`)."""

Publish = Callable[[config.RouteTable], Awaitable[bool | None]]
"""Serves a table; returning False or raising ``ConfigError`` rejects it (the last stays)."""
ReadSecret = Callable[[snap.ObjectKey], Awaitable[Mapping[str, Any] | None]]
Report = Callable[[snap.Snapshot, translate.Result], Awaitable[None]]
ListKind = Callable[[str], Awaitable[Iterable[Mapping[str, Any]] | None]]
ListKeys = Callable[[str], Awaitable[Iterable[snap.ObjectKey] | None]]


class Controller:
    """Turns the store into published tables; see the module docstring.

    ``publish`` serves a table (returning False or raising ``ConfigError`` rejects it);
    ``read_secret`` GETs a Secret (None when gone); ``report`` receives every result with its
    snapshot (status and Events, later); ``list_objects`` and ``list_keys`` are the raw LISTs of
    :meth:`load_initial` and :func:`confirm_listed` (:meth:`run` starts the latter when given).
    :attr:`ready` is true once a complete table has been published; :attr:`table` is the last
    published table; :attr:`result` the last translation; :attr:`last_error` why the last round
    did not publish (None after a publish).
    """

    def __init__(
        self,
        store: store_mod.Store,
        translator: translate.Translator,
        publish: Publish,
        *,
        read_secret: ReadSecret | None = None,
        report: Report | None = None,
        list_objects: ListKind | None = None,
        list_keys: ListKeys | None = None,
        window: float = WINDOW,
        retry: float = RETRY,
    ) -> None:
        self.store = store
        self.translator = translator
        self.publish = publish
        self.read_secret = read_secret
        self.report = report
        self.list_objects = list_objects
        self.list_keys = list_keys
        self.window = window
        self.retry = retry
        self.ready = False
        self.table: config.RouteTable | None = None
        self.result: translate.Result | None = None
        self.last_error: str | None = None
        self.rounds = 0
        self.published = 0
        self.became_ready = asyncio.Event()

    async def load_initial(self) -> None:
        """The initial LIST of every kind into the store (:func:`initial_list`), then the first
        round, so the first table is published before kopf's watches start: kopf's own initial
        list of thousands of objects keeps the interpreter busy for seconds (measured: 5,000
        Ingresses with their Services and EndpointSlices, ready in 11.9 s when the first
        translation ran beside it, against 2.5 s for LIST + translation alone)."""
        if self.list_objects is None:
            raise RuntimeError("load_initial needs list_objects")
        await initial_list(self.store, self.list_objects)
        if self.store.complete:
            await self.round()

    async def run(self) -> None:
        """Translate and publish after every burst of changes, until cancelled (and, with
        ``list_keys``, settle the provisional objects beside it: :func:`confirm_listed`)."""
        confirming = None
        if self.list_keys is not None:
            confirming = asyncio.create_task(confirm_listed(self.store, self.list_keys))
        try:
            await self._loop()
        finally:
            if confirming is not None:
                confirming.cancel()

    async def _loop(self) -> None:
        while True:
            await self.store.changed.wait()
            if not self.store.complete:
                self.store.changed.clear()  # the last kind's LIST sets it again
                continue
            if self.window > 0:
                await asyncio.sleep(self.window)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the controller; the table stays
                self.last_error = f"unexpected {type(exc).__name__}: {exc}"
                log.exception("controller round failed", extra={"event": "controller_crashed"})
                await asyncio.sleep(self.retry)  # then try again, even without a new change
                self.store.changed.set()

    async def round(self) -> bool:
        """One translation of the store as it is now, published if it changed the table.
        Returns whether a table was published."""
        self.store.changed.clear()
        started = time.perf_counter()
        snapshot = self.store.snapshot()
        result = await asyncio.to_thread(self.translator.translate, snapshot)
        missing = self.store.use_secrets(result.secrets_used)
        if missing and self.read_secret is not None:
            for key in sorted(missing):
                obj = await self.read_secret(key)
                if obj is not None:
                    self.store.apply(store_mod.SECRETS, obj)
            self.store.use_secrets(result.secrets_used)
            snapshot = self.store.snapshot()
            result = await asyncio.to_thread(self.translator.translate, snapshot)
            self.store.use_secrets(result.secrets_used)
        self.rounds += 1
        self.result = result
        published = await self._publish(result)
        if self.report is not None:
            try:
                await self.report(snapshot, result)
            except Exception:
                log.exception("status report failed", extra={"event": "report_failed"})
        log.debug(
            "controller round",
            extra={
                "event": "controller_round",
                "seconds": round(time.perf_counter() - started, 4),
                "published": published,
                "ingresses": len(snapshot.ingresses),
            },
        )
        return published

    async def _publish(self, result: translate.Result) -> bool:
        table = result.table
        if table is None:
            self.last_error = "; ".join(result.settings_problems) or "no table"
            log.error(
                "Settings rejected, keeping the last good table",
                extra={"event": "settings_rejected", "problems": list(result.settings_problems)},
            )
            return False
        if self.table is not None and table.checksum == self.table.checksum:
            self.last_error = None
            return False
        try:
            accepted = await self.publish(table)
        except errors.ConfigError as exc:
            accepted, problems = False, exc.problems
        else:
            problems = ("the proxy did not take the table",)
        if accepted is False:
            self.last_error = "; ".join(problems)
            log.error(
                "table rejected, keeping the last good table",
                extra={"event": "table_rejected", "problems": list(problems)},
            )
            return False
        self.table = table
        self.published += 1
        self.last_error = None
        log.info(
            "table published",
            extra={
                "event": "table_published",
                "checksum": table.checksum,
                "routes": len(table.settings.routes),
            },
        )
        if not self.ready:
            self.ready = True
            self.became_ready.set()
        return True


async def initial_list(
    store: store_mod.Store, list_kind: ListKind, kinds: Iterable[str] = store_mod.KINDS
) -> None:
    """LIST every kind (concurrently) into ``store``; a kind the API server does not serve (a
    CRD not installed) counts as listed and empty. Raises what ``list_kind`` raises."""

    async def one(kind: str) -> None:
        objects = await list_kind(kind)
        if objects is None:
            log.warning(
                "the API server does not serve %s; treating it as empty",
                kind,
                extra={"event": "kind_not_served", "kind": kind},
            )
        store.load_listed(kind, objects if objects is not None else ())  # an empty LIST too

    await asyncio.gather(*(one(kind) for kind in kinds))


async def confirm_listed(
    store: store_mod.Store, list_keys: ListKeys, interval: float = CONFIRM_INTERVAL
) -> None:
    """Every ``interval`` seconds while objects are provisional, LIST the keys of their kinds
    and drop the provisional objects that are gone; then settle the store and return."""
    while True:
        pending = [kind for kind in store_mod.KINDS if store.provisional(kind)]
        if not pending:
            store.settle()
            return
        await asyncio.sleep(interval)
        for kind in pending:
            if not store.provisional(kind):
                continue
            try:
                keys = await list_keys(kind)
            except Exception as exc:  # try again next interval
                log.warning("LIST of %s keys failed: %s", kind, exc)
                continue
            dropped = store.prune_provisional(kind, keys or ())
            if dropped:
                log.info(
                    "dropped %d %s deleted before the watch saw them",
                    dropped,
                    kind,
                    extra={"event": "provisional_dropped", "kind": kind},
                )
