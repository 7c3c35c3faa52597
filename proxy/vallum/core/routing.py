"""Route matching: which route takes a request, by host and path (Kubernetes Ingress semantics).

Why a module of its own: the route table is the one value everything compiles into, and this is
the one place that decides which of its routes a request reaches. It must be exact (no spelling of
a path may reach a route whose rule should not match it) and fast (a 10,000-route table is matched
in O(routes for that host), here even O(path depth + regex routes of that host)).

Host selection works like an Envoy virtual host or an nginx ``server`` block: the request's host
picks one host entry, then only that host's routes are tried (no fall-back to a wildcard when an
exact host exists but none of its paths matched)::

    1. the exact host            ``app.example.com``
    2. the wildcard of its parent ``*.example.com``   (exactly one label: not ``a.b.example.com``)
    3. the catch-all host         ``*`` (routes without a host, e.g. an Ingress rule with no host)

Within a host, the order is (documented in docs/configuration.md; Pomerium tries routes in file
order, Vallum uses Ingress's "most specific first" so that order in the file cannot matter)::

    1. Exact paths (``path``)                      equal to the normalised path
    2. Regex routes (``regex``), in file order     full match of the normalised path
    3. Prefix routes (``prefix``, default ``/``)   longest first, element-wise

Regex routes sit between exact and prefix, as nginx's ``location ~`` blocks do, so that a regex
route is reachable next to a catch-all ``prefix: /`` route (Pomerium files put regex routes before
the catch-all and expect them to work). Two routes with the same host and the same rule: the first
in file order wins, as in Pomerium; the later one is unreachable.

The path is normalised *before* matching, and the normalised path is what the proxy forwards
upstream (see :func:`normalize_path`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from vallum.core import config, errors, regex

# --------------------------------------------------------------------------------------------
# Path normalisation


_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-._~").encode())
# Characters a path segment may carry literally (RFC 3986 pchar minus pct-encoded).
_LITERAL = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SEPARATORS = frozenset(b"/\\")
_DOUBLE_ENCODED = re.compile(r"%25[0-9A-Fa-f]{2}")


def normalize_path(raw: str) -> str | None:
    """The canonical form of a request path, or ``None`` to refuse the request (HTTP 400).

    Steps, all before matching, so that every spelling of a path is matched as the same path:

    * percent-escapes of unreserved characters (``%2e`` -> ``.``, ``%41`` -> ``A``) are decoded,
      other escapes are kept with upper-case hex, characters that must be escaped are escaped
      (non-ASCII as UTF-8: ``/café`` -> ``/caf%C3%A9``);
    * ``\\``, ``%2F`` and ``%5C`` (any case) are path separators, like ``/``;
    * repeated separators are merged, ``.`` segments dropped, ``..`` removes the segment before it;
    * a trailing separator is kept (``/a/`` stays ``/a/``; ``/a/b/..`` gives ``/a/``).

    Refused: a path not starting with ``/``, a malformed escape, a control character or NUL
    (raw or encoded), ``..`` above the root, double encoding (an escaped ``%`` followed by two
    hex digits once decoded, e.g. ``%252e`` or ``%25%32%65``: an upstream that decodes twice
    would see a different path than we matched), and ``;``, raw or escaped: servlet containers
    cut ``;params`` off each segment (``/admin;x`` is their ``/admin``, ``/..;/`` their ``/../``;
    some decode ``%3B`` first), so such a path would reach a different route here than there.
    Spring Security's default firewall refuses both for the same reason.
    """
    if raw and _CANONICAL.fullmatch(raw):  # the common case: already canonical, nothing to do
        return raw
    return _normalize(raw)


# A path the steps below would return unchanged: plain segments, no escapes, no dot segments,
# no repeated or back-slashes, no ';'. Matching it first keeps the per-request cost low.
_CANONICAL = re.compile(r"(?:/(?!\.{1,2}(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?", re.ASCII)


def _normalize(raw: str) -> str | None:
    """:func:`normalize_path` for every other path, byte by byte."""
    if raw == "":
        return "/"
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return None
    if data[:1] not in (b"/", b"\\"):
        return None
    segments: list[str] = []
    current: list[str] = []
    trailing = False
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        escaped = byte == 0x25  # '%'
        if escaped:
            if i + 2 >= n or data[i + 1] not in _HEX or data[i + 2] not in _HEX:
                return None
            byte = int(data[i + 1 : i + 3], 16)
            i += 3
        else:
            i += 1
        if byte in _SEPARATORS:
            if current:
                if not _push(segments, "".join(current)):
                    return None
                current = []
            trailing = True
            continue
        if byte < 0x20 or byte == 0x7F or byte == 0x3B:
            return None
        if byte in (_UNRESERVED if escaped else _LITERAL):
            current.append(chr(byte))
        else:
            current.append(f"%{byte:02X}")
        trailing = False
    if current:
        last = "".join(current)
        if not _push(segments, last):
            return None
        trailing = last in (".", "..")
    path = "/" + "/".join(segments)
    if trailing and segments:
        path += "/"
    if _DOUBLE_ENCODED.search(path):
        return None
    return path


def _push(segments: list[str], segment: str) -> bool:
    """Apply one segment to the stack; False when it must be refused."""
    if segment == ".":
        return True
    if segment == "..":
        if not segments:
            return False
        segments.pop()
        return True
    segments.append(segment)
    return True


# --------------------------------------------------------------------------------------------
# Host normalisation


def normalize_host(raw: str) -> str:
    """A host as sent (any case, maybe ``:port``, maybe a trailing dot) in the table's form.

    Lower-case, without port, without one trailing dot; IPv6 literals keep their brackets
    (``[::1]:8443`` -> ``[::1]``); non-ASCII names become their IDNA (``xn--``) form.
    """
    host = raw.strip()
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            return host[: end + 1].lower()
        return host.lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.endswith("."):
        host = host[:-1]
    host = host.lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return host
    return host


_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def host_problem(host: str) -> str | None:
    """Why ``host`` (already normalised) cannot be a route's host, or None."""
    if host == "*":
        return None
    if host.startswith("[") and host.endswith("]"):
        return None
    name = host[2:] if host.startswith("*.") else host
    if not name:
        return "empty host"
    if "*" in name:
        return "a wildcard must be the whole first label (*.example.com)"
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return f"invalid host name {host!r}"
    return None


