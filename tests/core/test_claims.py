"""The assertion's claims and the claim headers (vallum.core.claims), shaped like Pomerium's."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vallum.core import claims
from vallum.core.config import Settings
from vallum.core.identity import Identity

ALICE = Identity(
    user="user-1",
    email="alice@example.com",
    name="Alice Liddell",
    groups=("admins", "staff", "everyone"),
    claims={"department": ["eng", "ops"], "level": 3, "email": "ignored@example.com",
            "verified": True, "profile": {"b": 1, "a": "x"}, "sub": "evil"},
    session_id="sess-1",
)
NOW = 1_700_000_000.7


def test_base_claims_match_pomeriums_payload() -> None:
    payload = claims.assertion_claims(ALICE, "app.example.com", Settings(), NOW)
    assert set(payload) == claims.BASE_CLAIMS
    assert payload["iss"] == "app.example.com"
    assert payload["aud"] == "app.example.com"
    assert payload["sub"] == payload["user"] == "user-1"
    assert payload["email"] == "alice@example.com"
    assert payload["name"] == "Alice Liddell"
    assert payload["sid"] == "sess-1"
    assert payload["groups"] == ["admins", "staff", "everyone"]
    assert payload["iat"] == 1_700_000_000
    assert payload["exp"] == 1_700_000_300
    assert "nbf" not in payload
    assert uuid.UUID(payload["jti"]).version == 4


def test_jti_is_fresh_each_time() -> None:
    first = claims.assertion_claims(ALICE, "a.test", Settings(), NOW)
    second = claims.assertion_claims(ALICE, "a.test", Settings(), NOW)
    assert first["jti"] != second["jti"]


def test_uri_issuer_format() -> None:
    settings = Settings(jwt_issuer_format="uri")
    payload = claims.assertion_claims(ALICE, "app.example.com", settings, NOW)
    assert payload["iss"] == "https://app.example.com/"
    assert payload["aud"] == "app.example.com"


def test_unknown_issuer_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="jwt_issuer_format"):
        claims.issuer("a.test", "full")


def test_groups_empty_list_never_null() -> None:
    bob = Identity(user="bob")
    payload = claims.assertion_claims(bob, "a.test", Settings(), NOW)
    assert payload["groups"] == []
    assert payload["email"] == ""
    assert payload["name"] == ""


def test_groups_filter_keeps_only_listed_groups_in_order() -> None:
    settings = Settings(jwt_groups_filter=("everyone", "admins", "absent"))
    payload = claims.assertion_claims(ALICE, "a.test", settings, NOW)
    assert payload["groups"] == ["admins", "everyone"]


def test_email_and_name_fall_back_to_provider_claims() -> None:
    who = Identity(user="u", claims={"email": "c@example.com", "name": ["Carol", "C."]})
    payload = claims.assertion_claims(who, "a.test", Settings(), NOW)
    assert payload["email"] == "c@example.com"
    assert payload["name"] == "Carol,C."


def test_extra_claims_are_strings_and_never_override_base_claims() -> None:
    settings = Settings(
        jwt_claims_headers=(
            ("x-pomerium-claim-department", "department"),
            ("X-Level", "level"),
            ("x-pomerium-claim-email", "email"),
            ("x-pomerium-claim-sub", "sub"),
            ("x-pomerium-claim-missing", "missing"),
        )
    )
    payload = claims.assertion_claims(ALICE, "a.test", settings, NOW)
    assert payload["department"] == "eng,ops"
    assert payload["level"] == "3"
    assert payload["email"] == "alice@example.com"  # the identity's, not the provider claim's
    assert payload["sub"] == "user-1"  # never the provider's "evil"
    assert "missing" not in payload


def test_claim_headers_list_form_and_compatibility_prefix() -> None:
    settings = Settings(
        jwt_claims_headers=(
            ("x-pomerium-claim-email", "email"),
            ("x-vallum-claim-groups", "groups"),
        )
    )
    payload = claims.assertion_claims(ALICE, "a.test", settings, NOW)
    assert claims.claim_headers(payload, settings) == (
        ("X-Vallum-Claim-Email", "alice@example.com"),
        ("X-Vallum-Claim-Groups", "admins,staff,everyone"),
    )
    compat = Settings(jwt_claims_headers=settings.jwt_claims_headers, pomerium_compatibility=True)
    assert claims.claim_headers(payload, compat) == (
        ("X-Vallum-Claim-Email", "alice@example.com"),
        ("X-Pomerium-Claim-Email", "alice@example.com"),
        ("X-Vallum-Claim-Groups", "admins,staff,everyone"),
        ("X-Pomerium-Claim-Groups", "admins,staff,everyone"),
    )


def test_claim_headers_map_form_uses_the_given_name() -> None:
    settings = Settings(
        jwt_claims_headers=(("X-Email", "email"), ("X-Dept", "department"), ("X-None", "nothing")),
        pomerium_compatibility=True,
    )
    payload = claims.assertion_claims(ALICE, "a.test", settings, NOW)
    assert claims.claim_headers(payload, settings) == (
        ("X-Email", "alice@example.com"),
        ("X-Dept", "eng,ops"),
        ("X-None", ""),  # Pomerium adds the header with an empty value
    )


def test_claim_header_name_is_a_valid_token() -> None:
    settings = Settings(jwt_claims_headers=(("x-pomerium-claim-https://ex.com/roles", "x"),))
    assert claims.claim_header_names(settings.jwt_claims_headers[0][0], settings) == (
        "X-Vallum-Claim-Https-Ex.com-Roles",
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (1.5e9, "1500000000"),
        (2.5, "2.5"),
        (["a", 1, True], "a,1,true"),
        ({"b": 1, "a": "x"}, '{"a":"x","b":1}'),
        ("plain", "plain"),
    ],
)
def test_claim_string_renders_like_pomerium(value: object, text: str) -> None:
    assert claims.claim_string(value) == text


def test_header_values_cannot_split_headers() -> None:
    settings = Settings(jwt_claims_headers=(("X-Name", "name"),))
    payload = {"name": "Eve\r\nX-Admin: yes"}
    assert claims.claim_headers(payload, settings) == (("X-Name", "Eve  X-Admin: yes"),)


def test_stable_claims_are_hashable_and_time_free() -> None:
    stable = claims.stable_claims(ALICE, "a.test", Settings())
    assert hash(stable) == hash(claims.stable_claims(ALICE, "a.test", Settings()))
    assert {k for k, _ in stable}.isdisjoint({"jti", "iat", "exp"})


def test_identity_from_claims_round_trips() -> None:
    payload = claims.assertion_claims(ALICE, "a.test", Settings(), NOW)
    who = claims.identity_from_claims(payload)
    assert (who.user, who.email, who.name, who.groups, who.session_id) == (
        "user-1", "alice@example.com", "Alice Liddell", ("admins", "staff", "everyone"), "sess-1"
    )
    assert who.expires_at == payload["exp"]


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
    max_leaves=6,
)


@given(
    user=st.text(),
    email=st.text(),
    groups=st.lists(st.text(), max_size=5),
    provider=st.dictionaries(st.sampled_from(["sub", "email", "dept", "x_y", "iss"]), _VALUES),
    listed=st.lists(st.sampled_from(["sub", "email", "dept", "x_y", "iss", "groups"]), max_size=4),
    compat=st.booleans(),
)
def test_payload_and_headers_hold_for_any_identity(
    user: str, email: str, groups: list[str], provider: dict[str, object], listed: list[str],
    compat: bool,
) -> None:
    settings = Settings(
        jwt_claims_headers=tuple((f"X-Pomerium-Claim-{c}", c) for c in listed),
        pomerium_compatibility=compat,
    )
    who = Identity(user=user, email=email, groups=tuple(groups), claims=provider)
    payload = claims.assertion_claims(who, "a.test", settings, NOW)
    json.dumps(payload)  # serialisable as it is
    assert payload["sub"] == payload["user"] == user
    assert payload["iss"] == payload["aud"] == "a.test"
    assert payload["groups"] == groups
    for key in set(payload) - claims.BASE_CLAIMS:
        assert isinstance(payload[key], str)
    headers = claims.claim_headers(payload, settings)
    assert len(headers) == len(listed) * (2 if compat else 1)
    for name, value in headers:
        assert "\r" not in value and "\n" not in value
        assert name.startswith(("X-Vallum-Claim-", "X-Pomerium-Claim-"))
