"""Driving ``wrk`` and reading what it says.

wrk is the load generator of the data-plane benchmark (Debian's wrk 4.1, LuaJIT inside). This
module owns everything about it: the command line, the Lua scripts we hand it (a ``done()``
reporter that prints exact figures as one JSON line, and a pacing ``delay()`` for a given request
rate, since wrk has no constant-rate mode), and the parsing of its output into a :class:`WrkResult`.

Parsing never guesses: a figure that is not in the output is an error naming what is missing,
because a benchmark that silently reports zeros is worse than one that stops.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPORT_MARK = "VALLUM-BENCH "
"""Prefix of the JSON line our ``done()`` prints; everything else in the output is wrk's own."""

_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,'
    .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"non_2xx":%d}\\n',
    "REPORT_MARK", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
""".replace("REPORT_MARK", REPORT_MARK)

# Pacing: one thread's connections share one schedule of send slots, ``interval_us`` apart. Each
# delay() takes the next slot, so C connections together send at the target rate, whatever the
# latency. A thread that falls behind does not burst to catch up (slots restart from "now"): the
# achieved rate then shows the server could not keep up. wrk's delay() has 1 ms resolution; the
# schedule itself is exact, so rounding does not change the average rate.
_PACE_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } vallum_bench_timespec;
int clock_gettime(int clk, vallum_bench_timespec *tp);
]]
local ts = ffi.new("vallum_bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local interval_us = INTERVAL_US
local next_slot = nil
delay = function()
  local now = now_us()
  if next_slot == nil or next_slot < now then
    next_slot = now
  end
  local wait_us = next_slot - now
  next_slot = next_slot + interval_us
  return math.floor(wait_us / 1000)
end
"""


class WrkError(RuntimeError):
    """wrk could not run, or its output lacks a figure we need (the message says which)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (milliseconds) and every kind of error."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float | None
    max_ms: float | None
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0

    @property
    def errors(self) -> int:
        """Every request that did not end in a 2xx/3xx answer, whatever the reason."""
        return (
            self.connect_errors + self.read_errors + self.write_errors + self.timeouts
            + self.non_2xx
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "errors": self.errors}


def report_script() -> str:
    """The Lua script for a full-speed run: only our ``done()`` reporter."""
    return _REPORT_LUA


def paced_script(rate: float, threads: int = 1) -> str:
    """The Lua script for a run at ``rate`` requests/s in total over ``threads`` wrk threads."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    interval_us = 1_000_000.0 * threads / rate
    return _PACE_LUA.replace("INTERVAL_US", f"{interval_us:.3f}") + _REPORT_LUA


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>us|ms|s|m|h)$")


def parse_duration_ms(text: str) -> float:
    """wrk's printed durations (``850.00us``, ``1.81ms``, ``2.00s``) in milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise WrkError(f"not a wrk duration: {text!r}")
    return float(match["n"]) * _UNIT_MS[match["unit"]]


def _search(pattern: str, text: str, what: str) -> re.Match[str]:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise WrkError(f"wrk output has no {what} (is this wrk 4 output with --latency?)")
    return match


def parse(output: str) -> WrkResult:
    """Read wrk's output. Prefers our ``done()`` JSON line; falls back to wrk's own text."""
    for line in output.splitlines():
        if line.startswith(REPORT_MARK):
            return _from_report(line[len(REPORT_MARK):])
    return _from_text(output)


def _from_report(payload: str) -> WrkResult:
    try:
        data = json.loads(payload)
        duration_s = data["duration_us"] / 1e6
        return WrkResult(
            requests=int(data["requests"]),
            duration_s=duration_s,
            requests_per_s=data["requests"] / duration_s if duration_s > 0 else 0.0,
            p50_ms=data["p50_us"] / 1000.0,
            p90_ms=data["p90_us"] / 1000.0,
            p99_ms=data["p99_us"] / 1000.0,
            p999_ms=data["p999_us"] / 1000.0,
            max_ms=data["max_us"] / 1000.0,
            connect_errors=int(data["connect_errors"]),
            read_errors=int(data["read_errors"]),
            write_errors=int(data["write_errors"]),
            timeouts=int(data["timeouts"]),
            non_2xx=int(data["non_2xx"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WrkError(f"unreadable {REPORT_MARK.strip()} line: {exc!r} in {payload!r}") from exc


def _from_text(output: str) -> WrkResult:
    total = _search(r"^\s*(\d+) requests in (\S+),", output, "'N requests in T' line")
    rps = _search(r"^Requests/sec:\s+([\d.]+)", output, "'Requests/sec:' line")
    percentiles: dict[str, float] = {}
    for pct in ("50", "90", "99"):
        found = _search(rf"^\s+{pct}%\s+(\S+)", output, f"{pct}% latency percentile")
        percentiles[pct] = parse_duration_ms(found[1])
    latency_max = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.MULTILINE)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors is not None:
        for i, key in enumerate(errors, start=1):
            errors[key] = int(socket_errors[i])
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total[1]),
        duration_s=parse_duration_ms(total[2]) / 1000.0,
        requests_per_s=float(rps[1]),
        p50_ms=percentiles["50"],
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
        p999_ms=None,
        max_ms=parse_duration_ms(latency_max[1]) if latency_max else None,
        connect_errors=errors["connect"],
        read_errors=errors["read"],
        write_errors=errors["write"],
        timeouts=errors["timeout"],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


def command(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    script: Path,
    headers: Sequence[tuple[str, str]] = (),
    cores: Sequence[int] = (),
) -> list[str]:
    """The wrk command line (pinned with ``taskset`` to ``cores`` when given)."""
    cmd = [] if not cores else ["taskset", "-c", ",".join(map(str, cores))]
    cmd += [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        "--latency", "--timeout", "5s", "-s", str(script),
    ]
    for name, value in headers:
        cmd += ["-H", f"{name}: {value}"]
    return [*cmd, url]


def run(cmd: Sequence[str], *, duration_s: float) -> tuple[WrkResult, str]:
    """Run a wrk command line; return the parsed result and the raw output (for the record)."""
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WrkError(f"wrk did not run: {exc}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return parse(done.stdout), done.stdout
