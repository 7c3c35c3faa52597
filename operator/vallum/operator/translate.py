"""Snapshot -> route table: the pure, deterministic translation of the controller.

(Stub with the shared signatures; the translation follows.)
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from vallum.core import config
from vallum.operator import snapshot as snap

ObjectKey = snap.ObjectKey


@dataclasses.dataclass(frozen=True)
class Options:
    """How the controller translates: its IngressClass controller name and the CLI's settings."""

    controller_name: str = "vallum.dev/ingress-controller"
    base: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """Routes-file settings from the CLI (``address``, ...); they win over the Settings object."""


@dataclasses.dataclass(frozen=True)
class IngressOutcome:
    """One handled Ingress: its problems (empty: live; else its routes deny) and route count."""

    problems: tuple[str, ...]
    routes: int


@dataclasses.dataclass(frozen=True)
class Result:
    """The table (None only when the Settings do not load) and what to report on objects."""

    table: config.RouteTable | None
    settings_problems: tuple[str, ...]
    ingresses: Mapping[ObjectKey, IngressOutcome]
    policies: Mapping[ObjectKey, tuple[str, ...]]
    secrets_used: frozenset[ObjectKey]
    warnings: tuple[str, ...] = ()


def handles(
    ingress: Mapping[str, Any],
    ingress_classes: Mapping[str, Mapping[str, Any]],
    controller_name: str,
) -> bool:
    """Whether this controller handles ``ingress`` (IngressClass selection)."""
    del ingress, ingress_classes, controller_name
    return False


class Translator:
    """Translates snapshots, memoising each Ingress's routes by the resourceVersions used."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def translate(self, snapshot: snap.Snapshot) -> Result:
        """The table for ``snapshot``: same snapshot, same table, same checksum."""
        del snapshot
        return Result(None, ("not implemented",), {}, {}, frozenset())


def translate(snapshot: snap.Snapshot, options: Options | None = None) -> Result:
    """One-shot translation (no memo kept)."""
    return Translator(options or Options()).translate(snapshot)
