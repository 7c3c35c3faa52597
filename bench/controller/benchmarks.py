"""The four measurements of ``vallum controller`` (issue 12's acceptance), one function each.

Each takes the :class:`Run` (API server, object writer, objects, upstream), makes sure the
cluster holds the Ingresses it needs (writing is never timed), starts its own controller, and
returns a :class:`Result`: lines to print, the target checks, and figures for ``--json``.

* :func:`apply_latency`: create an Ingress for a new host, time from the start of the create
  call until the first answer from the upstream through that host;
* :func:`cold_start`: with the objects already in the cluster, time from spawning the process
  until every route serves, and memory (peak and settled);
* :func:`churn`: a steady probe of one unchanged route while Ingress changes stream in;
* :func:`throughput`: wrk against the same public route under ``vallum controller`` and under
  ``vallum serve`` with the same table, in interleaved rounds.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port

from bench import bench_proxy, report, scenarios, servers
from bench.controller import cluster, objects, probe, processes, stats, tables

APPLY_P50_MS, APPLY_P99_MS, APPLY_AIM_MS = 150.0, 400.0, 100.0
COLD_START_S, COLD_START_AIM_S, RSS_MB = 10.0, 3.0, 300.0
THROUGHPUT_RATIO = 0.95


@dataclass
class Run:
    """What every benchmark of one invocation shares."""

    endpoint: cluster.Endpoint
    kube: cluster.Kube
    pop: objects.Population
    upstream: processes.Upstream
    folder: Path
    python: str
    written: int = 0
    """Ingresses 0..written-1 (with their Services and EndpointSlices) are in the cluster."""

    def ensure(self, count: int) -> None:
        """Write the objects of Ingresses ``written..count-1`` (not timed by any benchmark)."""
        if count <= self.written:
            return
        made = objects.everything(self.pop, self.written, count)
        total = sum(len(v) for v in made.values())
        seconds = 0.0
        for kind in ("Service", "EndpointSlice", "Ingress"):
            seconds += self.kube.create_all(made[kind])
        print(f"  wrote {total:,} objects (Ingresses {self.written:,}..{count - 1:,} with their "
              f"Services and EndpointSlices) in {seconds:.1f} s ({total / seconds:,.0f}/s)",
              flush=True)
        self.written = count

    def upstream_answer(self) -> Any:
        return probe.from_upstream(processes.UPSTREAM_BODY)

    def want(self, i: int) -> Any:
        """What Ingress ``i``'s host answers when it serves: the upstream, or (protected, no
        sign-in configured) any answer of its route."""
        return probe.routed if self.pop.protected(i) else self.upstream_answer()

    def controller(self, name: str, cores: tuple[int, ...] = ()) -> Any:
        return processes.controller(self.python, self.endpoint.kubeconfig,
                                    self.pop.controller_name, self.folder / name, cores)


@dataclass
class Result:
    name: str
    lines: list[str] = field(default_factory=list)
    checks: list[report.Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        body = "\n".join(self.lines)
        return body + "\n" + stats.check_lines("targets:", self.checks) if self.checks else body

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "figures": self.figures,
                "checks": [c.as_dict() for c in self.checks]}


def wait_quiet(pid: int, *, limit_s: float = 90.0, window_s: float = 2.0,
               below_pct: float = 5.0) -> float:
    """Wait until process group ``pid`` used under ``below_pct`` % of a core over a
    ``window_s`` window (kopf's own initial list, after ready, keeps it busy for seconds; an
    idle controller uses 1-2 %, and a low bar matters on a busy machine, where a working
    controller may get only a fifth of a core); returns the seconds waited (``limit_s`` when
    it never got quiet)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = servers.cpu_seconds(pid)
        time.sleep(window_s)
        if (servers.cpu_seconds(pid) - before) * 100.0 / window_s < below_pct:
            return time.monotonic() - started
    return limit_s


def _start_serving(run: Run, running: processes.Controller, host_index: int) -> float:
    """Start ``running``, wait for ready and for Ingress ``host_index``'s route; returns the
    seconds from spawn to that route answering."""
    started = running.start()
    running.wait_ready()
    client = probe.Client("127.0.0.1", running.port)
    try:
        live, _ = probe.wait_for(client, run.pop.host(host_index), run.want(host_index),
                                 timeout_s=60, alive=running.check_alive)
    finally:
        client.close()
    return live - started


# -- 1. apply -> live ----------------------------------------------------------------------------


