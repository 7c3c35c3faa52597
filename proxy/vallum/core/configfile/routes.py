"""Route options (Pomerium's names) -> :class:`~vallum.core.config.Route`, with every check that
needs more than one key (one path rule, rewrites in pairs, public routes without allow lists) and
the route's policy compiled as the proxy will.
"""

from __future__ import annotations

import re
from typing import Any

from vallum.core import config, policy, regex, routing
from vallum.core.configfile import nodes, values

ROUTE_KEYS: dict[str, nodes.Reader] = {
    "from": values.r_str,
    "to": values.r_node,
    "name": values.r_str,
    "description": values.r_str,
    "prefix": values.r_str,
    "path": values.r_str,
    "regex": values.r_str,
    "prefix_rewrite": values.r_str,
    "regex_rewrite_pattern": values.r_str,
    "regex_rewrite_substitution": values.r_str,
    "host_rewrite": values.r_str,
    "preserve_host_header": values.r_bool,
    "set_request_headers": values.r_header_map,
    "remove_request_headers": values.r_header_list,
    "set_response_headers": values.r_header_map,
    "timeout": values.r_duration,
    "idle_timeout": values.r_duration,
    "allow_websockets": values.r_bool,
    "tls_skip_verify": values.r_bool,
    "tls_server_name": values.r_str,
    "tls_upstream_server_name": values.r_str,
    "tls_custom_ca": values.r_pem("certificate"),
    "tls_custom_ca_file": values.r_pem_file("certificate"),
    "tls_client_cert": values.r_pem("certificate"),
    "tls_client_cert_file": values.r_pem_file("certificate"),
    "tls_client_key": values.r_pem("private key"),
    "tls_client_key_file": values.r_pem_file("private key"),
    "pass_identity_headers": values.r_bool,
    "allow_public_unauthenticated_access": values.r_bool,
    "allow_any_authenticated_user": values.r_bool,
    "allowed_users": values.r_str_list,
    "allowed_domains": values.r_str_list,
    "allowed_idp_claims": values.r_idp_claims,
    "policy": values.r_data,
}
_ROUTE_SAME = (
    "name",
    "prefix",
    "path",
    "regex",
    "prefix_rewrite",
    "regex_rewrite_pattern",
    "regex_rewrite_substitution",
    "host_rewrite",
    "preserve_host_header",
    "set_request_headers",
    "remove_request_headers",
    "set_response_headers",
    "timeout",
    "idle_timeout",
    "allow_websockets",
    "tls_skip_verify",
    "pass_identity_headers",
    "allow_public_unauthenticated_access",
    "allow_any_authenticated_user",
    "allowed_users",
    "allowed_domains",
    "allowed_idp_claims",
    "policy",
)


