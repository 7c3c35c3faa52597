"""Policy evaluation speed (issue 3): evaluations per second on one core.

Two policies from the issue's acceptance criteria, each evaluated against an identity with 100
groups: a 1-rule policy, and a 25-rule policy (5 deny rules, 20 allow rules) where only the last
allow rule lets the identity in, so every rule is evaluated. Also the denied path of the 25-rule
policy (nothing allows: the evaluator explains every missing condition), which has no target.

Prints evals/s (best of several timed runs) beside the targets: >= 200,000/s for the 1-rule policy
and >= 30,000/s for the 25-rule one. Usage: ``python3 bench/bench_policy.py [--seconds S]``.
Exit status 0 whatever the figures (it measures; it does not judge the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))

from vallum.core import policy
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo

TARGET_1 = 200_000
TARGET_25 = 30_000

GROUPS = tuple(f"group-{i:03d}" for i in range(100))

ONE_RULE = {"allow": {"or": [{"groups": {"has": "group-099"}}]}}


def twenty_five_rules() -> list[dict[str, object]]:
    """5 deny rules then 20 allow rules; the identity below satisfies only the last allow."""
    rules: list[dict[str, object]] = [
        {"deny": {"or": [{"http_method": {"in": ["DELETE", "PATCH"]}}]}},
        {"deny": {"or": [{"source_ip": ["192.0.2.0/24", "2001:db8::/32"]}]}},
        {"deny": {"or": [{"email": {"in": ["mallory@example.com", "eve@example.com"]}}]}},
        {
            "deny": {
                "and": [{"http_path": {"starts_with": "/admin"}}, {"groups": {"exclude": "ops"}}]
            }
        },
        {"deny": {"or": [{"claim/suspended": True}]}},
    ]
    for i in range(19):
        if i % 4 == 0:
            cond: dict[str, object] = {"groups": {"has": f"team-{i}"}}
        elif i % 4 == 1:
            cond = {"email": {"is": f"user{i}@example.com"}}
        elif i % 4 == 2:
            cond = {"claim/department": f"dept-{i}"}
        else:
            cond = {"domain": {"is": f"corp{i}.example"}}
        rules.append({"allow": {"and": [cond, {"http_path": {"starts_with": "/"}}]}})
    rules.append({"allow": {"and": [{"groups": {"has": "group-099"}}, {"domain": "example.com"}]}})
    return rules


def rate(call: Callable[[], object], seconds: float) -> float:
    """Best evaluations/second over several timed runs of about ``seconds`` in total."""
    n = 1000
    while True:  # calibrate a batch of ~0.1 s
        start = time.perf_counter()
        for _ in range(n):
            call()
        took = time.perf_counter() - start
        if took > 0.05:
            break
        n *= 2
    batch = max(1, int(n * 0.1 / took))
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(batch):
            call()
        best = max(best, batch / (time.perf_counter() - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    identity = Identity(
        user="u-123",
        email="alice@example.com",
        groups=GROUPS,
        claims={"department": "research", "groups": list(GROUPS)},
    )
    request = RequestInfo(
        "GET",
        "app.example.com",
        "/reports/2026",
        client_ip="10.1.2.3",
        time=dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC),
    )
    outsider = Identity(user="u-9", email="bob@other.example", groups=GROUPS[:99])

    one = policy.compile_policy(ONE_RULE)
    many = policy.compile_policy(twenty_five_rules())
    for p, who, want in ((one, identity, True), (many, identity, True), (many, outsider, False)):
        decision = policy.evaluate(p, request, who)
        if decision.allowed is not want:
            print(f"benchmark setup is wrong: expected allowed={want}, got {decision}")
            return 1

    print(
        f"# policy evaluation, one core — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    rows = (
        ("1-rule policy, 100-group identity, allowed", one, identity, TARGET_1),
        ("25-rule policy, 100-group identity, allowed by the last rule", many, identity, TARGET_25),
        ("25-rule policy, 100-group identity, denied (explains)", many, outsider, None),
    )
    for label, p, who, target in rows:
        per_second = rate(lambda p=p, who=who: policy.evaluate(p, request, who), args.seconds)
        if target is None:
            verdict = "(no target)"
        else:
            verdict = f"target >= {target:,}/s: {'PASS' if per_second >= target else 'FAIL'}"
        print(f"{label:<62} {per_second:>12,.0f} evals/s   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
