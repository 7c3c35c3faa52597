"""Reading the docs' pages in tests: their tables and code blocks, and the scripts/ that make
them (scripts/ is not a package: a script is loaded from its file)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (once per test session)."""
    key = f"_vallum_scripts_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """``## heading`` (or deeper) -> the text under it, up to the next heading."""
    out: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        match = re.match(r"#{2,6} (.+)", line)
        if match:
            current = match.group(1).strip()
            out[current] = ""
        elif current:
            out[current] += line + "\n"
    return out


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``text``, cells stripped (``\\|`` kept as ``|``)."""
    rows: list[list[str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.match(r"^\|[-| :]+\|$", line):
            continue
        if i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            continue  # a header row
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def code_names(cell: str) -> list[str]:
    """The names in backticks in a table cell: ``"`a`, `b`"`` -> ``["a", "b"]``."""
    return re.findall(r"`([^`]+)`", cell)


def blocks(text: str, label: str) -> list[str]:
    """The fenced code blocks preceded (on the line before the fence) by ``<!-- label -->``."""
    pattern = re.compile(r"<!-- " + re.escape(label) + r" -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)
    return pattern.findall(text)