def read_route(ctx: nodes.Context, node: nodes.Node, path: str, default_timeout: float) -> Any:
    """One entry of ``routes``: Pomerium's route options -> :class:`Route`."""
    before = len(ctx.problems)
    got = ctx.section(node, path, ROUTE_KEYS)
    if not isinstance(node.value, dict):
        return nodes.MISSING
    lines = node.key_lines

    def at(key: str) -> int:
        return lines.get(key, node.line)

    kwargs: dict[str, Any] = {k: got[k] for k in _ROUTE_SAME if k in got}
    kwargs.setdefault("timeout", default_timeout)
    host = _route_from(ctx, node, path, got.get("from"))
    upstreams = _route_to(ctx, node, path)
    rules = [k for k in ("prefix", "path", "regex") if k in got]
    if len(rules) > 1:
        ctx.problem(
            at(rules[1]),
            f"{path}.{rules[1]}",
            f"set only one of prefix, path, regex "
            f"(also set: {', '.join(r for r in rules if r != rules[1])})",
        )
    for key in ("prefix", "path"):
        value = got.get(key)
        if value is None:
            continue
        normal = routing.normalize_path(value) if value.startswith("/") else None
        if normal is None:
            ctx.problem(
                at(key),
                f"{path}.{key}",
                f"expected an absolute path like /app, got {nodes.shown(value)}",
            )
        else:  # stored normalised, as requests are: "//api/./v1" is "/api/v1"
            kwargs[key] = normal
    for key in ("regex", "regex_rewrite_pattern"):  # RE2, as matched: linear time
        if key in got:
            try:
                compiled = regex.compile(got[key])
            except regex.RegexError as exc:
                ctx.problem(at(key), f"{path}.{key}", str(exc))
                continue
            sub = "regex_rewrite_substitution"
            if key == "regex_rewrite_pattern" and isinstance(got.get(sub), str):
                try:
                    compiled.substitution(got[sub])
                except regex.RegexError as exc:
                    ctx.problem(at(sub), f"{path}.{sub}", str(exc))
    if ("regex_rewrite_pattern" in got) != ("regex_rewrite_substitution" in got):
        missing = (
            "regex_rewrite_substitution"
            if "regex_rewrite_pattern" in got
            else "regex_rewrite_pattern"
        )
        present = (
            "regex_rewrite_pattern"
            if missing.endswith("substitution")
            else "regex_rewrite_substitution"
        )
        ctx.problem(at(present), f"{path}.{present}", f"needs {missing} as well")
    if "prefix_rewrite" in got and "regex_rewrite_pattern" in got:
        ctx.problem(
            at("prefix_rewrite"),
            f"{path}.prefix_rewrite",
            "set prefix_rewrite or regex_rewrite_pattern, not both",
        )
    check_public(ctx, node, path, got)
    names = [got.get(k) for k in ("tls_server_name", "tls_upstream_server_name") if k in got]
    if len(set(names)) > 1:
        ctx.problem(
            at("tls_upstream_server_name"),
            f"{path}.tls_upstream_server_name",
            "differs from tls_server_name; set one of them",
        )
    kwargs["tls_server_name"] = names[-1] if names else None
    kwargs["tls_custom_ca_pem"] = nodes.either(
        ctx, node, f"{path}.", got, "tls_custom_ca", "tls_custom_ca_file"
    )
    cert = nodes.either(ctx, node, f"{path}.", got, "tls_client_cert", "tls_client_cert_file")
    key = nodes.either(ctx, node, f"{path}.", got, "tls_client_key", "tls_client_key_file")
    if (cert is None) != (key is None) and nodes.MISSING not in (cert, key):
        ctx.problem(
            node.line, path, "tls_client_cert and tls_client_key go together (inline or _file)"
        )
    kwargs["tls_client_cert_pem"], kwargs["tls_client_key_pem"] = cert, key
    if len(ctx.problems) > before or host is None or upstreams is None:
        return nodes.MISSING
    return config.Route(
        from_url=got["from"],
        host=config.Host(host),
        to=upstreams,
        source=f"{ctx.source}:{node.line}",
        **kwargs,
    )


def _route_from(ctx: nodes.Context, node: nodes.Node, path: str, value: str | None) -> str | None:
    line = node.key_lines.get("from", node.line)
    if value is None:
        ctx.problem(
            node.line, path, "from is required (the external URL, e.g. https://app.example.com)"
        )
        return None
    scheme, sep, rest = value.partition("://")
    authority, _, tail = rest.partition("/")
    if not sep or scheme.lower() not in ("https", "http"):
        ctx.problem(
            line,
            f"{path}.from",
            f"expected an https:// URL, got {nodes.shown(value)} "
            "(TCP/UDP routes are not supported)",
        )
        return None
    if tail.strip("/") or "?" in authority or "#" in authority or "@" in authority:
        ctx.problem(
            line,
            f"{path}.from",
            f"the URL may hold only a host (put paths in prefix or path), got {nodes.shown(value)}",
        )
        return None
    host = authority.lower()
    if not host.startswith("*."):
        host = routing.normalize_host(authority)
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    problem = routing.host_problem(host.rstrip("."))
    if problem:
        ctx.problem(line, f"{path}.from", problem)
        return None
    return host.rstrip(".")


