"""docs/operations.md lists exactly the metrics Vallum exports and the alerts the rules file
defines, and its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.ops import exported

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs/operations.md"
_ROW = re.compile(r"^\| `([A-Za-z0-9_*]+)` \|", re.MULTILINE)
_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_metrics_table_is_what_vallum_exports() -> None:
    documented = set(_ROW.findall(section("Metrics"))) - {"process_*"}
    names = exported.exported()
    families = {n for n in names if n.startswith("vallum_") and not n.endswith(_SUFFIXES)}
    families -= {n.removesuffix("_total") for n in families if n.endswith("_total")}
    assert documented == families


def test_the_alerts_table_is_the_rules_file() -> None:
    rules = yaml.safe_load((ROOT / "charts/vallum/files/prometheus-rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert set(_ROW.findall(section("Alerts"))) == alerts


def test_links_resolve() -> None:
    text = re.sub(r"```.*?```", "", PAGE.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s#]+)", text):
        assert (PAGE.parent / target).exists(), target
