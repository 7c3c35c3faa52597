"""The controller's own store of the cluster objects it translates.

Why not kopf's ``@kopf.index``: measured with kopf 1.45 and a real API server, an index fills in
quadratic time (5,000 Ingresses: over 4 minutes), while plain event handlers see 5,000 in 8.7 s.
So kopf's event handlers (:mod:`vallum.operator.handlers`) and the initial raw LIST
(:mod:`vallum.operator.controller`) both feed this store, and :meth:`Store.snapshot` hands the
translator a closed, immutable :class:`~vallum.operator.snapshot.Snapshot`.

What is kept: objects as plain JSON dicts, minus the bulk the translator never reads
(``metadata.managedFields``, the ``kubectl.kubernetes.io/last-applied-configuration`` annotation,
which holds a second copy of the whole object, and a Service's ``status``). Stored dicts are never
mutated: an update replaces the entry, so a snapshot can share them.

Secrets: only the Secrets something references (``Result.secrets_used``, given to
:meth:`Store.use_secrets`) keep their ``data``; every other Secret is kept as its key and
resourceVersion only. A reference added later to a Secret whose data was dropped is answered by
:meth:`Store.use_secrets` returning that key: the controller re-reads the Secret with a GET
(:attr:`vallum.operator.controller.Controller` ``read_secret``), applies it, and translates again
before publishing, so the new reference never shows as a missing Secret. A Secret that does not
exist yet needs no re-read: when it is created, its watch event arrives while it is referenced.

Start-up ordering (why objects can be *provisional*): the controller LISTs every kind before
any watch delivers anything, so that the first table is complete. The bulk kinds' LISTs carry
their resourceVersion (:class:`vallum.operator.handlers.Listed`, kept in
:attr:`Store.list_versions`): our own watches go on from exactly there
(:mod:`vallum.operator.watches`), so those objects are never provisional. For the kinds kopf
watches: An object that the LIST
saw but that was deleted before kopf's own list would never get a DELETED event; so LISTed
objects stay provisional until kopf speaks about their key, and later LISTs (keys only, repeated
by the controller while any key is still provisional; :meth:`Store.prune_provisional`) drop the
provisional ones that are gone. A LISTed object never overwrites what a watch event already said
about the same key (the event is newer).

The change signal: :attr:`Store.version` counts changes and :attr:`Store.changed` (an
``asyncio.Event``) is set on each; the controller clears it before it takes a snapshot. An object
delivered again with the resourceVersion already held is no change (kopf's initial list repeats
everything our LIST brought in).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterable, Mapping
from typing import Any

from vallum.operator import snapshot as snap

ObjectKey = snap.ObjectKey

INGRESSES = "ingresses"
INGRESS_CLASSES = "ingress_classes"
SERVICES = "services"
ENDPOINT_SLICES = "endpoint_slices"
SECRETS = "secrets"
POLICIES = "policies"
SETTINGS = "settings"
KINDS: tuple[str, ...] = (
    INGRESSES,
    INGRESS_CLASSES,
    SERVICES,
    ENDPOINT_SLICES,
    SECRETS,
    POLICIES,
    SETTINGS,
)
"""The kinds the store holds, named as the :class:`Snapshot` fields they fill."""

BULK: frozenset[str] = frozenset({INGRESSES, SERVICES, ENDPOINT_SLICES, SECRETS})
"""The kinds of thousands of objects, watched by our own watches from the resourceVersion of
our LIST (:mod:`vallum.operator.watches`); kopf watches the others."""

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_KEEP: Mapping[str, frozenset[str]] = {
    INGRESSES: frozenset({"apiVersion", "kind", "metadata", "spec", "status"}),
    INGRESS_CLASSES: frozenset({"apiVersion", "kind", "metadata", "spec"}),
    SERVICES: frozenset({"apiVersion", "kind", "metadata", "spec"}),
    ENDPOINT_SLICES: frozenset(
        {"apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"}
    ),
    SECRETS: frozenset({"apiVersion", "kind", "metadata", "type", "data"}),
    POLICIES: frozenset({"apiVersion", "kind", "metadata", "spec", "status"}),
    SETTINGS: frozenset({"apiVersion", "kind", "metadata", "spec", "status"}),
}

_EMPTY: Mapping[ObjectKey, Mapping[str, Any]] = types.MappingProxyType({})


def slim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without what the translator never reads (a new dict; ``obj`` is not touched)."""
    keep = _KEEP[kind]
    out = {k: v for k, v in obj.items() if k in keep}
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        meta = {k: v for k, v in meta.items() if k != "managedFields"}
        notes = meta.get("annotations")
        if isinstance(notes, Mapping) and LAST_APPLIED in notes:
            meta["annotations"] = {k: v for k, v in notes.items() if k != LAST_APPLIED}
        out["metadata"] = meta
    return out


