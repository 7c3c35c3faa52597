"""The PromQL reader the dashboard and alert tests rely on catches what it claims to."""

from __future__ import annotations

import pytest

from tests.ops import promql


def test_metric_and_label_names_are_found() -> None:
    found = promql.uses(
        'histogram_quantile(0.99, sum by (route, le) (rate(vallum_request_duration_seconds_bucket'
        '{job=~"$job", route!=""}[$__rate_interval]))) / on (job) group_left '
        "max(vallum_route_table_routes) and vallum_ready offset 5m"
    )
    assert found.metrics == {"vallum_request_duration_seconds_bucket",
                             "vallum_route_table_routes", "vallum_ready"}
    assert found.selector_labels["vallum_request_duration_seconds_bucket"] == {"job", "route"}
    assert found.grouping_labels == {"route", "le", "job"}


@pytest.mark.parametrize(
    "expr",
    ["sum(rate(x[5m])", "rat(x[5m])", 'x{a="1"', "sum by le (x)", "x) + (y", '{job="a"}',
     "sum by (a +) (x)"],
)
def test_unsound_expressions_are_refused(expr: str) -> None:
    with pytest.raises(promql.PromQLError):
        promql.uses(expr)
