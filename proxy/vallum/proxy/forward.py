"""What changes between the request the client sent and the one the upstream gets (and back).

Header rules (Pomerium/Envoy behaviour unless noted):

* Hop-by-hop headers (RFC 9110 7.6.1: ``Connection``, ``Keep-Alive``, ``Proxy-Connection``,
  ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Authenticate``,
  ``Proxy-Authorization``) and every header *named in* ``Connection`` are dropped both ways;
  Vallum frames bodies itself. A websocket upgrade re-adds ``Connection: upgrade``/``Upgrade``.
* ``X-Forwarded-For``: the peer address is appended (Pomerium's default, ``skip_xff_append:
  false``). The *trusted client address* (for policy and logs) follows Envoy's
  ``xff_num_trusted_hops``: with N > 0 it is the N-th address from the right of the incoming
  header; with 0, or a header too short, it is the peer address.
* ``X-Forwarded-Proto``/``X-Forwarded-Host``: set to the scheme and ``Host`` the client used;
  when ``xff_num_trusted_hops`` > 0 a value already set by the trusted proxy in front is kept.
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
* ``remove_request_headers`` then ``set_request_headers`` (replacing), then the gate's headers;
  ``set_response_headers`` replace upstream response headers. Pomerium's ``${pomerium.*}``
  substitutions in header values are not supported (a documented deviation).

All per-route work (lower-casing names, compiling regexes, encoding constant headers) happens
once per route in :class:`RoutePlan`; the per-request functions only join bytes.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

from vallum.core.config import Route, RouteTable, Settings, Upstream

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

# Headers Vallum always sets itself on the upstream request (client values are replaced).
_REPLACED = frozenset(
    {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "expect"}
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


class RoutePlan:
    """Everything about forwarding to one route that can be prepared before any request."""

    __slots__ = (
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

    def __init__(self, route: Route, strip: Iterable[str] = ()) -> None:
        self.route = route
        self.timeout = route.timeout
        self.idle_timeout = route.idle_timeout
        set_names = {name.lower() for name, _ in route.set_request_headers}
        self._strip = frozenset(
            _enc(name)
            for name in {
                *HOP_BY_HOP,
                *_REPLACED,
                *(n.lower() for n in route.remove_request_headers),
                *set_names,
                *(n.lower() for n in strip),
            }
        )
        self.set_request = b"".join(
            _enc(f"{name}: {value}\r\n") for name, value in route.set_request_headers
        )
        self.response_set_names = frozenset(n.lower() for n, _ in route.set_response_headers)
        self._response_drop = frozenset(
            _enc(name) for name in {*HOP_BY_HOP, *self.response_set_names}
        )
        self.response_set = b"".join(
            _enc(f"{name}: {value}\r\n") for name, value in route.set_response_headers
        )
        pattern = route.regex_rewrite_pattern
        self._regex = re.compile(pattern) if pattern else None
        self._regex_sub = route.regex_rewrite_substitution or ""
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
        if self._regex is not None:
            return self._regex.sub(self._regex_sub, path) or "/"
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
        chunked: bool = False,
        upgrade: str | None = None,
    ) -> bytes:
        """The complete upstream request head (request line, headers, blank line)."""
        strip = self._strip
        dynamic = _dynamic_tokens(connection.encode("latin-1")) if connection else None
        out = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1", "replace")]
        xff: bytes | None = None
        xfp: bytes | None = None
        xfh: bytes | None = None
        original_host = b""
        for name_raw, value in raw_headers:
            name = name_raw.lower()
            if name in strip:
                if name == b"host":
                    original_host = value
                elif name == b"x-forwarded-for":
                    xff = value if xff is None else xff + b", " + value
                elif trusted_hops > 0:
                    if name == b"x-forwarded-proto":
                        xfp = value
                    elif name == b"x-forwarded-host":
                        xfh = value
                continue
            if name[:2] == b"x-" and name.startswith(RESERVED_PREFIXES):
                continue
            if dynamic is not None and name in dynamic:
                continue
            out += (name_raw, b": ", value, b"\r\n")  # joined once at the end
        if self.route.preserve_host_header:
            host_b = original_host or host.encode("latin-1", "replace")
        else:
            host_b = self._host_headers[upstream_index]
        peer_b = peer_ip.encode("latin-1", "replace")
        out.append(
            b"Host: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n"
            b"X-Forwarded-Host: %s\r\nX-Request-Id: %s\r\n"
            % (
                host_b,
                xff + b", " + peer_b if xff else peer_b,
                xfp or scheme.encode("latin-1", "replace"),
                xfh or original_host or host.encode("latin-1", "replace"),
                request_id.encode("latin-1", "replace"),
            )
        )
        if self.set_request:
            out.append(self.set_request)
        for extra_name, extra_value in extra:
            out.append(_enc(f"{extra_name}: {extra_value}\r\n"))
        if chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        if upgrade is not None:
            out.append(b"Connection: upgrade\r\nUpgrade: " + _enc(upgrade) + b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def response_headers(
        self, raw_headers: list[tuple[bytes, bytes]]
    ) -> tuple[list[bytes], bool, bool]:
        """Upstream response header lines to pass on, as byte strings to join (hop-by-hop and
        replaced ones removed), and whether the upstream announced a ``Content-Length`` and
        ``Transfer-Encoding``."""
        drop = self._response_drop
        out: list[bytes] = []
        extend = out.extend
        connection: bytes | None = None
        has_length = chunked = False
        for name_raw, value in raw_headers:
            name = name_raw.lower()
            if name in drop:
                if name == b"connection":
                    connection = value if connection is None else connection + b"," + value
                elif name == b"transfer-encoding":
                    chunked = True
                continue
            if name == b"content-length":
                has_length = True
            extend((name_raw, b": ", value, b"\r\n"))  # one join later, no bytes per line
        if connection is not None:
            dynamic = _dynamic_tokens(connection)
            if dynamic:  # rare: "Connection: X-Foo" names more headers to drop
                out = [
                    part
                    for name_raw, value in raw_headers
                    if (name := name_raw.lower()) not in drop and name not in dynamic
                    for part in (name_raw, b": ", value, b"\r\n")
                ]
        if self.response_set:
            out.append(self.response_set)
        return out, has_length, chunked


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
            plan = self._plans[route_index] = RoutePlan(route, self._table_strip)
        return plan
