"""The alerts (charts/vallum/files/prometheus-rules.yaml) parse as a Prometheus rules file and
use only what Vallum exports. promtool is used too when it is on the PATH (it is not installed
for this: no Prometheus build here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops import exported, promql

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/vallum/files/prometheus-rules.yaml"
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
SEVERITIES = {"info", "warning", "critical"}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    assert set(data) == {"groups"}, "the file is the groups: part of a PrometheusRule spec"
    out: list[dict[str, Any]] = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        out.extend(group["rules"])
    return out


def test_names_are_unique_and_the_wanted_alerts_exist() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    assert {
        "VallumHighErrorRate", "VallumTableRejected", "VallumCertificateExpiresIn14Days",
        "VallumCertificateExpiresIn2Days", "VallumNoLeader", "VallumReplicaNotReady",
    } <= set(names)


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_each_rule_is_complete_and_uses_exported_metrics(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    if "for" in rule:
        assert _DURATION.fullmatch(rule["for"]), rule["for"]
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    names = exported.exported()
    found = promql.uses(rule["expr"])
    assert found.metrics and not found.metrics - set(names), sorted(found.metrics - set(names))
    labels = set().union(*(names[m] for m in found.metrics)) | exported.TARGET_LABELS
    for metric, used in found.selector_labels.items():
        assert not used - names[metric] - exported.TARGET_LABELS, (metric, used)
    assert not found.grouping_labels - labels, sorted(found.grouping_labels - labels)
    # Templates may name only labels the expression's result keeps.
    kept = found.grouping_labels or labels
    for text in rule["annotations"].values():
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in kept, f"{rule['alert']}: {{{{ $labels.{label} }}}} is not kept"


def test_the_expiry_thresholds_are_14_and_2_days() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert "< 14 * 86400" in by_name["VallumCertificateExpiresIn14Days"]["expr"]
    assert "< 2 * 86400" in by_name["VallumCertificateExpiresIn2Days"]["expr"]
    assert by_name["VallumNoLeader"]["for"] == "5m"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
