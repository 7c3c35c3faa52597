"""AccessLog: one JSON object per line, stable field names, can be disabled, never raises."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import time
from typing import Any

import pytest

from vallum.proxy import accesslog

FIELDS: dict[str, Any] = dict(
    method="GET",
    host="app.example.com",
    path="/a\"b",
    status=200,
    bytes_sent=1234,
    duration=0.0125,
    route="app",
    request_id="r-1",
    client_ip="10.0.0.1",
    upstream="http://127.0.0.1:8080",
)


def test_one_json_object_per_line() -> None:
    out = io.StringIO()
    log = accesslog.AccessLog(out)
    log.write(**FIELDS)
    log.write(**{**FIELDS, "status": 404}, user="alice@example.com")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["path"] == "/a\"b"
    assert first["status"] == 200 and first["bytes"] == 1234
    assert first["duration_ms"] == 12.5
    assert "user" not in first
    assert second["status"] == 404 and second["user"] == "alice@example.com"
    when = dt.datetime.fromisoformat(first["time"])
    assert when.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 5


def test_hostile_strings_stay_one_valid_line() -> None:
    out = io.StringIO()
    log = accesslog.AccessLog(out)
    path = '/x\n{"status":1}\u2028é\x00\\'
    log.write(**{**FIELDS, "path": path, "host": "h\"\r%s%%", "route": "%d"}, user="ünï\tcode")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["path"] == path and entry["host"] == "h\"\r%s%%" and entry["route"] == "%d"
    assert entry["user"] == "ünï\tcode"
    assert entry["time"].endswith("Z")


def test_disabled_writes_nothing() -> None:
    out = io.StringIO()
    log = accesslog.AccessLog(out, enabled=False)
    log.write(**FIELDS)
    assert out.getvalue() == ""


def test_broken_stream_disables_and_reports_once(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    out.close()
    log = accesslog.AccessLog(out)
    logger = logging.getLogger("vallum")
    logger.propagate, saved = True, logger.propagate
    try:
        with caplog.at_level(logging.ERROR, logger="vallum.accesslog"):
            log.write(**FIELDS)
            log.write(**FIELDS)
    finally:
        logger.propagate = saved
    assert log.enabled is False
    assert [r.message for r in caplog.records] == ["access log disabled: cannot write"]


class _CountingStream(io.StringIO):
    """Counts ``write`` and ``flush`` calls (each one a system call on a real stdout)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


async def test_lines_of_one_loop_round_go_out_in_one_write_when_the_round_ends() -> None:
    out = _CountingStream()
    log = accesslog.AccessLog(out)
    for status in (200, 201, 202):
        log.write(**{**FIELDS, "status": status})
    assert out.getvalue() == "" and out.writes == 0  # still this round of callbacks
    await asyncio.sleep(0)  # the round ends
    assert out.writes == 1 and out.flushes == 1
    assert [json.loads(line)["status"] for line in out.getvalue().splitlines()] == [200, 201, 202]
    log.write(**FIELDS)  # a quiet server: the next round writes the single line
    await asyncio.sleep(0)
    assert out.writes == 2 and len(out.getvalue().splitlines()) == 4


async def test_flush_writes_what_is_pending_now() -> None:
    out = _CountingStream()
    log = accesslog.AccessLog(out)
    log.write(**FIELDS)
    log.flush()  # what the server does when it stops (a worker then ends with os._exit)
    assert len(out.getvalue().splitlines()) == 1
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert out.writes == 1


def test_time_field_is_utc_with_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.25]
    monkeypatch.setattr(time, "time", lambda: clock[0])  # the module reads time.time()
    out = io.StringIO()
    log = accesslog.AccessLog(out)
    for _ in range(3):
        log.write(**FIELDS)
        clock[0] += 0.5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["time"] for line in lines] == [
        "1970-01-12T13:46:40.250Z", "1970-01-12T13:46:40.750Z", "1970-01-12T13:46:41.250Z"
    ]


def test_repeated_values_are_escaped_once_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accesslog, "_QUOTED_SIZE", 8)
    out = io.StringIO()
    log = accesslog.AccessLog(out)
    hosts = [f'h{i}"\n.test' for i in range(20)]
    for host in hosts * 2:  # the second pass reads (or re-makes) the cached literals
        log.write(**{**FIELDS, "host": host, "route": host, "upstream": host, "client_ip": host})
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["host"] for e in entries] == hosts * 2
    assert all(e["host"] == e["route"] == e["upstream"] == e["client_ip"] for e in entries)
    assert len(log._quoted) <= 8 and len(log._templates) <= 8
