"""The result of evaluating a policy: allowed or not, and why, as data.

Reasons are values (a code, a human message, the place in the policy) so that the 403 page, the
access log and ``vallum policy eval`` all show the same explanation. Codes follow Pomerium's
reason names where one exists (``user-unauthenticated``, ``groups-unauthorized``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason: ``code`` for machines, ``message`` for people, ``path`` inside the policy."""

    code: str
    message: str
    path: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``; ``reasons`` (which rule allowed, or what was missing / which deny matched);
    ``needs_login``: the request is anonymous and the outcome depends on who the user is, so the
    proxy should send it to sign in (browser) or answer 401 (API) rather than 403."""

    allowed: bool
    reasons: tuple[Reason, ...]
    needs_login: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "allow": self.allowed,
            "needs_login": self.needs_login,
            "reasons": [r.to_dict() for r in self.reasons],
        }
