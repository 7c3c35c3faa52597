"""An Ingress's annotations -> the route options its routes get, plus what is wrong with them.

Why a module of its own: annotations are how people configure a route on an Ingress
(``ingress.vallum.dev/<option>``, and Pomerium's ``ingress.pomerium.io/<option>`` so that
Ingresses written for the Pomerium ingress controller keep working). Their values must mean
exactly what the same option means in a ``vallum serve`` routes file, so every value goes
through the very readers of :mod:`vallum.core.configfile` (durations, booleans, header maps,
lists, PEM, policies), and the checks across options (rewrites in pairs, a public route without
allow lists, a policy that compiles) are those of its route reader. Nothing here parses a value
form of its own.

Values are read as Pomerium's controller reads them: each annotation value is one YAML document
(so ``"true"``, ``"30s"``, ``'{"X-Team": "blue"}'``, ``'["a@x.com"]'`` and a block-style YAML
policy all work), except the text options (``name``, rewrites, server names, inline PEM), whose
value is taken as written, so a regex like ``^/[a-z]+$`` needs no YAML quoting.

Pure: no I/O, no Kubernetes client. Secret references (``tls_client_secret``, ...) and Policy
names (``ingress.vallum.dev/policy-ref``) are returned as names for the translator to resolve.
A bad annotation is a problem string naming it, never an exception. Same input, same output.

Use (imported under another name: ``annotations`` is the name ``from __future__ import
annotations`` binds, and mypy reads the module's name as that)::

    from vallum.operator import annotations as ingress_annotations

    got = ingress_annotations.read(ingress["metadata"].get("annotations", {}))
    got.problems      # ("ingress.pomerium.io/timeout: expected a duration ...", ...)
    rule = {"from": url, "to": upstreams, "prefix": "/"}
    node = ingress_annotations.route_node(rule, got.options)
    route = routes.read_route(ctx, node, "Ingress default/app", default_timeout)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Mapping
from typing import Any

from vallum.core import config
from vallum.core.configfile import nodes, routes, values

VALLUM_PREFIX = "ingress.vallum.dev/"
POMERIUM_PREFIX = "ingress.pomerium.io/"
POLICY_REF = "policy-ref"
"""``ingress.vallum.dev/policy-ref: NAME[,NAME...]``: Policy objects in the Ingress's namespace."""

RULE_KEYS = frozenset({"from", "to", "prefix", "path", "regex"})
"""Route keys that come from the Ingress rules, never from annotations."""
FILE_KEYS = frozenset(k for k in routes.ROUTE_KEYS if k.endswith("_file"))
"""Route keys that read files: refused, an Ingress must not read the controller's files."""

OPTION_READERS: Mapping[str, nodes.Reader] = types.MappingProxyType(
    {k: r for k, r in routes.ROUTE_KEYS.items() if k not in RULE_KEYS | FILE_KEYS}
)
"""Every route option an annotation may set, with the routes file's reader of its value."""

TEXT_OPTIONS = frozenset(
    {
        "name",
        "description",
        "prefix_rewrite",
        "regex_rewrite_pattern",
        "regex_rewrite_substitution",
        "host_rewrite",
        "tls_server_name",
        "tls_upstream_server_name",
        "tls_custom_ca",
        "tls_client_cert",
        "tls_client_key",
    }
)
"""Options whose annotation value is used as written (not read as YAML)."""

FLAGS = ("path_regex", "secure_upstream", "service_proxy_upstream")
"""Pomerium's annotations about the Ingress's paths and backends rather than route options."""

SECRET_REFS = (
    "set_request_headers_secret",
    "set_response_headers_secret",
    "tls_client_secret",
    "tls_custom_ca_secret",
)
"""Pomerium's annotations naming a Secret in the Ingress's namespace."""

