"""``vallum_denials_total{reason}`` and ``vallum_sign_ins_total{result}`` counted by a real
identity gate in a real server, against a real OpenID provider: each refusal under its reason,
each callback under its result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.login_env import World, world
from tests.support.browser import Browser
from tests.support.certs import TestCA
from vallum.proxy import metrics

JSON = {"Accept": "application/json"}


@pytest.fixture
async def env(test_ca: TestCA, tmp_path: Path) -> AsyncIterator[World]:
    async with world(test_ca, tmp_path) as w:
        yield w


def counts(collected: metrics.Metrics) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(collected.render()[0].decode()):
        for sample in family.samples:
            if sample.name == "vallum_denials_total":
                out[("denial", sample.labels["reason"])] = sample.value
            elif sample.name == "vallum_sign_ins_total":
                out[("sign_in", sample.labels["result"])] = sample.value
    return out


async def test_denials_by_reason_and_sign_ins_by_result(env: World) -> None:
    collected = env.vallum.metrics
    before = counts(collected)  # (also takes in what earlier gates in this process tallied)
    # Every series exists before anything happened to it: rate() and the dashboard see 0.
    assert set(before) == {("denial", r) for r in metrics.DENIAL_REASONS} | {
        ("sign_in", r) for r in metrics.SIGN_IN_RESULTS}
    async with Browser(env.ca) as b:
        assert (await b.get(env.url("app.example.test", "/p"), follow=False)).status == 302
        assert (await b.get(env.url("app.example.test", "/p"), headers=JSON)).status == 401
        # bob signs in (sent to sign in first), then the admin route's policy refuses him.
        assert (await b.sign_in(env.url("admin.example.test"), "bob")).status == 403
        forged = env.url("auth.example.test", "/.vallum/callback?code=x&state=y")
        assert (await b.get(forged, follow=False)).status == 400
    after = counts(collected)
    delta = {key: after[key] - before[key] for key in after}
    assert delta == {
        ("denial", "sign_in_required"): 2.0, ("denial", "unauthenticated"): 1.0,
        ("denial", "policy"): 1.0, ("denial", "client_certificate"): 0.0,
        ("sign_in", "success"): 1.0, ("sign_in", "failure"): 1.0,
    }
