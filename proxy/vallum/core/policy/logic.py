"""Three-valued logic for policy evaluation: true, false and "unauthenticated".

A criterion about the user (email, groups, claims, ...) cannot be decided for an anonymous
request. Pomerium reads empty values there, so ``email: {not: x}`` would match anonymous users; we
do not copy that. Such a criterion evaluates to ``UNAUTH``: unknown until the user signs in. The
operators combine the three values as Kleene's strong logic does, so ``UNAUTH`` never becomes
true through ``not``, ``nor`` or ``exclude``; it only stops mattering when the other operands
decide the result on their own (``or: [accept, {email: x}]`` is true for everyone).

Values are small ints so the compiled closures compare them cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vallum.core.policy.subject import Subject

FALSE = 0
TRUE = 1
UNAUTH = 2
"""Unknown because the request is anonymous and the criterion is about the user."""

Test = Callable[["Subject"], int]


def negate(value: int) -> int:
    """Kleene negation: true <-> false; unauthenticated stays unauthenticated."""
    if value == UNAUTH:
        return UNAUTH
    return FALSE if value == TRUE else TRUE


def all_of(tests: Sequence[Test]) -> Test:
    """``and``: true when every operand is true; false as soon as one is false."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests

        def test2(subject: Subject) -> int:
            a = first(subject)
            if a == FALSE:
                return FALSE
            b = second(subject)
            if b == FALSE:
                return FALSE
            return UNAUTH if UNAUTH in (a, b) else TRUE

        return test2
    items = tuple(tests)

    def test(subject: Subject) -> int:
        result = TRUE
        for item in items:
            value = item(subject)
            if value == FALSE:
                return FALSE
            if value == UNAUTH:
                result = UNAUTH
        return result

    return test


def any_of(tests: Sequence[Test]) -> Test:
    """``or``: true as soon as one operand is true; false when every operand is false."""
    if len(tests) == 1:
        return tests[0]
    items = tuple(tests)

    def test(subject: Subject) -> int:
        result = FALSE
        for item in items:
            value = item(subject)
            if value == TRUE:
                return TRUE
            if value == UNAUTH:
                result = UNAUTH
        return result

    return test


def none_of(tests: Sequence[Test]) -> Test:
    """``not``: none of the operands holds (the AND of their negations; Pomerium's ``not``)."""
    items = tuple(tests)

    def test(subject: Subject) -> int:
        result = TRUE
        for item in items:
            value = item(subject)
            if value == TRUE:
                return FALSE
            if value == UNAUTH:
                result = UNAUTH
        return result

    return test


def not_all_of(tests: Sequence[Test]) -> Test:
    """``nor``: not all operands hold (the OR of their negations; Pomerium's ``nor`` = NAND)."""
    items = tuple(tests)

    def test(subject: Subject) -> int:
        result = FALSE
        for item in items:
            value = item(subject)
            if value == FALSE:
                return TRUE
            if value == UNAUTH:
                result = UNAUTH
        return result

    return test


OPERATORS: dict[str, Callable[[Sequence[Test]], Test]] = {
    "and": all_of,
    "or": any_of,
    "not": none_of,
    "nor": not_all_of,
}
