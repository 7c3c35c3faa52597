"""The criteria registry: one module per criterion, looked up by name.

Each module provides ``NAME``, ``ABOUT_USER``, ``SUB_PATH`` and ``build(spec) -> Leaf`` (see
:mod:`vallum.core.policy.criteria.base`). Adding a criterion is adding a module and a line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vallum.core.policy.criteria import (
    accept,
    authenticated_user,
    base,
    claim,
    client_certificate,
    cors_preflight,
    date,
    day_of_week,
    domain,
    email,
    groups,
    http_method,
    http_path,
    invalid_client_certificate,
    reject,
    source_ip,
    time_of_day,
    user,
)


@dataclass(frozen=True, slots=True)
class Criterion:
    """A registered criterion: its name, whether it is about the user, and its builder."""

    name: str
    about_user: bool
    sub_path: bool
    build: Callable[[base.Spec], base.Leaf]


REGISTRY: dict[str, Criterion] = {
    module.NAME: Criterion(module.NAME, module.ABOUT_USER, module.SUB_PATH, module.build)
    for module in (
        accept,
        reject,
        authenticated_user,
        email,
        domain,
        user,
        groups,
        claim,
        http_method,
        http_path,
        client_certificate,
        invalid_client_certificate,
        date,
        day_of_week,
        time_of_day,
        cors_preflight,
        source_ip,
    )
}
"""Every criterion Vallum understands, by name."""

USER_CRITERIA = frozenset(name for name, c in REGISTRY.items() if c.about_user)
"""Criteria that are "unauthenticated" (sign in) for anonymous requests."""
