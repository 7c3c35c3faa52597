"""Parsing for the time criteria (``date``, ``day_of_week``, ``time_of_day``), shared by them.

Pomerium documents the formats; YAML adds traps: an unquoted ``2020-01-02T16:20:00`` arrives
as a ``datetime`` (accepted), an unquoted ``2:20:00`` or ``15:04`` arrives as a base-60 integer
(rejected with a hint to quote it, because ``15:04`` and ``00:15:04`` are the same integer).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from vallum.core.errors import PolicyError

UTC = dt.UTC


def instant(value: object, path: str) -> dt.datetime:
    """An ISO-8601 date or date-time as an aware datetime (no zone given means UTC)."""
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, dt.date):
        result = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            result = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise PolicyError(
                path, f"not an ISO-8601 date or date-time: {value!r} (e.g. 2026-01-02T16:20:00Z)"
            ) from None
    else:
        raise PolicyError(path, f"expected an ISO-8601 date or date-time, got {value!r}")
    return result if result.tzinfo is not None else result.replace(tzinfo=UTC)


def zone(value: object, path: str) -> dt.tzinfo:
    """A time zone by IANA name (``Europe/Paris``, ``UTC``)."""
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(path, f"expected a time zone name such as Europe/Paris, got {value!r}")
    try:
        return zoneinfo.ZoneInfo(value.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PolicyError(path, f"unknown time zone {value!r}") from None


_CLOCK_12 = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*([AaPp][Mm])$")
_CLOCK_24 = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")


def clock(value: object, path: str) -> int:
    """A time of day as microseconds since midnight.

    Formats (Pomerium's): ``3:04 PM``, ``3:04PM``, ``3 PM``, ``3PM``, ``15:04:05.999999999``,
    ``15:04:05``, ``15:04``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        raise PolicyError(
            path, 'YAML read this time as a number (base 60); quote it, e.g. after: "15:04"'
        )
    if not isinstance(value, str):
        raise PolicyError(path, f'expected a time of day such as "15:04" or "3PM", got {value!r}')
    text = value.strip()
    m12 = _CLOCK_12.match(text)
    if m12:
        hour, minute = int(m12.group(1)), int(m12.group(2) or 0)
        if not 1 <= hour <= 12 or minute > 59:
            raise PolicyError(path, f"not a valid time of day: {value!r}")
        hour = hour % 12 + (12 if m12.group(3).lower() == "pm" else 0)
        return (hour * 3600 + minute * 60) * 1_000_000
    m24 = _CLOCK_24.match(text)
    if m24:
        hour, minute, second = int(m24.group(1)), int(m24.group(2)), int(m24.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise PolicyError(path, f"not a valid time of day: {value!r}")
        micros = int((m24.group(4) or "0").ljust(9, "0")[:6])
        return (hour * 3600 + minute * 60 + second) * 1_000_000 + micros
    raise PolicyError(
        path, f"not a time of day: {value!r} (formats: 15:04, 15:04:05, 3:04PM, 3 PM)"
    )


def clock_of(moment: dt.datetime) -> int:
    """Microseconds since midnight of ``moment`` (in its own zone)."""
    return (
        moment.hour * 3600 + moment.minute * 60 + moment.second
    ) * 1_000_000 + moment.microsecond


def request_time(value: object) -> dt.datetime | None:
    """The request's time as an aware datetime (naive means UTC); ``None`` if not a datetime."""
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
