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

Reader = Callable[["Context", "Node", str], Any]


@dataclasses.dataclass(slots=True)
class Node:
    """A YAML value with its line: ``value`` is a dict of ``Node``, a list of ``Node`` or a
    scalar; ``key_lines`` holds each mapping key's own line."""

    value: Any
    line: int
    key_lines: dict[str, int] = dataclasses.field(default_factory=dict)

    def plain(self, budget: list[int] | None = None) -> Any:
        """The value as plain data (dicts, lists, scalars), for ``policy``. ``budget`` counts
        down the values still allowed (aliases can make a small file expand enormously)."""
        budget = [MAX_PLAIN_VALUES] if budget is None else budget
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_PLAIN_VALUES} values (through aliases?)")
        if isinstance(self.value, dict):
            return {k: v.plain(budget) for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain(budget) for v in self.value]
        return self.value


MAX_PLAIN_VALUES = 100_000


MISSING: Any = object()
"""Returned by a reader that recorded a problem; the key is then left at its default."""


class Context:
    """One load: where the file is, the problems found so far, the files read."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.watched: list[str] = []

    def problem(self, line: int, path: str, message: str) -> Any:
        where = f"{self.source}:{line}: "
        self.problems.append(f"{where}{path}: {message}" if path else f"{where}{message}")
        return MISSING

    def read_file(self, node: Node, path: str) -> str | None:
        """The text of the file named by ``node`` (relative to the config file's folder)."""
        if not isinstance(node.value, str) or not node.value.strip():
            self.problem(node.line, path, f"expected a file path, got {node.value!r}")
            return None
        name = os.path.expanduser(node.value.strip())
        full = os.path.normpath(os.path.join(self.base_dir, name))
        if full not in self.watched:
            self.watched.append(full)
        try:
            with open(full, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problem(node.line, path, f"cannot read {full}: {reason}")
            return None

    def section(self, node: Node, path: str, spec: dict[str, Reader]) -> dict[str, Any]:
        """Read a mapping whose keys must all be in ``spec``; returns the values read."""
        if not isinstance(node.value, dict):
            self.problem(node.line, path, f"expected a mapping, got {kind(node)}")
            return {}
        out: dict[str, Any] = {}
        for key, child in node.value.items():
            key_path = f"{path}.{key}" if path else key
            reader = spec.get(key)
            if reader is None:
                near = difflib.get_close_matches(key, list(spec), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.problem(node.key_lines.get(key, node.line), key_path, f"unknown key{hint}")
                continue
            value = reader(self, child, key_path)
            if value is not MISSING:
                out[key] = value
        return out


_Loader = yaml.SafeLoader | yaml.CSafeLoader
"""Safe YAML (no Python objects), libyaml's when installed: 10,000 routes compose in well under
a second with it, in about twenty seconds without."""


def _make_loader(text: str) -> _Loader:
    if yaml.__with_libyaml__:
        return yaml.CSafeLoader(text)
    return yaml.SafeLoader(text)  # pragma: no cover - PyYAML built without libyaml


def parse_yaml(text: str, ctx: Context) -> Node | None:
    """The document as a ``Node`` tree, or None (with a problem recorded) if it is not YAML."""
    loader: _Loader | None = None
    try:
        loader = _make_loader(text)
        document = loader.get_single_node()
        if document is None:
            return Node(None, 1)
        return _convert(document, loader, ctx, "", {})
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
    node: yaml.Node, loader: _Loader, ctx: Context, path: str, memo: dict[int, Node | None]
) -> Node:
    """Aliases share one converted ``Node`` (``memo``), so nested aliases stay linear in size;
    an alias inside its own anchor is refused rather than followed forever."""
    line = node.start_mark.line + 1
    if id(node) in memo:
        done = memo[id(node)]
        if done is None:
            ctx.problem(line, path, "an alias refers to the value that contains it")
            return Node(None, line)
        return done
    memo[id(node)] = None
    converted = _convert_new(node, loader, ctx, path, memo)
    memo[id(node)] = converted
    return converted


def _convert_new(
    node: yaml.Node, loader: _Loader, ctx: Context, path: str, memo: dict[int, Node | None]
) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = Node({}, line)
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
                continue
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                ctx.problem(key_line, path, f"keys must be strings, got {key!r}")
                continue
            key_path = f"{path}.{key}" if path else key
            if key in out.key_lines:
                ctx.problem(
                    key_line, key_path, f"duplicate key (first on line {out.key_lines[key]})"
                )
                continue
            out.key_lines[key] = key_line
            out.value[key] = _convert(value_node, loader, ctx, key_path, memo)
        for value_node in merges:  # keys written out beside ``<<`` win over merged ones
            _merge(out, _convert(value_node, loader, ctx, path, memo), ctx, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return Node(
            [_convert(v, loader, ctx, f"{path}[{i}]", memo) for i, v in enumerate(node.value)], line
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
    return repr(value)


def either(ctx: Context, node: Node, path: str, got: dict[str, Any], a: str, b: str) -> Any:
    """The value of inline key ``a`` or file key ``b`` (at most one may be set)."""
    if a in got and b in got:
        line = node.key_lines.get(b, node.line)
        return ctx.problem(line, f"{path}{b}", f"set {a} or {b}, not both")
    return got.get(a, got.get(b))
