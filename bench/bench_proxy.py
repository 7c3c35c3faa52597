"""The data-plane benchmark (issue 2, "Speed"): Vallum beside nginx and the bare upstream.

One run, loopback, keep-alive, ``wrk -t1 -c64 --latency`` on the load cores and the server under
test pinned to its own cores; then Vallum again at half of its measured peak, paced by a wrk Lua
``delay()``. Prints one table plus the issue's targets with PASS/FAIL (Vallum/nginx >= 0.35 with
the same worker count; p99 < 10 ms at half of Vallum's peak). Exit status: 0 when everything ran,
whatever the figures; 1 when something failed to run (the table says what); 2 for bad options.

Usage: ``bench/run [--duration S] [--connections C] [--workers N] [--rounds R] [--json FILE]
[--scenarios a,b]``. Scenarios live in :mod:`bench.scenarios`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.certs import TestCA

from bench import report, scenarios, servers, wrk

RATIO_TARGET = 0.35
P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class Options:
    duration_s: float
    warmup_s: float
    connections: int
    threads: int
    workers: int
    json_file: Path | None
    scenario_names: list[str]
    rounds: int = 1
    vallum_python: str = ""


Placement = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def cores(workers: int, available: Sequence[int] | None = None) -> Placement:
    """(server, wrk, upstream) cores. The server gets ``workers`` cores when one is left for the
    load; the upstream gets the last spare core of its own when two or more are spare (else it
    shares wrk's: empty). Nothing is pinned when no core is spare."""
    usable = sorted(os.sched_getaffinity(0) if available is None else available)
    if len(usable) <= workers:
        return (), (), ()
    server, spare = tuple(usable[:workers]), tuple(usable[workers:])
    if len(spare) >= 2:
        return server, spare[:-1], spare[-1:]
    return server, spare, ()


def _check_errors(result: wrk.WrkResult, what: str) -> None:
    if result.requests == 0:
        raise wrk.WrkError(f"{what}: no request completed")
    if result.errors:
        raise wrk.WrkError(
            f"{what}: {result.errors} failed requests (connect {result.connect_errors}, read "
            f"{result.read_errors}, write {result.write_errors}, timeout {result.timeouts}, "
            f"non-2xx {result.non_2xx})"
        )


def _load(
    env: scenarios.Env, target: scenarios.Target, opts: Options, outcome: report.Outcome, *,
    duration_s: float, script: str, label: str, record: bool = True,
) -> wrk.WrkResult:
    """One wrk run against ``target``; records its command and the server's CPU use."""
    script_file = env.folder / f"{outcome.scenario.name}-{label}.lua"
    script_file.write_text(script)
    cmd = wrk.command(
        target.url, duration_s=duration_s, connections=opts.connections, threads=opts.threads,
        script=script_file, headers=target.headers, cores=env.load_cores,
    )
    cpu_before, wall_before = servers.cpu_seconds(target.server_group), time.monotonic()
    cores_before = servers.core_jiffies()
    result, _ = wrk.run(cmd, duration_s=duration_s)
    cores_after = servers.core_jiffies()
    cpu = servers.cpu_seconds(target.server_group) - cpu_before
    wall = time.monotonic() - wall_before
    _check_errors(result, f"{label} run")
    if record:
        outcome.commands.append(cmd)
        outcome.server_cpu[label] = 100.0 * cpu / wall if wall > 0 else 0.0
        outcome.cores_busy[label] = (
            servers.busy_percent(cores_before, cores_after, env.server_cores),
            servers.busy_percent(cores_before, cores_after, env.all_load_cores),
        )
    return result


def run_scenario(scenario: scenarios.Scenario, env: scenarios.Env, opts: Options) -> report.Outcome:
    """Start the scenario's servers, warm up, measure the peak (and the paced run), stop all."""
    outcome = report.Outcome(scenario)
    try:
        with scenario.start(env) as target:
            if opts.warmup_s > 0:
                _load(env, target, opts, outcome, duration_s=opts.warmup_s,
                      script=wrk.report_script(), label="warmup", record=False)
            outcome.peak = _load(env, target, opts, outcome, duration_s=opts.duration_s,
                                 script=wrk.report_script(), label="peak")
            if scenario.paced:
                rate = outcome.peak.requests_per_s / 2
                outcome.paced_target_rate = rate
                outcome.paced = _load(env, target, opts, outcome, duration_s=opts.duration_s,
                                      script=wrk.paced_script(rate, opts.threads), label="paced")
    except (servers.ServerError, wrk.WrkError, OSError, ValueError) as exc:
        outcome.error = str(exc)
    return outcome


def machine(vallum_python: str = "") -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "vallum_python": servers.describe_python(vallum_python or servers.python()),
        "load_average": os.getloadavg(),
    }


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Vallum's data-plane benchmark beside nginx (issue 2)."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, not counted")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--workers", type=int, default=1, help="nginx and Vallum workers (1)")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run every scenario this many times, interleaved; report the median round (1)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also save results here")
    parser.add_argument(
        "--vallum-python", default="", metavar="PYTHON",
        help="the interpreter `vallum serve` runs on, with vallum installed (default: the "
             "bench's own; bench/run passes the one scripts/bench-python picks)",
    )
    parser.add_argument(
        "--scenarios", default=",".join(s.name for s in scenarios.SCENARIOS),
        help="comma-separated subset of: %(default)s",
    )
    args = parser.parse_args(argv)
    for name in ("duration", "connections", "threads", "workers", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must not be negative, got {args.warmup}")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    try:
        scenarios.by_name(names)
    except ValueError as exc:
        parser.error(f"--scenarios: {exc}")
    vallum_python = ""
    if args.vallum_python:
        found = shutil.which(args.vallum_python)
        if found is None:
            parser.error(f"--vallum-python: {args.vallum_python} is not an executable")
        # Absolute (servers start in their own folder), but not resolved: a venv's python is a
        # link, and resolving it would leave the venv.
        vallum_python = os.path.abspath(found)
    return Options(args.duration, args.warmup, args.connections, args.threads, args.workers,
                   args.json, names, args.rounds, vallum_python)


def _exit_on_signal(signum: int, _frame: object) -> None:
    # SystemExit unwinds every ``with``: servers stop, the temp folder goes (the bench's "trap").
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (scripts/bootstrap installs it)",
                  file=sys.stderr)
            return 1
    server_cores, load_cores, upstream_cores = cores(opts.workers)
    started = dt.datetime.now(dt.UTC)
    chosen = scenarios.by_name(opts.scenario_names)
    rounds: dict[str, list[report.Outcome]] = {s.name: [] for s in chosen}
    with tempfile.TemporaryDirectory(prefix="vallum-bench-") as tmp:
        folder = Path(tmp)
        ca = TestCA.create("Vallum Bench CA")
        cert_file, key_file = ca.issue(scenarios.HOST, sans=[scenarios.HOST, "127.0.0.1"]).write(
            folder, "server"
        )
        env = scenarios.Env(folder, opts.workers, server_cores, load_cores, cert_file, key_file,
                            upstream_cores, opts.vallum_python)
        print(report.header(opts.workers, opts.connections, opts.threads, opts.duration_s,
                            env, machine(opts.vallum_python)), flush=True)
        # Rounds interleave (a, b, c, a, b, c): a drift in the machine's load hits all alike.
        for n in range(opts.rounds):
            for scenario in chosen:
                outcome = run_scenario(scenario, env, opts)
                rounds[scenario.name].append(outcome)
                tag = f"[round {n + 1}/{opts.rounds}] " if opts.rounds > 1 else ""
                print(tag + report.progress_line(outcome), flush=True)
    outcomes = [report.median_round(rounds[s.name]) for s in chosen]
    checks = report.checks(outcomes, RATIO_TARGET, P99_TARGET_MS)
    print()
    print(report.table(outcomes))
    print()
    print(report.check_lines(checks))
    notes = report.saturation_notes(outcomes, opts.workers)
    if notes:
        print(notes)
    if opts.json_file is not None:
        data = {
            "date": started.isoformat(timespec="seconds"),
            "machine": machine(opts.vallum_python),
            "options": {
                "duration_s": opts.duration_s, "warmup_s": opts.warmup_s,
                "connections": opts.connections, "threads": opts.threads, "rounds": opts.rounds,
                "workers": opts.workers, "server_cores": server_cores, "load_cores": load_cores,
                "upstream_cores": upstream_cores or load_cores,
            },
            "scenarios": [report.outcome_dict(o) for o in outcomes],
            "checks": [c.as_dict() for c in checks],
        }
        opts.json_file.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nresults saved to {opts.json_file}")
    failed = [o for o in outcomes if o.error is not None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
