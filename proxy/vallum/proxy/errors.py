"""The one error page Vallum renders itself: HTML for browsers, JSON for API clients.

Every response Vallum makes on its own (400 bad request, 403 denied, 404 no route, 502 upstream
unreachable, 503 unavailable, 504 upstream timeout, ...) goes through :func:`page`, so they all
look the same and all carry the request id -- in the body and in an ``X-Request-Id`` header -- which
is also the id in the access log line, so a user's screenshot leads straight to the log.

Request ids are a per-process random prefix plus a counter: unique, cheap, and not guessable
across processes.
"""

from __future__ import annotations

import html
import itertools
import json
import os
from dataclasses import dataclass
from http import HTTPStatus

_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A request id unique within this process and very likely across processes."""
    return f"{_PREFIX}{next(_COUNTER):08x}"


def reset_after_fork() -> None:
    """Give a forked worker its own id prefix (ids must not repeat across workers)."""
    global _PREFIX, _COUNTER
    _PREFIX = os.urandom(6).hex()
    _COUNTER = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """A rendered error response: status, headers (with content type and request id), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


EXTRA_PHRASES = {
    495: "SSL Certificate Error",  # nginx's and Pomerium's: an invalid client certificate
    496: "SSL Certificate Required",  # nginx's: no client certificate where one is required
    499: "Client Closed Request",  # nginx's: only ever in the access log, never sent
}
"""Non-IANA statuses Vallum answers with, under the names nginx (and Pomerium) give them."""


def reason(status: int) -> str:
    """The reason phrase for ``status``: IANA's (``421 Misdirected Request``, ``431 Request
    Header Fields Too Large``, ...), nginx's for 495/496, ``"Unknown"`` for anything else."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return EXTRA_PHRASES.get(status, "Unknown")


def wants_json(accept: str | None) -> bool:
    """True when the ``Accept`` header prefers ``application/json`` over ``text/html``.

    Browsers send ``text/html`` first with q=1; API clients send ``application/json`` or
    ``*/*`` (curl). ``*/*`` alone gets HTML, like Pomerium's error page.
    """
    if not accept or "json" not in accept:
        return False
    best_json = best_html = -1.0
    for item in accept.split(","):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "application/json" or media.endswith("+json"):
            best_json = max(best_json, q)
        elif media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
    return best_json > 0 and best_json >= best_html


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {reason}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
color:#222}}h1{{font-size:1.6rem}}code{{background:#f2f2f2;padding:.1rem .3rem}}
footer{{margin-top:2rem;color:#777;font-size:.85rem}}</style></head>
<body><h1>{status} {reason}</h1><p>{message}</p>
<footer>Request id <code>{request_id}</code> &middot; Vallum</footer></body></html>
"""


def page(
    status: int,
    request_id: str,
    *,
    accept: str | None = None,
    message: str = "",
    headers: tuple[tuple[str, str], ...] = (),
) -> ErrorPage:
    """Render the error page for ``status``; JSON when ``accept`` prefers it, HTML otherwise."""
    phrase = reason(status)
    text = message or phrase
    if wants_json(accept):
        body = json.dumps(
            {"status": status, "error": phrase, "message": text, "request_id": request_id},
            separators=(",", ":"),
        ).encode()
        content_type = "application/json"
    else:
        body = _HTML.format(
            status=status,
            reason=html.escape(phrase),
            message=html.escape(text),
            request_id=html.escape(request_id),
        ).encode()
        content_type = "text/html; charset=utf-8"
    out = (
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Request-Id", request_id),
        *headers,
    )
    return ErrorPage(status, out, body)