POMERIUM_UNSUPPORTED = frozenset(
    {
        "allow_spdy",
        "allowed_groups",
        "bearer_token_format",
        "circuit_breaker_thresholds",
        "cors_allow_preflight",
        "depends_on",
        "health_checks",
        "healthy_panic_threshold",
        "host_path_regex_rewrite_pattern",
        "host_path_regex_rewrite_substitution",
        "host_rewrite_header",
        "idp_access_token_allowed_audiences",
        "idp_secret",
        "kubernetes_service_account_token_secret",
        "load_balancing_policy",
        "logo_url",
        "mcp_client",
        "mcp_server",
        "outlier_detection",
        "rewrite_response_headers",
        "tcp_upstream",
        "tls_downstream_client_ca_secret",
        "udp_upstream",
        "upstream_tunnel",
    }
)
"""Annotations of the Pomerium ingress controller that Vallum does not implement: refused
with a message saying so, rather than served without them."""

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A Kubernetes object name (DNS-1123 subdomain), as Secret and Policy names are."""
_PLACEHOLDER = "https://annotations.invalid"
"""``from`` and ``to`` of the route the options are checked on (the Ingress gives the real ones)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRefs:
    """Secrets named by annotations, in the Ingress's namespace; None when not named.

    ``tls_client``: ``tls.crt`` and ``tls.key`` become ``tls_client_cert``/``tls_client_key``;
    ``tls_custom_ca``: ``ca.crt`` becomes ``tls_custom_ca``; ``set_request_headers`` and
    ``set_response_headers``: every key/value is one more header (Pomerium's forms)."""

    tls_client: str | None = None
    tls_custom_ca: str | None = None
    set_request_headers: str | None = None
    set_response_headers: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class IngressAnnotations:
    """What an Ingress's annotations ask of its routes.

    ``options`` maps route option names to values as a routes file holds them (plain YAML
    data; text options as strings), keys sorted: only values that passed their reader, so
    an option with a bad value is absent (one that passed but conflicts with another option,
    a rewrite without its pair say, stays). ``sources`` names the annotation each option,
    flag and Secret reference came from. ``problems`` lists every problem, each starting
    with the annotation's name: any problem makes the Ingress broken (its routes deny), so
    the options are never served with a problem left out."""

    options: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    sources: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    secure_upstream: bool = False
    """``secure_upstream: "true"``: the Service backends are reached over https."""
    path_regex: bool = False
    """``path_regex: "true"``: the Ingress's paths are regexes (``regex``, not ``prefix``)."""
    service_proxy_upstream: bool = False
    """``service_proxy_upstream: "true"``: the upstream is the Service's cluster DNS name
    (``<service>.<namespace>.svc.cluster.local:<port>``), not its endpoints."""
    secrets: SecretRefs = SecretRefs()
    policy_refs: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


class _Problems(nodes.Context):
    """A :class:`nodes.Context` whose problems name the annotation, not a file and line."""

    def __init__(self) -> None:
        super().__init__("ingress annotations", "")
        self.current = ""  # the annotation being read, if one is
        self.option = ""  # its option name
        self.sources: dict[str, str] = {}  # option -> annotation, for checks across options

    def problem(self, line: int, path: str, message: str) -> Any:
        annotation, option = self.current, self.option
        path = path.lstrip(".")  # the route reader's paths start with "." when its own is ""
        if not annotation:
            option = _option_of(path)
            annotation = self.sources.get(option, "")
            if not annotation:  # a message about several options ("x and y go together")
                option = next((o for o in sorted(self.sources) if o in message), "")
                annotation = self.sources.get(option, "ingress annotations")
        rest = path[len(option) :] if option and path.startswith(option) else path
        rest = rest.lstrip(".")
        message = nodes.shorten(message, nodes.MAX_MESSAGE)
        where = f"{annotation}: {nodes.shorten(rest, nodes.MAX_PATH)}" if rest else annotation
        return self.add(f"{where}: {message}")

    def read_file(self, node: nodes.Node, path: str, file_kind: Any) -> str | None:
        self.problem(node.line, path, "annotations cannot name files")
        return None


def _option_of(path: str) -> str:
    """``set_request_headers.X-Team`` -> ``set_request_headers``; ``allowed_users[1]`` ->
    ``allowed_users``."""
    match = re.match(r"[^.\[]*", path)
    return match.group(0) if match else path


def read(annotations: Mapping[str, object]) -> IngressAnnotations:
    """Read an Ingress's ``metadata.annotations``; annotations of other prefixes are ignored."""
    ctx = _Problems()
    claims: dict[str, list[tuple[str, str]]] = {}
    policy_refs: tuple[str, ...] = ()
    for key in sorted(annotations):
        text = annotations[key]
        if key.startswith(VALLUM_PREFIX):
            prefix = VALLUM_PREFIX
        elif key.startswith(POMERIUM_PREFIX):
            prefix = POMERIUM_PREFIX
        else:
            continue
        name = key[len(prefix) :]
        ctx.current, ctx.option = key, name
        if not isinstance(text, str):  # the API server sends strings; a caller might not
            ctx.problem(1, "", f"expected a string value, got {nodes.shown(text)}")
            continue
        if name == POLICY_REF and prefix == VALLUM_PREFIX:
            policy_refs = _policy_refs(ctx, text)
        elif name in OPTION_READERS or name in FLAGS or name in SECRET_REFS:
            claims.setdefault(name, []).append((key, text))
        else:
            ctx.problem(1, "", _unknown(prefix, name))
    options: dict[str, Any] = {}
    flags: dict[str, bool] = {}
    secrets: dict[str, str] = {}
    for name in sorted(claims):
        got = [(key, _read_value(ctx, key, name, text)) for key, text in claims[name]]
        good = [(key, read_value) for key, read_value in got if read_value is not nodes.MISSING]
        if len(good) < len(got):
            continue
        (first, (plain, value)), *others = good
        differing = [key for key, (_, other) in others if other != value]
        if differing:
            ctx.current, ctx.option = differing[0], name
            ctx.problem(1, "", f"differs from {first}; set one of them")
            continue
        ctx.sources[name] = first
        if name in FLAGS:
            flags[name] = value
        elif name in SECRET_REFS:
            secrets[name.removesuffix("_secret")] = value
        else:
            options[name] = plain
    ctx.current = ctx.option = ""
    if options:
        _check_together(ctx, options)
    return IngressAnnotations(
        options=types.MappingProxyType(options),
        sources=types.MappingProxyType(dict(sorted(ctx.sources.items()))),
        secrets=SecretRefs(**secrets),
        policy_refs=policy_refs,
        problems=tuple(ctx.report(ctx.problems)),
        **flags,
    )


