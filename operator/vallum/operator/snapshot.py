"""The closed, typed snapshot of the cluster objects the translator reads.

Why a module of its own: the store (which collects objects from kopf's event handlers) and the
translator (which turns them into a route table) meet here and nowhere else. A snapshot is a
plain value: objects as the API server returns them (JSON dicts), keyed by ``(namespace, name)``,
so the translator can be tested from plain dicts and never does I/O.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

ObjectKey = tuple[str, str]
"""``(namespace, name)``; cluster-scoped objects use ``("", name)``."""

Objects = Mapping[ObjectKey, Mapping[str, Any]]

_EMPTY: Objects = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every object the translation may read, as the API server returns them."""

    ingresses: Objects = _EMPTY
    services: Objects = _EMPTY
    endpoint_slices: Objects = _EMPTY
    """Keyed by the slice's own name; a slice names its Service in the label
    ``kubernetes.io/service-name``."""
    secrets: Objects = _EMPTY
    policies: Objects = _EMPTY
    """vallum.dev/v1alpha1 Policy objects."""
    ingress_classes: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({})
    """networking.k8s.io/v1 IngressClass objects by name."""
    settings: Mapping[str, Any] | None = None
    """The vallum.dev/v1alpha1 Settings object named by ``--settings``; None when absent."""


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """``(namespace, name)`` of an object from its ``metadata``."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version(obj: Mapping[str, Any] | None) -> str:
    """The object's ``metadata.resourceVersion`` ("" for an absent object or none set)."""
    if obj is None:
        return ""
    meta = obj.get("metadata") or {}
    return str(meta.get("resourceVersion") or "")
