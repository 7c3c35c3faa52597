"""What one evaluation looks at: the request and the identity, plus values derived once.

Built per evaluation and handed to every compiled criterion. Derived values (the identity's
groups as a set) are computed on first use and kept for the rest of the evaluation, so a policy
with 25 ``groups`` criteria and a 100-group identity builds the set once, not 25 times.
Nothing here trusts the identity's shape: a non-list ``groups`` or non-string entries are read
defensively, because evaluation must never raise.
"""

from __future__ import annotations

from vallum.core.identity import Identity
from vallum.core.policy import matchers
from vallum.core.request import RequestInfo


class Subject:
    """The request and identity under evaluation (``identity`` is ``None`` when anonymous)."""

    __slots__ = ("_groups", "identity", "request")

    def __init__(self, request: RequestInfo, identity: Identity | None) -> None:
        self.request = request
        self.identity = identity
        self._groups: frozenset[str] | None = None

    def groups(self) -> frozenset[str]:
        """The identity's groups as canonical strings (empty when anonymous or malformed)."""
        groups = self._groups
        if groups is None:
            groups = self._groups = _group_set(self.identity)
        return groups


def _group_set(identity: Identity | None) -> frozenset[str]:
    if identity is None:
        return frozenset()
    raw = getattr(identity, "groups", ())
    if isinstance(raw, str):
        return frozenset((raw,))
    if not isinstance(raw, (list, tuple, set, frozenset)):
        return frozenset()
    try:
        groups = frozenset(raw)
    except TypeError:  # unhashable entries: keep the ones we can read
        return frozenset(matchers.canonical_list(raw))
    for item in groups:
        if type(item) is not str:
            return frozenset(matchers.canonical_list(raw))
    return groups