def _version(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("resourceVersion") or "")


def _stub(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret reduced to its identity: namespace, name, resourceVersion."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
    }


class Store:
    """The objects of the seven kinds, a change counter and the start-up bookkeeping."""

    def __init__(self, settings_name: str = "global") -> None:
        self.settings_name = settings_name
        self._objects: dict[str, dict[ObjectKey, Mapping[str, Any]]] = {k: {} for k in KINDS}
        self._views: dict[str, Mapping[ObjectKey, Mapping[str, Any]] | None] = dict.fromkeys(
            KINDS
        )
        self._secret_stubs: dict[ObjectKey, Mapping[str, Any]] = {}
        self._secrets_used: frozenset[ObjectKey] = frozenset()
        self._listed: set[str] = set()
        self._provisional: dict[str, set[ObjectKey]] = {k: set() for k in KINDS}
        self._spoken: dict[str, set[ObjectKey]] | None = {k: set() for k in KINDS}
        self.list_versions: dict[str, dict[str | None, str]] = {}
        """The resourceVersion of each kind's initial LIST, by namespace scope (None: all),
        when the LIST gave one: our own watches start there (:mod:`vallum.operator.watches`)."""
        self.version = 0
        self.changed = asyncio.Event()

    # -- reading ----------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Whether the initial LIST of every kind is in (the first table may be published)."""
        return len(self._listed) == len(KINDS)

    @property
    def listed(self) -> frozenset[str]:
        """The kinds whose initial LIST is in."""
        return frozenset(self._listed)

    def count(self, kind: str) -> int:
        """How many objects of ``kind`` are held (Secrets: with data or not)."""
        if kind == SECRETS:
            return len(self._objects[SECRETS]) + len(self._secret_stubs)
        return len(self._objects[kind])

    def get(self, kind: str, key: ObjectKey) -> Mapping[str, Any] | None:
        """The stored object (a Secret without its data when it is not referenced)."""
        found = self._objects[kind].get(key)
        if found is None and kind == SECRETS:
            found = self._secret_stubs.get(key)
        return found

    def snapshot(self) -> snap.Snapshot:
        """An immutable view of everything held now.

        Cheap: each kind's mapping is copied once after it changed and shared by later
        snapshots until it changes again; the objects themselves are shared (never mutated).
        Secrets without their data (not referenced) are left out.
        """
        settings = self._objects[SETTINGS].get(("", self.settings_name))
        ingress_classes = types.MappingProxyType(
            {name: obj for (_, name), obj in self._view(INGRESS_CLASSES).items()}
        )
        return snap.Snapshot(
            ingresses=self._view(INGRESSES),
            services=self._view(SERVICES),
            endpoint_slices=self._view(ENDPOINT_SLICES),
            secrets=self._view(SECRETS),
            policies=self._view(POLICIES),
            ingress_classes=ingress_classes,
            settings=settings,
        )

    def _view(self, kind: str) -> Mapping[ObjectKey, Mapping[str, Any]]:
        view = self._views[kind]
        if view is None:
            objects = self._objects[kind]
            view = types.MappingProxyType(dict(objects)) if objects else _EMPTY
            self._views[kind] = view
        return view

    # -- writing ----------------------------------------------------------------------------

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Add or replace ``obj`` (from a watch event: it is authoritative for its key)."""
        key = snap.key_of(obj)
        self._spoke(kind, key)
        self._put(kind, key, obj)

    def delete(self, kind: str, key: ObjectKey) -> None:
        """Forget the object at ``key`` (from a watch event)."""
        self._spoke(kind, key)
        self._remove(kind, key)

    def load_listed(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """The initial LIST of ``kind``: objects the watches have not yet spoken about are added,
        provisionally (see the module docstring); marks ``kind`` as listed. A LIST that carries
        its resourceVersions (``objects.versions``, :class:`vallum.operator.handlers.Listed`)
        of a :data:`BULK` kind is not provisional: our own watch goes on from exactly there
        (kopf's watches of the other kinds list again, and may miss a deletion in between)."""
        versions = getattr(objects, "versions", None)
        exact = kind in BULK and isinstance(versions, Mapping) and bool(versions)
        if exact:
            self.list_versions[kind] = dict(versions)  # type: ignore[arg-type]
        spoken = self._spoken[kind] if self._spoken is not None else set()
        for obj in objects:
            key = snap.key_of(obj)
            if key in spoken:
                continue
            self._put(kind, key, obj)
            if not exact:
                self._provisional[kind].add(key)
        if kind not in self._listed:
            self._listed.add(kind)
            self._touch(kind)

    def relisted(self, kind: str, scope: str | None, objects: Iterable[Mapping[str, Any]]) -> None:
        """A new LIST of ``kind`` in namespace ``scope`` (None: all), taken whole: its objects
        are applied and those of that scope it no longer has are removed (a watch that had to
        list again, 410 Gone, missed their deletion)."""
        present: set[ObjectKey] = set()
        for obj in objects:
            key = snap.key_of(obj)
            present.add(key)
            self.apply(kind, obj)
        held = set(self._objects[kind])
        if kind == SECRETS:
            held |= set(self._secret_stubs)
        for key in held - present:
            if scope is None or key[0] == scope:
                self.delete(kind, key)

    def prune_provisional(self, kind: str, present: Iterable[ObjectKey]) -> int:
        """After a later LIST of ``kind``: drop provisional objects it no longer has (deleted
        before kopf's own list saw them); returns how many were dropped. The others stay
        provisional until kopf speaks about them (its list has not reached them yet) or a
        later LIST finds them gone."""
        keep = set(present)
        gone = [key for key in self._provisional[kind] if key not in keep]
        for key in gone:
            self._remove(kind, key)
            self._provisional[kind].discard(key)
        return len(gone)

    def provisional(self, kind: str) -> frozenset[ObjectKey]:
        """Keys of ``kind`` known only from our LIST, not yet from kopf."""
        return frozenset(self._provisional[kind])

    def settle(self) -> None:
        """Start-up is over: stop tracking which keys the watches spoke about."""
        self._spoken = None
        for keys in self._provisional.values():
            keys.clear()

    def use_secrets(self, used: Iterable[ObjectKey]) -> frozenset[ObjectKey]:
        """Keep data only for the Secrets in ``used`` (the translation's ``secrets_used``).

        Returns the referenced Secrets held without their data: the caller re-reads them
        (GET) and :meth:`apply` s them. Secrets no longer referenced lose their data now.
        """
        wanted = frozenset(used)
        if wanted == self._secrets_used:
            return frozenset(k for k in wanted if k in self._secret_stubs)
        self._secrets_used = wanted
        full = self._objects[SECRETS]
        dropped = [key for key in full if key not in wanted]
        for key in dropped:
            self._secret_stubs[key] = _stub(full.pop(key))
        if dropped:
            self._touch(SECRETS)
        return frozenset(k for k in wanted if k in self._secret_stubs)

    @property
    def secrets_used(self) -> frozenset[ObjectKey]:
        return self._secrets_used

    def _put(self, kind: str, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        if kind == SETTINGS and key != ("", self.settings_name):
            return
        if self._same(kind, key, obj):
            return
        slimmed = slim(kind, obj)
        if kind == SECRETS:
            if key not in self._secrets_used:
                had = self._objects[SECRETS].pop(key, None)
                self._secret_stubs[key] = _stub(slimmed)
                if had is not None:
                    self._touch(kind)
                return
            self._secret_stubs.pop(key, None)
        self._objects[kind][key] = slimmed
        self._touch(kind)

    def _same(self, kind: str, key: ObjectKey, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` is the version already held (same resourceVersion): kopf's own
        initial list re-delivers every object our LIST brought in, and a no-op there must not
        wake the controller 15,000 times."""
        version = _version(obj)
        if not version:
            return False
        held = self._objects[kind].get(key)
        if held is None and kind == SECRETS and key not in self._secrets_used:
            held = self._secret_stubs.get(key)
        return held is not None and _version(held) == version

    def _remove(self, kind: str, key: ObjectKey) -> None:
        if kind == SECRETS:
            self._secret_stubs.pop(key, None)
        if self._objects[kind].pop(key, None) is not None:
            self._touch(kind)

    def _spoke(self, kind: str, key: ObjectKey) -> None:
        if self._spoken is not None:
            self._spoken[kind].add(key)
            self._provisional[kind].discard(key)

    def _touch(self, kind: str) -> None:
        self._views[kind] = None
        self.version += 1
        self.changed.set()
