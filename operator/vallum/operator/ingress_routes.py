"""One Ingress -> its routes (routes-file form, read by the routes file's own reader), the SNI
certificates of its ``spec.tls``, and every problem, each naming its field or annotation.

Why a module of its own: this is the per-Ingress unit of work the translator memoises; it reads
the snapshot only through :class:`vallum.operator.snapshot.Lookups`, so the objects it used are
known. What it decides, mirroring the Pomerium ingress controller (``ingress_to_route.go``):

* each rule host + path is one route ``from: https://<host>``; ``pathType`` ``Exact`` is
  ``path``, ``Prefix`` is ``prefix`` (the core's prefixes are element-wise, as Ingress's),
  ``ImplementationSpecific`` (or none) is ``prefix``, or ``regex`` with the ``path_regex``
  annotation;
* a rule without host is a problem, unless ``subtle_allow_empty_host: "true"`` (either
  prefix) makes it the catch-all host ``*``, as Pomerium;
* ``spec.defaultBackend`` is a ``prefix: /`` route on the one host of the one ``spec.tls``
  entry, as Pomerium; anything else there is a problem; it comes after the rules, so a rule's
  ``/`` on that host wins, as the default backend takes only what no rule matches;
* a cert-manager HTTP-01 solver Ingress is public (and keeps the Host header), its
  annotations ignored, as Pomerium.

A broken Ingress (any problem) still gets one route per host and path, with ``unavailable``
set to its problems: its requests are refused with the reason (fail closed) instead of falling
through to another route. A path whose Service has no ready endpoint is not a problem: its route
answers 503 saying so.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from vallum.core import config, errors, policy, routing
from vallum.core.configfile import nodes, routes, settings, values
from vallum.operator import annotations as ingress_annotations
from vallum.operator import backends, upstream_material
from vallum.operator import snapshot as snap

SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
EMPTY_HOST = "subtle_allow_empty_host"
PLACEHOLDER = "http://unavailable.invalid"
"""``to`` of a route that denies every request (never contacted)."""
MAX_REASON = 1000
"""Characters of the reason a broken Ingress's routes show."""


@dataclasses.dataclass(frozen=True)
class Compiled:
    """What one Ingress gives the table, and what it read to get there."""

    routes: tuple[config.Route, ...]
    certificates: tuple[config.Certificate, ...]
    problems: tuple[str, ...]
    used: Mapping[snap.Dependency, object]
    secrets_used: frozenset[snap.ObjectKey]
    prepared: tuple[routing.Prepared, ...] = ()
    """``routes`` checked for the index (:func:`vallum.core.routing.prepare`), in order."""


class _Problems(nodes.Context):
    """Problems named by their field (``spec.rules[0].http.paths[1].backend: ...``), no line."""

    def __init__(self, source: str) -> None:
        super().__init__(source, "")

    def problem(self, line: int, path: str, message: str) -> Any:
        path = nodes.shorten(path.lstrip("."), nodes.MAX_PATH)
        message = nodes.shorten(message, nodes.MAX_MESSAGE)
        return self.add(f"{path}: {message}" if path else message)

    def read_file(self, node: nodes.Node, path: str, file_kind: Any) -> str | None:
        self.problem(node.line, path, "an Ingress cannot name files")
        return None


@dataclasses.dataclass(frozen=True)
class _Path:
    place: str  # spec.rules[0].http.paths[1] or spec.defaultBackend
    host: str
    rule: tuple[str, str]  # ("prefix" | "path" | "regex", value)
    backend: Any


def compile_ingress(
    lookups: snap.Lookups,
    key: snap.ObjectKey,
    ingress: Mapping[str, Any],
    *,
    default_timeout: float = 30.0,
    mtls: config.DownstreamMTLS | None = None,
) -> Compiled:
    """The routes of ``ingress`` (a plain dict as the API returns it)."""
    namespace, name = key
    source = f"Ingress {namespace}/{name}"
    ctx = _Problems(source)
    meta = ingress.get("metadata") or {}
    spec = ingress.get("spec") or {}
    labels = meta.get("labels") or {}
    raw = dict(meta.get("annotations") or {})
    allow_empty_host = _empty_host(ctx, raw)
    solver = labels.get(SOLVER_LABEL) == "true"
    if solver:
        got = ingress_annotations.IngressAnnotations()
        options: dict[str, Any] = {
            "allow_public_unauthenticated_access": True,
            "preserve_host_header": True,
        }
    else:
        got = read_annotations(raw)
        for problem in got.problems:
            ctx.add(problem)
        options = dict(got.options)
    _secret_options(ctx, lookups, namespace, got, options)
    _policies(ctx, lookups, namespace, got, options)
    certificates = _certificates(ctx, lookups, namespace, spec.get("tls"))
    paths = _paths(ctx, spec, allow_empty_host, got.path_regex)
    built: list[config.Route] = []
    if not ctx.problems:
        built = _routes(ctx, lookups, namespace, source, paths, got, options, default_timeout, mtls)
    else:  # still name every unknown Service or port: one Event lists all that is wrong
        _check_backends(ctx, lookups, namespace, paths, got)
    problems = tuple(ctx.report(ctx.problems))
    if problems:
        reason = nodes.shorten(f"{source}: " + "; ".join(problems), MAX_REASON)
        built = _denying(source, paths, reason)
    if solver:  # also served on plain HTTP, under /.well-known/acme-challenge/ only
        built = [dataclasses.replace(r, acme_http01_solver=True) for r in built]
    return Compiled(
        routes=tuple(built),
        certificates=certificates,  # kept when broken: the 503 page is served over its own TLS
        problems=problems,
        used=dict(lookups.used),
        secrets_used=lookups.secrets_used(),
        prepared=tuple(routing.prepare(route, route.source) for route in built),
    )


