"""The standalone YAML config file -> :class:`~vallum.core.config.Settings`.

Why a package of its own: a config file is read by people, so every problem must name the key
and the line it is on (``routes.yaml:14: routes[2].timeout: expected a duration like "30s",
got "fast"``), and all problems are reported at once in one ``ConfigError``. That needs YAML
*nodes* (which carry line marks), not the plain dicts ``yaml.safe_load`` returns.

Keys and value forms are Pomerium's (see docs/configuration.md): Go durations or seconds, ``to``
as one URL or a list (``url,weight``), PEM material inline (raw or base64, Pomerium's form) or
from ``*_file`` (relative to the config file's folder, recorded in ``Settings.watched_files``).
Unknown keys are errors, with the nearest known key suggested. Nothing here prints or exits.

Public interface::

    settings = configfile.load(path)              # raises ConfigError listing every problem
    settings = configfile.loads(text, "x.yaml")   # the same for text

Inside: :mod:`.nodes` (YAML nodes with lines, the problem collector; every message bounded),
:mod:`.files` (bounded reads of regular files, permission checks), :mod:`.values` (one reader
per value form), :mod:`.routes` (route options) and :mod:`.settings` (global settings).
"""

from __future__ import annotations

import os
import re

from vallum.core import config, errors, routing
from vallum.core.configfile import files, nodes, settings
from vallum.core.configfile.routes import ROUTE_KEYS
from vallum.core.configfile.settings import SETTINGS_KEYS

__all__ = ["ROUTE_KEYS", "SETTINGS_KEYS", "load", "loads"]


def load(path: str, *, warnings: list[str] | None = None) -> config.Settings:
    """Read and validate the config file at ``path``; raise ``ConfigError`` with every problem.

    The file and every ``*_file`` it names are read as :mod:`.files` reads them (bounded,
    regular files, not writable by every user); what deserves a warning but not a refusal (a
    secret readable by every user) is appended to ``warnings``.
    """
    try:
        text, notes = files.read_text(path, "config")
    except files.FileProblem as exc:
        raise errors.ConfigError([f"{path}: cannot read config file: {exc.reason}"]) from None
    if warnings is not None:
        warnings.extend(f"{path}: {note}" for note in notes)
    return loads(
        text,
        path,
        base_dir=os.path.dirname(os.path.abspath(path)),
        file_path=os.path.abspath(path),
        warnings=warnings,
    )


def loads(
    text: str,
    source: str = "<config>",
    *,
    base_dir: str | None = None,
    file_path: str | None = None,
    warnings: list[str] | None = None,
) -> config.Settings:
    """Parse config ``text``; ``source`` names it in messages (a file name, ``<stdin>``).

    Relative ``*_file`` paths resolve against ``base_dir`` (default: the folder of ``source``
    if it is a path, else the current directory). Warnings are appended to ``warnings``.
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source)) if os.sep in source else os.getcwd()
    ctx = nodes.Context(source, base_dir)
    if file_path is not None:
        ctx.watched.append(file_path)
    root = nodes.parse_yaml(text, ctx)
    if root is None:
        raise errors.ConfigError(ctx.report(ctx.problems))
    if root.value is None or root.value == {}:
        ctx.problem(root.line, "", "the file is empty: expected settings and routes")
        raise errors.ConfigError(ctx.report(ctx.problems))
    result = settings.read_settings(ctx, root)
    if result is not None and not ctx.problems:
        try:
            routing.build_index(result)  # the same checks the proxy makes before serving
        except errors.ConfigError as exc:
            for problem in exc.problems:
                ctx.add(problem)
    if warnings is not None:
        warnings.extend(ctx.warnings)
    if ctx.problems or result is None:
        raise errors.ConfigError(ctx.report(sorted(ctx.problems, key=_line_of)))
    return result


def _line_of(problem: str) -> int:
    """The line a problem names (``file:12: ...``), to report problems in file order."""
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0
