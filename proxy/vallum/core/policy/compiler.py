"""Compile parsed rules into closures, once, and keep what evaluation and explanations need.

The tree of conditions becomes nested closures returning three-valued results
(:mod:`vallum.core.policy.logic`). Each rule's operators become *blocks*; a top-level ``or`` is
split into one block per condition (OR of ORs is the same OR), so the allow path can name the
exact condition that let a request in without any work at request time: every block carries a
prebuilt ``Decision`` for "this block matched".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vallum.core.errors import PolicyError
from vallum.core.policy import logic, parser
from vallum.core.policy.criteria import REGISTRY, base
from vallum.core.policy.decision import Decision, Reason

_MAX_TEXT = 300


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled condition: a criterion (``leaf``) or an operator over ``children``."""

    op: str
    test: logic.Test
    path: str
    leaf: base.Leaf | None = None
    children: tuple[Node, ...] = ()

    def describe(self, nested: bool = False) -> str:
        if self.leaf is not None:
            return self.leaf.description
        inner = [c.describe(nested=True) for c in self.children]
        if self.op == "and":
            text = " and ".join(inner)
        elif self.op == "or":
            text = " or ".join(inner)
        elif self.op == "not":
            text = "none of (" + "; ".join(inner) + ")"
        else:
            text = "not all of (" + "; ".join(inner) + ")"
        return f"({text})" if nested and self.op in ("and", "or") and len(inner) > 1 else text

    def normalized(self) -> dict[str, Any]:
        if self.leaf is not None:
            return {self.leaf.key: self.leaf.normalized}
        return {self.op: [c.normalized() for c in self.children]}


@dataclass(frozen=True, slots=True)
class Block:
    """One top-level allow or deny block and the decision to return when it holds."""

    action: str
    label: str
    node: Node
    test: logic.Test
    hit: Decision


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy ready to evaluate. Build it with ``compile_policy`` / ``compile_route_policy``.

    ``fixed`` short-circuits evaluation (a public route, or a route whose policy failed to
    compile); ``error`` holds the ``PolicyError`` in the latter case; ``normalized`` is the
    policy in its expanded form (every bare value spelled out), as ``vallum policy check``
    prints it.
    """

    allow: tuple[Block, ...] = ()
    deny: tuple[Block, ...] = ()
    normalized: list[dict[str, Any]] = field(default_factory=list)
    fixed: Decision | None = None
    error: PolicyError | None = None
    is_public: bool = False


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def compile_node(expr: parser.CriterionExpr | parser.OperatorExpr, options: base.Options) -> Node:
    """Compile one condition (recursively for nested operators)."""
    if isinstance(expr, parser.OperatorExpr):
        children = tuple(compile_node(item, options) for item in expr.items)
        test = logic.OPERATORS[expr.op]([c.test for c in children])
        return Node(expr.op, test, expr.path, children=children)
    criterion = REGISTRY[expr.name]
    spec = base.Spec(expr.key, expr.name, expr.sub_path, expr.data, expr.path, options)
    leaf = criterion.build(spec)
    return Node("leaf", leaf.test, expr.path, leaf=leaf)


def _blocks(rule: parser.RuleExpr, options: base.Options) -> list[Block]:
    blocks = []
    for operator in rule.operators:
        if not operator.items:
            continue  # an empty top-level operator adds nothing (Pomerium)
        if operator.op == "or":
            nodes = [compile_node(item, options) for item in operator.items]
        else:
            nodes = [compile_node(operator, options)]
        for node in nodes:
            message = _shorten(f"{rule.label} matched: {node.describe()}")
            allowed = rule.action == "allow"
            code = "allow-rule" if allowed else _deny_code(node)
            hit = Decision(allowed, (Reason(code, message, node.path),))
            blocks.append(Block(rule.action, rule.label, node, node.test, hit))
    return blocks


def _deny_code(node: Node) -> str:
    """``deny-rule``; but a deny on ``invalid_client_certificate`` alone says so in its code
    (Pomerium's ``invalid-client-certificate``), so the proxy can answer as Pomerium does."""
    if node.leaf is not None and node.leaf.key == "invalid_client_certificate":
        return "invalid-client-certificate"
    return "deny-rule"


def _normalized(rule: parser.RuleExpr, options: base.Options) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for operator in rule.operators:
        body.setdefault(operator.op, []).extend(
            compile_node(item, options).normalized() for item in operator.items
        )
    return {rule.action: body}


_DEFAULT_OPTIONS = base.Options()


def compile_rules(
    rules: Sequence[parser.RuleExpr], options: base.Options = _DEFAULT_OPTIONS
) -> CompiledPolicy:
    """Compile parsed rules; raises ``PolicyError`` (with its place) on a bad criterion value."""
    allow: list[Block] = []
    deny: list[Block] = []
    for rule in rules:
        (allow if rule.action == "allow" else deny).extend(_blocks(rule, options))
    normalized = [_normalized(rule, options) for rule in rules]
    return CompiledPolicy(tuple(allow), tuple(deny), normalized)


def compile_policy(data: Any, *, client_ca: bool = False) -> CompiledPolicy:
    """Compile a policy given as YAML/JSON data. Raises ``PolicyError(path, message)``.

    ``client_ca``: a client CA is configured, so ``invalid_client_certificate`` also holds when
    no client certificate is presented.
    """
    return compile_rules(parser.parse(data), base.Options(client_ca=client_ca))