# --------------------------------------------------------------------------------------------
# The index


@dataclass(frozen=True, slots=True)
class _Entry:
    route: config.Route
    route_index: int
    value: str  # the normalised exact path or prefix (no trailing slash except "/"), or regex
    pattern: regex.Pattern | None = None


@dataclass(slots=True)
class _Host:
    """The routes of one host, ready to match: dicts for exact paths and prefixes."""

    exact: dict[str, _Entry] = field(default_factory=dict)
    regex: list[tuple[regex.Pattern, _Entry]] = field(default_factory=list)
    prefix: dict[str, _Entry] = field(default_factory=dict)

    def ordered(self) -> list[_Entry]:
        """Every entry in match order (exact, regex, prefix longest first); for reports."""
        exact = sorted(self.exact.values(), key=lambda e: (-len(e.value), e.value))
        prefix = sorted(self.prefix.values(), key=lambda e: (-len(e.value), e.value))
        return [*exact, *(e for _, e in self.regex), *prefix]


HostRoutes = _Host
"""The routes of one host, ready to match (built by :func:`index_host`)."""


@dataclass(frozen=True, slots=True)
class Index:
    """The host index: exact hosts, wildcards keyed by parent domain, the catch-all."""

    exact: dict[str, _Host]
    wildcard: dict[str, _Host]
    default: _Host | None


@dataclass(frozen=True, slots=True)
class Match:
    """The route a request reached, and the normalised path to forward upstream."""

    route: config.Route
    path: str
    route_index: int
    """A number unique to the route in its table (per-table caches key on it): its position in
    ``settings.routes`` when the table was built by :func:`build_table`."""


def build_table(settings: config.Settings) -> config.RouteTable:
    """Compile ``settings`` into a :class:`RouteTable`; raise ``ConfigError`` with every problem."""
    index = build_index(settings)
    return config.RouteTable(settings=settings, checksum=settings.checksum(), index=index)