def read_annotations(raw: Mapping[str, Any]) -> ingress_annotations.IngressAnnotations:
    """:func:`vallum.operator.annotations.read`, remembered for recent annotation sets (many
    Ingresses carry the same ones, and reading them compiles their policy)."""
    ours = tuple(
        sorted(
            (k, v)
            for k, v in raw.items()
            if k.startswith(
                (ingress_annotations.VALLUM_PREFIX, ingress_annotations.POMERIUM_PREFIX)
            )
        )
    )
    if not all(isinstance(v, str) for _, v in ours):
        return ingress_annotations.read(raw)  # not hashable as given: read as it is
    return _read_cached(ours)


@functools.lru_cache(maxsize=4096)
def _read_cached(items: tuple[tuple[str, str], ...]) -> ingress_annotations.IngressAnnotations:
    return ingress_annotations.read(dict(items))


def _empty_host(ctx: _Problems, raw: dict[str, Any]) -> bool:
    """Pomerium's ``subtle_allow_empty_host`` (read here, then removed from ``raw``)."""
    allowed = False
    for prefix in (ingress_annotations.VALLUM_PREFIX, ingress_annotations.POMERIUM_PREFIX):
        key = prefix + EMPTY_HOST
        if key in raw:
            value = values.r_bool(ctx, nodes.Node(raw.pop(key), 1), key)
            allowed = allowed or value is True
    return allowed


def _secret_data(
    ctx: _Problems, lookups: snap.Lookups, namespace: str, name: str, where: str
) -> Mapping[str, Any] | None:
    """The ``data`` of a Secret (values still base64), or None (problem recorded)."""
    obj = lookups.secret((namespace, name))
    if obj is None:
        ctx.problem(1, where, f"Secret {namespace}/{name} not found")
        return None
    data = obj.get("data")
    return data if isinstance(data, Mapping) else {}


