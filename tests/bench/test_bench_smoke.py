"""Smoke tests of the data-plane benchmark harness (``bench/``): parsing, templates, checks.

No timing assertions: the figures depend on the machine. The one run against real nginx and wrk
only checks that the harness starts, loads, paces and stops them, and reads what wrk printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from bench import bench_hotpath, bench_proxy, report, scenarios, servers, wrk
from tests.support.certs import TestCA
from vallum.core import configfile, request, routing
from vallum.proxy import pipeline
from vallum.proxy.identity import build_gate

# Captured from Debian's wrk 4.1 on this machine: `wrk -t1 -c64 -d2s --latency URL`.
WRK_TEXT = """\
Running 2s test @ http://127.0.0.1:18081/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   696.51us  713.64us  19.74ms   98.63%
    Req/Sec    73.53k     8.29k   97.01k    85.00%
  Latency Distribution
     50%  564.00us
     75%    0.91ms
     90%    1.01ms
     99%    1.81ms
  146048 requests in 2.00s, 20.89MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  72942.63
Transfer/sec:     10.43MB
"""

REPORT_LINE = (
    'VALLUM-BENCH {"requests":146048,"duration_us":2002231,"bytes":21905000,"p50_us":564,'
    '"p90_us":1010,"p99_us":1814,"p999_us":9120,"max_us":19740,"connect_errors":0,'
    '"read_errors":0,"write_errors":0,"timeouts":0,"non_2xx":0}'
)


def test_parses_wrk_text_output() -> None:
    result = wrk.parse(WRK_TEXT)
    assert result.requests == 146048
    assert result.duration_s == pytest.approx(2.0)
    assert result.requests_per_s == pytest.approx(72942.63)
    assert result.p50_ms == pytest.approx(0.564)
    assert result.p90_ms == pytest.approx(1.01)
    assert result.p99_ms == pytest.approx(1.81)
    assert result.max_ms == pytest.approx(19.74)
    assert result.p999_ms is None
    assert (result.read_errors, result.timeouts, result.non_2xx) == (3, 2, 7)
    assert result.errors == 12


def test_prefers_the_report_line_for_exact_figures() -> None:
    result = wrk.parse(WRK_TEXT.replace("Requests/sec", REPORT_LINE + "\nRequests/sec"))
    assert result.requests_per_s == pytest.approx(146048 / 2.002231)
    assert result.p99_ms == pytest.approx(1.814)
    assert result.p999_ms == pytest.approx(9.12)
    assert result.errors == 0


def test_missing_figure_is_an_error_naming_it() -> None:
    text = WRK_TEXT.replace("     99%    1.81ms\n", "")
    with pytest.raises(wrk.WrkError, match="99% latency percentile"):
        wrk.parse(text)
    with pytest.raises(wrk.WrkError, match="unreadable VALLUM-BENCH"):
        wrk.parse('VALLUM-BENCH {"requests": 1}')


@pytest.mark.parametrize(
    ("text", "ms"), [("850.00us", 0.85), ("1.81ms", 1.81), ("2.00s", 2000.0), ("1.50m", 90000.0)]
)
def test_wrk_durations(text: str, ms: float) -> None:
    assert wrk.parse_duration_ms(text) == pytest.approx(ms)


def test_paced_script_spaces_requests_for_the_rate() -> None:
    # 4,000 req/s from one thread: one send slot every 250 us, shared by all its connections.
    assert "local interval_us = 250.000" in wrk.paced_script(4000.0)
    assert "local interval_us = 500.000" in wrk.paced_script(4000.0, threads=2)
    assert "done = function" in wrk.paced_script(4000.0)
    with pytest.raises(ValueError, match="rate must be positive"):
        wrk.paced_script(0.0)


def test_templates_take_exactly_the_values_scenarios_give() -> None:
    upstream = (servers.NGINX_DIR / "upstream.conf.tmpl").read_text()
    conf = servers.render(upstream, {"workers": 2, "port": 8080, "prefix": "/tmp/x"})
    assert "worker_processes 2;" in conf
    assert "listen 127.0.0.1:8080" in conf
    assert "{{" not in conf
    with pytest.raises(ValueError, match=r"no value for placeholder.*port"):
        servers.render(upstream, {"workers": 2, "prefix": "/tmp/x"}, name="upstream")
    with pytest.raises(ValueError, match="extra match no placeholder"):
        servers.render(upstream, {"workers": 1, "port": 1, "prefix": "/", "extra": 1})


def test_vallum_config_is_a_public_route_per_scheme(tmp_path: Path) -> None:
    plain = scenarios.vallum_config("http", 1, 2, tmp_path / "c", tmp_path / "k")
    assert plain["insecure_server"] is True
    assert plain["routes"] == [{
        "from": f"http://{scenarios.HOST}", "to": "http://127.0.0.1:2",
        "allow_public_unauthenticated_access": True,
    }]
    tls = scenarios.vallum_config("https", 1, 2, tmp_path / "c", tmp_path / "k")
    assert "insecure_server" not in tls
    assert tls["certificate_file"] == str(tmp_path / "c")


def _result(rps: float, p99: float) -> wrk.WrkResult:
    return wrk.WrkResult(requests=100, duration_s=1.0, requests_per_s=rps, p50_ms=1.0,
                         p90_ms=1.0, p99_ms=p99, p999_ms=None, max_ms=None)


def _scenario(name: str) -> scenarios.Scenario:
    return next(s for s in scenarios.SCENARIOS if s.name == name)


def test_checks_compare_vallum_with_nginx_and_say_why_not() -> None:
    nginx = report.Outcome(_scenario("nginx-http"), peak=_result(20000.0, 3.0),
                           server_cpu={"peak": 50.0})
    vallum = report.Outcome(_scenario("vallum-http"), peak=_result(8000.0, 9.0),
                            paced=_result(4000.0, 12.0), paced_target_rate=4000.0,
                            server_cpu={"peak": 100.0})
    broken = report.Outcome(_scenario("vallum-https"), error="vallum-https exited with 1")
    found = {c.name: c for c in report.checks([nginx, vallum, broken], 0.35, 10.0)}
    ratio = found["Vallum/nginx req/s, HTTP"]
    assert ratio.value == pytest.approx(0.4)
    assert ratio.verdict == "PASS"
    assert found["Vallum p99 at half peak, HTTP"].verdict == "FAIL"
    per_cpu = found["Vallum/nginx req per server CPU-second, HTTP"]
    assert per_cpu.value == pytest.approx(0.2)
    assert per_cpu.verdict == "info"
    assert "nginx-http 50%" in report.saturation_notes([nginx, vallum, broken], workers=1)
    assert "vallum-http" not in report.saturation_notes([nginx, vallum, broken], workers=1)
    assert found["Vallum/nginx req/s, HTTPS"].verdict == "n/a"
    assert "nginx-https not in this run" in found["Vallum/nginx req/s, HTTPS"].detail
    assert found["Vallum p99 at half peak, HTTPS"].verdict == "n/a"
    text = report.table([nginx, vallum, broken]) + report.check_lines(list(found.values()))
    assert "FAILED" in text
    assert "@ half peak" in text


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        bench_proxy.parse_args(["--scenarios", "direct,nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        bench_proxy.parse_args(["--workers", "0"])


@pytest.mark.skipif(
    shutil.which("wrk") is None or (shutil.which("nginx") is None
    and not Path("/usr/sbin/nginx").exists()),
    reason="needs Debian's nginx and wrk (scripts/bootstrap)",
)
def test_runs_a_paced_scenario_against_real_nginx_and_cleans_up(tmp_path: Path) -> None:
    cert, key = TestCA.create().issue(scenarios.HOST).write(tmp_path)
    env = scenarios.Env(tmp_path, 1, (), (), cert, key)
    opts = bench_proxy.Options(duration_s=1, warmup_s=0, connections=4, threads=1, workers=1,
                               json_file=None, scenario_names=["direct"])
    scenario = dataclasses.replace(_scenario("direct"), paced=True)
    outcome = bench_proxy.run_scenario(scenario, env, opts)
    assert outcome.error is None
    assert outcome.peak is not None and outcome.peak.requests > 0
    assert outcome.paced is not None and outcome.paced.requests > 0
    assert outcome.paced_target_rate == pytest.approx(outcome.peak.requests_per_s / 2)
    pid_file = tmp_path / "upstream-direct" / "nginx.pid"
    assert not pid_file.exists()  # nginx removes its pid file only on a clean stop


def test_median_round_is_the_middle_rate_and_any_failure_fails() -> None:
    runs = [report.Outcome(_scenario("nginx-http"), peak=_result(rps, 1.0))
            for rps in (300.0, 100.0, 200.0)]
    chosen = report.median_round(runs)
    assert chosen.peak is not None
    assert chosen.peak.requests_per_s == 200.0
    assert chosen.rounds_rps == [300.0, 100.0, 200.0]
    assert "300 100 200" in report.table([chosen])
    broken = report.Outcome(_scenario("nginx-http"), error="nginx exited with 1")
    failed = report.median_round([runs[0], broken])
    assert failed.error == "round 2: nginx exited with 1"


def test_busy_percent_of_cores_between_two_readings() -> None:
    before = {0: (100, 1000), 1: (500, 1000)}
    after = {0: (150, 1100), 1: (600, 1100)}
    assert servers.busy_percent(before, after, [0]) == pytest.approx(50.0)
    assert servers.busy_percent(before, after, [0, 1]) == pytest.approx(150.0)
    assert servers.busy_percent(before, after, []) is None
    assert set(servers.core_jiffies()) >= {0}


def test_core_placement() -> None:
    assert bench_proxy.cores(1, [0, 1]) == ((0,), (1,), ())
    assert bench_proxy.cores(1, [0, 1, 2, 3]) == ((0,), (1, 2), (3,))
    assert bench_proxy.cores(2, [0, 1, 2]) == ((0, 1), (2,), ())
    assert bench_proxy.cores(2, [0, 1]) == ((), (), ())


async def test_signed_in_scenario_config_and_cookie_pass_the_real_gate(tmp_path: Path) -> None:
    """The bench's signed-in scenario must measure the allowed path, not a redirect."""
    public = scenarios.vallum_config("http", 1, 2, tmp_path / "c", tmp_path / "k")
    config_file = tmp_path / "vallum.yaml"
    config_file.write_text(json.dumps(
        scenarios.authenticated_config(public, scenarios._signing_key_pem())
    ))
    table = routing.build_table(configfile.load(str(config_file)))
    gate = build_gate(table.settings)
    cookie = scenarios.session_cookie(config_file)
    for cookies, allowed in ((cookie, True), ("", False)):
        req = request.RequestInfo(method="GET", host=scenarios.HOST, path="/", scheme="http",
                                  headers={"cookie": cookies, "accept": "*/*"})
        match = routing.match(table, req.host, req.path)
        assert match is not None
        verdict = await gate.authorize(req, match, table)
        assert isinstance(verdict, pipeline.Allow) is allowed
        if allowed:
            assert isinstance(verdict, pipeline.Allow)
            names = {name.lower() for name, _ in verdict.request_headers}
            assert "x-vallum-jwt-assertion" in names


def test_vallum_python_is_checked_and_described() -> None:
    assert bench_proxy.parse_args(["--vallum-python", sys.executable]).vallum_python == (
        sys.executable
    )
    with pytest.raises(SystemExit):
        bench_proxy.parse_args(["--vallum-python", "/nonexistent/python3"])
    venv_python = Path(sys.executable)
    relative = os.path.relpath(venv_python)  # as typed in a shell: made absolute, not resolved
    assert bench_proxy.parse_args(["--vallum-python", relative]).vallum_python == str(
        venv_python
    )
    described = servers.describe_python(sys.executable)
    assert described.startswith("CPython 3.") and " at /" in described
    with pytest.raises(OSError, match="does not run"):
        servers.describe_python("/bin/false")


def test_hotpath_bench_proxies_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """bench_hotpath feeds a request and nginx's answer through the real protocol objects and
    checks the client got the 200 (no timing assertion)."""
    assert bench_hotpath.main(["--requests", "200", "--rounds", "2"]) == 0
    assert "us per request" in capsys.readouterr().out
