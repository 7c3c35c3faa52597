"""Route policies: legacy shorthands, ``policy``, downstream mTLS, and failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.policy.support import request, user
from tests.support.certs import TestCA
from vallum.core import policy
from vallum.core.config import DownstreamMTLS, Host, Route
from vallum.core.request import ClientCertificate


def route(**fields: Any) -> Route:
    return Route(
        from_url="https://app.example.com",
        host=Host("app.example.com"),
        to=(),
        name="app",
        **fields,
    )


def allowed(r: Route, identity: Any = None, req: Any = None, **kw: Any) -> policy.Decision:
    return policy.evaluate(policy.compile_route_policy(r, **kw), req or request(), identity)


def test_no_rules_allows_nobody() -> None:
    d = allowed(route(), user())
    assert not d.allowed and d.reasons[0].code == "no-allow-rule"


def test_allowed_users_match_user_id_or_email() -> None:
    r = route(allowed_users=("alice@example.com", "u-bob"))
    assert allowed(r, user("u-1", "alice@example.com")).allowed
    assert allowed(r, user("u-bob", "bob@example.com")).allowed
    d = allowed(r, user("u-2", "carol@example.com"))
    assert not d.allowed
    assert d.reasons[0].path == "allowed_users[0]"
    d = allowed(r, user("u-1", "alice@example.com"))
    assert d.reasons[0].message == "allowed_users matched: email is alice@example.com"


def test_allowed_domains() -> None:
    r = route(allowed_domains=("example.com",))
    assert allowed(r, user(email="a@example.com")).allowed
    assert not allowed(r, user(email="a@sub.example.com")).allowed


def test_allowed_idp_claims() -> None:
    r = route(allowed_idp_claims=(("groups", ("admins", "ops")), ("org.team", ("blue",))))
    assert allowed(r, user(claims={"groups": ["ops"]})).allowed
    assert allowed(r, user(claims={"org": {"team": "blue"}})).allowed
    assert not allowed(r, user(claims={"groups": ["dev"]})).allowed


def test_allow_any_authenticated_user() -> None:
    r = route(allow_any_authenticated_user=True)
    assert allowed(r, user()).allowed
    d = allowed(r, None)
    assert not d.allowed and d.needs_login


def test_legacy_and_policy_combine_with_or_and_policy_deny_wins() -> None:
    r = route(
        allowed_domains=("example.com",),
        policy={"allow": {"or": [{"groups": "ops"}]}, "deny": {"or": [{"http_method": "DELETE"}]}},
    )
    assert allowed(r, user(email="a@example.com")).allowed
    assert allowed(r, user(email="a@other.com", groups=("ops",))).allowed
    d = allowed(r, user(email="a@example.com"), request("DELETE"))
    assert not d.allowed and d.reasons[0].message == "deny rule 1 matched: http_method is DELETE"


def test_public_route() -> None:
    p = policy.compile_route_policy(route(allow_public_unauthenticated_access=True))
    assert p.is_public and p.error is None
    d = policy.evaluate(p, request(), None)
    assert d.allowed and d.reasons[0].code == "public"
    assert p.normalized == [{"allow": {"or": [{"accept": True}]}}]


@pytest.mark.parametrize(
    "extra",
    [
        {"allowed_users": ("a@b.c",)},
        {"allow_any_authenticated_user": True},
        {"policy": {"allow": {"or": [{"email": "x"}]}}},
        {"policy": [{"deny": {"or": [{"source_ip": "10.0.0.0/8"}]}}]},
    ],
)
def test_public_cannot_be_combined(extra: dict[str, Any]) -> None:
    p = policy.compile_route_policy(route(allow_public_unauthenticated_access=True, **extra))
    assert p.error is not None and p.error.path == "allow_public_unauthenticated_access"
    assert not p.is_public
    d = policy.evaluate(p, request(), user())
    assert not d.allowed and d.reasons[0].code == "policy-error"
    assert "cannot be combined" in d.reasons[0].message


def test_bad_policy_fails_closed_and_says_why() -> None:
    p = policy.compile_route_policy(
        route(allowed_domains=("example.com",), policy={"allow": {"or": [{"emial": "x"}]}})
    )
    assert p.error is not None and p.error.path == "policy.allow.or[0].emial"
    d = policy.evaluate(p, request(), user(email="a@example.com"))
    assert not d.allowed and not d.needs_login
    assert d.reasons[0].message.startswith("the policy of app does not compile, so every request")


def test_malformed_route_values_fail_closed() -> None:
    p = policy.compile_route_policy(route(allowed_users=("ok", 5)))  # type: ignore[arg-type]
    assert p.error is not None and p.error.path == "allowed_users[1]"
    p = policy.compile_route_policy(route(allowed_idp_claims=5))  # type: ignore[arg-type]
    assert p.error is not None
    assert not policy.evaluate(p, request(), user()).allowed


def test_downstream_mtls_default_deny(test_ca: TestCA) -> None:
    leaf = test_ca.issue("alice", client=True)
    mtls = DownstreamMTLS(ca_pem=test_ca.cert_pem)
    r = route(allow_any_authenticated_user=True)
    ok = request(client_cert=ClientCertificate(leaf.der, verified=True))
    bad = request(client_cert=ClientCertificate(leaf.der, verified=False, error="unknown ca"))
    assert allowed(r, user(), ok, downstream_mtls=mtls).allowed
    for req in (bad, request()):
        d = allowed(r, user(), req, downstream_mtls=mtls)
        assert not d.allowed
        assert d.reasons[0].message == (
            "downstream_mtls default deny matched: invalid_client_certificate"
        )
        assert d.reasons[0].code == "invalid-client-certificate"
    # enforcement "policy": no default deny, but the criterion knows a certificate is required.
    loose = DownstreamMTLS(ca_pem=test_ca.cert_pem, enforcement="policy")
    assert allowed(r, user(), request(), downstream_mtls=loose).allowed
    r2 = route(
        policy=[
            {"allow": {"or": [{"accept": True}]}},
            {"deny": {"or": [{"invalid_client_certificate": True}]}},
        ]
    )
    assert not allowed(r2, None, request(), downstream_mtls=loose).allowed


def test_public_route_with_mtls_default_deny_still_checks_certificates(test_ca: TestCA) -> None:
    mtls = DownstreamMTLS(ca_pem=test_ca.cert_pem)
    p = policy.compile_route_policy(
        route(allow_public_unauthenticated_access=True), downstream_mtls=mtls
    )
    assert not p.is_public
    assert not policy.evaluate(p, request(), None).allowed
    leaf = test_ca.issue("alice", client=True)
    good = request(client_cert=ClientCertificate(leaf.der, verified=True))
    assert policy.evaluate(p, good, None).allowed
