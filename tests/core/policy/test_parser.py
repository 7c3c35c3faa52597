"""Structure of the language and errors with a place; normalisation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.policy.support import allows, user
from vallum.core import policy
from vallum.core.errors import PolicyError

BAD: list[tuple[Any, str, str]] = [
    ("allow everyone", "", "expected a rule or a list of rules"),
    ([{"allow": {"or": [{"accept": True}]}}, "x"], "[1]", "expected a rule"),
    ({"permit": {"or": []}}, "permit", "unknown action 'permit'"),
    ({"allow": [{"accept": True}]}, "allow", "expected a mapping of operators"),
    ({"allow": None}, "allow", "expected a mapping of operators"),
    ({"allow": {"xor": []}}, "allow.xor", "unknown operator 'xor' (did you mean 'or'?)"),
    ({"allow": {"or": {"accept": True}}}, "allow.or", "expected a list of conditions"),
    ({"allow": {"or": ["accept"]}}, "allow.or[0]", "expected a condition"),
    ({"allow": {"or": [{"accept": True, "reject": True}]}}, "allow.or[0]", "got 2 keys"),
    ({"allow": {"or": [{}]}}, "allow.or[0]", "got 0 keys"),
    (
        {"allow": {"or": [{"emial": "x"}]}},
        "allow.or[0].emial",
        "unknown criterion 'emial' (did you mean 'email'?)",
    ),
    ({"allow": {"or": [{"email/x": "x"}]}}, "allow.or[0].email/x", "takes no sub-path"),
    ({"allow": {"or": [{"claim": "x"}]}}, "allow.or[0].claim", "needs a claim name"),
    (
        {
            "allow": {
                "or": [{"accept": True}, {"accept": True}, {"claim/groups": {"hass": "admins"}}]
            }
        },
        "allow.or[2].claim/groups.hass",
        "unknown list matcher 'hass' (did you mean 'has'?)",
    ),
    (
        {"allow": {"or": [{"groups": {"contains": "adm"}}]}},
        "allow.or[0].groups.contains",
        "unknown list matcher 'contains'",
    ),
    (
        {"allow": {"or": [{"email": {"is": ["a"]}}]}},
        "allow.or[0].email.is",
        "expected a string, got a list",
    ),
    ({"allow": {"or": [{"user": 12345}]}}, "allow.or[0].user.is", 'quotes ("12345")'),
    ({"allow": {"or": [{"email": {"in": ["a", True]}}]}}, "allow.or[0].email.in[1]", "quotes"),
    ({"allow": {"or": [{"groups": {"has": 7}}]}}, "allow.or[0].groups.has", "expected a string"),
    ({"allow": {"or": [{"claim/x": {"has": None}}]}}, "allow.or[0].claim/x.has", "got null"),
    ({"allow": {"or": [{"claim/x": {"has": [1]}}]}}, "allow.or[0].claim/x.has", "got a list"),
    ({"allow": {"or": [{"email": {"in": "a"}}]}}, "allow.or[0].email.in", "takes a list"),
    ({"allow": {"or": [{"email": {"in": []}}]}}, "allow.or[0].email.in", "non-empty"),
    ({"allow": {"or": [{"email": {}}]}}, "allow.or[0].email", "empty matcher"),
    ({"allow": {"or": [{"email": ["a", "b"]}]}}, "allow.or[0].email", "write `in:"),
    ({"allow": {"or": [{"email": None}]}}, "allow.or[0].email.is", "got null"),
    ({"allow": {"or": [{"groups": ["a"]}]}}, "allow.or[0].groups", "one criterion per value"),
    (
        {"allow": {"or": [{"http_method": {"startswith": "G"}}]}},
        "allow.or[0].http_method.startswith",
        "did you mean 'starts_with'?",
    ),
    (
        {"allow": {"or": [{"source_ip": "10.0.0.300"}]}},
        "allow.or[0].source_ip",
        "not an IP address",
    ),
    (
        {"allow": {"or": [{"source_ip": ["10.0.0.0/8", 5]}]}},
        "allow.or[0].source_ip[1]",
        "expected an IP",
    ),
    (
        {"allow": {"or": [{"source_ip": ["10.0.0.0/8", "::ffff:10.0.0.0/80"]}]}},
        "allow.or[0].source_ip[1]",
        "needs a prefix of /96 or longer",
    ),
    ({"allow": {"and": [{"or": []}]}}, "allow.and[0].or", "empty `or` list"),
    ({"allow": {"and": [{"or": [{"nope": 1}]}]}}, "allow.and[0].or[0].nope", "unknown criterion"),
    (
        [{"allow": {"or": [{"accept": 1}]}}, {"deny": {"and": [{"http_method": {}}]}}],
        "[1].deny.and[0].http_method",
        "empty matcher",
    ),
    ({"allow": {"or": [{1: "x"}]}}, "allow.or[0]", "must be a string"),
]


@pytest.mark.parametrize(("data", "path", "message"), BAD, ids=[b[1] or "root" for b in BAD])
def test_errors_name_their_place(data: Any, path: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy.compile_policy(data)
    assert err.value.path == path
    assert message in err.value.message
    assert str(err.value) == (f"{path}: {err.value.message}" if path else err.value.message)


def test_issue_example_error_text() -> None:
    with pytest.raises(PolicyError) as err:
        policy.compile_policy(
            {"allow": {"or": [{"accept": 1}, {"accept": 1}, {"claim/groups": {"hass": "x"}}]}}
        )
    assert str(err.value).startswith("allow.or[2].claim/groups.hass: unknown list matcher 'hass'")


@pytest.mark.parametrize("empty", [None, [], {}, {"allow": {}}, {"allow": {"and": []}}])
def test_empty_policy_allows_nobody(empty: Any) -> None:
    d = policy.evaluate(policy.compile_policy(empty), _req(), user())
    assert not d.allowed
    assert d.reasons[0].code == "no-allow-rule"


def test_empty_operator_adds_nothing_next_to_others() -> None:
    assert allows({"allow": {"and": [], "or": [{"accept": True}]}})


def test_normalized_spells_out_bare_values() -> None:
    p = policy.compile_policy(
        [
            {
                "allow": {
                    "and": [{"email": "a@b.c"}, {"claim/groups": "x"}, {"or": [{"groups": "g"}]}]
                }
            },
            {"deny": {"not": [{"source_ip": "10.0.0.1"}], "or": [{"accept": False}]}},
        ]
    )
    assert p.normalized == [
        {
            "allow": {
                "and": [
                    {"email": {"is": "a@b.c"}},
                    {"claim/groups": {"has": "x"}},
                    {"or": [{"groups": {"has": "g"}}]},
                ]
            }
        },
        {"deny": {"not": [{"source_ip": ["10.0.0.1/32"]}], "or": [{"accept": True}]}},
    ]
    # The normalised form compiles to the same meaning.
    again = policy.compile_policy(p.normalized)
    assert again.normalized == p.normalized


def test_normalized_keeps_claim_value_types() -> None:
    """`vallum policy check` prints this: `true` and `"true"` must not become one value."""
    import yaml

    from vallum.core.policy import yamltext

    p = policy.compile_policy(
        {
            "allow": {
                "or": [
                    {"claim/email_verified": True},
                    {"claim/flag": "true"},
                    {"claim/level": 3},
                    {"claim/ratio": 0.5},
                    {"claim/code": "3"},
                    {"claim/org.team": {"is": False, "exclude": "false"}},
                ]
            }
        }
    )
    want = {
        "allow": {
            "or": [
                {"claim/email_verified": {"has": True}},
                {"claim/flag": {"has": "true"}},
                {"claim/level": {"has": 3}},
                {"claim/ratio": {"has": 0.5}},
                {"claim/code": {"has": "3"}},
                {"claim/org.team": {"is": False, "exclude": "false"}},
            ]
        }
    }
    assert p.normalized == [want]
    leaves = [next(iter(c.values())) for c in p.normalized[0]["allow"]["or"]]
    assert [type(v["has"]) for v in leaves[:5]] == [bool, str, int, float, str]
    # Printed as YAML and read back (what `policy check` shows), the types survive.
    assert yamltext.load(yaml.safe_dump(p.normalized, sort_keys=False)) == [want]


def test_normalized_source_ip_shows_mapped_addresses_as_ipv4() -> None:
    p = policy.compile_policy(
        {"allow": {"or": [{"source_ip": ["::ffff:10.0.0.0/104", "::ffff:1.2.3.4", "::/0"]}]}}
    )
    assert p.normalized == [
        {"allow": {"or": [{"source_ip": ["10.0.0.0/8", "1.2.3.4/32", "::/0"]}]}}
    ]


def test_yaml_and_json_give_the_same_policy() -> None:
    import json

    import yaml

    text_yaml = "allow:\n  and:\n    - domain:\n        is: example.com\n"
    text_json = json.dumps({"allow": {"and": [{"domain": {"is": "example.com"}}]}})
    a = policy.compile_policy(yaml.safe_load(text_yaml))
    b = policy.compile_policy(json.loads(text_json))
    assert a.normalized == b.normalized


def _req() -> Any:
    from tests.core.policy.support import request

    return request()
