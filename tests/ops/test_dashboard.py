"""The Grafana dashboard (charts/vallum/files/grafana-dashboard.json, the same bytes as
docs/dashboards/vallum.json) queries only what Vallum exports, and shows every part of it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ops import exported, promql

ROOT = Path(__file__).resolve().parents[2]
CHART_COPY = ROOT / "charts/vallum/files/grafana-dashboard.json"
DOCS_COPY = ROOT / "docs/dashboards/vallum.json"
_LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CHART_COPY.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every variable query."""
    out = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels()
           for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = _LABEL_VALUES.fullmatch(variable["definition"])
        assert found is not None, variable["definition"]
        assert found["selector"], f"${variable['name']}: label_values of every series is too wide"
        out.append((f"variable ${variable['name']}", found["selector"]))
    return out


def test_the_docs_copy_is_the_chart_copy() -> None:
    assert DOCS_COPY.read_bytes() == CHART_COPY.read_bytes()


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_every_query_uses_exported_metrics_and_their_labels(where: str, expr: str) -> None:
    names = exported.exported()
    found = promql.uses(expr)
    assert found.metrics, f"{where}: no metric in {expr!r}"
    unknown = found.metrics - set(names)
    assert not unknown, f"{where}: not exported by Vallum: {sorted(unknown)}"
    labels = set().union(*(names[m] for m in found.metrics)) | exported.TARGET_LABELS
    for metric, used in found.selector_labels.items():
        extra = used - names[metric] - exported.TARGET_LABELS
        assert not extra, f"{where}: {metric} has no label {sorted(extra)}"
    assert not found.grouping_labels - labels, (
        f"{where}: grouping by labels none of {sorted(found.metrics)} has: "
        f"{sorted(found.grouping_labels - labels)}"
    )


def test_every_family_vallum_exports_has_a_panel() -> None:
    used = set().union(*(promql.uses(expr).metrics for _, expr in expressions()))
    families = {name.removesuffix("_bucket") for name in used}
    wanted = {
        "vallum_requests_total", "vallum_request_duration_seconds", "vallum_denials_total",
        "vallum_sign_ins_total", "vallum_route_table_generation", "vallum_route_table_routes",
        "vallum_config_reload_failures_total", "vallum_config_last_reload_success",
        "vallum_certificate_expiration_timestamp_seconds", "vallum_controller_leader",
        "vallum_ready",
    }
    assert wanted <= families, sorted(wanted - families)
    vallum_families = {n.removesuffix("_total") for n in exported.exported()
                       if n.startswith("vallum_") and not n.endswith(("_created", "_sum",
                                                                      "_count", "_bucket"))}
    shown = {n.removesuffix("_total") for n in families}
    assert vallum_families <= shown, f"exported but on no panel: {vallum_families - shown}"


def test_panels_are_well_formed() -> None:
    data = dashboard()
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    assert data["uid"] and data["title"] == "Vallum"
    variables = {v["name"] for v in data["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    taken: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert panel["description"], f"{panel['title']!r} says nothing about what it shows"
        for target in panel["targets"]:
            for variable in re.findall(r"\$(\w+)", target["expr"]):
                assert variable.startswith("__") or variable in variables, (
                    f"{panel['title']!r}: unknown variable ${variable}")
