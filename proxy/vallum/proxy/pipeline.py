"""The protocol-independent request pipeline: intercept -> match -> authorize -> forward.

A listener (today the HTTP/1.1 hot path in :mod:`vallum.proxy.http1`, later HTTP/2 or a
forward-auth endpoint) builds a :class:`~vallum.core.request.RequestInfo` with
:func:`request_info` and asks :func:`decide` what to do with it. The answer is either a
:class:`Respond` (Vallum answers itself: error page, redirect, sign-in page, JWKS) or a
:class:`Forward` (send it upstream, adding the headers the gate asked for).

Authentication and authorization plug in through a :class:`Gate`; the real one is
:func:`vallum.proxy.identity.build_gate` (public routes, sign-in, policy, mTLS), which fails
closed when sign-in is not configured.

The request id travels in ``RequestInfo.headers["x-request-id"]`` (Vallum always generates its
own and replaces the client's), so a gate can render an error page with :func:`error` without
any other context.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Protocol

from vallum.core import routing
from vallum.core.config import RouteTable
from vallum.core.identity import Identity
from vallum.core.request import ClientCertificate, RequestInfo
from vallum.proxy import errors
from vallum.proxy import forward as fwd


@dataclass(frozen=True, slots=True)
class Respond:
    """A response Vallum makes itself (error page, redirect, sign-in pages, JWKS)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Allow:
    """Forward upstream, adding these headers; ``identity`` is for the access log."""

    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    identity: Identity | None = None


@dataclass(slots=True)
class Forward:
    """The pipeline's verdict to forward: which route matched and what the gate added.
    (Made per request: not ``frozen``, whose ``__init__`` costs three times as much.)"""

    match: routing.Match
    allow: Allow


class Gate(Protocol):
    """Authentication and authorization, as the pipeline sees them.

    The hot path runs a gate's coroutine eagerly (``coro.send(None)`` from the protocol callback)
    and makes a task only if it suspends. So the code *before a coroutine's first ``await``* runs
    outside any task: it must not use aiohttp clients, ``asyncio.timeout`` or ``current_task``,
    and context variables it sets are lost. Put network calls behind an ``await`` of a helper
    that starts with a real suspension (see ``vallum.proxy.oidc``).
    """

    async def intercept(self, req: RequestInfo, table: RouteTable) -> Respond | None:
        """Before route matching: internal endpoints (``/.vallum/*``, ``/.well-known/*``, the
        authenticate host). Must be nearly free for ordinary paths."""
        ...

    async def authorize(
        self, req: RequestInfo, match: routing.Match, table: RouteTable
    ) -> Allow | Respond:
        """Decide a matched request: forward (:class:`Allow`) or answer (:class:`Respond`)."""
        ...

    def strip_request_headers(self) -> frozenset[str]:
        """Lower-case header names always removed from client requests before forwarding, on
        top of what forwarding always removes: every ``x-vallum-*``/``x-pomerium-*`` header and
        the current table's ``jwt_claims_headers`` names (:mod:`vallum.proxy.forward`)."""
        ...


class QuickGate(Gate, Protocol):
    """A gate that can also decide without a coroutine when no I/O is needed (public routes,
    known sessions): :func:`decide_now` uses it and saves the coroutine machinery on the hot
    path."""

    def intercepts(self, req: RequestInfo) -> bool:
        """Whether :meth:`Gate.intercept` may answer ``req`` (then :func:`decide` runs)."""
        ...

    def authorize_now(
        self, req: RequestInfo, match: routing.Match, table: RouteTable
    ) -> Allow | Respond | None:
        """What :meth:`Gate.authorize` would answer, when that needs no I/O; else ``None``."""
        ...


def quick_gate(gate: Gate) -> QuickGate | None:
    """``gate`` if it offers :class:`QuickGate`'s methods, else ``None``."""
    if callable(getattr(gate, "intercepts", None)) and callable(
        getattr(gate, "authorize_now", None)
    ):
        return gate  # type: ignore[return-value]
    return None


