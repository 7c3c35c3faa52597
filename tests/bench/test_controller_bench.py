"""Smoke tests of the controller benchmarks' pure parts (``bench/controller/``): percentiles and
target lines, the generated objects, the same-table check, options, and the HTTP probe against
a real local server. No timing assertions and no API server: ``bench/run-controller`` itself is
the benchmark.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from bench.controller import main, objects, probe, processes, stats, tables


def population(**changes: Any) -> objects.Population:
    fields: dict[str, Any] = {
        "prefix": "vbench", "class_name": "vallum-bench", "controller_name": "vallum.dev/bench",
        "upstream_ip": "10.200.0.1", "upstream_port": 8080,
    }
    return objects.Population(**(fields | changes))


# -- stats ---------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert stats.percentile(samples, 50) == 50.0
    assert stats.percentile(samples, 99) == 99.0
    assert stats.percentile(samples, 100) == 100.0
    fifty = [float(n) for n in range(1, 51)]
    assert stats.percentile(fifty, 99) == 50.0  # with 50 samples p99 is the largest
    assert stats.percentile(fifty, 50) == 25.0
    assert stats.percentile([7.0], 1) == 7.0


@pytest.mark.parametrize("pct", [0, -1, 101])
def test_percentile_refuses_bad_input(pct: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile([1.0], pct)
    with pytest.raises(ValueError, match="no samples"):
        stats.percentile([], 50)


def test_summary() -> None:
    summary = stats.summarize([4.0, 1.0, 3.0, 2.0])
    assert (summary.count, summary.p50, summary.p99, summary.max) == (4, 2.0, 4.0, 4.0)
    assert summary.mean == pytest.approx(2.5)
    assert "p50 2.0 ms" in summary.line()
    assert summary.as_dict()["p99_ms"] == 4.0


def test_checks_and_their_lines() -> None:
    fast = stats.at_most("apply p50", 75.0, 150.0, "ms", "aim 100 ms")
    slow = stats.at_most("apply p99", 500.0, 400.0, "ms")
    none = stats.at_most("cold start", None, 10.0, "s")
    ratio = stats.at_least("controller/serve", 0.9, 0.95)
    assert (fast.verdict, slow.verdict, none.verdict, ratio.verdict) == (
        "PASS", "FAIL", "n/a", "FAIL")
    text = stats.check_lines("targets:", [fast, slow, none, ratio])
    assert "0.50x target" in text  # 75 / 150
    assert "1.25x target" in text  # 500 / 400
    assert "(target <= 150 ms)  PASS  aim 100 ms" in text
    assert "(target >= 0.95)  FAIL" in text
    assert "not measured" in text


# -- objects -------------------------------------------------------------------------------------


def test_population_objects_hang_together() -> None:
    pop = population()
    made = objects.everything(pop, 0, 500)
    assert [len(made[k]) for k in ("Service", "EndpointSlice", "Ingress")] == [500, 500, 500]
    assert list(made) == ["Service", "EndpointSlice", "Ingress"]  # backends first
    hosts = [ing["spec"]["rules"][0]["host"] for ing in made["Ingress"]]
    assert len(set(hosts)) == 500
    assert {pop.namespace(i) for i in range(500)} == set(pop.namespace_names())
    for service, slice_, ingress in zip(made["Service"], made["EndpointSlice"], made["Ingress"],
                                        strict=True):
        name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
        assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == name
        assert slice_["metadata"]["namespace"] == ingress["metadata"]["namespace"] == namespace
        assert slice_["endpoints"][0]["addresses"] == ["10.200.0.1"]
        assert slice_["ports"][0]["port"] == service["spec"]["ports"][0]["targetPort"] == 8080
        backends = {p["backend"]["service"]["name"]
                    for p in ingress["spec"]["rules"][0]["http"]["paths"]}
        assert backends == {name}
        assert ingress["spec"]["ingressClassName"] == "vallum-bench"
    protected = [i for i in range(500) if pop.protected(i)]
    assert protected == [50, 150, 250, 350, 450]
    notes = made["Ingress"][50]["metadata"]["annotations"]
    assert notes["ingress.vallum.dev/policy-ref"] == objects.POLICY_NAME
    assert objects.PUBLIC not in notes
    assert made["Ingress"][1]["metadata"]["annotations"][objects.PUBLIC] == "true"


def test_a_probe_ingress_and_a_change() -> None:
    pop = population()
    probe_ingress = pop.ingress(7, name="probe-1", host="probe-1.example.test")
    assert probe_ingress["metadata"]["name"] == "probe-1"
    assert probe_ingress["spec"]["rules"][0]["host"] == "probe-1.example.test"
    path = probe_ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"]["service"]["name"] == pop.name(7)
    patch = pop.change(7, 42)
    assert patch["metadata"]["annotations"][objects.CHANGE_ANNOTATION] == (
        '{"X-Bench-Change": "42"}')


# -- the same table ------------------------------------------------------------------------------


def test_serve_config_builds_the_controllers_routes() -> None:
    pop = population()
    base = {"address": "127.0.0.1:1", "insecure_server": True}
    translated = tables.controller_routes(pop, 120, base)
    served = tables.serve_routes(tables.serve_config(pop, 120, "127.0.0.1:1"))
    assert len(translated) == sum(len(pop.paths(i)) for i in range(120)) == 132
    assert tables.difference(translated, served) is None


def test_difference_names_a_route_that_differs() -> None:
    pop = population()
    translated = tables.controller_routes(pop, 30, {"address": "127.0.0.1:1"})
    config = tables.serve_config(pop, 30, "127.0.0.1:1")
    config["routes"][3]["timeout"] = "7s"
    found = tables.difference(translated, tables.serve_routes(config))
    assert found is not None and "timeout=7.0" in found
    config["routes"].pop()
    assert tables.difference(translated, tables.serve_routes(config)) == "33 routes against 32"


# -- options -------------------------------------------------------------------------------------


def test_options() -> None:
    args = main.parse_args(["all", "--ingresses", "300", "--rounds", "1"])
    assert (args.benchmark, args.ingresses, args.rounds, args.applies, args.changes) == (
        "all", 300, 1, 50, 1000)
    args = main.parse_args(["cold-start"])
    assert args.ingresses is None and main.DEFAULT_COUNTS["cold-start"] == 5000
    assert main.DEFAULT_COUNTS["apply-latency"] == 3000
    assert not hasattr(args, "applies")
    with pytest.raises(SystemExit) as exited:
        main.parse_args(["churn", "--changes", "0"])
    assert exited.value.code == 2


# -- HTTP probe and memory -----------------------------------------------------------------------


class _Answers(http.server.BaseHTTPRequestHandler):
    """404 for the first ``misses`` requests, then the upstream's answer (keep-alive)."""

    protocol_version = "HTTP/1.1"
    misses = 3
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        live = type(self).seen > type(self).misses
        body = processes.UPSTREAM_BODY if live else b"no route\n"
        self.send_response(200 if live else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[int]:
    _Answers.seen = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_wait_for_polls_until_the_upstream_answers(answers: int) -> None:
    client = probe.Client("127.0.0.1", answers)
    try:
        _, answer = probe.wait_for(client, "x.test", probe.from_upstream(processes.UPSTREAM_BODY),
                                   timeout_s=10, interval_s=0.001)
    finally:
        client.close()
    assert answer[0] == 200
    assert _Answers.seen == 4
    assert not probe.routed((404, b"", {})) and probe.routed((503, b"", {}))


def test_load_records_every_request(answers: int) -> None:
    _Answers.misses = 0
    try:
        load = probe.Load("127.0.0.1", answers, "x.test",
                          probe.from_upstream(processes.UPSTREAM_BODY), connections=2,
                          interval_s=0.001)
        load.start()
        while len(load.samples) == 0 and _Answers.seen < 10:
            threading.Event().wait(0.01)
        samples = load.stop()
    finally:
        _Answers.misses = 3
    assert len(samples) == _Answers.seen >= 10
    assert all(s.ok for s in samples)
    assert samples == sorted(samples, key=lambda s: s.sent)


def test_memory_and_cpu_of_this_process() -> None:
    rss, peak = processes.memory_mb(os.getpid())
    assert 0 < rss <= peak
    before = processes.cpu_s(os.getpid())
    sum(n * n for n in range(3_000_000))  # some work: CPU time only grows
    assert processes.cpu_s(os.getpid()) > before
