"""What the data-plane benchmark found, and how it is shown: table, target checks, JSON.

Kept apart from the runner so the same results can be printed, saved and tested without running
a server. A check whose inputs are missing (a scenario failed or was not selected) says ``n/a``
with the reason instead of passing or failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench import scenarios, wrk


@dataclass
class Outcome:
    """What one scenario produced: its peak run, its paced run (if any), or why it failed."""

    scenario: scenarios.Scenario
    peak: wrk.WrkResult | None = None
    paced: wrk.WrkResult | None = None
    paced_target_rate: float | None = None
    error: str | None = None
    commands: list[list[str]] = field(default_factory=list)
    server_cpu: dict[str, float] = field(default_factory=dict)
    """Per run ("peak", "paced"): CPU of the server under test, % of one core, over the run."""
    cores_busy: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """Per run: how busy the server cores and the load cores were with anything (% of a core
    each), to tell a server that was starved by other work from one that was not asked more."""
    rounds_rps: list[float] = field(default_factory=list)
    """Peak req/s of every round, when the scenario ran more than once."""


def median_round(rounds: Sequence[Outcome]) -> Outcome:
    """The round with the median peak rate (the lower middle one for an even count).

    A scenario that failed in any round failed: the first failure is returned, its message
    saying which round.
    """
    if not rounds:
        raise ValueError("median_round: no rounds")
    for n, outcome in enumerate(rounds, start=1):
        if outcome.error is not None or outcome.peak is None:
            if len(rounds) > 1:
                outcome.error = f"round {n}: {outcome.error}"
            return outcome
    ranked = sorted(rounds, key=lambda o: o.peak.requests_per_s if o.peak else 0.0)
    chosen = ranked[(len(ranked) - 1) // 2]
    if len(rounds) > 1:
        chosen.rounds_rps = [o.peak.requests_per_s for o in rounds if o.peak is not None]
    return chosen


@dataclass(frozen=True, slots=True)
class Check:
    """One of the issue's targets: the measured value against the target, or why there is none."""

    name: str
    value: float | None
    target: str
    verdict: Literal["PASS", "FAIL", "n/a", "info"]
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "target": self.target,
                "verdict": self.verdict, "detail": self.detail}


def header(
    workers: int, connections: int, threads: int, duration_s: float,
    env: scenarios.Env, machine: dict[str, object],
) -> str:
    if not env.server_cores:
        placement = "not pinned (no core left for the load generator)"
    elif env.upstream_cores:
        placement = (f"server on cores {_cores(env.server_cores)}, wrk on "
                     f"{_cores(env.load_cores)}, upstream on {_cores(env.upstream_cores)}")
    else:
        placement = (f"server on cores {_cores(env.server_cores)}, wrk + upstream on "
                     f"{_cores(env.load_cores)}")
    return (
        f"vallum data-plane bench: {workers} worker(s), wrk -t{threads} -c{connections} "
        f"-d{duration_s:g}s --latency, keep-alive, loopback; {placement}\n"
        f"machine: {machine['nproc']} x {machine['cpu']}, load average {_load(machine)}"
        + (f"\nvallum serve runs on: {machine['vallum_python']}"
           if machine.get("vallum_python") else "")
    )


def _load(machine: dict[str, object]) -> str:
    load = machine.get("load_average")
    if not isinstance(load, tuple):
        return "unknown"
    return " ".join(f"{x:.2f}" for x in load)


def _cores(cores: Sequence[int]) -> str:
    return ",".join(map(str, cores))


def progress_line(outcome: Outcome) -> str:
    name = outcome.scenario.name
    if outcome.error is not None:
        return f"  {name}: FAILED: {outcome.error}"
    if outcome.peak is None:
        return f"  {name}: no result"
    line = f"  {name}: {outcome.peak.requests_per_s:,.0f} req/s{_busy(outcome, 'peak')}"
    if outcome.paced is not None:
        line += f", paced {outcome.paced.requests_per_s:,.0f} req/s{_busy(outcome, 'paced')}"
    return line


def _busy(outcome: Outcome, label: str) -> str:
    own = outcome.server_cpu.get(label)
    server, load = outcome.cores_busy.get(label, (None, None))
    if own is None or server is None or load is None:
        return ""
    return f" [server {own:.0f}% CPU; busy: server cores {server:.0f}%, load cores {load:.0f}%]"


def table(outcomes: Sequence[Outcome]) -> str:
    """The results, one row per run. ``req/CPU-s`` (requests per CPU-second of the server under
    test) is less sensitive than req/s to other work on the machine; the targets use req/s."""
    ranged = any(outcome.rounds_rps for outcome in outcomes)
    rows: list[tuple[str, ...]] = [
        ("scenario", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "requests", "server CPU",
         "req/CPU-s")
    ]
    if ranged:
        rows[0] += ("rounds req/s",)
    for outcome in outcomes:
        title = outcome.scenario.title
        if outcome.error is not None:
            rows.append(("FAILED " + title, *["-"] * (len(rows[0]) - 1)))
            continue
        runs = (("peak", "", outcome.peak), ("paced", " @ half peak", outcome.paced))
        for key, label, result in runs:
            if result is None:
                continue
            cpu = outcome.server_cpu.get(key)
            row: tuple[str, ...] = (
                title + label, f"{result.requests_per_s:,.0f}", f"{result.p50_ms:.2f}",
                f"{result.p99_ms:.2f}",
                "-" if result.p999_ms is None else f"{result.p999_ms:.2f}",
                f"{result.requests:,}", "-" if cpu is None else f"{cpu:.0f}%",
                "-" if not cpu else f"{result.requests_per_s * 100.0 / cpu:,.0f}",
            )
            if ranged:
                spread = outcome.rounds_rps if key == "peak" else []
                row += (" ".join(f"{r:,.0f}" for r in spread) or "-",)
            rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _find(outcomes: Sequence[Outcome], server: str, scheme: str) -> Outcome | None:
    for outcome in outcomes:
        if outcome.scenario.server == server and outcome.scenario.scheme == scheme:
            return outcome
    return None