ALLOW = Allow()
"""The plain "forward as is" verdict (shared: it is immutable)."""

IDENTITY_HEADERS = frozenset(
    {"x-pomerium-jwt-assertion", "x-vallum-jwt-assertion", "x-pomerium-jwt-assertion-for"}
)
"""Headers only Vallum may set upstream; a client sending them is trying to impersonate."""


def error(req: RequestInfo, status: int, message: str = "") -> Respond:
    """The standard error page for ``req`` (JSON or HTML by its ``Accept`` header)."""
    rendered = errors.page(
        status,
        req.headers.get("x-request-id", ""),
        accept=req.headers.get("accept"),
        message=message,
    )
    return Respond(rendered.status, rendered.headers, rendered.body)


def request_info(
    method: str,
    target: str,
    headers: dict[str, str],
    scheme: str,
    peer_ip: str,
    trusted_hops: int,
    request_id: str,
    client_cert: ClientCertificate | None = None,
) -> RequestInfo | None:
    """Build the pipeline's request value; ``None`` when it is malformed (answer 400).

    ``headers`` maps lower-case names to values (:func:`header_map`: one ``Host`` at most) and
    is *taken over*: the request id is stored into it, and an absolute-form target's authority
    (``http://host/p?q``, which wins over the ``Host`` header, RFC 9112 3.2.2) replaces
    ``headers["host"]``, so that the one host that is matched and authorised is also the one
    forwarded (``Host`` with ``preserve_host_header``, ``X-Forwarded-Host``).
    """
    host_raw = headers.get("host")
    if target.startswith("/"):
        path, _, query = target.partition("?")
    elif "://" in target:
        rest = target.split("://", 1)[1]
        end = min((i for i in map(rest.find, "/?#") if i != -1), default=len(rest))
        authority, tail = rest[:end], rest[end:]
        if "@" in authority:  # userinfo has no place in a request target
            return None
        host_raw = headers["host"] = authority
        path, _, query = tail.partition("?")
        path = path or "/"
    else:  # "*" (OPTIONS *) or garbage: nothing to route
        return None
    if not host_raw:
        return None
    host = _HOSTS.get(host_raw)
    if host is None:
        host = routing.normalize_host(host_raw)
        if not _VALID_HOST.fullmatch(host):
            return None
        if len(_HOSTS) >= _HOSTS_SIZE:
            _HOSTS.clear()
        _HOSTS[host_raw] = host
    headers["x-request-id"] = request_id
    # Positional (the field order of RequestInfo): a third cheaper than keywords on this path.
    return RequestInfo(
        method,
        host,
        path,
        query,
        scheme,
        headers,
        # No trusted hop (the default): the peer, without a call (hot path).
        peer_ip
        if trusted_hops <= 0
        else fwd.client_ip(peer_ip, headers.get("x-forwarded-for"), trusted_hops),
        client_cert,
        _now(),
    )


_VALID_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,252})|\[[0-9a-f:.]{2,45}\]", re.ASCII)
"""A normalised host Vallum routes: DNS-like names and IP literals. ``a, b`` (two ``Host``
values joined), spaces, ``@``, ``/`` or an empty name are malformed (400), never a lookup
that falls through to a catch-all route."""
_HOSTS: dict[str, str] = {}  # Host header as sent -> normalised (a pure function, cached)
_HOSTS_SIZE = 1024
_clock_ms = -1
_clock_time = dt.datetime.fromtimestamp(0, dt.UTC)


def _now() -> dt.datetime:
    """The request time (UTC), made once per millisecond: requests arriving within the same
    millisecond share one ``datetime`` (policy time criteria need no finer resolution)."""
    global _clock_ms, _clock_time
    now = time.time()
    ms = int(now * 1000)
    if ms != _clock_ms:
        _clock_ms = ms
        _clock_time = dt.datetime.fromtimestamp(now, dt.UTC)
    return _clock_time


