"""Small builders shared by the policy tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from vallum.core import policy
from vallum.core.identity import Identity
from vallum.core.request import ClientCertificate, RequestInfo

NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)  # a Wednesday


def request(
    method: str = "GET",
    path: str = "/",
    host: str = "app.example.com",
    headers: dict[str, str] | None = None,
    client_ip: str = "10.0.0.1",
    client_cert: ClientCertificate | None = None,
    time: dt.datetime = NOON,
) -> RequestInfo:
    return RequestInfo(
        method=method,
        host=host,
        path=path,
        headers=headers or {},
        client_ip=client_ip,
        client_cert=client_cert,
        time=time,
    )


def user(
    user_id: str = "u-1",
    email: str = "alice@example.com",
    groups: tuple[str, ...] = (),
    claims: dict[str, Any] | None = None,
) -> Identity:
    return Identity(user=user_id, email=email, groups=groups, claims=claims or {})


def decide(
    data: Any, req: RequestInfo | None = None, identity: Identity | None = None, **options: Any
) -> policy.Decision:
    return policy.evaluate(policy.compile_policy(data, **options), req or request(), identity)


def allows(data: Any, req: RequestInfo | None = None, identity: Identity | None = None) -> bool:
    return decide(data, req, identity).allowed


def one(criterion: dict[str, Any]) -> dict[str, Any]:
    """A policy that allows exactly when ``criterion`` holds."""
    return {"allow": {"and": [criterion]}}