def _secret_key(
    ctx: _Problems, data: Mapping[str, Any], ref: str, data_key: str, where: str
) -> str | None:
    """One key of a Secret's ``data`` as text; only the keys used are decoded (a Secret may
    hold binary keys beside them, a cert-manager keystore say)."""
    if data_key not in data:
        ctx.problem(1, where, f"Secret {ref} has no key {data_key}")
        return None
    try:
        return base64.b64decode(str(data[data_key]), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        ctx.problem(1, where, f"Secret {ref} key {data_key} is not base64-encoded UTF-8 text")
        return None


def _secret_options(
    ctx: _Problems,
    lookups: snap.Lookups,
    namespace: str,
    got: ingress_annotations.IngressAnnotations,
    options: dict[str, Any],
) -> None:
    """The annotations' Secret references -> route options (cert-manager's key names)."""
    refs = got.secrets
    for field, wanted in (
        ("tls_client", {"tls_client_cert": "tls.crt", "tls_client_key": "tls.key"}),
        ("tls_custom_ca", {"tls_custom_ca": "ca.crt"}),
    ):
        name = getattr(refs, field)
        if name is None:
            continue
        where = got.sources.get(f"{field}_secret", f"{field}_secret")
        clash = sorted(set(wanted) & set(options))
        if clash:
            ctx.problem(1, where, f"set {clash[0]} or {field}_secret, not both")
            continue
        data = _secret_data(ctx, lookups, namespace, name, where)
        if data is None:
            continue
        found: dict[str, str] = {}
        for option, data_key in wanted.items():
            ref = f"{namespace}/{name}"
            value = _secret_key(ctx, data, ref, data_key, where)
            reason = None if value is None else upstream_material.pem_problem(option, value)
            if reason is not None:  # named by the Secret's key, not by a route option
                ctx.problem(1, where, f"Secret {ref} key {data_key}: {reason}")
            elif value is not None:
                found[option] = value
        if len(found) == len(wanted):
            options.update(found)
    for field in ("set_request_headers", "set_response_headers"):
        name = getattr(refs, field)
        if name is None:
            continue
        where = got.sources.get(f"{field}_secret", f"{field}_secret")
        data = _secret_data(ctx, lookups, namespace, name, where)
        if data is None:
            continue
        headers = dict(options.get(field) or {})
        both = sorted(h for h in data if h in headers)
        if both:
            ctx.problem(1, where, f"header {both[0]} is set by {field} as well")
            continue
        ref = f"{namespace}/{name}"
        for header in sorted(data):
            value = _secret_key(ctx, data, ref, header, where)
            if value is not None:
                headers[header] = value
        options[field] = headers


def _policies(
    ctx: _Problems,
    lookups: snap.Lookups,
    namespace: str,
    got: ingress_annotations.IngressAnnotations,
    options: dict[str, Any],
) -> None:
    """``policy-ref`` Policies join the route's ``policy`` as more rules: every rule's allow
    blocks are ORed and so are its deny blocks (any allow admits, any deny refuses), as
    Pomerium combines a route's policies."""
    where = ingress_annotations.VALLUM_PREFIX + ingress_annotations.POLICY_REF
    documents: list[Any] = []
    for ref in got.policy_refs:
        obj = lookups.policy((namespace, ref))
        if obj is None:
            ctx.problem(1, where, f"Policy {namespace}/{ref} not found")
            continue
        problem = policy_problem(obj)
        if problem is not None:
            ctx.problem(1, where, f"Policy {namespace}/{ref} is invalid: {problem}")
            continue
        documents.append(obj.get("spec"))
    if not documents:
        return
    own = options.get("policy")
    rules = [] if own is None else list(own) if isinstance(own, list) else [own]
    options["policy"] = [*rules, *documents]


def policy_problem(obj: Mapping[str, Any]) -> str | None:
    """Why a Policy object's ``spec`` does not compile (the parser's message), or None."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping) or not spec:
        return "spec: expected a policy (allow and/or deny)"
    try:
        policy.compile_policy(spec)
    except errors.PolicyError as exc:
        return f"spec.{exc}" if exc.path else f"spec: {exc}"
    except (ValueError, TypeError, RecursionError) as exc:
        return f"spec: {exc}"
    return None


def _certificates(
    ctx: _Problems, lookups: snap.Lookups, namespace: str, tls: Any
) -> tuple[config.Certificate, ...]:
    """``spec.tls[].secretName`` -> SNI certificates (``tls.crt``/``tls.key``)."""
    out: list[config.Certificate] = []
    for i, entry in enumerate(tls if isinstance(tls, list) else []):
        name = entry.get("secretName") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            continue  # no Secret: the hosts use the default certificates
        where = f"spec.tls[{i}].secretName"
        data = _secret_data(ctx, lookups, namespace, name, where)
        if data is None:
            continue
        ref = f"{namespace}/{name}"
        cert = _secret_key(ctx, data, ref, "tls.crt", where)
        key = _secret_key(ctx, data, ref, "tls.key", where)
        if cert is None or key is None:
            continue
        node = ingress_annotations.route_node({"cert": cert, "key": key}, {})
        read = settings.r_certificate(ctx, node, f"{where} (Secret {ref})")
        if isinstance(read, config.Certificate) and read not in out:
            out.append(read)
    return tuple(out)


def _paths(
    ctx: _Problems, spec: Mapping[str, Any], allow_empty_host: bool, path_regex: bool
) -> list[_Path]:
    out: list[_Path] = []
    for i, rule in enumerate(spec.get("rules") or []):
        place = f"spec.rules[{i}]"
        rule = rule if isinstance(rule, Mapping) else {}
        host = rule.get("host") or ""
        if not host:
            if not allow_empty_host:
                ctx.problem(
                    1,
                    f"{place}.host",
                    "a rule without host needs the annotation "
                    f'{ingress_annotations.POMERIUM_PREFIX}{EMPTY_HOST}: "true" '
                    "(it then takes every host no other route takes)",
                )
                continue
            host = "*"
        http = rule.get("http")
        if not isinstance(http, Mapping):
            ctx.problem(1, f"{place}.http", "is required")
            continue
        for j, path in enumerate(http.get("paths") or []):
            path = path if isinstance(path, Mapping) else {}
            value = path.get("path") or "/"
            kind = path.get("pathType") or "ImplementationSpecific"
            if kind == "Exact":
                rule_key = "path"
            elif kind == "Prefix":
                rule_key = "prefix"
            elif kind == "ImplementationSpecific":
                rule_key = "regex" if path_regex else "prefix"
            else:
                ctx.problem(1, f"{place}.http.paths[{j}].pathType", f"unknown {kind!r}")
                continue
            out.append(
                _Path(f"{place}.http.paths[{j}]", str(host), (rule_key, value), path.get("backend"))
            )
    # After the rules: where a rule has the same host and path, the rule wins (Ingress's
    # default backend takes what no rule matches).
    default = spec.get("defaultBackend")
    if default is not None:
        place = "spec.defaultBackend"
        tls = spec.get("tls") or []
        hosts = tls[0].get("hosts") or [] if len(tls) == 1 and isinstance(tls[0], dict) else []
        if len(tls) != 1 or len(hosts) != 1:
            ctx.problem(
                1,
                place,
                "needs its host from spec.tls: exactly one entry with exactly one host "
                f"(as the Pomerium controller), got {len(tls)} entries",
            )
        else:
            out.append(_Path(place, str(hosts[0]), ("prefix", "/"), default))
    return out


def _routes(
    ctx: _Problems,
    lookups: snap.Lookups,
    namespace: str,
    source: str,
    paths: list[_Path],
    got: ingress_annotations.IngressAnnotations,
    options: Mapping[str, Any],
    default_timeout: float,
    mtls: config.DownstreamMTLS | None,
) -> list[config.Route]:
    out: list[config.Route] = []
    for item in paths:
        backend = _backend(ctx, lookups, namespace, item, got)
        if backend is None:
            continue
        route_options = dict(options)
        names = {"tls_server_name", "tls_upstream_server_name"}
        if backend.server_name and not names & set(route_options):
            route_options["tls_server_name"] = backend.server_name
        rule = {
            "from": f"https://{item.host}",
            "to": list(backend.upstreams) or [PLACEHOLDER],
            item.rule[0]: item.rule[1],
        }
        node = ingress_annotations.route_node(rule, route_options)
        route = routes.read_route(ctx, node, item.place, default_timeout)
        if not isinstance(route, config.Route):
            continue
        routes.check_policy(ctx, node, item.place, route, mtls)
        for problem in upstream_material.problems(route):
            ctx.problem(1, item.place, problem + _from_secret(namespace, got, problem))
        out.append(
            dataclasses.replace(
                route, source=f"{source} {item.place}", unavailable=backend.unavailable
            )
        )
    if not ctx.problems:
        for route in out:  # the index's own checks, so the whole table never fails for one
            try:
                routing.prepare(route, route.source)
            except errors.ConfigError as exc:
                for problem in exc.problems:
                    ctx.add(problem)
    return out


def _from_secret(
    namespace: str, got: ingress_annotations.IngressAnnotations, problem: str
) -> str:
    """`` (Secret ns/name)`` when the material of ``problem`` came from a Secret reference."""
    field = "tls_custom_ca" if problem.startswith("tls_custom_ca") else "tls_client"
    name = getattr(got.secrets, field)
    return f" (Secret {namespace}/{name})" if name else ""


def _check_backends(
    ctx: _Problems,
    lookups: snap.Lookups,
    namespace: str,
    paths: list[_Path],
    got: ingress_annotations.IngressAnnotations,
) -> None:
    """Record the problem of every backend that cannot resolve (routes are not built)."""
    for item in paths:
        _backend(ctx, lookups, namespace, item, got)


def _backend(
    ctx: _Problems,
    lookups: snap.Lookups,
    namespace: str,
    item: _Path,
    got: ingress_annotations.IngressAnnotations,
) -> backends.Backend | None:
    """The backend of one path, or ``None`` with its problem recorded."""
    backend = backends.resolve(
        lookups,
        namespace,
        item.backend,
        secure=got.secure_upstream,
        service_proxy=got.service_proxy_upstream,
    )
    if backend.problem is not None:
        ctx.problem(1, f"{item.place}.backend", backend.problem)
        return None
    return backend


def _denying(source: str, paths: list[_Path], reason: str) -> list[config.Route]:
    """One route per host and path that refuses every request with ``reason`` (paths whose
    host or rule cannot be read at all are left out: nothing could match them)."""
    out: list[config.Route] = []
    for item in paths:
        scratch = _Problems(source)
        rule = {"from": f"https://{item.host}", "to": PLACEHOLDER, item.rule[0]: item.rule[1]}
        node = ingress_annotations.route_node(rule, {})
        route = routes.read_route(scratch, node, item.place, 30.0)
        if not isinstance(route, config.Route):
            continue
        route = dataclasses.replace(route, source=f"{source} {item.place}", unavailable=reason)
        try:
            routing.prepare(route, route.source)
        except errors.ConfigError:
            continue
        out.append(route)
    return out


def node(document: Mapping[str, Any]) -> nodes.Node:
    """A plain mapping as the routes file's reader reads it (a YAML node tree without lines)."""
    return ingress_annotations.route_node(document, {})