def _route_to(
    ctx: nodes.Context, node: nodes.Node, path: str
) -> tuple[config.Upstream, ...] | None:
    child = node.value.get("to")
    if child is None:
        ctx.problem(node.line, path, "to is required (one upstream URL or a list)")
        return None
    items = child.value if isinstance(child.value, list) else [child]
    out, weighted = [], set()
    for i, item in enumerate(items):
        item_path = f"{path}.to[{i}]" if isinstance(child.value, list) else f"{path}.to"
        if not isinstance(item.value, str):
            ctx.problem(item.line, item_path, f"expected an upstream URL, got {nodes.kind(item)}")
            continue
        try:
            out.append(config.parse_upstream(item.value))
        except ValueError as exc:
            ctx.problem(item.line, item_path, str(exc))
            continue
        weighted.add("," in item.value)
    if not items:
        ctx.problem(child.line, f"{path}.to", "needs at least one upstream URL")
    if len(weighted) > 1:
        ctx.problem(child.line, f"{path}.to", "give every upstream a weight, or none (as Pomerium)")
    return tuple(out) if out and len(out) == len(items) and len(weighted) == 1 else None


ACCESS_KEYS = (
    "policy",
    "allowed_users",
    "allowed_domains",
    "allowed_idp_claims",
    "allow_any_authenticated_user",
    "allow_public_unauthenticated_access",
)
"""The route options that decide who gets in (what ``vallum policy`` reads of a route)."""


def check_public(ctx: nodes.Context, node: nodes.Node, path: str, got: dict[str, Any]) -> None:
    """A public route with allow lists or a policy is refused, as Pomerium refuses it."""
    if got.get("allow_public_unauthenticated_access") and (
        got.get("allow_any_authenticated_user")
        or got.get("allowed_users")
        or got.get("allowed_domains")
        or got.get("allowed_idp_claims")
        or got.get("policy")
    ):
        key = "allow_public_unauthenticated_access"
        ctx.problem(
            node.key_lines.get(key, node.line),
            f"{path}.{key}" if path else key,
            "a public route cannot also restrict who may use it (remove the allow "
            "lists or the policy, or make the route non-public)",
        )


def check_policy(
    ctx: nodes.Context,
    node: nodes.Node,
    path: str,
    route: config.Route,
    mtls: config.DownstreamMTLS | None,
) -> None:
    """Compile the route's access rules as the proxy will; a policy that does not compile is a
    config problem here (the proxy, given one anyway, denies every request to that route)."""
    compiled = policy.compile_route_policy(route, downstream_mtls=mtls)
    error = compiled.error
    if error is None:
        return
    line, full = locate_policy_error(node, path, error.path)
    ctx.problem(line, full, error.message)


def locate_policy_error(node: nodes.Node, path: str, inner: str) -> tuple[int, str]:
    """The line and the full key path of a policy error at ``inner`` (the compiler's path,
    ``allow.or[2].email`` or ``allowed_users[1]``) in the route at ``node`` named ``path``."""
    first = inner.split(".", 1)[0].split("[", 1)[0]
    policy_node = node.value.get("policy") if isinstance(node.value, dict) else None
    if policy_node is not None and first not in ROUTE_KEYS:
        target = locate(policy_node, inner)
        separator = "" if not inner or inner.startswith("[") else "."
        full = f"{path}.policy{separator}{inner}" if path else f"policy{separator}{inner}"
    else:  # a problem in a legacy option (allowed_users, ...), named from the route
        target = locate(node, inner)
        full = (f"{path}.{inner}" if path else inner) if inner else path
    return target.line, full


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def locate(node: nodes.Node, path: str) -> nodes.Node:
    """The deepest node along ``path`` (``allow.or[2].email``), for the line of a problem."""
    for index, key in _PATH_PART.findall(path):
        if index and isinstance(node.value, list) and int(index) < len(node.value):
            node = node.value[int(index)]
        elif key and isinstance(node.value, dict) and key in node.value:
            node = node.value[key]
        else:
            break
    return node

