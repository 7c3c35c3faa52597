"""The access log: one JSON object per request, one line each.

It sits on the hot path, so it avoids the logging framework entirely: one dict, one
``json.dumps``, one ``write`` on a buffered stream. A disabled log costs one attribute check.
Fields are stable names a log pipeline can index: ``time`` (ISO 8601, UTC, milliseconds),
``method``, ``host``, ``path``, ``status``, ``bytes``, ``duration_ms``, ``route``,
``request_id``, ``client_ip``, ``upstream`` and, when the request was authenticated, ``user``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO

_UTC = dt.UTC
_log = logging.getLogger("vallum.accesslog")


class AccessLog:
    """Writes access log lines to ``stream`` (stdout by default) unless disabled."""

    __slots__ = ("enabled", "stream")

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stdout
        self.enabled = enabled

    def write(
        self,
        *,
        method: str,
        host: str,
        path: str,
        status: int,
        bytes_sent: int,
        duration: float,
        route: str,
        request_id: str,
        client_ip: str,
        upstream: str,
        user: str | None = None,
    ) -> None:
        """Log one finished request; ``duration`` is in seconds."""
        if not self.enabled:
            return
        line = {
            "time": dt.datetime.now(_UTC).isoformat(timespec="milliseconds"),
            "method": method,
            "host": host,
            "path": path,
            "status": status,
            "bytes": bytes_sent,
            "duration_ms": round(duration * 1000.0, 3),
            "route": route,
            "request_id": request_id,
            "client_ip": client_ip,
            "upstream": upstream,
        }
        if user is not None:
            line["user"] = user
        try:
            self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        except (OSError, ValueError) as exc:
            # A closed or broken log stream must never fail a request; stop writing, say so once.
            self.enabled = False
            _log.error("access log disabled: cannot write", extra={"error": str(exc)})

    def flush(self) -> None:
        if self.enabled:
            self.stream.flush()
