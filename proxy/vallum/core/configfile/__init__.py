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

Inside: :mod:`.nodes` (YAML nodes with lines, the problem collector), :mod:`.values` (one reader
per value form), :mod:`.routes` (route options) and :mod:`.settings` (global settings).
"""

from __future__ import annotations

import os
import re

from vallum.core import config, errors, routing
from vallum.core.configfile import nodes, settings
from vallum.core.configfile.routes import ROUTE_KEYS
from vallum.core.configfile.settings import SETTINGS_KEYS

__all__ = ["ROUTE_KEYS", "SETTINGS_KEYS", "load", "loads"]


def load(path: str) -> config.Settings:
    """Read and validate the config file at ``path``; raise ``ConfigError`` with every problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise errors.ConfigError([f"{path}: cannot read config file: {reason}"]) from None
    return loads(
        text, path, base_dir=os.path.dirname(os.path.abspath(path)), file_path=os.path.abspath(path)
    )


def loads(
    text: str,
    source: str = "<config>",
    *,
    base_dir: str | None = None,
    file_path: str | None = None,
) -> config.Settings:
    """Parse config ``text``; ``source`` names it in messages (a file name, ``<stdin>``).

    Relative ``*_file`` paths resolve against ``base_dir`` (default: the folder of ``source``
    if it is a path, else the current directory).
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source)) if os.sep in source else os.getcwd()
    ctx = nodes.Context(source, base_dir)
    if file_path is not None:
        ctx.watched.append(file_path)
    root = nodes.parse_yaml(text, ctx)
    if root is None:
        raise errors.ConfigError(ctx.problems)
    if root.value is None or root.value == {}:
        ctx.problem(root.line, "", "the file is empty: expected settings and routes")
        raise errors.ConfigError(ctx.problems)
    result = settings.read_settings(ctx, root)
    if result is not None and not ctx.problems:
        try:
            routing.build_index(result)  # the same checks the proxy makes before serving
        except errors.ConfigError as exc:
            ctx.problems.extend(exc.problems)
    if ctx.problems or result is None:
        raise errors.ConfigError(sorted(ctx.problems, key=_line_of))
    return result


def _line_of(problem: str) -> int:
    """The line a problem names (``file:12: ...``), to report problems in file order."""
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0
