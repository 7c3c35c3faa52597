"""Structured JSON log lines for Vallum's own messages (not the access log).

Operators feed these lines to a log pipeline, so every line is one JSON object on stderr with a
time, level, logger, message and the ``extra={...}`` fields a call site attached (for example
``{"event": "reload_failed", "problem": "routes.yaml:12: ..."}``). Tracebacks go into an
``exc`` field rather than across lines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, msg, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(level: str | int = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Send the ``vallum`` loggers' messages to ``stream`` (stderr) as JSON lines.

    ``level`` is a name (``"debug"``, ``"info"``, ...) or a number; an unknown name is a
    ``ValueError`` that names it. Calling it again replaces the handler it installed before.
    """
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise ValueError(f"log level: unknown level {level!r}")
        level = number
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("vallum-json")
    root = logging.getLogger("vallum")
    for old in list(root.handlers):
        if old.get_name() == "vallum-json":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Propagation stays on: the root logger has no handler in ``vallum serve`` (so nothing is
    # printed twice), and tools that capture logging (pytest's caplog) keep working.
    return handler
