"""``day_of_week``: the request falls on one of the given days (a Pomerium Enterprise criterion).

The value is a string: ``*`` (every day), a comma-separated list (``mon,wed,fri``), a range
(``mon-fri``; ``fri-mon`` wraps over the weekend), or a mix (``mon-wed,fri``). Days are English
names or three-letter abbreviations, any case. Days are reckoned in UTC; Vallum also accepts an
object ``{days: "mon-fri", timezone: "Europe/Paris"}`` to reckon them in another zone.
"""

from __future__ import annotations

import datetime as dt

from vallum.core.errors import PolicyError
from vallum.core.policy import logic
from vallum.core.policy.criteria import base, timeparse
from vallum.core.policy.subject import Subject

NAME = "day_of_week"
ABOUT_USER = False
SUB_PATH = False

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(text: str, path: str) -> int:
    word = text.strip().lower()
    if word in DAYS:
        return DAYS.index(word)
    if word in _FULL:
        return _FULL.index(word)
    raise PolicyError(path, f"not a day of the week: {text!r} (use mon..sun or monday..sunday)")


def days(text: object, path: str) -> frozenset[int]:
    """The weekday numbers (Monday = 0) that a day-of-week string names."""
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(path, f'expected days such as "mon-fri" or "*", got {text!r}')
    if text.strip() == "*":
        return frozenset(range(7))
    out: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            first_text, _, last_text = part.partition("-")
            first, last = _day(first_text, path), _day(last_text, path)
            day = first
            out.add(day)
            while day != last:
                day = (day + 1) % 7
                out.add(day)
        else:
            out.add(_day(part, path))
    return frozenset(out)


def build(spec: base.Spec) -> base.Leaf:
    data = spec.data
    tz: dt.tzinfo = timeparse.UTC
    zone_name = "UTC"
    if isinstance(data, dict):
        for key in data:
            if key not in ("days", "timezone"):
                raise PolicyError(
                    f"{spec.path}.{key}",
                    f"unknown day_of_week key '{key}' (expected days, timezone)",
                )
        if "days" not in data:
            raise PolicyError(spec.path, "`days` is required, e.g. days: mon-fri")
        if "timezone" in data:
            tz = timeparse.zone(data["timezone"], f"{spec.path}.timezone")
            zone_name = str(data["timezone"]).strip()
        wanted = days(data["days"], f"{spec.path}.days")
    else:
        wanted = days(data, spec.path)

    def test(subject: Subject) -> int:
        now = timeparse.request_time(subject.request.time)
        if now is None:
            return logic.FALSE
        return logic.TRUE if now.astimezone(tz).weekday() in wanted else logic.FALSE

    listed = ",".join(DAYS[d] for d in sorted(wanted))
    normalized: object = listed if zone_name == "UTC" else {"days": listed, "timezone": zone_name}
    return base.Leaf(
        spec.key,
        test,
        f"day_of_week {listed} ({zone_name})",
        f"a request on {listed} ({zone_name})",
        base.code_for(NAME),
        normalized,
        spec.path,
    )
