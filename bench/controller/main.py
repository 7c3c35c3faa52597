"""``bench/run-controller``: options, the shared setup, and the order the benchmarks run in.

Setup (never timed): the API server (a local control plane of the run's own unless
``--kubeconfig``/``$KUBECONFIG`` names one), the vallum.dev CRDs, the upstream nginx on
``10.200.0.1``, 20 namespaces with a Policy each and an IngressClass for the benchmark's
controller name. Each benchmark then writes the Ingresses it needs on top of what is there and
starts its own ``vallum controller``. ``all`` runs them in the order that only ever adds objects:
apply-latency, churn, throughput (3,000 Ingresses), then cold-start (5,000).

Exit status: 0 when everything ran, whatever the figures (they are benchmarks, not tests); 1
when something failed to run; 2 for bad options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import bench_proxy, servers, wrk
from bench.controller import benchmarks, cluster, objects, processes

DEFAULT_COUNTS = {"apply-latency": 3000, "churn": 3000, "throughput": 3000, "cold-start": 5000}
ORDER = ("apply-latency", "churn", "throughput", "cold-start")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ingresses", type=_positive(int), default=None, metavar="N",
                        help="Ingresses in the cluster (default: the issue's sizes, 3,000 for "
                             "apply-latency, churn and throughput, 5,000 for cold-start)")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None,
                        help="use this cluster (objects go into namespaces of their own and are "
                             "deleted at the end); default $KUBECONFIG, else a local control "
                             "plane of the run's own")
    parser.add_argument("--cp-dir", type=Path,
                        default=Path.home() / ".cache/vallum/cp-bench",
                        help="state directory of the local control plane (%(default)s)")
    parser.add_argument("--keep-cluster", action="store_true",
                        help="leave the local control plane running at the end")
    parser.add_argument("--writers", type=_positive(int), default=16,
                        help="threads writing the objects (16)")
    parser.add_argument("--vallum-python", default="", metavar="PYTHON",
                        help="interpreter for vallum controller and vallum serve, with vallum "
                             "and its operator extra installed (default: the bench's own)")
    parser.add_argument("--json", type=Path, default=None, help="also save the figures here")


def _apply_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--applies", type=_positive(int), default=50, help="(50)")
    parser.add_argument("--poll-ms", type=_positive(float), default=5.0,
                        help="apply-latency: ms between requests to the new host (5)")
    parser.add_argument("--warmup-applies", type=int, default=2,
                        help="apply-latency: applies before the measured ones, shown apart (2)")
    parser.add_argument("--gap-ms", type=_positive(float), default=500.0,
                        help="apply-latency: ms of quiet before each create (500)")


def _cold_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settle", type=_positive(float), default=90.0,
                        help="cold-start: at most this many seconds for the controller to go "
                             "quiet (status and Events written, kopf's own list done) before "
                             "the settled RSS is read (90)")


def _churn_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--changes", type=_positive(int), default=1000, help="(1,000)")
    parser.add_argument("--change-writers", type=_positive(int), default=4,
                        help="churn: threads writing the changes (4)")
    parser.add_argument("--probe-connections", type=_positive(int), default=2,
                        help="churn: connections asking the unchanged route (2)")
    parser.add_argument("--probe-interval-ms", type=_positive(float), default=5.0,
                        help="churn: ms between requests on each connection (5)")
    parser.add_argument("--baseline", type=_positive(float), default=3.0,
                        help="churn: seconds probed before the stream starts (3)")


def _throughput_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=_positive(int), default=3,
                        help="throughput: interleaved rounds, the median reported (3)")
    parser.add_argument("--duration", type=_positive(float), default=10.0,
                        help="throughput: seconds per wrk run (10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="throughput: warm-up seconds, not counted (2)")
    parser.add_argument("--connections", type=_positive(int), default=64,
                        help="throughput: wrk connections (64)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run-controller",
        description="Benchmarks of vallum controller against a real API server (issue 12).",
    )
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    adders = {"apply-latency": [_apply_options], "cold-start": [_cold_options],
              "churn": [_churn_options], "throughput": [_throughput_options],
              "all": [_apply_options, _churn_options, _throughput_options, _cold_options]}
    helps = {
        "apply-latency": "create an Ingress, time until its route answers (p50/p99 of 50)",
        "cold-start": "start with 5,000 Ingresses present: time until all serve, memory",
        "churn": "failed requests and latency of an unchanged route while 1,000 changes stream",
        "throughput": "the public route's req/s under vallum controller and vallum serve",
        "all": "all four, in the order that only adds objects",
    }
    for name, add in adders.items():
        one = sub.add_parser(name, help=helps[name], description=helps[name])
        _common(one)
        for adder in add:
            adder(one)
    args = parser.parse_args(argv)
    if args.vallum_python:
        found = shutil.which(args.vallum_python)
        if found is None:
            parser.error(f"--vallum-python: {args.vallum_python} is not an executable")
        args.vallum_python = os.path.abspath(found)
    if getattr(args, "warmup", 0) < 0:
        parser.error("--warmup must not be negative")
    return args


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(cluster.ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run_one(name: str, run: benchmarks.Run, args: argparse.Namespace) -> benchmarks.Result:
    count = args.ingresses or DEFAULT_COUNTS[name]
    if name == "apply-latency":
        return benchmarks.apply_latency(run, count, applies=args.applies,
                                        interval_s=args.poll_ms / 1000,
                                        gap_s=args.gap_ms / 1000,
                                        warmup=max(0, args.warmup_applies))
    if name == "cold-start":
        return benchmarks.cold_start(run, count, settle_s=args.settle)
    if name == "churn":
        return benchmarks.churn(run, count, changes=args.changes, writers=args.change_writers,
                                connections=args.probe_connections,
                                interval_s=args.probe_interval_ms / 1000,
                                baseline_s=args.baseline)
    return benchmarks.throughput(run, count, rounds=args.rounds, duration_s=args.duration,
                                 warmup_s=args.warmup, connections=args.connections)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds every ``with``: processes stop, temp files go


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # every ``with`` has unwound: processes stopped, cluster down
        print("bench: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    for tool in ("wrk", "taskset", "ip"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (scripts/bootstrap installs it)",
                  file=sys.stderr)
            return 1
    names = list(ORDER) if args.benchmark == "all" else [args.benchmark]
    python = args.vallum_python or servers.python()
    started = dt.datetime.now(dt.UTC)
    tree = _commit()  # at the start: each controller runs the working tree as it is then
    print(f"vallum controller bench: {', '.join(names)}; {started:%Y-%m-%d %H:%M} UTC, tree "
          f"{tree}")
    machine = bench_proxy.machine(python)
    print(f"machine: {machine['nproc']} x {machine['cpu']}, load average {_load()}; vallum runs "
          f"on {machine['vallum_python']}", flush=True)
    shared = bool(args.kubeconfig)
    tag = secrets.token_hex(3) if shared else ""
    results: list[benchmarks.Result] = []
    failed = False
    try:
        with tempfile.TemporaryDirectory(prefix="vallum-bench-ctl-") as tmp, \
                cluster.control_plane(args.kubeconfig, args.cp_dir, args.keep_cluster) as api, \
                processes.upstream(Path(tmp) / "upstream") as up:
            cluster.install_crds(api)
            pop = objects.Population(
                prefix=f"vbench-{tag}" if tag else "vbench",
                class_name=f"vallum-bench-{tag}" if tag else "vallum-bench",
                controller_name=f"vallum.dev/bench-{tag}" if tag else "vallum.dev/bench",
                upstream_ip=up.ip, upstream_port=up.port,
            )
            kube = cluster.Kube(api.kubeconfig, args.writers)
            kube.create_all([pop.namespace_object(ns) for ns in pop.namespace_names()])
            kube.create_all([pop.ingress_class(),
                             *(pop.policy(ns) for ns in pop.namespace_names())])
            run = benchmarks.Run(api, kube, pop, up, Path(tmp), python)
            try:
                for name in names:
                    print(f"\n== {name} (load average {_load()})", flush=True)
                    try:
                        result = _run_one(name, run, args)
                    except (cluster.ClusterError, servers.ServerError, wrk.WrkError, OSError,
                            TimeoutError, ValueError) as exc:
                        print(f"{name}: FAILED: {exc}", flush=True)
                        failed = True
                        continue
                    results.append(result)
                    print(result.text(), flush=True)
                    print(f"(load average after: {_load()})", flush=True)
            finally:
                if not api.own:
                    kube.run_all([functools.partial(kube.delete_namespace, ns)
                                  for ns in pop.namespace_names()])
                    kube.delete_ingress_class(pop.class_name)
    except (cluster.ClusterError, servers.ServerError, OSError) as exc:
        print(f"bench: setup failed: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps({
            "date": started.isoformat(timespec="seconds"), "tree_at_start": tree,
            "machine": machine, "results": [r.as_dict() for r in results],
        }, indent=2) + "\n")
        print(f"\nfigures saved to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