def build_index(settings: config.Settings) -> Index:
    """The host index alone (what :func:`build_table` checks, without the checksum)."""
    problems: list[str] = []
    prepared: list[Prepared] = []
    for index, route in enumerate(settings.routes):
        try:
            prepared.append(prepare(route, route.source or f"routes[{index}]"))
        except errors.ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise errors.ConfigError(problems)
    return index_prepared(prepared)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One route checked and ready to index: its host key (normalised: ``*``, ``*.parent`` or
    exact), its rule's normalised value and compiled regex. What :func:`build_index` does per
    route, so a producer that keeps routes between tables (the operator, per Ingress) checks
    each route once and :func:`index_prepared` only files them."""

    route: config.Route
    host: str
    kind: config.PathMatch
    value: str
    pattern: regex.Pattern | None = None


def prepare(route: config.Route, place: str) -> Prepared:
    """``route`` checked as :func:`build_index` checks it; ``ConfigError`` with its problems."""
    entry_problems: list[str] = []
    host = normalize_host(route.host) if route.host not in ("", "*") else "*"
    problem = host_problem(host)
    if problem:
        entry_problems.append(f"{place}: from: {problem}")
    if not route.to:
        entry_problems.append(f"{place}: to: a route needs at least one upstream")
    rules = [k for k in ("prefix", "path", "regex") if getattr(route, k) is not None]
    if len(rules) > 1:
        entry_problems.append(f"{place}: only one of prefix, path, regex may be set: {rules}")
    entry = _entry(route, 0, place, entry_problems)
    entry_problems.extend(_rewrite_problems(route, place))
    if (route.regex_rewrite_pattern is None) != (route.regex_rewrite_substitution is None):
        entry_problems.append(
            f"{place}: regex_rewrite_pattern and regex_rewrite_substitution go together"
        )
    if entry_problems or entry is None:
        raise errors.ConfigError(entry_problems or [f"{place}: cannot be indexed"])
    return Prepared(route, host, route.path_match, entry.value, entry.pattern)


def index_prepared(prepared: Iterable[Prepared]) -> Index:
    """The host index of routes already checked by :func:`prepare`, in table order (their
    positions are the routes' indexes: pass them in the order of ``settings.routes``)."""
    by_host: dict[str, list[tuple[int, Prepared]]] = {}
    for index, item in enumerate(prepared):
        by_host.setdefault(item.host, []).append((index, item))
    return assemble({host: index_host(items) for host, items in by_host.items()})


def index_host(items: Iterable[tuple[int, Prepared]]) -> HostRoutes:
    """The routes of one host (all with the same :attr:`Prepared.host`), ready to match, each
    with its ``route_index``: a number unique to the route in its table (its position in
    ``settings.routes`` for :func:`build_index`; the operator, which keeps the hosts of
    unchanged Ingresses between tables, numbers routes from a counter instead). The first
    route with a given exact path or prefix takes it; regex routes are tried in order."""
    vhost = HostRoutes()
    for index, item in items:
        entry = _Entry(item.route, index, item.value, item.pattern)
        kind = item.kind
        if kind == "prefix":
            vhost.prefix.setdefault(entry.value, entry)
        elif kind == "exact":
            vhost.exact.setdefault(entry.value, entry)
        elif entry.pattern is not None:
            vhost.regex.append((entry.pattern, entry))
    return vhost


def assemble(hosts: Mapping[str, HostRoutes]) -> Index:
    """The index of hosts built by :func:`index_host`, keyed by their host key (``*``,
    ``*.parent`` or an exact host). ``hosts`` may be shared between indexes (they are never
    changed once built); a producer that changes one host builds it again."""
    exact: dict[str, HostRoutes] = {}
    wildcard: dict[str, HostRoutes] = {}
    default: HostRoutes | None = None
    for host, vhost in hosts.items():
        if host == "*":
            default = vhost
        elif host.startswith("*."):
            wildcard[host[2:]] = vhost
        else:
            exact[host] = vhost
    return Index(exact=exact, wildcard=wildcard, default=default)


def _rewrite_problems(route: config.Route, place: str) -> list[str]:
    """Why ``regex_rewrite_pattern`` / ``_substitution`` cannot be used (checked here, so a bad
    group reference is a config error, never a failure at request time)."""
    if route.regex_rewrite_pattern is None:
        return []
    try:
        rewrite = regex.compile(route.regex_rewrite_pattern)
    except regex.RegexError as exc:
        return [f"{place}: regex_rewrite_pattern: {exc}"]
    if route.regex_rewrite_substitution is not None:
        try:
            rewrite.substitution(route.regex_rewrite_substitution)
        except regex.RegexError as exc:
            return [f"{place}: regex_rewrite_substitution: {exc}"]
    return []


def _entry(route: config.Route, index: int, place: str, problems: list[str]) -> _Entry | None:
    kind = route.path_match
    value = route.path_value
    if kind == "regex":
        try:
            pattern = regex.compile(value)
        except regex.RegexError as exc:
            problems.append(f"{place}: regex: {exc}")
            return None
        return _Entry(route, index, value, pattern)
    key = "path" if kind == "exact" else "prefix"
    if not value.startswith("/"):
        problems.append(f"{place}: {key}: must start with '/', got {value!r}")
        return None
    normal = normalize_path(value)
    if normal is None:
        problems.append(f"{place}: {key}: not a valid path: {value!r}")
        return None
    if kind == "prefix" and normal != "/":
        normal = normal.rstrip("/")  # "/foo/" behaves as "/foo", as in Ingress
    return _Entry(route, index, normal)


# --------------------------------------------------------------------------------------------
# Matching


def match(table: config.RouteTable, host: str, path: str) -> Match | None:
    """The route for ``host`` and raw ``path`` (no query), or None (no route, or refused path).

    Use :func:`normalize_path` first to tell "refused" (400) from "no route" (404).
    """
    return _match(table, host, path, None)


def trace(table: config.RouteTable, host: str, path: str) -> tuple[Match | None, int]:
    """Like :func:`match`, also counting the look-ups and comparisons it made (for tests)."""
    steps = [0]
    return _match(table, host, path, steps), steps[0]


def host_routes(table: config.RouteTable, host: str) -> list[config.Route]:
    """The routes a request for ``host`` can reach, in match order (for reports and tests)."""
    vhost = _select_host(_index(table), normalize_host(host), None)
    return [] if vhost is None else [e.route for e in vhost.ordered()]


def _index(table: config.RouteTable) -> Index:
    index = table.index
    if not isinstance(index, Index):
        raise TypeError("RouteTable.index was not built by vallum.core.routing.build_table")
    return index


def _select_host(index: Index, host: str, steps: list[int] | None) -> _Host | None:
    if steps is not None:
        steps[0] += 1
    vhost = index.exact.get(host)
    if vhost is not None:
        return vhost
    dot = host.find(".")
    if dot > 0:
        if steps is not None:
            steps[0] += 1
        vhost = index.wildcard.get(host[dot + 1 :])
        if vhost is not None:
            return vhost
    return index.default


def _match(table: config.RouteTable, host: str, path: str, steps: list[int] | None) -> Match | None:
    vhost = _select_host(_index(table), normalize_host(host), steps)
    if vhost is None:
        return None
    normal = normalize_path(path)
    if normal is None:
        return None
    entry = _find(vhost, normal, steps)
    if entry is None:
        return None
    return Match(route=entry.route, path=normal, route_index=entry.route_index)


def _find(vhost: _Host, path: str, steps: list[int] | None) -> _Entry | None:
    if vhost.exact:
        if steps is not None:
            steps[0] += 1
        entry = vhost.exact.get(path)
        if entry is not None:
            return entry
    for pattern, entry in vhost.regex:
        if steps is not None:
            steps[0] += 1
        if pattern.matches(path):  # RE2: linear in the path, whatever the pattern
            return entry
    if vhost.prefix:
        for candidate in _prefixes(path):
            if steps is not None:
                steps[0] += 1
            entry = vhost.prefix.get(candidate)
            if entry is not None:
                return entry
    return None


def _prefixes(path: str) -> Iterator[str]:
    """The element-wise prefixes of a normalised path, longest first, ending with ``/``."""
    end = len(path)
    if path.endswith("/") and end > 1:
        end -= 1
    while end > 1:
        yield path[:end]
        end = path.rfind("/", 0, end)
    yield "/"
