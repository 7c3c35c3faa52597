"""Every criterion, allow and deny, table-driven (client certificates and time have their own
files). Each row: criterion as written, the request/identity, expected allowed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.policy.support import allows, decide, one, request, user
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo

ALICE = user("u-alice", "alice@example.com", ("admins", "staff"), {"department": "r&d"})

CASES: list[tuple[str, dict[str, Any], RequestInfo, Identity | None, bool]] = [
    # accept / reject: the value is ignored
    ("accept true", {"accept": True}, request(), None, True),
    ("accept false still accepts", {"accept": False}, request(), None, True),
    ("reject true", {"reject": True}, request(), ALICE, False),
    ("reject false still rejects", {"reject": False}, request(), ALICE, False),
    # authenticated_user
    ("authenticated user", {"authenticated_user": True}, request(), ALICE, True),
    ("authenticated_user false is ignored", {"authenticated_user": False}, request(), ALICE, True),
    ("anonymous is not authenticated", {"authenticated_user": True}, request(), None, False),
    # email: exact and case-sensitive
    ("email bare", {"email": "alice@example.com"}, request(), ALICE, True),
    ("email is", {"email": {"is": "alice@example.com"}}, request(), ALICE, True),
    ("email other", {"email": {"is": "bob@example.com"}}, request(), ALICE, False),
    ("email case-sensitive", {"email": "Alice@example.com"}, request(), ALICE, False),
    ("email starts_with", {"email": {"starts_with": "alice@"}}, request(), ALICE, True),
    ("email ends_with", {"email": {"ends_with": "@example.com"}}, request(), ALICE, True),
    ("email contains", {"email": {"contains": "ce@ex"}}, request(), ALICE, True),
    ("email contains no", {"email": {"contains": "bob"}}, request(), ALICE, False),
    ("email in", {"email": {"in": ["bob@x.com", "alice@example.com"]}}, request(), ALICE, True),
    ("email in no", {"email": {"in": ["bob@x.com"]}}, request(), ALICE, False),
    ("email not_in", {"email": {"not_in": ["bob@x.com"]}}, request(), ALICE, True),
    ("email not_in no", {"email": {"not_in": ["alice@example.com"]}}, request(), ALICE, False),
    ("email not", {"email": {"not": "bob@x.com"}}, request(), ALICE, True),
    (
        "email several ops AND",
        {"email": {"starts_with": "alice", "ends_with": ".org"}},
        request(),
        ALICE,
        False,
    ),
    ("email without email", {"email": {"not": "x"}}, request(), user(email=""), False),
    # domain: after the first @, exact
    ("domain", {"domain": {"is": "example.com"}}, request(), ALICE, True),
    ("domain bare", {"domain": "example.com"}, request(), ALICE, True),
    (
        "subdomain is not domain",
        {"domain": "example.com"},
        request(),
        user(email="a@sub.example.com"),
        False,
    ),
    ("domain after first @", {"domain": "b@c.com"}, request(), user(email="a@b@c.com"), True),
    ("no @: no domain", {"domain": {"not": "x.com"}}, request(), user(email="alice"), False),
    (
        "domain ends_with",
        {"domain": {"ends_with": ".example.com"}},
        request(),
        user(email="a@sub.example.com"),
        True,
    ),
    # user: the id, not the email
    ("user id", {"user": "u-alice"}, request(), ALICE, True),
    ("user is not email", {"user": "alice@example.com"}, request(), ALICE, False),
    ("user starts_with", {"user": {"starts_with": "u-"}}, request(), ALICE, True),
    # groups: list matcher
    ("groups bare = has", {"groups": "admins"}, request(), ALICE, True),
    ("groups has", {"groups": {"has": "staff"}}, request(), ALICE, True),
    ("groups has no", {"groups": {"has": "ops"}}, request(), ALICE, False),
    ("groups is: exactly one", {"groups": {"is": "admins"}}, request(), ALICE, False),
    ("groups is single", {"groups": {"is": "admins"}}, request(), user(groups=("admins",)), True),
    ("groups exclude", {"groups": {"exclude": "contractors"}}, request(), ALICE, True),
    ("groups exclude no", {"groups": {"exclude": "admins"}}, request(), ALICE, False),
    ("groups case-sensitive", {"groups": "Admins"}, request(), ALICE, False),
    # claim/<name>
    ("claim scalar", {"claim/department": "r&d"}, request(), ALICE, True),
    ("claim scalar other", {"claim/department": "sales"}, request(), ALICE, False),
    (
        "claim list has",
        {"claim/roles": "editor"},
        request(),
        user(claims={"roles": ["viewer", "editor"]}),
        True,
    ),
    ("claim missing", {"claim/roles": "editor"}, request(), user(), False),
    ("claim missing exclude", {"claim/roles": {"exclude": "banned"}}, request(), user(), True),
    (
        "claim nested",
        {"claim/org.team": "blue"},
        request(),
        user(claims={"org": {"team": "blue"}}),
        True,
    ),
    (
        "claim nested list",
        {"claim/org.teams": {"has": "red"}},
        request(),
        user(claims={"org": {"teams": ["blue", "red"]}}),
        True,
    ),
    (
        "claim literal dotted name wins",
        {"claim/org.team": "x"},
        request(),
        user(claims={"org.team": "x", "org": {"team": "y"}}),
        True,
    ),
    (
        "claim name split at first slash",
        {"claim/example.com/role": "admin"},
        request(),
        user(claims={"example.com/role": "admin"}),
        True,
    ),
    (
        "claim boolean",
        {"claim/email_verified": True},
        request(),
        user(claims={"email_verified": True}),
        True,
    ),
    (
        "claim boolean false",
        {"claim/email_verified": True},
        request(),
        user(claims={"email_verified": False}),
        False,
    ),
    ("claim number", {"claim/level": 3}, request(), user(claims={"level": 3}), True),
    ("claim number", {"claim/level": 3}, request(), user(claims={"level": 3.0}), True),
    # Typed JSON equality, as Pomerium's rego `==` (issue 11, finding 9).
    (
        "claim text is not a number",
        {"claim/level": "3"},
        request(),
        user(claims={"level": 3}),
        False,
    ),
    ("claim number is not text", {"claim/level": 3}, request(), user(claims={"level": "3"}), False),
    (
        "claim true is not the string",
        {"claim/email_verified": True},
        request(),
        user(claims={"email_verified": "true"}),
        False,
    ),
    (
        "claim string is not true",
        {"claim/email_verified": "true"},
        request(),
        user(claims={"email_verified": True}),
        False,
    ),
    ("claim true is not 1", {"claim/x": True}, request(), user(claims={"x": 1}), False),
    ("claim 1 is not true", {"claim/x": 1}, request(), user(claims={"x": True}), False),
    ("claim 0 is not false", {"claim/x": 0}, request(), user(claims={"x": False}), False),
    (
        "claim list items are typed",
        {"claim/x": {"has": True}},
        request(),
        user(claims={"x": ["true", 1, "yes"]}),
        False,
    ),
    (
        "claim exclude is typed",
        {"claim/banned": {"exclude": True}},
        request(),
        user(claims={"banned": "true"}),
        True,
    ),
    (
        "claim is is typed",
        {"claim/x": {"is": 2}},
        request(),
        user(claims={"x": ["2"]}),
        False,
    ),
    (
        "legacy allowed_idp_claims style bare bool",
        {"claim/x": False},
        request(),
        user(claims={"x": [False]}),
        True,
    ),
    (
        "claim object is not a value",
        {"claim/org": "x"},
        request(),
        user(claims={"org": {"x": 1}}),
        False,
    ),
    (
        "claim is exact one",
        {"claim/roles": {"is": "a"}},
        request(),
        user(claims={"roles": ["a"]}),
        True,
    ),
    # http_method / http_path
    ("method", {"http_method": "GET"}, request("GET"), None, True),
    ("method other", {"http_method": "GET"}, request("POST"), None, False),
    ("method case-sensitive", {"http_method": "get"}, request("GET"), None, False),
    ("method in", {"http_method": {"in": ["GET", "HEAD"]}}, request("HEAD"), None, True),
    ("path is", {"http_path": "/api"}, request(path="/api"), None, True),
    (
        "path starts_with",
        {"http_path": {"starts_with": "/api/"}},
        request(path="/api/v1"),
        None,
        True,
    ),
    (
        "path not on the host",
        {"http_path": {"contains": "example"}},
        request(path="/"),
        None,
        False,
    ),
    ("path not_in", {"http_path": {"not_in": ["/admin"]}}, request(path="/x"), None, True),
    # cors_preflight
    (
        "preflight",
        {"cors_preflight": True},
        request("OPTIONS", headers={"origin": "https://a", "access-control-request-method": "GET"}),
        None,
        True,
    ),
    (
        "preflight needs OPTIONS",
        {"cors_preflight": True},
        request("GET", headers={"origin": "https://a", "access-control-request-method": "GET"}),
        None,
        False,
    ),
    (
        "preflight needs origin",
        {"cors_preflight": True},
        request("OPTIONS", headers={"access-control-request-method": "GET"}),
        None,
        False,
    ),
    (
        "preflight needs non-empty method header",
        {"cors_preflight": True},
        request("OPTIONS", headers={"origin": "https://a", "access-control-request-method": ""}),
        None,
        False,
    ),
    # source_ip
    ("ip bare", {"source_ip": "10.0.0.1"}, request(client_ip="10.0.0.1"), None, True),
    ("ip bare is /32", {"source_ip": "10.0.0.1"}, request(client_ip="10.0.0.2"), None, False),
    ("cidr", {"source_ip": "10.0.0.0/8"}, request(client_ip="10.200.1.1"), None, True),
    (
        "cidr list",
        {"source_ip": ["192.168.0.0/16", "10.0.0.0/8"]},
        request(client_ip="10.1.1.1"),
        None,
        True,
    ),
    ("cidr outside", {"source_ip": ["192.168.0.0/16"]}, request(client_ip="10.1.1.1"), None, False),
    (
        "cidr host bits",
        {"source_ip": "192.168.1.1/24"},
        request(client_ip="192.168.1.77"),
        None,
        True,
    ),
    ("ipv6", {"source_ip": "2001:db8::/32"}, request(client_ip="2001:db8::5"), None, True),
    ("v4-mapped v6", {"source_ip": "10.0.0.0/8"}, request(client_ip="::ffff:10.1.2.3"), None, True),
    # IPv4-mapped IPv6 is IPv4, in the policy and for the client (issue 11, finding 9)
    (
        "v4-mapped range in the policy",
        {"source_ip": "::ffff:10.0.0.0/104"},
        request(client_ip="10.1.2.3"),
        None,
        True,
    ),
    (
        "v4-mapped range, v4-mapped client",
        {"source_ip": "::ffff:10.0.0.0/104"},
        request(client_ip="::ffff:10.1.2.3"),
        None,
        True,
    ),
    (
        "v4-mapped range is the /8 only",
        {"source_ip": "::ffff:10.0.0.0/104"},
        request(client_ip="11.0.0.1"),
        None,
        False,
    ),
    (
        "v4-mapped address in the policy",
        {"source_ip": "::ffff:1.2.3.4"},
        request(client_ip="::ffff:1.2.3.4"),
        None,
        True,
    ),
    (
        "v4-mapped address, plain client",
        {"source_ip": ["192.168.0.0/16", "::ffff:1.2.3.4"]},
        request(client_ip="1.2.3.4"),
        None,
        True,
    ),
    ("v4-mapped /96 is all IPv4", {"source_ip": "::ffff:0:0/96"}, request(), None, True),
    (
        "ipv6 ::/0 is not IPv4",
        {"source_ip": "::/0"},
        request(client_ip="::ffff:1.2.3.4"),
        None,
        False,
    ),
    ("ipv6 ::/0 holds v6", {"source_ip": "::/0"}, request(client_ip="2001:db8::1"), None, True),
    ("no client ip", {"source_ip": "0.0.0.0/0"}, request(client_ip=""), None, False),
    ("garbage client ip", {"source_ip": "0.0.0.0/0"}, request(client_ip="nope"), None, False),
]


@pytest.mark.parametrize(
    ("criterion", "req", "identity", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_criterion(
    criterion: dict[str, Any], req: RequestInfo, identity: Identity | None, expected: bool
) -> None:
    assert allows(one(criterion), req, identity) is expected
    # The same criterion under deny: denies exactly when it holds (allow-all otherwise).
    denied = decide(
        {"allow": {"or": [{"accept": True}]}, "deny": {"or": [criterion]}}, req, identity
    )
    if identity is not None or not _about_user(criterion):
        assert denied.allowed is (not expected)


def _about_user(criterion: dict[str, Any]) -> bool:
    name = next(iter(criterion)).split("/")[0]
    return name in {"authenticated_user", "email", "domain", "user", "groups", "claim"}


USER_CRITERIA = [
    {"authenticated_user": True},
    {"email": {"not": "x@y"}},
    {"domain": {"not_in": ["x.com"]}},
    {"user": {"not": "u"}},
    {"groups": {"exclude": "contractors"}},
    {"claim/banned": {"exclude": "true"}},
]


@pytest.mark.parametrize("criterion", USER_CRITERIA, ids=lambda c: next(iter(c)))
def test_user_criteria_never_hold_for_anonymous(criterion: dict[str, Any]) -> None:
    """Pomerium's quirk (empty values for anonymous) is not copied: sign in first."""
    for wrapped in (
        one(criterion),
        {"allow": {"not": [criterion]}},
        {"allow": {"nor": [criterion]}},
    ):
        d = decide(wrapped, request(), None)
        assert not d.allowed
        assert d.needs_login
        assert d.reasons[0].code == "user-unauthenticated"


