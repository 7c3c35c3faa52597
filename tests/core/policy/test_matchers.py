"""The matchers on their own: every operator, bare values, canonical text."""

from __future__ import annotations

from typing import Any

import pytest

from vallum.core.errors import PolicyError
from vallum.core.policy import matchers

STRING = [
    ({"is": "abc"}, "abc", True),
    ({"is": "abc"}, "ABC", False),
    ("abc", "abc", True),  # bare value = is
    (42, "42", True),
    (True, "true", True),
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
    (1, ("1",), True),
]


@pytest.mark.parametrize(("data", "values", "expected"), LIST)
def test_list_matcher(data: Any, values: tuple[str, ...], expected: bool) -> None:
    assert matchers.list_matcher(data, "m").test(values) is expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x", "x"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (3.0, "3"),
        (2.5, "2.5"),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
        (float("nan"), None),
    ],
)
def test_canonical(value: object, text: str | None) -> None:
    assert matchers.canonical(value) == text


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
