"""The closed, typed snapshot of the cluster objects the translator reads, and who read what.

Why a module of its own: the store (which collects objects from kopf's event handlers) and the
translator (which turns them into a route table) meet here and nowhere else. A snapshot is a
plain value: objects as the API server returns them (JSON dicts), keyed by ``(namespace,
name)``, so the translator can be tested from plain dicts and never does I/O.

:class:`Lookups` is how the translation of one Ingress reads the snapshot: every object it
asks for (found or not) is remembered with its version, so the translator can tell later, by
comparing versions, whether anything that Ingress depends on changed (and skip its work if
nothing did). An object without ``metadata.resourceVersion`` (a test's plain dict) is versioned
by its content.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
from collections.abc import Mapping
from typing import Any

ObjectKey = tuple[str, str]
"""``(namespace, name)``; cluster-scoped objects use ``("", name)``."""

Objects = Mapping[ObjectKey, Mapping[str, Any]]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label an EndpointSlice names its Service with."""

_EMPTY: Objects = types.MappingProxyType({})


def _empty() -> Objects:
    return _EMPTY  # (a mapping proxy is unhashable: dataclasses refuse it as a plain default)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every object the translation may read, as the API server returns them. A value: its
    mappings and objects are never changed once made (the store hands out new mappings)."""

    ingresses: Objects = dataclasses.field(default_factory=_empty)
    services: Objects = dataclasses.field(default_factory=_empty)
    endpoint_slices: Objects = dataclasses.field(default_factory=_empty)
    """Keyed by the slice's own name; a slice names its Service in the label
    ``kubernetes.io/service-name``."""
    secrets: Objects = dataclasses.field(default_factory=_empty)
    policies: Objects = dataclasses.field(default_factory=_empty)
    """vallum.dev/v1alpha1 Policy objects."""
    ingress_classes: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """networking.k8s.io/v1 IngressClass objects by name."""
    settings: Mapping[str, Any] | None = None
    """The vallum.dev/v1alpha1 Settings object named by ``--settings``; None when absent."""

    @functools.cached_property
    def slices_by_service(self) -> Mapping[ObjectKey, tuple[ObjectKey, ...]]:
        """The EndpointSlices of each Service ``(namespace, service name)``, keys sorted."""
        return slices_index(self.endpoint_slices)


_last_index: tuple[Objects, Mapping[ObjectKey, tuple[ObjectKey, ...]]] | None = None


def slices_index(slices: Objects) -> Mapping[ObjectKey, tuple[ObjectKey, ...]]:
    """EndpointSlice keys by Service. The last answer is kept with its mapping: the store hands
    out the same mapping until a slice changes, so most snapshots (an Ingress or Secret
    changed) reuse it, and one changed slice re-indexes only its Service (slices are compared
    by identity: the store replaces an object on every change)."""
    global _last_index
    last = _last_index
    if last is not None and last[0] is slices:
        return last[1]
    if last is None or abs(len(last[0]) - len(slices)) > 64:
        index = _index_all(slices)
    else:
        old, held = last
        changed = {key for key, obj in slices.items() if old.get(key) is not obj}
        changed.update(key for key in old if key not in slices)
        services = {
            (key[0], service)
            for key in changed
            for service in (_service_of(old.get(key)), _service_of(slices.get(key)))
            if service is not None
        }
        if len(services) > 64:
            index = _index_all(slices)
        else:
            out = dict(held)
            for service in services:
                keys = tuple(
                    sorted(
                        key
                        for key in {*held.get(service, ()), *changed}
                        if key[0] == service[0] and _service_of(slices.get(key)) == service[1]
                    )
                )
                if keys:
                    out[service] = keys
                else:
                    out.pop(service, None)
            index = types.MappingProxyType(out)
    _last_index = (slices, index)
    return index


def _index_all(slices: Objects) -> Mapping[ObjectKey, tuple[ObjectKey, ...]]:
    out: dict[ObjectKey, list[ObjectKey]] = {}
    for key, obj in slices.items():
        service = _service_of(obj)
        if service is not None:
            out.setdefault((key[0], service), []).append(key)
    return types.MappingProxyType({k: tuple(sorted(v)) for k, v in out.items()})


def _service_of(obj: Mapping[str, Any] | None) -> str | None:
    """The Service an EndpointSlice names in its label, or None."""
    if obj is None:
        return None
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL)
    return service if isinstance(service, str) and service else None


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """``(namespace, name)`` of an object from its ``metadata``."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def version(obj: Mapping[str, Any] | None) -> str | None:
    """The object's ``metadata.resourceVersion``; a digest of its content when it has none;
    None for an absent object."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    rv = meta.get("resourceVersion")
    if rv:
        return str(rv)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def spec_version(obj: Mapping[str, Any] | None) -> object:
    """What the translation reads of an object whose ``status`` is a subresource (Ingress,
    Policy): its ``uid`` and ``metadata.generation``, which the API server bumps on every
    change of the spec but not on a status write (the controller's own Ready conditions and
    load-balancer addresses included), with its labels and annotations, which bump neither.
    So a status write does not make its Ingress (or every Ingress naming the Policy) compile
    again. :func:`version` for an object without ``uid`` and ``generation`` (a test's dict)."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    generation, uid = meta.get("generation"), meta.get("uid")
    if not isinstance(generation, int) or isinstance(generation, bool) or not uid:
        return version(obj)
    return ("generation", uid, generation, meta.get("labels") or {}, meta.get("annotations") or {})


Dependency = tuple[str, ObjectKey]
"""``(kind, key)``: kind ``Service``, ``Secret``, ``Policy`` or ``EndpointSlices`` (the slices
of the Service ``key``)."""


def fingerprint(snapshot: Snapshot, dep: Dependency) -> object:
    """What ``dep`` is in ``snapshot``, as versions (equal fingerprints: nothing changed)."""
    kind, key = dep
    if kind == "EndpointSlices":
        names = snapshot.slices_by_service.get(key, ())
        return tuple((name, version(snapshot.endpoint_slices.get(name))) for name in names)
    obj = _objects(snapshot, kind).get(key)
    if kind == "Secret" and obj is not None:
        # The store keeps an unreferenced Secret without its data, then GETs it when a
        # reference appears: the same resourceVersion, now with data. Whether the data is
        # there is part of what the translation read, or the memo would keep the reading
        # of the stub (a missing key, no headers) until the Secret next changes.
        return (version(obj), "data" in obj)
    return spec_version(obj) if kind == "Policy" else version(obj)


def _objects(snapshot: Snapshot, kind: str) -> Objects:
    if kind == "Service":
        return snapshot.services
    if kind == "Secret":
        return snapshot.secrets
    if kind == "Policy":
        return snapshot.policies
    raise ValueError(f"unknown dependency kind {kind!r}")


class Lookups:
    """Reads objects from a snapshot and remembers every one asked for (found or not)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.used: dict[Dependency, object] = {}

    def _get(self, kind: str, key: ObjectKey) -> Mapping[str, Any] | None:
        dep = (kind, key)
        if dep not in self.used:
            self.used[dep] = fingerprint(self.snapshot, dep)
        return _objects(self.snapshot, kind).get(key)

    def service(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self._get("Service", key)

    def secret(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self._get("Secret", key)

    def policy(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self._get("Policy", key)

    def endpoint_slices(self, service: ObjectKey) -> tuple[Mapping[str, Any], ...]:
        """The EndpointSlices of the Service ``service``, by slice name."""
        dep = ("EndpointSlices", service)
        if dep not in self.used:
            self.used[dep] = fingerprint(self.snapshot, dep)
        names = self.snapshot.slices_by_service.get(service, ())
        return tuple(self.snapshot.endpoint_slices[name] for name in names)

    def secrets_used(self) -> frozenset[ObjectKey]:
        return frozenset(key for kind, key in self.used if kind == "Secret")
