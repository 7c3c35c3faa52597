"""What changes between the request the client sent and the one the upstream gets (and back).

Header rules (Pomerium/Envoy behaviour unless noted):

* Framing is Vallum's: the client's ``Content-Length`` and ``Transfer-Encoding`` never pass;
  Vallum writes the upstream request's framing itself from what llhttp framed
  (``Content-Length: N`` or ``Transfer-Encoding: chunked``, :func:`request_framing`), and the
  client response's from what the upstream's parser framed. So no ``Connection`` token can take
  a framing header away while its body still flows (request smuggling), and nothing a client
  names in ``Connection`` can remove a header Vallum writes (``Host``, ``X-Forwarded-*``,
  ``X-Request-Id``, ``set_request_headers``, identity headers): those are written after the
  client's headers are filtered.
* Hop-by-hop headers (RFC 9110 7.6.1: ``Connection``, ``Keep-Alive``, ``Proxy-Connection``,
  ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Authenticate``,
  ``Proxy-Authorization``) and every header *named in* ``Connection`` are dropped both ways.
  A websocket upgrade re-adds ``Connection: upgrade``/``Upgrade``.
* Underscores: a client header whose name, with ``_`` read as ``-``, is one Vallum sets, strips
  or reserves (``X_Vallum_Jwt_Assertion``, ``X_Email`` for a claim header ``X-Email``,
  ``X_Forwarded_For``, a ``set_request_headers`` name) is always removed, because CGI/WSGI
  servers read ``-`` and ``_`` as one. Other underscore headers follow
  ``headers_with_underscores_action`` (``reject_request``, Pomerium's default: 400, decided in
  the exchange before the gate; ``drop_header``; ``allow``).
* ``X-Forwarded-For``: the peer address is appended (Pomerium's default, ``skip_xff_append:
  false``). The *trusted client address* (for policy and logs) follows Envoy's
  ``xff_num_trusted_hops``: with N > 0 it is the N-th address from the right of the incoming
  header; with 0, or a header too short, it is the peer address.
* ``X-Forwarded-Proto``: the scheme the client used; when ``xff_num_trusted_hops`` > 0 a value
  already set by the trusted proxy in front is kept.
* ``X-Forwarded-Host`` (always) and ``Host`` (with ``preserve_host_header``): the one host the
  request was matched and authorised for (the absolute-form authority, else the single ``Host``
  header: :func:`vallum.proxy.pipeline.request_info`), never a second spelling of it.
* ``X-Request-Id``: always Vallum's own id (a client's value is replaced).
* ``Host``: the ``to`` URL's host (Envoy's auto host rewrite), or ``host_rewrite``, or the
  client's with ``preserve_host_header``.
* Path: ``regex_rewrite_pattern``/``_substitution`` (every match replaced, ``\\1`` groups), else
  ``prefix_rewrite`` swapping the matched prefix (or the whole exact path), else a path in the
  ``to`` URL acting as ``prefix_rewrite`` (as Pomerium does). The swap is literal, like Envoy's.
* Never trust the client: any incoming header named ``X-Vallum-*`` or ``X-Pomerium-*`` (Vallum's
  and Pomerium's identity headers: assertions, claim headers) is removed, and so is every header
  the *current* table's ``jwt_claims_headers`` map names (``{X-Email: email}``), so a claim
  header added by a reload is stripped from the next request on; the gate may name more
  (``strip_request_headers``). Pomerium overwrites the identity headers it emits; Vallum removes
  every client copy, also on routes where it emits none (stricter: a documented deviation).
* Method and path overrides (``X-HTTP-Method-Override``, ``X-HTTP-Method``,
  ``X-Method-Override``, ``X-Original-URL``, ``X-Rewrite-URL``) are removed: the policy judged
  the request line, and frameworks that honour these would act on another method or path
  (a documented deviation: Pomerium passes them).
* ``remove_request_headers`` then ``set_request_headers`` (replacing), then the gate's headers;
  ``set_response_headers`` replace upstream response headers. Header values Vallum writes are
  UTF-8 (as Pomerium sends them), with CR, LF and NUL replaced by spaces: never a lossy or
  injected form.
* An upstream may not set Vallum's own cookies: a ``Set-Cookie`` whose name is ``cookie_name``
  or starts with ``cookie_name + "_"`` (session chunks, sign-in state, hand-off nonce) is dropped
  from the response, and logged once per route. Pomerium's ``${pomerium.*}``
  substitutions in header values are not supported (a documented deviation).

All per-route work (lower-casing names, compiling regexes, encoding constant headers) happens
once per route in :class:`RoutePlan`; the per-request functions only join bytes.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable

from vallum.core import regex
from vallum.core.config import Route, RouteTable, Settings, Upstream

log = logging.getLogger("vallum.forward")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# Headers Vallum always sets itself on the upstream request (client values are replaced), and
# the framing it writes itself (request_framing).
_REPLACED = frozenset(
    {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "expect",
        "content-length",
    }
)


# Headers some frameworks read as "the real method or path" (Symfony, IIS, Rails, Express
# method-override): the policy judged the request line, so the app must not act on another.
OVERRIDES = frozenset(
    {"x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method",
     "x-method-override"}
)

RESERVED_PREFIXES = (b"x-vallum-", b"x-pomerium-")
"""Lower-case name prefixes of headers only Vallum sets upstream (never passed from a client)."""


def claim_header_names(settings: Settings) -> frozenset[str]:
    """Lower-case names of the claim headers ``settings.jwt_claims_headers`` produces that the
    reserved prefixes do not already cover (the map form names headers freely)."""
    return frozenset(
        lowered
        for header, _claim in settings.jwt_claims_headers
        if not (lowered := header.lower()).startswith(("x-vallum-", "x-pomerium-"))
    )


def client_ip(peer_ip: str, xff: str | None, trusted_hops: int) -> str:
    """The trusted client address: Envoy's ``xff_num_trusted_hops`` rule (see module doc)."""
    if trusted_hops <= 0 or not xff:
        return peer_ip
    parts = xff.split(",")
    if len(parts) < trusted_hops:
        return peer_ip
    candidate = parts[-trusted_hops].strip()
    return candidate or peer_ip


