"""Percentiles, summaries and target lines of the controller benchmarks (pure).

Percentiles are nearest-rank: the smallest sample with at least p % of the samples at or below
it, always a measured value. With the 50 applies of the latency benchmark, p99 is therefore the
largest of the 50 (rank ceil(0.99 * 50) = 50): the honest reading of a small sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench import report


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``samples`` (0 < pct <= 100); an empty sample is an error."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Milliseconds: count, p50, p90, p99, max, mean of one set of latencies."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def line(self) -> str:
        return (f"n={self.count}  p50 {self.p50:.1f} ms  p90 {self.p90:.1f} ms  "
                f"p99 {self.p99:.1f} ms  max {self.max:.1f} ms  mean {self.mean:.1f} ms")

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99,
                "max_ms": self.max, "mean_ms": self.mean}


def summarize(samples_ms: Sequence[float]) -> Summary:
    return Summary(len(samples_ms), percentile(samples_ms, 50), percentile(samples_ms, 90),
                   percentile(samples_ms, 99), max(samples_ms), sum(samples_ms) / len(samples_ms))


def at_most(name: str, value: float | None, target: float, unit: str,
            detail: str = "") -> report.Check:
    """A check that passes when ``value <= target``; n/a when there is no value."""
    shown = f"<= {target:g} {unit}".rstrip()
    if value is None:
        return report.Check(name, None, shown, "n/a", detail or "not measured")
    return report.Check(name, value, shown, "PASS" if value <= target else "FAIL", detail)


def at_least(name: str, value: float | None, target: float, unit: str = "",
             detail: str = "") -> report.Check:
    shown = f">= {target:g} {unit}".rstrip()
    if value is None:
        return report.Check(name, None, shown, "n/a", detail or "not measured")
    return report.Check(name, value, shown, "PASS" if value >= target else "FAIL", detail)


def check_lines(title: str, checks: Sequence[report.Check]) -> str:
    """One line per check: name, value, value/target ratio, target, verdict, detail."""
    width = max((len(c.name) for c in checks), default=0)
    lines = [title]
    for check in checks:
        value = "-" if check.value is None else f"{check.value:,.3f}"
        ratio = ""
        number = _target_number(check.target)
        if check.value is not None and number:
            ratio = f"{check.value / number:.2f}x target"
        lines.append(f"  {check.name.ljust(width)}  {value:>10}  {ratio:>12}  "
                     f"(target {check.target})  {check.verdict:<4}  {check.detail}".rstrip())
    return "\n".join(lines)


def _target_number(target: str) -> float | None:
    parts = target.split()
    if len(parts) < 2:
        return None
    try:
        return float(parts[1])
    except ValueError:
        return None