def apply_latency(run: Run, count: int, *, applies: int = 50, interval_s: float = 0.005,
                  gap_s: float = 0.5, warmup: int = 2) -> Result:
    run.ensure(count)
    result = Result("apply-latency")
    tag = secrets.token_hex(3)
    created: list[tuple[str, str]] = []
    with run.controller("apply-latency") as running:
        _start_serving(run, running, 0)
        quiet = wait_quiet(running.pid)
        client = probe.Client("127.0.0.1", running.port)
        latencies: list[float] = []
        api_calls: list[float] = []
        cpu_ms: list[float] = []
        try:
            for k in range(warmup + applies):
                i = k % count
                name = f"probe-{tag}-{k:03d}"
                host = f"{name}.{run.pop.namespace(i)}.{objects.HOST_SUFFIX}"
                obj = run.pop.ingress(i, name=name, host=host)
                want = run.want(i)
                time.sleep(gap_s)
                cpu_before = processes.cpu_s(running.pid)
                started = time.monotonic()
                run.kube.create(obj, exist_ok=False)
                returned = time.monotonic()
                created.append((run.pop.namespace(i), name))
                live, _ = probe.wait_for(client, host, want, timeout_s=30, interval_s=interval_s,
                                         alive=running.check_alive)
                latencies.append((live - started) * 1000.0)
                api_calls.append((returned - started) * 1000.0)
                cpu_ms.append((processes.cpu_s(running.pid) - cpu_before) * 1000.0)
        finally:
            client.close()
            run.kube.run_all([functools.partial(run.kube.delete_ingress, ns, n)
                              for ns, n in created])
    warm = latencies[:warmup]
    latencies, api_calls, cpu_ms = latencies[warmup:], api_calls[warmup:], cpu_ms[warmup:]
    live_s, api_s, cpu = (stats.summarize(latencies), stats.summarize(api_calls),
                          stats.summarize(cpu_ms))
    result.lines += [
        f"apply -> live, {applies} Ingresses created one at a time ({gap_s:g} s apart) with "
        f"{count:,} present; controller quiet after {quiet:.1f} s; polled every "
        f"{interval_s * 1000:g} ms",
        f"  create call start -> first upstream answer: {live_s.line()}",
        f"  create call alone (API round trip):         {api_s.line()}",
        f"  controller CPU over each (watch event, translation, swap, the polls; 10 ms ticks): "
        f"p50 {cpu.p50:.0f} ms, max {cpu.max:.0f} ms",
        f"  each (ms): {' '.join(f'{x:.0f}' for x in latencies)}; before them, not counted: "
        f"{' '.join(f'{x:.0f}' for x in warm) or '-'} ({warmup} warm-up applies)",
    ]
    result.checks += [
        stats.at_most("apply -> live p50", live_s.p50, APPLY_P50_MS, "ms",
                      f"aim {APPLY_AIM_MS:g} ms"),
        stats.at_most("apply -> live p99", live_s.p99, APPLY_P99_MS, "ms",
                      f"nearest rank of {applies}"),
    ]
    result.figures = {"ingresses": count, "applies": applies, "apply_to_live": live_s.as_dict(),
                      "api_call": api_s.as_dict(), "controller_cpu": cpu.as_dict(),
                      "samples_ms": latencies, "warmup_ms": warm}
    return result


# -- 2. cold start -------------------------------------------------------------------------------


