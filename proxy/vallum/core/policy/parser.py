"""The policy language: Pomerium Policy Language (PPL), parsed from YAML/JSON data.

This docstring is the specification; ``docs/policy.md`` explains each criterion with examples.

Document
    A policy is one *rule* (a mapping) or a list of rules. ``null`` or ``[]`` is the empty
    policy, which allows nobody.

Rule
    A mapping whose keys are *actions*, ``allow`` and/or ``deny``. Each action maps to a
    mapping of *operators* (``and``, ``or``, ``not``, ``nor``), each holding a list of
    *conditions*. Several operators in one action are combined with ``or``.

Decision
    A request is allowed when some allow block holds and no deny block holds: deny wins. With
    no allow block at all nobody is allowed.

Operators
    ``and``: every condition holds. ``or``: at least one holds. ``not``: none of them holds
    (NOT a AND NOT b). ``nor``: not all of them hold (NOT a OR NOT b) — Pomerium's definitions,
    which swap the textbook NOR/NAND. An empty top-level operator list adds nothing (so
    ``allow: {and: []}`` alone allows nobody); an empty nested one is an error.

Condition
    A mapping with exactly one key: a *criterion* (``email: ...``, ``claim/groups: ...``) or,
    as a Vallum extension, a nested operator (``or: [...]``) so conditions can be grouped.
    A criterion key is ``name`` or ``name/sub-path`` split at the first ``/`` (only ``claim``
    takes a sub-path: ``claim/example.com/role`` is the claim ``example.com/role``).

Criteria (see :mod:`vallum.core.policy.criteria` — one module each, its docstring exact):
    ``accept`` ``reject`` ``authenticated_user`` ``email`` ``domain`` ``user`` ``groups``
    ``claim/<name>`` ``http_method`` ``http_path`` ``client_certificate``
    ``invalid_client_certificate`` ``date`` ``day_of_week`` ``time_of_day``
    ``cors_preflight`` ``source_ip``.

Matchers (see :mod:`vallum.core.policy.matchers`)
    string: ``is`` ``not`` ``starts_with`` ``ends_with`` ``contains`` ``in`` ``not_in``
    (a bare value means ``is``); string list: ``has`` ``is`` ``exclude`` (a bare value means
    ``has``); several operators in one matcher must all hold.

Anonymous requests
    A criterion about the user (``authenticated_user`` ``email`` ``domain`` ``user``
    ``groups`` ``claim``) is *unauthenticated* for an anonymous request: never true, and
    ``not``/``nor``/``exclude`` do not make it true. If the decision depends on it, the answer
    is "sign in" (``Decision.needs_login``); ``or: [{accept: true}, {email: x}]`` still admits
    everyone. (Pomerium reads empty values there; see :mod:`vallum.core.policy.logic`.)

Errors
    Anything else is a ``PolicyError`` naming its place: ``allow.or[2].claim/groups: unknown
    list matcher 'hass' (did you mean 'has'?)``. For a list policy the place starts with the
    rule's index: ``[1].deny.and[0].http_method``.

This module checks the structure and resolves criterion names; each criterion checks its own
value when the policy is compiled (:mod:`vallum.core.policy.compiler`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vallum.core.errors import PolicyError
from vallum.core.policy import matchers
from vallum.core.policy.criteria import REGISTRY

ACTIONS = ("allow", "deny")
OPERATORS = ("and", "or", "not", "nor")


@dataclass(frozen=True, slots=True)
class CriterionExpr:
    """``key: data`` as written, with the key split into criterion name and sub-path."""

    key: str
    name: str
    sub_path: str
    data: Any
    path: str


@dataclass(frozen=True, slots=True)
class OperatorExpr:
    """``op: [conditions]``."""

    op: str
    items: tuple[CriterionExpr | OperatorExpr, ...]
    path: str


@dataclass(frozen=True, slots=True)
class RuleExpr:
    """One action of one rule: ``allow``/``deny`` and its operators; ``label`` names it in reasons
    ("allow rule 2", "allowed_users")."""

    action: str
    label: str
    operators: tuple[OperatorExpr, ...]
    path: str


def join(path: str, part: str) -> str:
    """``join("allow", "or")`` -> ``allow.or``; ``join("allow.or", "[2]")`` -> ``allow.or[2]``."""
    if not path:
        return part
    return path + part if part.startswith("[") else f"{path}.{part}"


def parse(data: Any, prefix: str = "") -> tuple[RuleExpr, ...]:
    """Parse a policy document (a rule, a list of rules, or ``None``) into rule expressions."""
    if data is None:
        return ()
    if isinstance(data, dict):
        return _rule(data, prefix, 1)
    if isinstance(data, list):
        rules: list[RuleExpr] = []
        for i, item in enumerate(data):
            where = join(prefix, f"[{i}]")
            if not isinstance(item, dict):
                raise PolicyError(
                    where, f"expected a rule (a mapping with allow/deny), got {_kind(item)}"
                )
            rules.extend(_rule(item, where, i + 1))
        return tuple(rules)
    raise PolicyError(prefix, f"expected a rule or a list of rules, got {_kind(data)}")


def _rule(data: dict[Any, Any], path: str, number: int) -> tuple[RuleExpr, ...]:
    out = []
    for action, body in data.items():
        where = join(path, str(action))
        if action not in ACTIONS:
            raise PolicyError(where, f"unknown action '{action}'{_hint(action, ACTIONS)}")
        if not isinstance(body, dict):
            raise PolicyError(
                where, f"expected a mapping of operators (and, or, not, nor), got {_kind(body)}"
            )
        operators = []
        for op, items in body.items():
            op_path = join(where, str(op))
            if op not in OPERATORS:
                raise PolicyError(op_path, f"unknown operator '{op}'{_hint(op, OPERATORS)}")
            operators.append(_operator(op, items, op_path, nested=False))
        out.append(RuleExpr(action, f"{action} rule {number}", tuple(operators), where))
    return tuple(out)


def _operator(op: str, items: Any, path: str, *, nested: bool) -> OperatorExpr:
    if not isinstance(items, list):
        raise PolicyError(path, f"expected a list of conditions, got {_kind(items)}")
    if nested and not items:
        raise PolicyError(path, f"empty `{op}` list")
    return OperatorExpr(
        op, tuple(_condition(item, join(path, f"[{i}]")) for i, item in enumerate(items)), path
    )


def _condition(item: Any, path: str) -> CriterionExpr | OperatorExpr:
    if not isinstance(item, dict) or len(item) != 1:
        raise PolicyError(
            path,
            "expected a condition: a mapping with exactly one criterion (e.g. `email: x`)"
            + (f", got {len(item)} keys" if isinstance(item, dict) else f", got {_kind(item)}"),
        )
    ((key, data),) = item.items()
    if not isinstance(key, str):
        raise PolicyError(path, f"a criterion name must be a string, got {key!r}")
    where = join(path, key)
    if key in OPERATORS:
        return _operator(key, data, where, nested=True)
    name, slash, sub_path = key.partition("/")
    criterion = REGISTRY.get(name)
    if criterion is None:
        raise PolicyError(where, f"unknown criterion '{name}'{_hint(name, tuple(REGISTRY))}")
    if slash and not criterion.sub_path:
        raise PolicyError(where, f"criterion '{name}' takes no sub-path ('{name}/...')")
    return CriterionExpr(key, name, sub_path, data, where)


_hint = matchers.hint
_kind = matchers.describe
