"""YAML nodes that remember their line, and the context that collects problems while reading.

Why a module of its own: every reader reports through :class:`Context` (``file:line: key.path:
message``) and reads :class:`Node` values; keeping the YAML handling here means the readers never
see PyYAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from typing import Any

import yaml

from vallum.core.configfile import files
from vallum.core.policy import yamltext

Reader = Callable[["Context", "Node", str], Any]


@dataclasses.dataclass(slots=True)
class Node:
    """A YAML value with its line: ``value`` is a dict of ``Node``, a list of ``Node`` or a
    scalar; ``key_lines`` holds each mapping key's own line."""

    value: Any
    line: int
    key_lines: dict[str, int] = dataclasses.field(default_factory=dict)

    def plain(self, budget: list[int] | None = None, depth: int = 0) -> Any:
        """The value as plain data (dicts, lists, scalars), for ``policy``. ``budget`` counts
        down the values still allowed (aliases can make a small file expand enormously), and
        aliases can nest deeper than the file does, so the depth is bounded here too."""
        budget = [MAX_PLAIN_VALUES] if budget is None else budget
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_PLAIN_VALUES} values (through aliases?)")
        if depth > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep (through aliases?)")
        if isinstance(self.value, dict):
            return {k: v.plain(budget, depth + 1) for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain(budget, depth + 1) for v in self.value]
        return self.value


MAX_PLAIN_VALUES = 100_000


MISSING: Any = object()
"""Returned by a reader that recorded a problem; the key is then left at its default."""

