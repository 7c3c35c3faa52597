"""``time_of_day``: the request's local time of day is within a window (Pomerium Enterprise).

An object with ``timezone`` (required, an IANA name such as ``America/Phoenix``) and ``after``
and/or ``before`` (``15:04``, ``15:04:05``, ``15:04:05.999999999``, ``3:04 PM``, ``3:04PM``,
``3 PM``, ``3PM``). The window is half-open: ``after`` <= time < ``before``; when ``after`` is
later than ``before`` the window wraps midnight (``after: "22:00", before: "06:00"``).
Quote times in YAML: unquoted ``15:04`` is read as a base-60 number and rejected.
"""

from __future__ import annotations

from vallum.core.errors import PolicyError
from vallum.core.policy import logic
from vallum.core.policy.criteria import base, timeparse
from vallum.core.policy.subject import Subject

NAME = "time_of_day"
ABOUT_USER = False
SUB_PATH = False


def _show(micros: int) -> str:
    seconds, rest = divmod(micros, 1_000_000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{text}.{rest:06d}" if rest else text


def build(spec: base.Spec) -> base.Leaf:
    data = spec.data
    if not isinstance(data, dict):
        raise PolicyError(spec.path, "expected an object with `timezone` and `after`/`before`")
    for key in data:
        if key not in ("timezone", "after", "before"):
            raise PolicyError(
                f"{spec.path}.{key}",
                f"unknown time_of_day matcher '{key}' (expected timezone, after, before)",
            )
    if "timezone" not in data:
        raise PolicyError(spec.path, "`timezone` is required (e.g. timezone: UTC)")
    if "after" not in data and "before" not in data:
        raise PolicyError(spec.path, "give `after` and/or `before`")
    tz = timeparse.zone(data["timezone"], f"{spec.path}.timezone")
    after = timeparse.clock(data["after"], f"{spec.path}.after") if "after" in data else None
    before = timeparse.clock(data["before"], f"{spec.path}.before") if "before" in data else None
    if after is not None and after == before:
        raise PolicyError(spec.path, "`after` and `before` are the same time: the window is empty")
    wraps = after is not None and before is not None and after > before

    def test(subject: Subject) -> int:
        now = timeparse.request_time(subject.request.time)
        if now is None:
            return logic.FALSE
        t = timeparse.clock_of(now.astimezone(tz))
        if wraps:
            inside = t >= after or t < before  # type: ignore[operator]
        else:
            inside = (after is None or t >= after) and (before is None or t < before)
        return logic.TRUE if inside else logic.FALSE

    zone_name = str(data["timezone"]).strip()
    normalized: dict[str, str] = {"timezone": zone_name}
    if after is not None:
        normalized["after"] = _show(after)
    if before is not None:
        normalized["before"] = _show(before)
    text = " ".join(f"{k} {v}" for k, v in normalized.items() if k != "timezone")
    return base.Leaf(
        spec.key,
        test,
        f"time_of_day {text} ({zone_name})",
        f"a request time of day {text} ({zone_name})",
        base.code_for(NAME),
        normalized,
        spec.path,
    )
