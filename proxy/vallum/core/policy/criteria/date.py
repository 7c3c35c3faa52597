"""``date``: the request time is within a date range (a Pomerium Enterprise criterion).

An object with ``after`` and/or ``before``, each an ISO-8601 date or date-time
(``2026-01-02``, ``2026-01-02T16:20:00``, ``2026-01-02T16:20:00+01:00``); no zone means UTC.
The range is half-open: ``after`` <= time < ``before``. ``after`` later than ``before`` is an
error (the criterion could never hold).
"""

from __future__ import annotations

from vallum.core.errors import PolicyError
from vallum.core.policy import logic
from vallum.core.policy.criteria import base, timeparse
from vallum.core.policy.subject import Subject

NAME = "date"
ABOUT_USER = False
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    data = spec.data
    if not isinstance(data, dict) or not data:
        raise PolicyError(spec.path, "expected an object with `after` and/or `before`")
    for key in data:
        if key not in ("after", "before"):
            raise PolicyError(
                f"{spec.path}.{key}", f"unknown date matcher '{key}' (expected after, before)"
            )
    after = timeparse.instant(data["after"], f"{spec.path}.after") if "after" in data else None
    before = timeparse.instant(data["before"], f"{spec.path}.before") if "before" in data else None
    if after is not None and before is not None and after >= before:
        raise PolicyError(spec.path, "`after` must be earlier than `before`")

    def test(subject: Subject) -> int:
        now = timeparse.request_time(subject.request.time)
        if now is None:
            return logic.FALSE
        if after is not None and now < after:
            return logic.FALSE
        if before is not None and now >= before:
            return logic.FALSE
        return logic.TRUE

    normalized = {
        k: v.isoformat() for k, v in (("after", after), ("before", before)) if v is not None
    }
    text = " ".join(f"{k} {v}" for k, v in normalized.items())
    return base.Leaf(
        spec.key,
        test,
        f"date {text}",
        f"a request time {text}",
        base.code_for(NAME),
        normalized,
        spec.path,
    )
