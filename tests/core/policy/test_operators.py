"""Property-based tests of the operators and of how rules combine.

Conditions are drawn from criteria whose truth the test controls through the request: an
``http_method`` criterion holds exactly when the request's method is that one letter.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.policy.support import allows, decide, request, user

LETTERS = "ABCDEFGH"


def cond(letter: str) -> dict[str, Any]:
    return {"http_path": {"contains": letter}}


def holds(letter: str, path: str) -> bool:
    return letter in path


letters = st.lists(st.sampled_from(LETTERS), min_size=1, max_size=5)
paths = st.text(alphabet=LETTERS, max_size=6).map(lambda s: "/" + s)


@given(letters, paths)
def test_and(items: list[str], path: str) -> None:
    data = {"allow": {"and": [cond(x) for x in items]}}
    assert allows(data, request(path=path)) is all(holds(x, path) for x in items)


@given(letters, paths)
def test_or(items: list[str], path: str) -> None:
    data = {"allow": {"or": [cond(x) for x in items]}}
    assert allows(data, request(path=path)) is any(holds(x, path) for x in items)


@given(letters, paths)
def test_not_is_none_of(items: list[str], path: str) -> None:
    data = {"allow": {"not": [cond(x) for x in items]}}
    assert allows(data, request(path=path)) is (not any(holds(x, path) for x in items))


@given(letters, paths)
def test_nor_is_not_all_of(items: list[str], path: str) -> None:
    """Pomerium's ``nor`` is NAND (``generator/conditionals.go``: NOT A OR NOT B)."""
    data = {"allow": {"nor": [cond(x) for x in items]}}
    assert allows(data, request(path=path)) is (not all(holds(x, path) for x in items))


@given(st.dictionaries(st.sampled_from(["and", "or", "not", "nor"]), letters, min_size=1), paths)
def test_several_operators_in_one_rule_combine_with_or(
    ops: dict[str, list[str]], path: str
) -> None:
    def value(op: str, items: list[str]) -> bool:
        truths = [holds(x, path) for x in items]
        return {
            "and": all(truths),
            "or": any(truths),
            "not": not any(truths),
            "nor": not all(truths),
        }[op]

    data = {"allow": {op: [cond(x) for x in items] for op, items in ops.items()}}
    assert allows(data, request(path=path)) is any(value(op, items) for op, items in ops.items())


@given(letters, letters, paths)
def test_deny_wins(allow_items: list[str], deny_items: list[str], path: str) -> None:
    data = [
        {"allow": {"or": [cond(x) for x in allow_items]}},
        {"deny": {"or": [cond(x) for x in deny_items]}},
    ]
    allowed = any(holds(x, path) for x in allow_items)
    denied = any(holds(x, path) for x in deny_items)
    d = decide(data, request(path=path))
    assert d.allowed is (allowed and not denied)
    if denied:
        assert d.reasons[0].code == "deny-rule"


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    if depth >= 3 or draw(st.booleans()):
        return cond(draw(st.sampled_from(LETTERS)))
    op = draw(st.sampled_from(["and", "or", "not", "nor"]))
    children = draw(st.lists(trees(depth + 1), min_size=1, max_size=3))
    return {op: children}


def truth(tree: dict[str, Any], path: str) -> bool:
    ((key, value),) = tree.items()
    if key == "http_path":
        return holds(value["contains"], path)
    values = [truth(child, path) for child in value]
    return {"and": all(values), "or": any(values), "not": not any(values), "nor": not all(values)}[
        key
    ]


@settings(max_examples=200)
@given(trees(), paths)
def test_nested_operators(tree: dict[str, Any], path: str) -> None:
    assert allows({"allow": {"and": [tree]}}, request(path=path)) is truth(tree, path)


@settings(max_examples=200)
@given(trees(), paths)
def test_anonymous_never_gains_from_negating_a_user_criterion(
    tree: dict[str, Any], path: str
) -> None:
    """Replace some conditions by a user criterion: for an anonymous request, the result is never
    more permissive than with the criterion false *and* than with it true (Kleene logic)."""

    def swap(t: dict[str, Any]) -> dict[str, Any]:
        ((key, value),) = t.items()
        if key == "http_path":
            return {"email": "x@y.z"} if value["contains"] in "AB" else t
        return {key: [swap(c) for c in value]}

    swapped = {"allow": {"and": [swap(tree)]}}
    anonymous = decide(swapped, request(path=path), None)
    as_x = decide(swapped, request(path=path), user(email="x@y.z")).allowed
    as_other = decide(swapped, request(path=path), user(email="o@y.z")).allowed
    if anonymous.allowed:
        assert as_x and as_other  # only when the user criterion does not matter
    if not anonymous.allowed and as_x != as_other:
        assert anonymous.needs_login  # the outcome hinges on who it is: sign in