MAX_SHOWN = 80
"""Characters of a value or key quoted in a message; longer ones end in an ellipsis."""
MAX_PATH = 200
"""Characters of a key path (``routes[3].policy...``) in a message."""
MAX_MESSAGE = 1000
"""Characters of one problem's text after its place."""
MAX_PROBLEMS = 100
"""Problems listed for one file; the rest are counted in one last line."""
MAX_DEPTH = 64
"""Mappings and lists nested deeper are refused (a policy needs a dozen levels at most); the
readers and the policy compiler recurse, and Python's stack would run out first."""


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages.

    Strings are cut *before* ``repr`` and containers are never rendered in full, so the cost is
    bounded too: a value reached through aliases can be enormous (YAML's "billion laughs")."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    return shorten(repr(value), limit)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_path(path: str, key: str) -> str:
    """``path.key`` for messages, with a long key (or path) cut short."""
    joined = f"{path}.{shorten(key, MAX_SHOWN)}" if path else shorten(key, MAX_SHOWN)
    return shorten(joined, MAX_PATH)


class Context:
    """One load: where the file is, the problems found so far, the files read."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.count = 0
        self.watched: list[str] = []
        self.warnings: list[str] = []

    def problem(self, line: int, path: str, message: str) -> Any:
        """Record a problem at ``line``; every problem's text is bounded, and so is the list
        (past :data:`MAX_PROBLEMS` only a count is kept, see :meth:`report`)."""
        where = f"{self.source}:{line}: "
        message = shorten(message, MAX_MESSAGE)
        path = shorten(path, MAX_PATH)
        return self.add(f"{where}{path}: {message}" if path else f"{where}{message}")

    def add(self, text: str) -> Any:
        """Record a problem already written out (one that another module found)."""
        self.count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(shorten(text, MAX_PATH + MAX_MESSAGE + len(self.source) + 10))
        return MISSING

    def report(self, problems: list[str]) -> list[str]:
        """``problems`` (already in order) with a last line counting those left out."""
        left = self.count - len(self.problems)
        if left <= 0:
            return problems
        return [*problems, f"{self.source}: … and {left} more problem{'s' if left > 1 else ''}"]

    def read_file(self, node: Node, path: str, file_kind: files.Kind) -> str | None:
        """The text of the file named by ``node`` (relative to the config file's folder), read
        as :func:`files.read_text` reads a ``file_kind`` file; warnings go to ``warnings``."""
        if not isinstance(node.value, str) or not node.value.strip():
            self.problem(node.line, path, f"expected a file path, got {kind(node)}")
            return None
        name = os.path.expanduser(node.value.strip())
        full = os.path.normpath(os.path.join(self.base_dir, name))
        if full not in self.watched:
            self.watched.append(full)
        try:
            text, warnings = files.read_text(full, file_kind)
        except files.FileProblem as exc:
            self.problem(node.line, path, str(exc))
            return None
        self.warnings.extend(f"{self.source}:{node.line}: {path}: {w}" for w in warnings)
        return text

    def section(self, node: Node, path: str, spec: dict[str, Reader]) -> dict[str, Any]:
        """Read a mapping whose keys must all be in ``spec``; returns the values read."""
        if not isinstance(node.value, dict):
            self.problem(node.line, path, f"expected a mapping, got {kind(node)}")
            return {}
        out: dict[str, Any] = {}
        for key, child in node.value.items():
            child_path = key_path(path, key)
            reader = spec.get(key)
            if reader is None:
                near = difflib.get_close_matches(key, list(spec), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.problem(node.key_lines.get(key, node.line), child_path, f"unknown key{hint}")
                continue
            value = reader(self, child, child_path)
            if value is not MISSING:
                out[key] = value
        return out


_Loader = yaml.SafeLoader | yaml.CSafeLoader
"""Safe YAML (no Python objects), libyaml's when installed: 10,000 routes compose in well under
a second with it, in about twenty seconds without. Read as Pomerium reads YAML (YAML 1.2 for
numbers): ``after: 8:00`` is the string ``"8:00"``, not 480 (:mod:`vallum.core.policy.yamltext`),
the same for every command that reads a file."""


def _make_loader(text: str) -> _Loader:
    if yamltext.CLoader is not None:
        return yamltext.CLoader(text)
    return yamltext.Loader(text)  # pragma: no cover - PyYAML built without libyaml


def parse_yaml(text: str, ctx: Context) -> Node | None:
    """The document as a ``Node`` tree, or None (with a problem recorded) if it is not YAML."""
    loader: _Loader | None = None
    try:
        loader = _make_loader(text)
        document = loader.get_single_node()
        if document is None:
            return Node(None, 1)
        return _convert(document, loader, ctx, "", {}, 0)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        ctx.problem(line, "", f"not valid YAML: {exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        ctx.problem(1, "", f"not valid YAML: {exc}")
        return None
    finally:
        if loader is not None:
            loader.dispose()


def _convert(
    node: yaml.Node,
    loader: _Loader,
    ctx: Context,
    path: str,
    memo: dict[int, Node | None],
    depth: int,
) -> Node:
    """Aliases share one converted ``Node`` (``memo``), so nested aliases stay linear in size;
    an alias inside its own anchor is refused rather than followed forever, and so is nesting
    deeper than :data:`MAX_DEPTH`."""
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        ctx.problem(line, path, f"nested more than {MAX_DEPTH} levels deep")
        return Node(None, line)
    if id(node) in memo:
        done = memo[id(node)]
        if done is None:
            ctx.problem(line, path, "an alias refers to the value that contains it")
            return Node(None, line)
        return done
    memo[id(node)] = None
    converted = _convert_new(node, loader, ctx, path, memo, depth)
    memo[id(node)] = converted
    return converted


def _convert_new(
    node: yaml.Node,
    loader: _Loader,
    ctx: Context,
    path: str,
    memo: dict[int, Node | None],
    depth: int,
) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = Node({}, line)
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
                continue
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):  # never built: an alias can make
                got = "a mapping" if isinstance(key_node, yaml.MappingNode) else "a list"
                ctx.problem(key_line, path, f"keys must be strings, got {got}")  # it enormous
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                ctx.problem(key_line, path, f"keys must be strings, got {shown(key)}")
                continue
            child_path = key_path(path, key)
            if key in out.key_lines:
                ctx.problem(
                    key_line, child_path, f"duplicate key (first on line {out.key_lines[key]})"
                )
                continue
            out.key_lines[key] = key_line
            out.value[key] = _convert(value_node, loader, ctx, child_path, memo, depth + 1)
        for value_node in merges:  # keys written out beside ``<<`` win over merged ones
            _merge(out, _convert(value_node, loader, ctx, path, memo, depth + 1), ctx, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return Node(
            [
                _convert(v, loader, ctx, shorten(f"{path}[{i}]", MAX_PATH), memo, depth + 1)
                for i, v in enumerate(node.value)
            ],
            line,
        )
    return Node(loader.construct_object(node, deep=True), line)


def _merge(out: Node, merged: Node, ctx: Context, path: str) -> None:
    """YAML merge keys (``<<: *defaults``): keys already set win."""
    sources = merged.value if isinstance(merged.value, list) else [merged]
    for source in sources:
        if not isinstance(source.value, dict):
            ctx.problem(source.line, path, "a merge key (<<) needs a mapping")
            continue
        for key, child in source.value.items():
            if key not in out.value:
                out.value[key] = child
                out.key_lines[key] = source.key_lines.get(key, source.line)


def kind(node: Node) -> str:
    value = node.value
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return shown(value)


def either(ctx: Context, node: Node, path: str, got: dict[str, Any], a: str, b: str) -> Any:
    """The value of inline key ``a`` or file key ``b`` (at most one may be set)."""
    if a in got and b in got:
        line = node.key_lines.get(b, node.line)
        return ctx.problem(line, f"{path}{b}", f"set {a} or {b}, not both")
    return got.get(a, got.get(b))
