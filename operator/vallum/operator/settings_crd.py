"""A vallum.dev/v1alpha1 Settings object + its Secrets -> routes-file settings values.

Why: the controller must build its table with the same loader as ``vallum serve``; this module
turns the cluster-scoped Settings object (Pomerium's ``Pomerium`` CRD field names) into the
plain settings keys of a routes file, resolving the Secrets it names. Pure, never raises.
(Stub: the full reader follows.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

ObjectKey = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class SettingsResult:
    """Routes-file settings values, problems naming their field, every Secret referenced."""

    values: Mapping[str, Any]
    problems: tuple[str, ...]
    secrets_used: frozenset[ObjectKey]


def read(
    obj: Mapping[str, Any] | None, secrets: Mapping[ObjectKey, Mapping[str, Any]]
) -> SettingsResult:
    """Read a Settings object (plain dict, or None: defaults) with the Secrets it may name."""
    del obj, secrets
    return SettingsResult(values={}, problems=(), secrets_used=frozenset())
