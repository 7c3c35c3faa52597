"""The CI definitions that cannot run here (no Docker engine, no GitHub): the workflows parse,
use only well-known actions, and every script they or e2e/kind/run start exists and is
executable. The kind path itself is exercised only by .github/workflows/kind.yml."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github/workflows"
ACTIONS = {
    "actions/checkout", "actions/setup-python", "actions/setup-go", "actions/setup-node",
    "actions/cache", "actions/upload-artifact", "azure/setup-helm", "helm/kind-action",
}
_SCRIPT = re.compile(r"(?<![\w/.-])((?:scripts|e2e|\.ci)/[\w./-]+)")


def workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return data


def steps(name: str) -> list[dict[str, Any]]:
    return [s for job in workflow(name)["jobs"].values() for s in job["steps"]]


@pytest.mark.parametrize("name", ["ci.yml", "kind.yml"])
def test_workflow_parses_and_its_scripts_exist(name: str) -> None:
    data = workflow(name)
    # YAML 1.1 reads the key `on` as True.
    assert data.get("on", data.get(True)), f"{name}: no trigger"
    for step in steps(name):
        if "uses" in step:
            action, _, version = step["uses"].partition("@")
            assert action in ACTIONS and re.fullmatch(r"v\d+", version), step["uses"]
        for path in _SCRIPT.findall(step.get("run", "")):
            script = ROOT / path
            assert script.is_file() and os.access(script, os.X_OK), f"{name}: {path}"


def test_ci_runs_what_ci_here_runs() -> None:
    assert (ROOT / ".ci/run").read_text().rstrip().endswith("exec ./scripts/test")
    runs = " ".join(s.get("run", "") for s in steps("ci.yml"))
    assert "scripts/test" in runs
    uses = {s["uses"].split("@")[0]: s.get("with", {}) for s in steps("ci.yml") if "uses" in s}
    assert uses["actions/setup-python"]["python-version"] == "3.11"
    assert uses["actions/setup-node"]["node-version"] == "20"
    assert uses["actions/cache"]["path"] == "~/.cache/vallum"
    assert (ROOT / uses["actions/setup-go"]["go-version-file"]).is_file()


def test_kind_run_uses_existing_files() -> None:
    run = (ROOT / "e2e/kind/run").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "e2e/kind/run")]).returncode == 0
    for path in ("e2e/kind/cluster.yaml", "e2e/kind/values.yaml", "charts/vallum"):
        assert path in run and (ROOT / path).exists(), path
    assert "docker build" in run and "kind load docker-image" in run
    assert (ROOT / "Dockerfile").is_file()
    cluster = yaml.safe_load((ROOT / "e2e/kind/cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    values = yaml.safe_load((ROOT / "e2e/kind/values.yaml").read_text())
    chart_values = yaml.safe_load((ROOT / "charts/vallum/values.yaml").read_text())
    for key, value in values.items():  # every key the kind run sets is one the chart has
        assert key in chart_values, key
        if isinstance(value, dict):
            assert set(value) <= set(chart_values[key]), (key, set(value))