async def decide(req: RequestInfo, table: RouteTable, gate: Gate) -> Forward | Respond:
    """Run the pipeline for one request: intercept, normalise and match, authorize."""
    early = await gate.intercept(req, table)
    if early is not None:
        return early
    matched = _match(req, table)
    if isinstance(matched, Respond):
        return matched
    req, match = matched
    verdict = await gate.authorize(req, match, table)
    if isinstance(verdict, Respond):
        return verdict
    return Forward(match, verdict)


def decide_now(req: RequestInfo, table: RouteTable, gate: QuickGate) -> Forward | Respond | None:
    """:func:`decide` without a coroutine, when the gate can answer without I/O (public routes,
    known sessions, refused client certificates, no route); ``None``: run :func:`decide`."""
    if gate.intercepts(req):
        return None
    matched = _match(req, table)
    if isinstance(matched, Respond):
        return matched
    req, match = matched
    verdict = gate.authorize_now(req, match, table)
    if verdict is None or isinstance(verdict, Respond):
        return verdict
    return Forward(match, verdict)


def _match(req: RequestInfo, table: RouteTable) -> tuple[RequestInfo, routing.Match] | Respond:
    """The route for ``req`` and the request as the gate judges it, or the 404/400 answer (or
    503 with the reason when the route is ``unavailable``)."""
    match = _MATCHES.match(table, req.host, req.path)
    if match is None:
        if routing.normalize_path(req.path) is None:
            return error(req, 400, "The request path is malformed.")
        return error(req, 404, "No route matches this host and path.")
    if match.route.unavailable is not None:  # fail closed, before the gate
        return error(req, 503, f"This route is unavailable: {match.route.unavailable}")
    if match.path != req.path:
        # The gate and the policy judge the path that is forwarded, never the raw spelling:
        # otherwise `//admin` would pass a deny rule on `/admin` and reach `/admin` upstream.
        req = dataclasses.replace(req, path=match.path)
    return req, match


class MatchCache:
    """Remembers ``routing.match`` for recent (host, path) pairs of the current table.

    Matching is pure: the same table, host and raw path give the same answer, so hot paths skip
    normalisation and the index walk. Bounded (``size`` entries, paths up to ``max_path``
    characters, cleared when full) and reset whenever the table object changes.
    """

    def __init__(self, size: int = 4096, max_path: int = 256) -> None:
        self.size = size
        self.max_path = max_path
        self._table: RouteTable | None = None
        self._entries: dict[tuple[str, str], routing.Match | None] = {}

    def match(self, table: RouteTable, host: str, path: str) -> routing.Match | None:
        if table is not self._table:
            self._table = table
            self._entries = {}
        key = (host, path)
        try:
            return self._entries[key]
        except KeyError:
            pass
        found = routing.match(table, host, path)  # normalises the path itself
        if len(path) <= self.max_path:
            if len(self._entries) >= self.size:
                self._entries = {}
            self._entries[key] = found
        return found


_MATCHES = MatchCache()


class BadRequest(ValueError):
    """A request head that no route may see (its message is the 400 page's)."""


def header_map(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case name -> value for ``RequestInfo`` (repeats joined by ``", "``, cookies by
    ``"; "``), in time linear in the number of fields.

    Raises :class:`BadRequest` for a second ``Host`` header (RFC 9112 3.2: a request with more
    than one is invalid): which one a hop reads is exactly what a host-confusion attack plays
    on.
    """
    out: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    for name_b, value_b in pairs:
        name = name_b.decode("latin-1").lower()
        value = value_b.decode("latin-1")
        if name in out:
            if name == "host":
                raise BadRequest("The request has more than one Host header.")
            if repeated is None:
                repeated = {}
            values = repeated.get(name)
            if values is None:
                repeated[name] = [out[name], value]
            else:
                values.append(value)
        else:
            out[name] = value
    if repeated is not None:
        for name, values in repeated.items():
            out[name] = ("; " if name == "cookie" else ", ").join(values)
    return out