def _per_cpu(outcome: Outcome) -> float | None:
    cpu = outcome.server_cpu.get("peak")
    if outcome.peak is None or not cpu:
        return None
    return outcome.peak.requests_per_s * 100.0 / cpu


def checks(outcomes: Sequence[Outcome], ratio_target: float, p99_target_ms: float) -> list[Check]:
    """The issue's targets, for each protocol that has a Vallum scenario in this run."""
    found: list[Check] = []
    for scheme in ("http", "https"):
        vallum = _find(outcomes, "vallum", scheme)
        if vallum is None:
            continue
        nginx = _find(outcomes, "nginx", scheme)
        name = f"Vallum/nginx req/s, {scheme.upper()}"
        target = f">= {ratio_target:g}"
        if nginx is None:
            found.append(Check(name, None, target, "n/a", f"nginx-{scheme} not in this run"))
        elif vallum.peak is None or nginx.peak is None:
            found.append(Check(name, None, target, "n/a", "a scenario failed to run"))
        else:
            ratio = vallum.peak.requests_per_s / nginx.peak.requests_per_s
            found.append(Check(
                name, ratio, target, "PASS" if ratio >= ratio_target else "FAIL",
                f"{vallum.peak.requests_per_s:,.0f} / {nginx.peak.requests_per_s:,.0f} req/s",
            ))
            per_cpu = _per_cpu(vallum), _per_cpu(nginx)
            if per_cpu[0] is not None and per_cpu[1] is not None:
                found.append(Check(
                    f"Vallum/nginx req per server CPU-second, {scheme.upper()}",
                    per_cpu[0] / per_cpu[1], "none", "info",
                    "a cross-check, less sensitive to other load on the machine",
                ))
        name = f"Vallum p99 at half peak, {scheme.upper()}"
        target = f"< {p99_target_ms:g} ms"
        if vallum.paced is None or vallum.paced_target_rate is None:
            found.append(Check(name, None, target, "n/a", "the scenario failed to run"))
        else:
            p99 = vallum.paced.p99_ms
            found.append(Check(
                name, p99, target, "PASS" if p99 < p99_target_ms else "FAIL",
                f"asked {vallum.paced_target_rate:,.0f} req/s, achieved "
                f"{vallum.paced.requests_per_s:,.0f} req/s",
            ))
        found.extend(_auth_checks(outcomes, scheme, vallum))
    return found


AUTH_RATIO_TARGET = 0.8
"""Issue 4: a signed-in route (cookie, policy, assertion) keeps 0.8 of the public route's rate."""


def _auth_checks(outcomes: Sequence[Outcome], scheme: str, public: Outcome) -> list[Check]:
    auth = _find(outcomes, "vallum-auth", scheme)
    if auth is None:
        return []
    name = f"Vallum signed-in/public req/s, {scheme.upper()}"
    target = f">= {AUTH_RATIO_TARGET:g}"
    if auth.peak is None or public.peak is None:
        return [Check(name, None, target, "n/a", "a scenario failed to run")]
    ratio = auth.peak.requests_per_s / public.peak.requests_per_s
    return [Check(
        name, ratio, target, "PASS" if ratio >= AUTH_RATIO_TARGET else "FAIL",
        f"{auth.peak.requests_per_s:,.0f} / {public.peak.requests_per_s:,.0f} req/s",
    )]


def check_lines(found: Sequence[Check]) -> str:
    if not found:
        return "targets: none checked (no Vallum scenario in this run)"
    width = max(len(c.name) for c in found)
    lines = ["targets (issues 2 and 4):"]
    for check in found:
        value = "-" if check.value is None else f"{check.value:.3f}"
        target = "(no target)" if check.verdict == "info" else f"(target {check.target})"
        lines.append(f"  {check.name.ljust(width)}  {value:>6}  {target:<17}  "
                     f"{check.verdict:<4}  {check.detail}".rstrip())
    return "\n".join(lines)


def saturation_notes(outcomes: Sequence[Outcome], workers: int, floor: float = 0.8) -> str:
    """A warning when a peak run left its server's cores partly idle: then something else (the
    load side, other work on the machine) set the rate, and req/s ratios say less than usual."""
    idle = [
        f"{o.scenario.name} {o.server_cpu['peak']:.0f}%" for o in outcomes
        if "peak" in o.server_cpu and o.server_cpu["peak"] < floor * 100.0 * workers
    ]
    if not idle:
        return ""
    return (
        f"note: server under test below {floor * 100 * workers:.0f}% CPU in the peak run of "
        f"{', '.join(idle)}: it was not the bottleneck (load side or other work on the machine); "
        "trust req/CPU-s more than req/s here"
    )


def outcome_dict(outcome: Outcome) -> dict[str, object]:
    return {
        "name": outcome.scenario.name,
        "title": outcome.scenario.title,
        "server": outcome.scenario.server,
        "scheme": outcome.scenario.scheme,
        "error": outcome.error,
        "peak": None if outcome.peak is None else outcome.peak.as_dict(),
        "paced_target_rate": outcome.paced_target_rate,
        "paced": None if outcome.paced is None else outcome.paced.as_dict(),
        "server_cpu_percent": outcome.server_cpu,
        "rounds_peak_rps": outcome.rounds_rps,
        "cores_busy_percent": {
            label: {"server_cores": server, "load_cores": load}
            for label, (server, load) in outcome.cores_busy.items()
        },
        "commands": [" ".join(c) for c in outcome.commands],
    }
