"""The chart under test and a ``helm`` to run it with, shared by tests/charts and e2e/test_chart.

Why a module: both the static tests (lint, template, schema) and the e2e server-side dry run
render the same chart with the same values; the helm binary comes from ``scripts/build-helm``
(cached; a cold build takes minutes and is reported on stderr, which pytest shows with ``-s``).
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vallum"
BUILD_HELM = ROOT / "scripts" / "build-helm"
HELM_VERSION = "v3.19.0"

# Every optional object on: the values file of the "everything" renders.
EVERYTHING: dict[str, Any] = {
    "ingressClass": {"default": True},
    "settings": {
        "create": True,
        "spec": {
            "secrets": "vallum/bootstrap",
            "authenticate": {"url": "https://authenticate.example.com"},
            "identityProvider": {
                "provider": "oidc",
                "url": "https://idp.example.com",
                "secret": "vallum/idp",
                "scopes": ["openid", "email"],
            },
            "certificates": ["vallum/wildcard"],
            "cookie": {"domain": "example.com", "expire": "14h", "sameSite": "lax"},
            "jwtClaimHeaders": {"X-Email": "email"},
            "passIdentityHeaders": True,
        },
    },
    "networkPolicy": {
        "create": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
    "serviceMonitor": {"create": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"create": (CHART / "files" / "prometheus-rules.yaml").exists()},
    "grafanaDashboard": {"create": (CHART / "files" / "grafana-dashboard.json").exists()},
    "watchNamespaces": ["default", "apps"],
    "workers": 2,
    "commonLabels": {"team": "edge"},
    "podAnnotations": {"example.com/scrape": "false"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
}


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail under CI (``$CI`` set): the chart must be tested there."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the chart tests must run)", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _helm_path() -> str:
    """The cached helm (building it on first use); '' when it cannot be built here."""
    if shutil.which("go") is None and shutil.which("apt-cache") is None:
        return ""
    done = subprocess.run([str(BUILD_HELM)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise AssertionError(f"scripts/build-helm failed:\n{done.stderr[-3000:]}")
    return str(pathlib.Path(done.stdout.strip()) / "helm")


def helm_binary() -> str:
    path = _helm_path()
    if not path:
        unavailable(f"no helm {HELM_VERSION} and no go to build it (scripts/build-helm)")
    return path


def helm(*args: str, check: bool = True, kubeconfig: str = "") -> \
        subprocess.CompletedProcess[str]:
    """Run helm; only with ``kubeconfig`` does it see a cluster (template and lint never do)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    done = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def values_file(tmp: pathlib.Path, values: Mapping[str, Any], name: str = "values.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(dict(values)))
    return str(path)


def template(*flags: str, namespace: str = "vallum", release: str = "vallum",
             chart: pathlib.Path = CHART) -> str:
    """``helm template`` of the chart: its output as text."""
    return helm("template", release, str(chart), "--namespace", namespace, *flags).stdout


def objects(rendered: str) -> list[dict[str, Any]]:
    """The rendered documents, empty ones dropped; raises if any does not parse."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def kinds(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(str(doc["kind"]) for doc in docs)


def one(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [dict(d) for d in docs
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
