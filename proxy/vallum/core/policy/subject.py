"""What one evaluation looks at: the request and the identity, plus values derived once.

Built per evaluation and handed to every compiled criterion. The identity's groups are read
defensively (a non-list ``groups`` is treated as no groups; entries that are not strings never
match) because evaluation must never raise. Membership tests adapt to the policy: the first
``groups has`` test scans the list (cheapest for one test), the second builds a set that every
later test uses, so a policy with 25 ``groups`` criteria and a 100-group identity costs one set,
not 25 scans.
"""

from __future__ import annotations

from vallum.core.identity import Identity
from vallum.core.request import RequestInfo

_EMPTY: tuple[object, ...] = ()


class Subject:
    """The request and identity under evaluation (``identity`` is ``None`` when anonymous)."""

    __slots__ = ("_group_set", "_scanned", "identity", "request")

    def __init__(self, request: RequestInfo, identity: Identity | None) -> None:
        self.request = request
        self.identity = identity
        self._group_set: frozenset[object] | None = None
        self._scanned = False

    def group_list(self) -> tuple[object, ...] | list[object]:
        """The identity's groups as given (a tuple or list), or empty when malformed."""
        raw = getattr(self.identity, "groups", _EMPTY)
        kind = type(raw)
        if kind is tuple or kind is list:
            return raw
        if isinstance(raw, str):
            return (raw,)
        if isinstance(raw, (tuple, list, set, frozenset)):
            return tuple(raw)
        return _EMPTY

    def has_group(self, name: str) -> bool:
        """Whether the identity's groups contain ``name``."""
        groups = self._group_set
        if groups is not None:
            return name in groups
        if not self._scanned:
            self._scanned = True
            raw = getattr(self.identity, "groups", _EMPTY)
            if type(raw) is tuple:
                return name in raw
            return name in self.group_list()
        raw = self.group_list()
        try:
            groups = frozenset(raw)
        except TypeError:  # unhashable entries cannot equal a string: leave them out
            groups = frozenset(item for item in raw if type(item) is str)
        self._group_set = groups
        return name in groups
