"""``date``, ``day_of_week`` and ``time_of_day`` (Pomerium Enterprise criteria, shipped here)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from tests.core.policy.support import allows, one, request
from vallum.core import policy
from vallum.core.errors import PolicyError

WED_NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def at(when: dt.datetime) -> Any:
    return request(time=when)


@pytest.mark.parametrize(
    ("matcher", "when", "expected"),
    [
        ({"after": "2026-01-01T00:00:00"}, WED_NOON, True),
        ({"after": "2027-01-01"}, WED_NOON, False),
        ({"before": "2026-11-25T12:00:00Z"}, WED_NOON, False),  # half-open: before is excluded
        ({"after": "2026-11-25T12:00:00Z"}, WED_NOON, True),  # after is included
        ({"after": "2026-11-25T13:00:00+01:00", "before": "2026-11-26"}, WED_NOON, True),
        ({"after": "2020-01-02T16:20:00", "before": "2150-01-02T16:20:00"}, WED_NOON, True),
        ({"before": "2026-11-25T12:00:00"}, WED_NOON.replace(tzinfo=None), False),  # naive = UTC
    ],
)
def test_date(matcher: dict[str, str], when: dt.datetime, expected: bool) -> None:
    assert allows(one({"date": matcher}), at(when)) is expected


def test_date_from_unquoted_yaml() -> None:
    data = yaml.safe_load("allow:\n  and:\n    - date:\n        after: 2020-01-02T16:20:00\n")
    assert isinstance(data["allow"]["and"][0]["date"]["after"], dt.datetime)
    assert allows(data, at(WED_NOON))


@pytest.mark.parametrize(
    ("days", "when", "expected"),
    [
        ("*", WED_NOON, True),
        ("mon-fri", WED_NOON, True),
        ("tue-fri", WED_NOON, True),
        ("thu-fri", WED_NOON, False),
        ("mon,wed,fri", WED_NOON, True),
        ("Monday,Wednesday", WED_NOON, True),
        ("sat-sun", WED_NOON, False),
        ("fri-mon", WED_NOON, False),  # wraps over the weekend
        ("fri-mon", WED_NOON + dt.timedelta(days=4), True),  # Sunday
        ("mon-tue,wed", WED_NOON, True),
        ({"days": "thu", "timezone": "Pacific/Kiritimati"}, WED_NOON, True),  # UTC+14: Thursday
    ],
)
def test_day_of_week(days: Any, when: dt.datetime, expected: bool) -> None:
    assert allows(one({"day_of_week": days}), at(when)) is expected


@pytest.mark.parametrize(
    ("matcher", "when", "expected"),
    [
        ({"timezone": "UTC", "after": "9:00", "before": "17:00"}, WED_NOON, True),
        ({"timezone": "UTC", "after": "2:20:00", "before": "4:30PM"}, WED_NOON, True),
        ({"timezone": "UTC", "after": "1PM"}, WED_NOON, False),
        ({"timezone": "UTC", "after": "12 PM"}, WED_NOON, True),  # 12 PM is noon, inclusive
        ({"timezone": "UTC", "before": "12:00:00.000001999"}, WED_NOON, True),  # ns cut to µs
        ({"timezone": "UTC", "before": "12:00"}, WED_NOON, False),
        ({"timezone": "UTC", "after": "12:01 AM", "before": "11:59 AM"}, WED_NOON, False),
        ({"timezone": "America/Phoenix", "after": "9:00", "before": "17:00"}, WED_NOON, False),
        ({"timezone": "America/Phoenix", "after": "3:00", "before": "6:00"}, WED_NOON, True),
        ({"timezone": "UTC", "after": "22:00", "before": "06:00"}, WED_NOON, False),  # wraps
        ({"timezone": "UTC", "after": "22:00", "before": "06:00"}, WED_NOON.replace(hour=23), True),
        ({"timezone": "UTC", "after": "22:00", "before": "06:00"}, WED_NOON.replace(hour=5), True),
    ],
)
def test_time_of_day(matcher: dict[str, str], when: dt.datetime, expected: bool) -> None:
    assert allows(one({"time_of_day": matcher}), at(when)) is expected


@pytest.mark.parametrize(
    ("criterion", "where", "fragment"),
    [
        ({"date": "2026-01-01"}, "allow.and[0].date", "after"),
        ({"date": {"after": "soon"}}, "allow.and[0].date.after", "ISO-8601"),
        ({"date": {"on": "2026-01-01"}}, "allow.and[0].date.on", "unknown date matcher"),
        ({"date": {"after": "2027-01-01", "before": "2026-01-01"}}, "allow.and[0].date", "earlier"),
        ({"day_of_week": "funday"}, "allow.and[0].day_of_week", "not a day"),
        ({"day_of_week": ""}, "allow.and[0].day_of_week", "expected days"),
        ({"day_of_week": {"timezone": "UTC"}}, "allow.and[0].day_of_week", "`days`"),
        ({"time_of_day": {"after": "9:00"}}, "allow.and[0].time_of_day", "timezone"),
        (
            {"time_of_day": {"timezone": "Mars/Olympus", "after": "9:00"}},
            "allow.and[0].time_of_day.timezone",
            "unknown time zone",
        ),
        ({"time_of_day": {"timezone": "UTC"}}, "allow.and[0].time_of_day", "after"),
        (
            {"time_of_day": {"timezone": "UTC", "after": "25:00"}},
            "allow.and[0].time_of_day.after",
            "not a valid time",
        ),
        (
            {"time_of_day": {"timezone": "UTC", "after": 904}},
            "allow.and[0].time_of_day.after",
            "quote it",
        ),
    ],
)
def test_time_errors(criterion: dict[str, Any], where: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy.compile_policy(one(criterion))
    assert err.value.path == where
    assert fragment in err.value.message


def test_unquoted_yaml_clock_time_is_rejected_with_a_hint() -> None:
    data = yaml.safe_load("allow: {and: [{time_of_day: {timezone: UTC, after: 15:04}}]}")
    with pytest.raises(PolicyError, match="quote it"):
        policy.compile_policy(data)


def test_request_time_that_is_not_a_datetime_matches_nothing() -> None:
    req = request()
    object.__setattr__(req, "time", "noon")
    assert not allows(one({"date": {"after": "2000-01-01"}}), req)


def test_pomerium_doc_example_loads_unquoted_with_yamltext() -> None:
    from vallum.core.policy import yamltext

    text = (
        "allow:\n  and:\n    - time_of_day:\n        timezone: UTC\n"
        "        after: 2:20:00\n        before: 4:30PM\n"
    )
    data = yamltext.load(text)
    assert data["allow"]["and"][0]["time_of_day"]["after"] == "2:20:00"
    assert allows(data, at(WED_NOON))
    assert yamltext.load("a: 42\nb: 1.5\nc: 0x10\nd: 15:04") == {
        "a": 42,
        "b": 1.5,
        "c": 16,
        "d": "15:04",
    }