class _MemorySampler:
    """Samples VmRSS of one process every ``interval_s`` (the peak is VmHWM; this gives the
    curve: RSS at ready, and when it settled)."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-memory")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss, _ = processes.memory_mb(self.pid)
            except OSError:
                return
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _sweep(run: Run, port: int, count: int, threads: int = 4,
           retry_s: float = 30.0) -> tuple[float, list[tuple[int, float]], dict[int, int]]:
    """Ask every host once (retrying a host that does not serve yet every 50 ms for up to
    ``retry_s``); returns (seconds, [(index, time it served) of the retried], statuses of the
    protected routes)."""
    started = time.monotonic()
    retried: list[tuple[int, float]] = []
    protected: dict[int, int] = {}
    lock = threading.Lock()

    def chunk(numbers: range) -> None:
        client = probe.Client("127.0.0.1", port)
        try:
            for i in numbers:
                host, want = run.pop.host(i), run.want(i)
                answer = client.get(host)
                if not want(answer):
                    at, answer = probe.wait_for(client, host, want, timeout_s=retry_s,
                                                interval_s=0.05)
                    with lock:
                        retried.append((i, at))
                if run.pop.protected(i):
                    with lock:
                        protected[answer[0]] = protected.get(answer[0], 0) + 1
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(chunk, range(n, count, threads)) for n in range(threads)]
        for job in jobs:
            job.result()
    return time.monotonic() - started, retried, protected


def cold_start(run: Run, count: int, *, settle_s: float = 90.0) -> Result:
    run.ensure(count)
    result = Result("cold-start")
    last = count - 1
    with run.controller("cold-start") as running:
        started = running.start()
        ready_at = first_at = None
        client = probe.Client("127.0.0.1", running.port)
        want = run.want(last)
        with _MemorySampler(running.pid) as memory:
            deadline = started + 300
            while first_at is None or ready_at is None:
                running.check_alive()
                if time.monotonic() > deadline:
                    raise servers.ServerError(f"not serving after 300 s: {running.log_tail()}")
                if ready_at is None and running.ready():
                    ready_at = time.monotonic()
                if first_at is None and want(client.get(run.pop.host(last))):
                    first_at = time.monotonic()
                time.sleep(0.01)
            client.close()
            cpu_serving = processes.cpu_s(running.pid)
            rss_ready, _ = processes.memory_mb(running.pid)
            sweep_s, retried, protected = _sweep(run, running.port, count)
            quiet = wait_quiet(running.pid, limit_s=settle_s)
            time.sleep(max(0.0, 6.0 - quiet))  # past the store's first confirm (5 s) as well
            rss_settled, peak = processes.memory_mb(running.pid)
            cpu_settled = processes.cpu_s(running.pid)
            settled_after = time.monotonic() - started
    serving_at = max([first_at, *(at for _, at in retried)])
    all_s = serving_at - started
    routes = sum(len(run.pop.paths(i)) for i in range(count))
    result.lines += [
        f"cold start with {count:,} Ingresses ({routes:,} routes) and their Services and "
        f"EndpointSlices already in the cluster; timed from spawning the process",
        f"  /readyz 200 after {ready_at - started:.2f} s; the last Ingress's route answered "
        f"after {first_at - started:.2f} s",
        f"  every route checked in {sweep_s:.1f} s afterwards: {count - len(retried):,} served "
        f"at once, {len(retried)} later; protected routes answered "
        f"{', '.join(f'{s} x{n}' for s, n in sorted(protected.items())) or '-'}",
        f"  all serving after {all_s:.2f} s; controller CPU until its route answered "
        f"{cpu_serving:.2f} s (its CPU time beside the wall time shows how much of the "
        f"start it waited for a core); {cpu_settled:.1f} s CPU by {settled_after:.0f} s",
        f"  memory: RSS {rss_ready:.0f} MB when serving, peak (VmHWM) {peak:.0f} MB, "
        f"RSS {rss_settled:.0f} MB settled ({len(memory.samples)} samples, "
        f"max sampled {max(r for _, r in memory.samples):.0f} MB); quiet "
        f"{quiet:.0f} s after the sweep" + (" (limit: never quiet)" if quiet >= settle_s else ""),
        "  RSS MB by second: " + " ".join(
            f"{t:.0f}s:{r:.0f}" for t, r in _every(memory.samples, started, 5.0)),
    ]
    result.checks += [
        stats.at_most("cold start, all routes serving", all_s, COLD_START_S, "s",
                      f"aim {COLD_START_AIM_S:g} s"),
        stats.at_most("cold start, peak RSS (VmHWM)", peak, RSS_MB, "MB"),
        stats.at_most("cold start, settled RSS", rss_settled, RSS_MB, "MB"),
    ]
    result.figures = {
        "ingresses": count, "routes": routes, "ready_s": ready_at - started,
        "first_route_s": first_at - started, "all_serving_s": all_s, "sweep_s": sweep_s,
        "late_routes": len(retried), "cpu_until_serving_s": cpu_serving,
        "cpu_settled_s": cpu_settled, "settled_after_s": settled_after,
        "rss_ready_mb": rss_ready, "peak_rss_mb": peak,
        "settled_rss_mb": rss_settled,
        "rss_curve": [(round(t - started, 2), round(r, 1)) for t, r in memory.samples],
    }
    return result


def _every(samples: list[tuple[float, float]], started: float,
           step_s: float) -> list[tuple[float, float]]:
    """One (seconds since start, MB) sample per ``step_s``, the first and the last kept."""
    kept: list[tuple[float, float]] = []
    for at, rss in samples:
        if not kept or at - started >= kept[-1][0] + step_s:
            kept.append((at - started, rss))
    if samples and kept[-1][0] != samples[-1][0] - started:
        kept.append((samples[-1][0] - started, samples[-1][1]))
    return kept


# -- 3. churn ------------------------------------------------------------------------------------


def churn(run: Run, count: int, *, changes: int = 1000, writers: int = 4,
          connections: int = 2, interval_s: float = 0.005, baseline_s: float = 3.0) -> Result:
    if count < 2:
        raise ValueError("churn needs at least 2 Ingresses (one probed, others changed)")
    run.ensure(count)
    result = Result("churn")
    with run.controller("churn") as running:
        _start_serving(run, running, 0)
        wait_quiet(running.pid)
        load = probe.Load("127.0.0.1", running.port, run.pop.host(0), run.upstream_answer(),
                          connections=connections, interval_s=interval_s)
        load.start()
        time.sleep(baseline_s)
        others = [i for i in range(1, count) if not run.pop.protected(i)]
        targets = [others[j % len(others)] for j in range(changes)]
        jobs = [
            functools.partial(run.kube.patch_ingress, run.pop.namespace(i), run.pop.name(i),
                              run.pop.change(i, serial))
            for serial, i in enumerate(targets, start=1)
        ]
        stream_start = time.monotonic()
        writing_s = run.kube.run_all(jobs)
        stream_end = time.monotonic()
        last = targets[-1]
        client = probe.Client("127.0.0.1", running.port)
        try:
            applied, _ = probe.wait_for(
                client, run.pop.host(last),
                lambda a: a[0] == 200
                and a[2].get(objects.CHANGE_HEADER.lower()) == str(changes),
                timeout_s=120, interval_s=0.01, alive=running.check_alive)
        finally:
            client.close()
        time.sleep(1.0)
        samples = load.stop()
    before = [s for s in samples if s.sent < stream_start]
    during = [s for s in samples if stream_start <= s.sent <= applied]
    failed = [s for s in during if not s.ok]
    failed_all = [s for s in samples if not s.ok]
    quiet, busy = stats.summarize([s.ms for s in before]), stats.summarize([s.ms for s in during])
    result.lines += [
        f"churn: {changes:,} Ingress changes (a response-header annotation on {len(set(targets))}"
        f" other Ingresses) from {writers} writers, with {count:,} Ingresses present; "
        f"{connections} keep-alive connections ask an unchanged route every "
        f"{interval_s * 1000:g} ms",
        f"  changes written in {writing_s:.1f} s ({changes / writing_s:,.0f}/s); the last live "
        f"{(applied - stream_end) * 1000:.0f} ms after the last write returned",
        f"  before the stream: {quiet.line()}",
        f"  during the stream: {busy.line()}",
        f"  failed requests during the stream: {len(failed)} of {len(during):,} "
        f"(whole run: {len(failed_all)} of {len(samples):,})"
        + (f"; first: {failed_all[0].detail}" if failed_all else ""),
        f"  requests sent again after the proxy closed an idle keep-alive connection: "
        f"{load.reconnects}",
    ]
    result.checks += [
        stats.at_most("churn, failed requests on the unchanged route", float(len(failed)), 0,
                      "", f"of {len(during):,}"),
        report.Check("churn, p99 of the unchanged route", busy.p99, "none", "info",
                     f"max {busy.max:.1f} ms; before the stream p99 {quiet.p99:.1f} ms"),
    ]
    result.figures = {
        "ingresses": count, "changes": changes, "writing_s": writing_s,
        "last_live_after_write_ms": (applied - stream_end) * 1000, "failed": len(failed),
        "requests": len(during), "reconnects": load.reconnects,
        "during": busy.as_dict(), "before": quiet.as_dict(),
    }
    return result


# -- 4. throughput beside vallum serve -----------------------------------------------------------


def throughput(run: Run, count: int, *, rounds: int = 3, duration_s: float = 10.0,
               warmup_s: float = 2.0, connections: int = 64) -> Result:
    run.ensure(count)
    result = Result("throughput")
    present = run.written
    host = run.pop.host(0)
    server_cores, load_cores, upstream_cores = bench_proxy.cores(1)
    env = scenarios.Env(run.folder / "throughput", 1, server_cores, load_cores,
                        Path("/nonexistent"), Path("/nonexistent"), upstream_cores, run.python)
    env.folder.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {"address": "127.0.0.1:1", "metrics_address": "127.0.0.1:2",
                            "insecure_server": True}
    same = tables.difference(tables.controller_routes(run.pop, present, base),
                             tables.serve_routes(tables.serve_config(run.pop, present,
                                                                     base["address"])))
    if same is not None:
        raise ValueError(f"vallum serve's routes file is not the controller's table: {same}")
    routes = sum(len(run.pop.paths(i)) for i in range(present))
    headers = (("Host", host),)

    def serve(env: scenarios.Env) -> Iterator[scenarios.Target]:
        folder = env.subfolder("serve")
        port, admin = free_port(), free_port()
        config = tables.serve_config(run.pop, present, f"127.0.0.1:{port}")
        config["metrics_address"] = f"127.0.0.1:{admin}"
        path = folder / "vallum.yaml"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        cmd = [run.python, "-m", "vallum.cli", "serve", "--config", str(path)]
        with servers.process(cmd, name="vallum-serve", ready_url=f"http://127.0.0.1:{port}/",
                             cores=env.server_cores, headers=dict(headers),
                             folder=folder) as proc:
            wait_quiet(proc.pid, limit_s=30)
            yield scenarios.Target(f"http://127.0.0.1:{port}/", proc.pid, headers)

    def controller(env: scenarios.Env) -> Iterator[scenarios.Target]:
        with run.controller(f"throughput-{secrets.token_hex(2)}", env.server_cores) as running:
            _start_serving(run, running, 0)
            wait_quiet(running.pid)
            yield scenarios.Target(f"http://127.0.0.1:{running.port}/", running.pid, headers)

    chosen = [
        scenarios.Scenario("serve", f"vallum serve, {routes:,} routes from a file", "vallum",
                           "http", contextlib.contextmanager(serve)),
        scenarios.Scenario("controller", f"vallum controller, {present:,} Ingresses "
                           f"({routes:,} routes)", "vallum", "http",
                           contextlib.contextmanager(controller)),
    ]
    opts = bench_proxy.Options(duration_s, warmup_s, connections, 1, 1, None, [], rounds,
                               run.python)
    outcomes: dict[str, list[report.Outcome]] = {s.name: [] for s in chosen}
    for n in range(rounds):
        # A B, B A, A B, ...: a drift in the machine's load favours neither side.
        for scenario in chosen if n % 2 == 0 else chosen[::-1]:
            outcome = bench_proxy.run_scenario(scenario, env, opts)
            outcomes[scenario.name].append(outcome)
            print(f"  [round {n + 1}/{rounds}] {report.progress_line(outcome)}", flush=True)
    medians = [report.median_round(outcomes[s.name]) for s in chosen]
    pairs = [
        (c.peak.requests_per_s / s.peak.requests_per_s)
        for s, c in zip(outcomes["serve"], outcomes["controller"], strict=True)
        if s.peak is not None and c.peak is not None
    ]
    result.lines += [
        f"throughput of the public route {host} (plain HTTP, wrk -t1 -c{connections} "
        f"-d{duration_s:g}s, {rounds} round(s) interleaved A B, B A, ..., median round shown); "
        f"the same "
        f"{routes:,} routes in both (checked before the run)",
        report.table(medians),
        f"  controller/serve per round: {' '.join(f'{p:.3f}' for p in pairs) or '-'}",
    ]
    serve_m, ctl_m = medians
    ratio = None
    detail = "a run failed"
    if serve_m.peak is not None and ctl_m.peak is not None:
        ratio = ctl_m.peak.requests_per_s / serve_m.peak.requests_per_s
        detail = (f"{ctl_m.peak.requests_per_s:,.0f} / {serve_m.peak.requests_per_s:,.0f} req/s"
                  f" (medians); median of per-round ratios "
                  f"{stats.percentile(pairs, 50) if pairs else float('nan'):.3f}")
    result.checks.append(stats.at_least("controller/serve req/s", ratio, THROUGHPUT_RATIO, "",
                                        detail))
    cpu = [o.server_cpu.get("peak") for o in medians]
    if serve_m.peak is not None and ctl_m.peak is not None and cpu[0] and cpu[1]:
        per_cpu = (ctl_m.peak.requests_per_s / cpu[1]) / (serve_m.peak.requests_per_s / cpu[0])
        result.checks.append(report.Check(
            "controller/serve req per server CPU-second", per_cpu, "none", "info",
            f"servers at {cpu[0]:.0f}% / {cpu[1]:.0f}% of a core: less sensitive to other load"))
    errors = [o.error for o in medians if o.error]
    if errors:
        result.lines.append(f"  errors: {'; '.join(errors)}")
    result.figures = {
        "ingresses": present, "routes": routes, "ratio": ratio, "round_ratios": pairs,
        "scenarios": [report.outcome_dict(o) for o in medians],
    }
    return result
