"""Metrics: counters and histograms by route/method/status, reload gauges, and multiprocess mode
summing two real worker processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from vallum.proxy import metrics


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_observe_counts_by_route_method_status_and_times_by_route() -> None:
    m = metrics.Metrics()
    m.observe("app", "GET", 200, 0.003)
    m.observe("app", "GET", 200, 0.2)
    m.observe("app", "POST", 502, 0.02)
    m.observe("app", "BREW", 405, 0.001)  # unknown methods do not grow the label space
    m.observe("app", "WHATEVER", 405, 0.001)
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    got = samples(body)
    assert requests_total(got, "app") == 2
    assert requests_total(got, "app", "POST", "502") == 1
    assert requests_total(got, "app", "OTHER", "405") == 2
    assert got[("vallum_request_duration_seconds_count", (("route", "app"),))] == 5
    assert got[("vallum_request_duration_seconds_bucket", (("le", "0.005"), ("route", "app")))] == 3
    assert got[("vallum_request_duration_seconds_bucket", (("le", "0.25"), ("route", "app")))] == 5
    assert abs(got[("vallum_request_duration_seconds_sum", (("route", "app"),))] - 0.225) < 1e-9


def test_reload_gauges() -> None:
    m = metrics.Metrics()
    m.set_table(3, 12)
    got = samples(m.render()[0])
    assert got[("vallum_route_table_generation", ())] == 3
    assert got[("vallum_route_table_routes", ())] == 12
    assert got[("vallum_config_last_reload_success", ())] == 1
    m.reload_failed("a.yaml:1: bad")
    got = samples(m.render()[0])
    assert got[("vallum_config_reload_failures_total", ())] == 1
    assert got[("vallum_config_last_reload_success", ())] == 0


def test_two_instances_do_not_collide() -> None:
    first, second = metrics.Metrics(), metrics.Metrics()
    first.observe("a", "GET", 200, 0.01)
    with pytest.raises(KeyError):
        requests_total(samples(second.render()[0]), "a")


async def test_requests_are_tallied_and_reach_prometheus_values_on_flush_or_scrape() -> None:
    m = metrics.Metrics()
    m.observe("app", "GET", 200, 0.01)
    assert ("app", "GET", 200) in m._tallies  # this prometheus_client's value objects were found
    m.observe("app", "GET", 200, 0.02)
    # Inside an event loop: not yet in prometheus_client's values (another worker's scrape
    # reads those), but a scrape of this process flushes first.
    assert m.requests.labels("app", "GET", "200")._value.get() == 0
    got = samples(m.render()[0])
    assert requests_total(got, "app") == 2
    m.observe("app", "GET", 200, 0.01)
    m.flush()  # what the timer and the server's close do
    assert m.requests.labels("app", "GET", "200")._value.get() == 3


async def test_a_flush_follows_a_second_after_the_first_tallied_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0.01)
    m = metrics.Metrics()
    m.observe("app", "GET", 200, 0.01)
    await asyncio.sleep(0.05)
    assert m.requests.labels("app", "GET", "200")._value.get() == 1
    m.observe("app", "GET", 200, 0.01)  # a new timer for the next batch
    await asyncio.sleep(0.05)
    assert m.requests.labels("app", "GET", "200")._value.get() == 2


def test_an_unknown_prometheus_client_is_counted_through_its_public_methods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "_value_incs", lambda counter, histogram: None)
    m = metrics.Metrics()
    m.observe("app", "GET", 200, 0.003)
    m.observe("app", "GET", 200, 0.2)
    got = samples(m.render()[0])
    assert requests_total(got, "app") == 2
    assert got[("vallum_request_duration_seconds_bucket", (("le", "0.005"), ("route", "app")))] == 1
    assert abs(got[("vallum_request_duration_seconds_sum", (("route", "app"),))] - 0.203) < 1e-9


WORKER = textwrap.dedent(
    """
    import sys
    from vallum.proxy import metrics
    m = metrics.Metrics()
    m.set_table(int(sys.argv[1]), 5)
    for _ in range(int(sys.argv[2])):
        m.observe("app", "GET", 200, 0.01)
    m.observe("only-" + sys.argv[1], "GET", 404, 0.5)
    """
)


@pytest.fixture
def restore_value_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)


def requests_total(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str,
                   method: str = "GET", status: str = "200") -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return got[("vallum_requests_total", labels)]


@pytest.mark.usefixtures("restore_value_class")
def test_multiprocess_mode_sums_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # restored after the test
    directory = metrics.enable_multiprocess(str(tmp_path))
    assert directory == str(tmp_path)
    # enable_multiprocess exported the directory: the workers inherit it, as forked ones would.
    pids = {}
    for generation, count in ((2, 30), (3, 12)):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(generation), str(count)])
        assert proc.wait(timeout=60) == 0
        pids[generation] = proc.pid
    m = metrics.Metrics()
    m.observe("app", "GET", 200, 0.01)  # the scraping process counts too
    got = samples(m.render()[0])
    assert requests_total(got, "app") == 43
    assert got[("vallum_request_duration_seconds_count", (("route", "app"),))] == 43
    assert {name for name, _ in got if not name.startswith(("vallum_", "python_"))} == set()
    assert requests_total(got, "only-2", status="404") == 1
    assert requests_total(got, "only-3", status="404") == 1
    assert got[("vallum_route_table_generation", ())] == 3
    # Live gauges forget a worker once the parent reports it gone; counters keep its counts.
    metrics.worker_exited(pids[3])
    got = samples(m.render()[0])
    assert got[("vallum_route_table_generation", ())] == 2
    assert requests_total(got, "app") == 43


@pytest.mark.parametrize(
    ("seconds", "first_le"),
    [(0.0, "0.001"), (0.001, "0.001"), (0.0010001, "0.0025"), (60.0, "60.0"), (61.0, "+Inf")],
)
def test_duration_buckets_are_prometheus_le_buckets(seconds: float, first_le: str) -> None:
    m = metrics.Metrics()
    m.observe("app", "GET", 200, seconds)
    got = samples(m.render()[0])
    counts = {
        labels[0][1]: value
        for (name, labels), value in got.items()
        if name == "vallum_request_duration_seconds_bucket"
    }
    bounds = [f"{b}" for b in metrics.BUCKETS] + ["+Inf"]
    expected = {le: 0.0 if bounds.index(le) < bounds.index(first_le) else 1.0 for le in bounds}
    assert counts == expected
    assert got[("vallum_request_duration_seconds_sum", (("route", "app"),))] == seconds
