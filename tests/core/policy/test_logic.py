"""Kleene's three-valued operators, exhaustively (T, F, and U = unauthenticated)."""

from __future__ import annotations

import itertools

import pytest

from vallum.core.policy import logic

T, F, U = logic.TRUE, logic.FALSE, logic.UNAUTH
VALUES = (T, F, U)


def const(value: int) -> logic.Test:
    return lambda subject: value


def kleene_and(values: tuple[int, ...]) -> int:
    if F in values:
        return F
    return U if U in values else T


def kleene_or(values: tuple[int, ...]) -> int:
    if T in values:
        return T
    return U if U in values else F


@pytest.mark.parametrize("size", [1, 2, 3])
def test_operators_match_kleene_logic(size: int) -> None:
    for values in itertools.product(VALUES, repeat=size):
        tests = [const(v) for v in values]
        negated = tuple(logic.negate(v) for v in values)
        assert logic.all_of(tests)(None) == kleene_and(values)  # type: ignore[arg-type]
        assert logic.any_of(tests)(None) == kleene_or(values)  # type: ignore[arg-type]
        assert logic.none_of(tests)(None) == kleene_and(negated)  # type: ignore[arg-type]
        assert logic.not_all_of(tests)(None) == kleene_or(negated)  # type: ignore[arg-type]


def test_negation_keeps_unauthenticated() -> None:
    assert (logic.negate(T), logic.negate(F), logic.negate(U)) == (F, T, U)
