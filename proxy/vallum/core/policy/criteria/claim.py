"""``claim/<name>``: a string list matcher on one of the identity's claims.

The name is everything after the first ``/`` (``claim/example.com/role`` is the claim
``example.com/role``). A dotted name reaches into nested objects (``claim/org.team`` reads
``{"org": {"team": ...}}``) when no claim has the literal dotted name. A scalar claim behaves as
a one-element list, a list claim as its scalar items, and a missing (or object-valued) claim as
an empty list. Values compare as Pomerium's rego ``==`` does, by JSON type and value: the policy
value ``true`` matches the claim ``true``, never the string ``"true"``; ``3`` matches ``3`` and
``3.0``, never ``"3"``; ``"3"`` matches only the string.
Anonymous: unauthenticated, so ``claim/x: {exclude: v}`` does not admit anonymous users.
"""

from __future__ import annotations

from collections.abc import Mapping

from vallum.core.errors import PolicyError
from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "claim"
ABOUT_USER = True
SUB_PATH = True


def claim_values(claims: object, name: str, parts: tuple[str, ...]) -> tuple[object, ...]:
    """The comparison keys (:func:`matchers.json_key`) of claim ``name``'s scalar values
    (``parts`` = the name split at dots)."""
    if type(claims) is not dict and not isinstance(claims, Mapping):
        return ()
    value = claims.get(name, _MISSING)
    if value is _MISSING and len(parts) > 1:
        value = claims
        for part in parts:
            if not isinstance(value, Mapping):
                return ()
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return ()
    if type(value) is str:
        return (value,)
    if isinstance(value, (list, tuple)):
        return matchers.json_keys(value)
    key = matchers.json_key(value)
    return () if key is None else (key,)


_MISSING = object()


def build(spec: base.Spec) -> base.Leaf:
    name = spec.sub_path
    if not name:
        raise PolicyError(spec.path, "`claim` needs a claim name: claim/<name>")
    m = matchers.list_matcher(spec.data, spec.path, typed=True)
    match = m.test
    parts = tuple(name.split("."))

    def test(subject: Subject) -> int:
        identity = subject.identity
        if identity is None:
            return logic.UNAUTH
        values = claim_values(getattr(identity, "claims", None), name, parts)
        return logic.TRUE if match(values) else logic.FALSE

    only_has = list(m.normalized) == ["has"]
    requirement = (
        f"claim `{name}` = `{matchers.show(m.normalized['has'])}`"
        if only_has
        else f"claim `{name}` that {m.description}"
    )
    return base.Leaf(
        spec.key,
        test,
        f"claim/{name} {m.description}",
        requirement,
        "claim-unauthorized",
        m.normalized,
        spec.path,
        about_user=True,
    )
