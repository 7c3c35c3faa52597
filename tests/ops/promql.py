"""Just enough PromQL reading for the dashboard and alert tests: which metric names and label
names an expression uses, and whether its brackets, strings and function names are sound.

Not a PromQL parser (no Python one is packaged, and promtool is not on these machines); it
tokenises, so a misspelt metric name, a label a metric does not have, an unknown function or an
unbalanced bracket are caught, while operator precedence and types are not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FUNCTIONS = frozenset({
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "histogram_count", "histogram_sum", "histogram_fraction",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar",
    "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time",
})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
PAIRS = {"(": ")", "[": "]", "{": "}"}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+|(?:ms|[smhdwy])+)?)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
      | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){}\[\],:])
    )""",
    re.VERBOSE,
)


@dataclass
class Uses:
    """What one expression refers to."""

    metrics: set[str] = field(default_factory=set)
    selector_labels: dict[str, set[str]] = field(default_factory=dict)
    """Label names matched in each metric's ``{...}``."""
    grouping_labels: set[str] = field(default_factory=set)
    """Label names in ``by``/``without``/``on``/``ignoring``/``group_*`` lists."""


class PromQLError(ValueError):
    pass


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = expr.rstrip()
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None or found.end() == pos:
            raise PromQLError(f"cannot read {text[pos:pos + 20]!r} in {expr!r}")
        kind = found.lastgroup
        assert kind is not None
        out.append((kind, found.group(kind)))
        pos = found.end()
    return out


def uses(expr: str) -> Uses:
    """The metric and label names ``expr`` uses; raises :class:`PromQLError` when it is not
    sound (see the module doc)."""
    found = Uses()
    toks = tokens(expr)
    stack: list[str] = []
    i = 0
    while i < len(toks):
        kind, value = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and value == "{":
            raise PromQLError(f"a selector without a metric name in {expr!r}")
        if value in PAIRS and kind == "op":
            if value == "[":  # a range or subquery: [5m], [$__rate_interval], [1h:5m]
                end = _closing(toks, i, "[", "]", expr)
                i = end + 1
                continue
            stack.append(PAIRS[value])
        elif kind == "op" and value in (")", "]", "}"):
            if not stack or stack.pop() != value:
                raise PromQLError(f"unbalanced {value!r} in {expr!r}")
        elif kind == "ident" and value in ("group_left", "group_right") and nxt != "(":
            pass  # no extra labels
        elif kind == "ident" and value in GROUPING:
            if nxt != "(":
                raise PromQLError(f"{value} without a label list in {expr!r}")
            end = _closing(toks, i + 1, "(", ")", expr)
            for k, v in toks[i + 2:end]:
                if k == "ident":
                    found.grouping_labels.add(v)
                elif v != ",":
                    raise PromQLError(f"unexpected {v!r} in {value}(...) of {expr!r}")
            i = end + 1
            continue
        elif kind == "ident" and value in FUNCTIONS and nxt in GROUPING:
            pass  # an aggregation with its grouping first: sum by (le) (...)
        elif kind == "ident" and nxt == "(":
            if value not in FUNCTIONS:
                raise PromQLError(f"unknown function {value!r} in {expr!r}")
        elif kind == "ident" and value in KEYWORDS:
            pass
        elif kind == "ident":
            found.metrics.add(value)
            labels = found.selector_labels.setdefault(value, set())
            if nxt == "{":
                end = _closing(toks, i + 1, "{", "}", expr)
                body = toks[i + 2:end]
                for j, (k, v) in enumerate(body):
                    if k == "ident" and j + 1 < len(body) and body[j + 1][1] in (
                            "=", "!=", "=~", "!~"):
                        labels.add(v)
                i = end + 1
                continue
        i += 1
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r} in {expr!r}")
    return found


def _closing(toks: list[tuple[str, str]], start: int, open_: str, close: str, expr: str) -> int:
    depth = 0
    for j in range(start, len(toks)):
        if toks[j] == ("op", open_):
            depth += 1
        elif toks[j] == ("op", close):
            depth -= 1
            if depth == 0:
                return j
    raise PromQLError(f"unclosed {open_!r} in {expr!r}")