def test_user_criteria_under_deny_send_anonymous_to_sign_in() -> None:
    d = decide(
        {"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"email": "bad@x.com"}]}},
        request(),
        None,
    )
    assert (d.allowed, d.needs_login) == (False, True)
    assert "deny rule 1 depends on who you are: email is bad@x.com" in d.reasons[0].message


def test_accept_or_user_criterion_admits_everyone() -> None:
    assert allows({"allow": {"or": [{"accept": True}, {"email": "x@y.com"}]}}, request(), None)


def test_non_user_criterion_false_decides_without_sign_in() -> None:
    d = decide(
        {"allow": {"and": [{"email": "a@b.c"}, {"http_method": "GET"}]}}, request("POST"), None
    )
    assert (d.allowed, d.needs_login) == (False, False)


def test_user_deny_does_not_matter_when_nothing_allows() -> None:
    d = decide(
        {"allow": {"or": [{"http_method": "POST"}]}, "deny": {"or": [{"email": "x@y.z"}]}},
        request("GET"),
        None,
    )
    assert (d.allowed, d.needs_login) == (False, False)


# Claim values compare as JSON values (Pomerium's rego `==`): same type, and equal; numbers by
# value (3 == 3.0); booleans are not numbers (Python's True == 1 must not leak in).
json_scalars = (
    st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.0, 1.0, 2.0, 0.5, -1.0])
    | st.sampled_from(["true", "false", "1", "0", "1.0", "2", "", "x"])
)


def _json_kind(value: object) -> str:
    return "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "number"


@settings(max_examples=400)
@given(wanted=json_scalars, claim=json_scalars, as_list=st.booleans())
def test_claim_comparison_is_typed_json_equality(wanted: Any, claim: Any, as_list: bool) -> None:
    expected = _json_kind(wanted) == _json_kind(claim) and wanted == claim
    identity = user(claims={"x": [claim] if as_list else claim})
    assert allows(one({"claim/x": wanted}), request(), identity) is expected
    assert allows(one({"claim/x": {"is": wanted}}), request(), identity) is expected
    assert allows(one({"claim/x": {"exclude": wanted}}), request(), identity) is (not expected)
