"""How the operator's long-running API calls (watches, the Lease) report a failure and wait.

An API server that refuses us (403 before the RBAC is applied) or is away must neither be asked
nor fill the log every second, and the ``kubernetes`` client's exceptions carry the whole
response (every header, the body): one line of it is what a reader needs.
"""

from __future__ import annotations

FIRST = 1.0
"""The wait after a first failure; it doubles with each failure in a row, up to :data:`MAX`."""
MAX = 30.0


def delay(failures: int) -> float:
    """How long to wait after ``failures`` failed attempts in a row (1, 2, 4 … 30 s)."""
    return float(min(MAX, FIRST * 2 ** max(0, min(failures - 1, 16))))


def brief(exc: BaseException) -> str:
    """An API error in one line: ``403 Forbidden`` for the client's ``ApiException``, else the
    first line of its text, else its type."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if isinstance(status, int):
        return f"{status} {reason or ''}".strip()
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
