"""The matchers on their own: every operator, bare values, typed comparison."""

from __future__ import annotations

from typing import Any

import pytest

from vallum.core.errors import PolicyError
from vallum.core.policy import matchers

STRING = [
    ({"is": "abc"}, "abc", True),
    ({"is": "abc"}, "ABC", False),
    ("abc", "abc", True),  # bare value = is
    ("42", "42", True),
    ("true", "true", True),
    ({"not": "abc"}, "abd", True),
    ({"not": "abc"}, "abc", False),
    ({"starts_with": "ab"}, "abc", True),
    ({"starts_with": "bc"}, "abc", False),
    ({"ends_with": "bc"}, "abc", True),
    ({"ends_with": "ab"}, "abc", False),
    ({"contains": "b"}, "abc", True),
    ({"contains": "d"}, "abc", False),
    ({"in": ["x", "abc"]}, "abc", True),
    ({"in": ["x"]}, "abc", False),
    ({"not_in": ["x"]}, "abc", True),
    ({"not_in": ["abc"]}, "abc", False),
    ({"starts_with": "a", "ends_with": "c"}, "abc", True),
    ({"starts_with": "a", "ends_with": "b"}, "abc", False),
    ({"is": ""}, "", True),
    ({"contains": ""}, "abc", True),
]


@pytest.mark.parametrize(("data", "text", "expected"), STRING)
def test_string_matcher(data: Any, text: str, expected: bool) -> None:
    assert matchers.string_matcher(data, "m").test(text) is expected


LIST = [
    ("a", ("a", "b"), True),  # bare value = has
    ({"has": "c"}, ("a", "b"), False),
    ({"has": "a"}, (), False),
    ({"is": "a"}, ("a",), True),
    ({"is": "a"}, ("a", "b"), False),
    ({"is": "a"}, ("a", "a"), False),  # exactly one value
    ({"exclude": "c"}, ("a", "b"), True),
    ({"exclude": "a"}, ("a", "b"), False),
    ({"exclude": "a"}, (), True),
    ({"has": "a", "exclude": "b"}, ("a", "b"), False),
    ("1", ("1",), True),
    ("1", (1,), False),  # groups: a number in the list never equals a string
]


@pytest.mark.parametrize(("data", "values", "expected"), LIST)
def test_list_matcher(data: Any, values: tuple[str, ...], expected: bool) -> None:
    assert matchers.list_matcher(data, "m").test(values) is expected


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("x", "x", True),
        (True, True, True),
        (False, False, True),
        (3, 3.0, True),  # numbers compare by value, as in rego
        (2.5, 2.5, True),
        (True, "true", False),
        (False, "false", False),
        (3, "3", False),
        (3.0, "3", False),
        (True, 1, False),  # Python's True == 1 does not leak in
        (False, 0, False),
        (1, 1.5, False),
    ],
)
def test_json_key_is_typed_equality(a: object, b: object, equal: bool) -> None:
    ka, kb = matchers.json_key(a), matchers.json_key(b)
    assert (ka == kb) is equal
    assert (ka in {kb}) is equal  # and so are hashes


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, float("nan"), float("inf")])
def test_json_key_has_no_key_for_non_scalars(value: object) -> None:
    assert matchers.json_key(value) is None


TYPED = [
    (True, (matchers.json_key(True),), True),
    (True, ("true",), False),
    ("true", (matchers.json_key(True),), False),
    (3, (3,), True),
    (3, (matchers.json_key(3.0),), True),
    (3, ("3",), False),
    ("3", (3,), False),
    (1, (matchers.json_key(True),), False),
    ({"exclude": True}, ("true",), True),
    ({"is": False}, (matchers.json_key(False),), True),
]


@pytest.mark.parametrize(("data", "keys", "expected"), TYPED)
def test_typed_list_matcher(data: Any, keys: tuple[object, ...], expected: bool) -> None:
    assert matchers.list_matcher(data, "m", typed=True).test(keys) is expected


@pytest.mark.parametrize(
    "data", [42, True, 1.5, {"is": 42}, {"not": False}, {"in": ["a", 7]}, {"starts_with": 4}]
)
def test_string_matchers_refuse_numbers_and_booleans(data: Any) -> None:
    """Pomerium compiles them and they never match (a silent hole in a deny rule): an error."""
    with pytest.raises(PolicyError, match=r"expected a string, got .*write it in quotes"):
        matchers.string_matcher(data, "m")


@pytest.mark.parametrize("data", [42, True, {"has": 1}, {"exclude": False}])
def test_string_list_matchers_refuse_numbers_and_booleans(data: Any) -> None:
    with pytest.raises(PolicyError, match="expected a string"):
        matchers.list_matcher(data, "m")


def test_typed_values_keep_their_type_in_the_normalised_form_and_text() -> None:
    m = matchers.list_matcher({"has": True, "exclude": "true", "is": 3}, "m", typed=True)
    assert m.normalized == {"has": True, "exclude": "true", "is": 3}
    assert type(m.normalized["has"]) is bool and type(m.normalized["is"]) is int
    assert m.description == 'has true and exclude "true" and is 3'


def test_normalized_and_description() -> None:
    m = matchers.string_matcher({"in": ["b", "a"], "starts_with": "x y"}, "m")
    assert m.normalized == {"in": ["a", "b"], "starts_with": "x y"}
    assert m.description == 'in ["a", "b"] and starts_with "x y"'


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"hass": "a"}, "did you mean 'has'"),
        ({}, "empty matcher"),
        (["a"], "one criterion"),
        ({"has": None}, "got null"),
        ({"contains": "a"}, "unknown list matcher 'contains'"),
    ],
)
def test_list_matcher_errors(data: Any, fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        matchers.list_matcher(data, "m")
