"""Decisions and their reasons; evaluation never raises, whatever the identity looks like."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.policy.support import decide, request, user
from vallum.core import policy
from vallum.core.identity import Identity

ADMIN_OR_GET = [
    {"allow": {"or": [{"groups": "admins"}, {"email": {"ends_with": "@corp.example"}}]}},
    {"deny": {"or": [{"http_method": "DELETE"}]}},
]


def test_allowed_reason_names_the_condition() -> None:
    d = decide(ADMIN_OR_GET, request(), user(email="a@corp.example"))
    assert d.allowed and not d.needs_login
    assert [r.to_dict() for r in d.reasons] == [
        {
            "code": "allow-rule",
            "message": "allow rule 1 matched: email ends_with @corp.example",
            "path": "[0].allow.or[1].email",
        }
    ]


def test_deny_reason_names_the_rule_and_condition() -> None:
    d = decide(ADMIN_OR_GET, request("DELETE"), user(groups=("admins",)))
    assert not d.allowed
    assert d.reasons[0].message == "deny rule 2 matched: http_method is DELETE"
    assert d.reasons[0].path == "[1].deny.or[0].http_method"


def test_missing_reasons_say_what_is_required() -> None:
    d = decide(ADMIN_OR_GET, request(), user(email="a@elsewhere.example"))
    assert not d.allowed and not d.needs_login
    assert [(r.code, r.message) for r in d.reasons] == [
        ("groups-unauthorized", "requires group `admins`"),
        ("email-unauthorized", "requires an email that ends_with @corp.example"),
    ]


def test_reasons_under_not_say_what_must_not_match() -> None:
    d = decide(
        {"allow": {"not": [{"groups": "contractors"}]}}, request(), user(groups=("contractors",))
    )
    assert d.reasons[0].message == "must not match: groups has contractors"


def test_anonymous_needs_login_with_reasons() -> None:
    d = decide(ADMIN_OR_GET, request(), None)
    assert not d.allowed and d.needs_login
    assert {r.code for r in d.reasons} == {"user-unauthenticated"}
    assert d.reasons[0].message == "sign-in required: requires group `admins`"


def test_decision_to_dict() -> None:
    d = decide({"allow": {"or": [{"accept": True}]}}, request(), None)
    assert d.to_dict() == {
        "allow": True,
        "needs_login": False,
        "reasons": [
            {
                "code": "allow-rule",
                "message": "allow rule 1 matched: accept",
                "path": "allow.or[0].accept",
            }
        ],
    }


def test_reasons_are_capped() -> None:
    data = {"allow": {"or": [{"groups": f"g{i}"} for i in range(50)]}}
    d = decide(data, request(), user())
    assert len(d.reasons) == policy.evaluator.MAX_REASONS
    assert d.reasons[-1].code == "more"


def test_huge_group_list() -> None:
    groups = tuple(f"g{i}" for i in range(100_000))
    data = {
        "allow": {"and": [{"groups": "g99999"}, {"groups": {"exclude": "x"}}, {"groups": "g0"}]}
    }
    assert decide(data, request(), user(groups=groups)).allowed


def test_an_unexpected_error_denies_with_a_reason() -> None:
    class Broken:
        @property
        def email(self) -> str:
            raise RuntimeError("boom")

    d = policy.evaluate(
        policy.compile_policy({"allow": {"or": [{"email": "x"}]}}), request(), Broken()
    )  # type: ignore[arg-type]
    assert not d.allowed
    assert d.reasons[0].code == "internal-error"
    assert "boom" in d.reasons[0].message


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
EVERYTHING = [
    {
        "allow": {
            "or": [
                {"email": {"ends_with": "@x.com"}},
                {"domain": {"not": "y.com"}},
                {"user": {"in": ["a"]}},
                {"groups": {"is": "g"}},
                {"groups": {"exclude": "h"}},
                {"groups": "a"},
                {"groups": "b"},
                {"claim/a.b": {"has": "1"}},
                {"claim/c": {"exclude": "true"}},
                {"claim/d": {"is": 1}},
                {"authenticated_user": True},
            ]
        }
    },
    {"deny": {"nor": [{"claim/e": "x"}, {"email": {"contains": "@"}}]}},
]
COMPILED = policy.compile_policy(EVERYTHING)


@settings(max_examples=300)
@given(
    user_id=json_values,
    email=json_values,
    groups=json_values,
    claims=st.dictionaries(st.text(max_size=4), json_values, max_size=5) | json_values,
)
def test_evaluation_never_raises_on_any_identity_shape(
    user_id: Any, email: Any, groups: Any, claims: Any
) -> None:
    identity = Identity(user=user_id, email=email, groups=groups, claims=claims)
    d = policy.evaluate(COMPILED, request(), identity)
    assert isinstance(d.allowed, bool)
    assert all(r.code != "internal-error" for r in d.reasons), d.reasons
