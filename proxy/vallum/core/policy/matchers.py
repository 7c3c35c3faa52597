"""Pomerium's matchers, compiled to plain predicates: string, string list, and value helpers.

A *string matcher* tests one string (an email, a method, a path). Written as an object of
operators, all of which must hold; a bare scalar means ``is``:

    is, not          equal / not equal
    starts_with, ends_with, contains
    in, not_in       member / not a member of a list

A *string list matcher* tests a list of strings (groups, a claim's values). A bare scalar
means ``has``:

    has              the list contains the value
    is               the list is exactly that one value
    exclude          the list does not contain the value

Comparison is exact and case-sensitive. Policy values may be strings, numbers or booleans; they
are compared in a canonical text form (``true``, ``42``), and so are claim values, which lets
``claim/email_verified: true`` match a JSON ``true`` claim. Unlike Pomerium, an empty matcher
object (``email: {}``) and a bare list (``email: [a, b]``) are errors, not silently
always-true / never-true conditions.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from vallum.core.errors import PolicyError

StringTest = Callable[[str], bool]
ListTest = Callable[[Collection[str]], bool]

STRING_OPERATORS = ("is", "not", "starts_with", "ends_with", "contains", "in", "not_in")
LIST_OPERATORS = ("has", "is", "exclude")


def canonical(value: object) -> str | None:
    """A scalar's canonical text (``True`` -> ``true``, ``2.0`` -> ``2``); else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def canonical_list(values: Iterable[object]) -> tuple[str, ...]:
    """The canonical texts of the scalar items of ``values`` (other items are skipped)."""
    out: list[str] = []
    for value in values:
        text = canonical(value)
        if text is not None:
            out.append(text)
    return tuple(out)


_PLAIN = re.compile(r"^[\w@.\-/:+*]+$")


def show(value: object) -> str:
    """Render a value for a message: plain when unambiguous, JSON otherwise."""
    if isinstance(value, str) and _PLAIN.match(value):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """A compiled string matcher: ``test(text)``, its description and its normalised form."""

    test: StringTest
    description: str
    normalized: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ListMatcher:
    """A compiled string list matcher: ``test(values)``, description, normalised form."""

    test: ListTest
    description: str
    normalized: dict[str, Any]


def scalar(value: object, path: str) -> str:
    """A policy value that must be a string, number or boolean, as canonical text."""
    text = canonical(value)
    if text is None:
        raise PolicyError(path, f"expected a string, number or boolean, got {describe(value)}")
    return text


def scalar_list(value: object, path: str) -> tuple[str, ...]:
    """A policy value that must be a list of scalars (or one scalar)."""
    if not isinstance(value, list):
        return (scalar(value, path),)
    if not value:
        raise PolicyError(path, "expected a non-empty list")
    return tuple(scalar(item, f"{path}[{i}]") for i, item in enumerate(value))


def describe(value: object) -> str:
    """How an error message names a value of the wrong type (``got a list``, ``got int 3``)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def hint(word: object, known: tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else the list of what is known."""
    close = difflib.get_close_matches(str(word), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(known)})"


def _unknown(kind: str, op: object, known: tuple[str, ...], path: str) -> PolicyError:
    return PolicyError(path, f"unknown {kind} matcher '{op}'{hint(op, known)}")


def _string_op(op: str, value: object, path: str) -> tuple[StringTest, Any]:
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise PolicyError(path, f"'{op}' takes a list of strings, got {describe(value)}")
        members = frozenset(scalar_list(value, path))
        normalized: Any = sorted(members)
        if op == "in":
            return members.__contains__, normalized
        return (lambda text: text not in members), normalized
    text = scalar(value, path)
    if op == "is":
        return text.__eq__, text
    if op == "not":
        return text.__ne__, text
    if op == "starts_with":
        return (lambda s: s.startswith(text)), text
    if op == "ends_with":
        return (lambda s: s.endswith(text)), text
    return (lambda s: text in s), text  # contains


def string_matcher(data: object, path: str) -> StringMatcher:
    """Compile a string matcher (object of operators, or a bare scalar meaning ``is``)."""
    if isinstance(data, list):
        raise PolicyError(path, "a list is not a string matcher; write `in: [...]` to match any")
    ops: dict[str, Any] = data if isinstance(data, dict) else {"is": data}
    if not ops:
        raise PolicyError(
            path, "empty matcher: give at least one of " + ", ".join(STRING_OPERATORS)
        )
    tests: list[StringTest] = []
    parts: list[str] = []
    normalized: dict[str, Any] = {}
    for op, value in ops.items():
        if op not in STRING_OPERATORS:
            raise _unknown("string", op, STRING_OPERATORS, f"{path}.{op}")
        test, norm = _string_op(op, value, f"{path}.{op}")
        tests.append(test)
        normalized[op] = norm
        parts.append(f"{op} {show(norm)}")
    return StringMatcher(_all(tests), " and ".join(parts), normalized)


def _all(tests: list[StringTest]) -> StringTest:
    if len(tests) == 1:
        return tests[0]
    items = tuple(tests)
    return lambda text: all(t(text) for t in items)


def list_matcher(data: object, path: str) -> ListMatcher:
    """Compile a string list matcher (object of operators, or a bare scalar meaning ``has``)."""
    if isinstance(data, list):
        raise PolicyError(
            path, "a list is not a list matcher; write one criterion per value inside `or`"
        )
    ops: dict[str, Any] = data if isinstance(data, dict) else {"has": data}
    if not ops:
        raise PolicyError(path, "empty matcher: give at least one of " + ", ".join(LIST_OPERATORS))
    tests: list[ListTest] = []
    parts: list[str] = []
    normalized: dict[str, Any] = {}
    for op, value in ops.items():
        if op not in LIST_OPERATORS:
            raise _unknown("list", op, LIST_OPERATORS, f"{path}.{op}")
        text = scalar(value, f"{path}.{op}")
        normalized[op] = text
        parts.append(f"{op} {show(text)}")
        tests.append(_list_op(op, text))
    if len(tests) == 1:
        return ListMatcher(tests[0], parts[0], normalized)
    items = tuple(tests)
    return ListMatcher(lambda vs: all(t(vs) for t in items), " and ".join(parts), normalized)


def _list_op(op: str, text: str) -> ListTest:
    if op == "has":
        return lambda values: text in values
    if op == "is":
        return lambda values: len(values) == 1 and text in values
    return lambda values: text not in values  # exclude