def connection_tokens(value: str | None) -> frozenset[str]:
    """Lower-case header names listed in a ``Connection`` header value."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def _enc(value: str) -> bytes:
    return value.encode("latin-1", "replace")


def header_line(name: str, value: str) -> bytes:
    """One header line Vallum writes: UTF-8 (as Pomerium sends identity headers; latin-1 with
    ``replace`` turned every non-Latin name into ``????``), CR/LF/NUL never reach the wire.
    (Three ``in`` scans: ``str.translate`` with a table costs microseconds a line.)"""
    line = f"{name}: {value}"
    if "\r" in line or "\n" in line or "\0" in line:
        line = line.replace("\r", " ").replace("\n", " ").replace("\0", " ")
    return line.encode() + b"\r\n"


CHUNKED = b"Transfer-Encoding: chunked\r\n"

_EXTRA_LINES: dict[tuple[tuple[str, str], ...], bytes] = {}
"""The gate's request headers (``Allow.request_headers``) -> their lines, encoded once: a
signed-in session's assertion and claim headers are the same tuple of strings (the minter
caches them) on every request until they are re-minted. A pure function's memo, bounded."""
_EXTRA_LINES_MAX = 1024


def _extra_lines(extra: tuple[tuple[str, str], ...]) -> bytes:
    block = b"".join([header_line(name, value) for name, value in extra])
    if len(_EXTRA_LINES) >= _EXTRA_LINES_MAX:
        _EXTRA_LINES.clear()
    _EXTRA_LINES[extra] = block
    return block