def _read_value(ctx: _Problems, key: str, name: str, text: str) -> Any:
    """``(plain, value)``: the annotation's value as a routes file holds it and as its reader
    reads it, or ``MISSING`` after recording a problem."""
    ctx.current, ctx.option = key, name
    if name in SECRET_REFS:
        value = text.strip()
        if len(value) > 253 or not _NAME.match(value):
            return ctx.problem(1, "", f"expected the name of a Secret, got {nodes.shown(text)}")
        return value, value
    if name in TEXT_OPTIONS:
        node: nodes.Node | None = nodes.Node(text, 1)
    else:
        node = nodes.parse_yaml(text, ctx)
    if node is None:
        return nodes.MISSING
    reader = values.r_bool if name in FLAGS else OPTION_READERS[name]
    value = reader(ctx, node, name)
    if value is nodes.MISSING:
        return value
    try:
        plain = node.plain()
    except ValueError as exc:
        return ctx.problem(1, "", str(exc))
    return plain, value


def _policy_refs(ctx: _Problems, text: str) -> tuple[str, ...]:
    names = [part.strip() for part in text.split(",")]
    bad = [n for n in names if len(n) > 253 or not _NAME.match(n)]
    if bad or not text.strip():
        shown = nodes.shown(bad[0]) if bad else nodes.shown(text)
        ctx.problem(1, "", f"expected Policy names separated by commas, got {shown}")
        return ()
    return tuple(dict.fromkeys(names))


def _unknown(prefix: str, name: str) -> str:
    if prefix == POMERIUM_PREFIX and name in POMERIUM_UNSUPPORTED:
        return "a Pomerium option Vallum does not support"
    if name in FILE_KEYS:
        inline = name.removesuffix("_file")
        secret = "tls_custom_ca_secret" if "custom_ca" in name else "tls_client_secret"
        return f"annotations cannot name files; use {inline} or {secret}"
    if name == POLICY_REF:
        return f"Vallum's own annotation: use {VALLUM_PREFIX}{POLICY_REF}"
    if name in RULE_KEYS:
        return "comes from the Ingress's rules, not from an annotation"
    known = [*OPTION_READERS, *FLAGS, *SECRET_REFS]
    if prefix == VALLUM_PREFIX:
        known.append(POLICY_REF)
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return "unknown option" + (f" (did you mean {prefix}{near[0]}?)" if near else "")


def _check_together(ctx: _Problems, options: Mapping[str, Any]) -> None:
    """The route reader's checks across options (rewrites in pairs, public routes without
    allow lists, both halves of a client certificate, a policy that compiles), run on a
    route with placeholder ``from`` and ``to``."""
    node = route_node({"from": _PLACEHOLDER, "to": _PLACEHOLDER}, options)
    route = routes.read_route(ctx, node, "", 30.0)
    if isinstance(route, config.Route):
        routes.check_policy(ctx, node, "", route, None)


def route_node(rule: Mapping[str, Any], options: Mapping[str, Any]) -> nodes.Node:
    """The routes-file node of one route: ``rule`` (``from``, ``to``, a path rule) and the
    annotations' ``options``, for :func:`vallum.core.configfile.routes.read_route`."""
    return _node({**options, **rule})


def _node(value: Any) -> nodes.Node:
    if isinstance(value, Mapping):
        return nodes.Node({str(k): _node(v) for k, v in value.items()}, 1)
    if isinstance(value, (list, tuple)):
        return nodes.Node([_node(v) for v in value], 1)
    return nodes.Node(value, 1)
