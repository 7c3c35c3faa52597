"""Where a browser may be sent after sign-in or sign-out, and constant-time secret comparison.

The sign-in flow carries a "return to" URL through the provider and back. Left unchecked that is
an open redirect: a link to Vallum that lands the user on an attacker's page right after a real
sign-in. Browsers are lenient in ways that make a naive prefix check useless (``//evil``,
``/\\evil`` and ``https:evil`` all leave the site; percent-encoding, tabs and mixed case hide
them), so this module accepts only two shapes and rebuilds the URL from its parsed parts:

* a path on the current host: one ``/`` followed by anything but ``/`` or ``\\``;
* an absolute ``https://`` (or ``http://``) URL whose host is one Vallum serves.

Anything else - non-ASCII, control characters, backslashes, userinfo, encoded separators, a
scheme without ``//`` - is refused (``None``), and the caller falls back to a safe default.
"""

from __future__ import annotations

import hmac
import urllib.parse
from collections.abc import Callable, Iterable

MAX_URL = 4096


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets without leaking where they differ (``hmac.compare_digest``)."""
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def host_matcher(hosts: Iterable[str]) -> Callable[[str], bool]:
    """A test for "is this one of our hosts": exact names and ``*.domain`` (one label)."""
    exact: set[str] = set()
    wildcard: set[str] = set()
    for host in hosts:
        host = host.lower().rstrip(".")
        if host.startswith("*."):
            wildcard.add(host[2:])
        elif host:
            exact.add(host)

    def allowed(host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in exact:
            return True
        label, dot, parent = host.partition(".")
        return bool(dot and label and parent in wildcard)

    return allowed


def _suspicious(text: str) -> bool:
    """Whitespace, control characters, backslashes or non-ASCII; once percent-decoded, control
    characters or backslashes (an encoded space or accent is fine)."""
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F or ch == "\\" for ch in text):
        return True
    for _ in range(4):
        decoded = urllib.parse.unquote(text)
        if decoded == text:
            return False
        text = decoded
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in text):
            return True
    return True  # encoded more than four times: nobody legitimate does that


def safe_return_url(
    candidate: str, *, allowed_host: Callable[[str], bool], current: str | None = None,
) -> str | None:
    """``candidate`` rebuilt as a safe absolute URL, or ``None`` when it could leave our hosts.

    ``current`` (``https://host``) resolves a bare path; without it paths are refused.
    """
    if not candidate or len(candidate) > MAX_URL or _suspicious(candidate):
        return None
    decoded = candidate
    for _ in range(4):
        decoded = urllib.parse.unquote(decoded)
    if candidate.startswith("/"):
        if decoded.startswith("//") or current is None:
            return None
        base = urllib.parse.urlsplit(current)
        if base.scheme not in ("http", "https") or not base.hostname:
            return None
        if not allowed_host(base.hostname):
            return None
        return f"{base.scheme}://{base.netloc}{candidate}"
    scheme, sep, rest = candidate.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https") or rest.startswith("/"):
        return None
    parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
    netloc = parts.netloc
    if not netloc or "@" in netloc or "%" in netloc or "@" in decoded.split("/", 3)[2]:
        return None
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or not allowed_host(host):
        return None
    host = host.rstrip(".")
    authority = host if port is None else f"{host}:{port}"
    path = parts.path or "/"
    if path.startswith("//"):
        return None
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{scheme}://{authority}{path}{query}{fragment}"