def request_framing(chunked: bool, content_length: str | None) -> bytes:
    """The framing header of the upstream request, from what llhttp framed the client's by:
    chunked, a length (llhttp accepted exactly one decimal value), or no body."""
    if chunked:
        return CHUNKED
    if content_length is None:
        return b""
    return b"Content-Length: %d\r\n" % int(content_length)


class RoutePlan:
    """Everything about forwarding to one route that can be prepared before any request."""

    __slots__ = (
        "_cookie",
        "_cookie_warned",
        "_drop_underscored",
        "_host_headers",
        "_prefix",
        "_prefix_rewrite",
        "_regex",
        "_regex_sub",
        "_response_drop",
        "_strip",
        "_to_paths",
        "idle_timeout",
        "pool_keys",
        "response_set",
        "response_set_names",
        "route",
        "set_request",
        "timeout",
    )

    def __init__(
        self, route: Route, strip: Iterable[str] = (), settings: Settings | None = None
    ) -> None:
        settings = settings or _DEFAULTS
        self.route = route
        self.timeout = route.timeout
        self.idle_timeout = route.idle_timeout
        set_names = {name.lower() for name, _ in route.set_request_headers}
        self._strip = frozenset(
            _enc(name)
            for name in {
                *HOP_BY_HOP,
                *_REPLACED,
                *OVERRIDES,
                *(n.lower() for n in route.remove_request_headers),
                *set_names,
                *(n.lower() for n in strip),
            }
        )
        self._drop_underscored = settings.headers_with_underscores_action != "allow"
        self.set_request = b"".join(
            header_line(name, value) for name, value in route.set_request_headers
        )
        self.response_set_names = frozenset(n.lower() for n, _ in route.set_response_headers)
        self._response_drop = frozenset(
            _enc(name)
            for name in {*HOP_BY_HOP, *self.response_set_names, "content-length", "set-cookie"}
        )
        self.response_set = b"".join(
            header_line(name, value) for name, value in route.set_response_headers
        )
        self._cookie = settings.cookie_name.encode("latin-1", "replace")
        self._cookie_warned = False
        pattern = route.regex_rewrite_pattern
        # RE2 (linear time: no path can stall a worker), checked when the config loaded.
        self._regex = regex.compile(pattern) if pattern else None
        self._regex_sub = (
            self._regex.substitution(route.regex_rewrite_substitution or "")
            if self._regex is not None
            else None
        )
        self._prefix_rewrite = route.prefix_rewrite
        self._prefix = route.prefix or "/"
        self._to_paths = tuple(u.path if u.path not in ("", "/") else None for u in route.to)
        self._host_headers = tuple(self._host_for(u) for u in route.to)
        profile = route.upstream_tls_profile
        self.pool_keys = tuple(
            (u.scheme, u.host, u.port, profile if u.scheme == "https" else None) for u in route.to
        )

    def _host_for(self, upstream: Upstream) -> bytes:
        if self.route.host_rewrite:
            return _enc(self.route.host_rewrite)
        return _enc(urllib.parse.urlsplit(upstream.url).netloc.rpartition("@")[2] or upstream.host)

    def rewrite_path(self, path: str, upstream_index: int = 0) -> str:
        """The path to send upstream for the (normalised) request ``path``."""
        if self._regex is not None and self._regex_sub is not None:
            # A substitution may hold spaces or non-ASCII: never a broken request line.
            return _quote(self._regex.sub(self._regex_sub, path)) or "/"
        replacement = self._prefix_rewrite
        if replacement is None:
            replacement = self._to_paths[upstream_index] if self._to_paths else None
            if replacement is None:
                return path
        route = self.route
        if route.path is not None or route.regex is not None:
            return replacement
        prefix = self._prefix
        if path.startswith(prefix):
            return replacement + path[len(prefix) :]
        if path + "/" == prefix:  # "/admin" under prefix "/admin/"
            return replacement
        return path

    def request_head(  # positional on the hot path: a keyword argument costs ~30 ns
        self,
        method: str,
        target: str,
        raw_headers: list[tuple[bytes, bytes]],
        connection: str | None,
        upstream_index: int,
        host: str,
        scheme: str,
        peer_ip: str,
        request_id: str,
        trusted_hops: int,
        extra: tuple[tuple[str, str], ...] = (),
        framing: bytes = b"",
        upgrade: str | None = None,
    ) -> bytes:
        """The complete upstream request head (request line, headers, blank line).

        ``host`` is the authority the request was matched and authorised for, as the client
        wrote it (port included); ``framing`` is :func:`request_framing`'s line. The client's
        own ``Host`` headers in ``raw_headers`` are never read here.
        """
        strip = self._strip
        dynamic = _dynamic_tokens(connection.encode("latin-1")) if connection else None
        out = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1", "replace")]
        xff: bytes | None = None
        xfp: bytes | None = None
        for name_raw, value in raw_headers:
            name = name_raw.lower()
            if name in strip:
                if name == b"x-forwarded-for":
                    xff = value if xff is None else xff + b", " + value
                elif trusted_hops > 0 and name == b"x-forwarded-proto":
                    xfp = value
                continue
            if name[:2] == b"x-" and name.startswith(RESERVED_PREFIXES):
                continue
            if dynamic is not None and name in dynamic:
                continue
            if b"_" in name and self._underscored_dropped(name, dynamic):
                continue
            out += (name_raw, b": ", value, b"\r\n")  # joined once at the end
        host_b = host.encode("latin-1")  # decoded from latin-1 by header_map: always encodes
        peer_b = peer_ip.encode()  # an address, the scheme and Vallum's hex id: ASCII
        out.append(
            b"Host: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n"
            b"X-Forwarded-Host: %s\r\nX-Request-Id: %s\r\n"
            % (
                host_b if self.route.preserve_host_header else self._host_headers[upstream_index],
                xff + b", " + peer_b if xff else peer_b,
                xfp or scheme.encode(),
                host_b,
                request_id.encode(),
            )
        )
        if self.set_request:
            out.append(self.set_request)
        if extra:  # the gate's headers: the same few (a session's assertion) request after request
            block = _EXTRA_LINES.get(extra)
            out.append(block if block is not None else _extra_lines(extra))
        if framing:
            out.append(framing)
        if upgrade is not None:
            out.append(b"Connection: upgrade\r\nUpgrade: " + _enc(upgrade) + b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def _underscored_dropped(self, name: bytes, dynamic: frozenset[bytes] | None) -> bool:
        """Whether a client header whose lower-case ``name`` has an ``_`` is dropped: always
        when its ``-`` spelling is one Vallum sets, strips or reserves; else per
        ``headers_with_underscores_action``."""
        if self._drop_underscored:
            return True
        dashed = name.replace(b"_", b"-")
        return (
            dashed in self._strip
            or dashed.startswith(RESERVED_PREFIXES)
            or (dynamic is not None and dashed in dynamic)
        )

    def response_headers(
        self, raw_headers: list[tuple[bytes, bytes]]
    ) -> tuple[list[bytes], bytes | None, bool]:
        """Upstream response header lines to pass on, as byte strings to join (hop-by-hop,
        replaced headers and Vallum's own cookies removed), the ``Content-Length`` the
        upstream announced (its line is among them, written as Vallum writes it; no
        ``Connection`` token removes it) and whether it announced ``Transfer-Encoding``."""
        drop = self._response_drop
        out: list[bytes] = []
        extend = out.extend
        connection: bytes | None = None
        length: bytes | None = None
        chunked = False
        for name_raw, value in raw_headers:  # the common path, inline (hot path)
            name = name_raw.lower()
            if name in drop:
                if name == b"content-length":
                    # llhttp accepted it: one value, digits only, and never beside
                    # Transfer-Encoding (it refuses both), so the line passes as it came.
                    length = value
                    extend((b"Content-Length: ", value, b"\r\n"))
                elif name == b"set-cookie":
                    if not self._sets_vallum_cookie(value):
                        extend((name_raw, b": ", value, b"\r\n"))
                elif name == b"connection":
                    connection = value if connection is None else connection + b"," + value
                elif name == b"transfer-encoding":
                    chunked = True
                continue
            extend((name_raw, b": ", value, b"\r\n"))  # one join later, no bytes per line
        if connection is not None and connection.lower() not in _TRIVIAL_CONNECTION:
            dynamic = _dynamic_tokens(connection)
            if dynamic:  # rare: "Connection: X-Foo" names more headers to drop
                out = self._response_lines(raw_headers, dynamic, length)
        if self.response_set:
            out.append(self.response_set)
        return out, length, chunked

    def _response_lines(
        self,
        raw_headers: list[tuple[bytes, bytes]],
        dynamic: frozenset[bytes],
        length: bytes | None,
    ) -> list[bytes]:
        """The lines to pass on when ``Connection`` names more headers to drop (never the
        framing: a ``Content-Length`` the upstream announced stays)."""
        drop = self._response_drop
        out: list[bytes] = []
        if length is not None:
            out += (b"Content-Length: ", length, b"\r\n")
        for name_raw, value in raw_headers:
            name = name_raw.lower()
            if name in dynamic or (
                name in drop and (name != b"set-cookie" or self._sets_vallum_cookie(value))
            ):
                continue
            out += (name_raw, b": ", value, b"\r\n")
        return out

    def _sets_vallum_cookie(self, value: bytes) -> bool:
        """Whether a ``Set-Cookie`` value sets one of Vallum's cookies (logged once a route)."""
        name = value.partition(b"=")[0].strip()
        ours = self._cookie
        if name != ours and not (name.startswith(ours) and name[len(ours) : len(ours) + 1] == b"_"):
            return False
        if not self._cookie_warned:
            self._cookie_warned = True
            log.warning(
                "route %s: the upstream tried to set Vallum's cookie %r; dropped (logged once "
                "per route and configuration)",
                self.route.name or self.route.from_url,
                name.decode("latin-1"),
            )
        return True


_DEFAULTS = Settings()


def _quote(path: str) -> str:
    """Percent-encode what may not stand in a request target (keeps ``%`` escapes as they are)."""
    return urllib.parse.quote(path, safe="/%:@!$&'()*+,;=-._~")


_TRIVIAL_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade", b""})


def _dynamic_tokens(value: bytes) -> frozenset[bytes] | None:
    """Header names (lower-case bytes) a ``Connection`` value adds to the hop-by-hop set."""
    lowered = value.lower()
    if lowered in _TRIVIAL_CONNECTION:
        return None
    tokens = frozenset(t.strip() for t in lowered.split(b",")) - _TRIVIAL_CONNECTION
    return tokens or None


class Plans:
    """Route plans for the current table, built on first use of each route.

    Keyed by table identity: a reload swaps the table and the next request starts a fresh set
    (requests still running on the old table keep the plan they already hold). The headers
    stripped from client requests are the fixed ``strip`` names (the gate's) plus the claim
    headers of *that* table's settings (:func:`claim_header_names`), computed once per table.
    """

    __slots__ = ("_plans", "_strip", "_table", "_table_strip")

    def __init__(self, strip: Iterable[str] = ()) -> None:
        self._strip = frozenset(strip)
        self._table: RouteTable | None = None
        self._table_strip = self._strip
        self._plans: dict[int, RoutePlan] = {}

    def get(self, table: RouteTable, route_index: int, route: Route) -> RoutePlan:
        if table is not self._table:
            self._table = table
            self._plans = {}
            self._table_strip = self._strip | claim_header_names(table.settings)
        plan = self._plans.get(route_index)
        if plan is None or plan.route is not route:
            plan = self._plans[route_index] = RoutePlan(route, self._table_strip, table.settings)
        return plan
