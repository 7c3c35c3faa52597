"""Who is making the request: the identity that the policy judges and the assertion carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in user (from a session cookie or a bearer token).

    ``user`` is the stable user id (the provider's ``sub``); ``claims`` holds every claim the
    provider gave (ID token and userinfo merged), for ``claim/<name>`` criteria and
    ``jwt_claims_headers``. Anonymous requests have no ``Identity`` at all (``None``).
    """

    user: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)
    session_id: str = ""
    expires_at: float = 0.0
