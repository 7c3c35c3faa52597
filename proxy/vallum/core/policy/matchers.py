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

Comparison is exact and case-sensitive, and typed, as Pomerium's rego ``==`` is: for claims
(:func:`list_matcher` with ``typed=True``) a policy value may be a string, number or boolean and
equals a claim value of the same JSON type only: ``true`` is not ``"true"``, ``3`` is not ``"3"``
(``3`` is ``3.0``: numbers compare by value). Matchers on values that are always strings
(email, user id, domain, method, path, groups, certificate names) take strings only: a number or
boolean there could never match in Pomerium, silently, so here it is an error that says to quote
it. Unlike Pomerium, an empty matcher object (``email: {}``) and a bare list
(``email: [a, b]``) are errors, not silently always-true / never-true conditions.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, cast

from vallum.core.errors import PolicyError

StringTest = Callable[[str], bool]
ListTest = Callable[[Collection[object]], bool]

STRING_OPERATORS = ("is", "not", "starts_with", "ends_with", "contains", "in", "not_in")
LIST_OPERATORS = ("has", "is", "exclude")


class _JsonBool:
    """A JSON boolean as a comparison key: equal to itself only (Python's ``True == 1`` and
    ``hash(True) == hash(1)`` must not make ``true`` match the number ``1``)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


_TRUE = _JsonBool(True)
_FALSE = _JsonBool(False)


def json_key(value: object) -> object | None:
    """The key under which a JSON scalar compares, as rego's ``==`` compares it; else ``None``.

    A string is itself, a number its value (``3`` and ``3.0`` are one key), a boolean one of
    two markers equal to nothing else. ``null``, lists, objects, NaN and infinities have none.
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is int:
        return value
    if kind is float:
        number = cast(float, value)
        if number != number or number in (_INF, -_INF):
            return None
        return int(number) if number.is_integer() else number
    if isinstance(value, bool):  # subclasses: as their base type
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_key(float(value))
    return None


_INF = float("inf")


def json_keys(values: Iterable[object]) -> tuple[object, ...]:
    """The keys of the scalar items of ``values`` (other items are skipped)."""
    out: list[object] = []
    for value in values:
        key = json_key(value)
        if key is not None:
            out.append(key)
    return tuple(out)


_PLAIN = re.compile(r"^[\w@.\-/:+*]+$")


def show(value: object) -> str:
    """Render a value for a message: plain when unambiguous, JSON otherwise (so the string
    ``"true"`` and the boolean ``true`` read differently)."""
    if isinstance(value, str) and _PLAIN.match(value) and not _looks_typed(value):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _looks_typed(text: str) -> bool:
    """Whether ``text`` would read as a JSON number, boolean or null if shown unquoted."""
    if text in ("true", "false", "null"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


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


def string(value: object, path: str) -> str:
    """A policy value compared with a value that is always a string: it must be a string."""
    if isinstance(value, str):
        return value
    if json_key(value) is not None:
        shown = json.dumps(value)
        raise PolicyError(
            path,
            f"expected a string, got {describe(value)}: it would never equal a string; "
            f'write it in quotes ("{shown}") to compare the text',
        )
    raise PolicyError(path, f"expected a string, got {describe(value)}")


def json_scalar(value: object, path: str) -> object:
    """A policy value compared with a claim value: a string, number or boolean, as written."""
    if json_key(value) is None:
        raise PolicyError(path, f"expected a string, number or boolean, got {describe(value)}")
    return value


def string_list(value: object, path: str) -> tuple[str, ...]:
    """A policy value that must be a non-empty list of strings (for ``in`` / ``not_in``)."""
    if not isinstance(value, list):
        return (string(value, path),)
    if not value:
        raise PolicyError(path, "expected a non-empty list")
    return tuple(string(item, f"{path}[{i}]") for i, item in enumerate(value))


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
        members = frozenset(string_list(value, path))
        normalized: Any = sorted(members)
        if op == "in":
            return members.__contains__, normalized
        return (lambda text: text not in members), normalized
    text = string(value, path)
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


def list_matcher(data: object, path: str, *, typed: bool = False) -> ListMatcher:
    """Compile a list matcher (object of operators, or a bare scalar meaning ``has``).

    ``typed`` (claims): values are JSON scalars compared by type and value, and ``test`` takes
    the values' :func:`json_key` keys. Otherwise (groups): values are strings, ``test`` takes
    the strings.
    """
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
        where = f"{path}.{op}"
        written = json_scalar(value, where) if typed else string(value, where)
        normalized[op] = written
        parts.append(f"{op} {show(written)}")
        tests.append(_list_op(op, json_key(written) if typed else written))
    if len(tests) == 1:
        return ListMatcher(tests[0], parts[0], normalized)
    items = tuple(tests)
    return ListMatcher(lambda vs: all(t(vs) for t in items), " and ".join(parts), normalized)


def _list_op(op: str, key: object) -> ListTest:
    if op == "has":
        return lambda values: key in values
    if op == "is":
        return lambda values: len(values) == 1 and key in values
    return lambda values: key not in values  # exclude
