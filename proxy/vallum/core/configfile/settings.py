"""Global settings (Pomerium's names) -> :class:`~vallum.core.config.Settings`, including the
certificate list, downstream mTLS and the ``routes`` (or older ``policy``) list.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from vallum.core import config
from vallum.core.configfile import nodes, routes, values


def r_certificate(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    spec = {
        "cert": values.r_pem("certificate"),
        "key": values.r_pem("private key"),
        "cert_file": values.r_pem_file("certificate"),
        "key_file": values.r_pem_file("private key"),
    }
    got = ctx.section(node, path, spec)
    cert = nodes.either(ctx, node, f"{path}.", got, "cert", "cert_file")
    key = nodes.either(ctx, node, f"{path}.", got, "key", "key_file")
    if cert is nodes.MISSING or key is nodes.MISSING:
        return nodes.MISSING
    if not cert or not key:
        if isinstance(node.value, dict) and len(got) == len(node.value):
            ctx.problem(
                node.line, path, "a certificate needs cert (or cert_file) and key (or key_file)"
            )
        return nodes.MISSING
    return config.Certificate(
        cert_pem=cert,
        key_pem=key,
        cert_file=file_of(ctx, node, "cert_file"),
        key_file=file_of(ctx, node, "key_file"),
    )


def file_of(ctx: nodes.Context, node: nodes.Node, key: str) -> str | None:
    child = node.value.get(key) if isinstance(node.value, dict) else None
    if child is None or not isinstance(child.value, str):
        return None
    return os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(child.value)))


def r_downstream_mtls(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    spec = {
        "ca": values.r_pem("certificate"),
        "ca_file": values.r_pem_file("certificate"),
        "crl": values.r_pem("crl"),
        "crl_file": values.r_pem_file("crl"),
        "enforcement": values.r_enum("policy_with_default_deny", "policy", "reject_connection"),
        "max_verify_depth": values.r_count,
    }
    got = ctx.section(node, path, spec)
    ca = nodes.either(ctx, node, f"{path}.", got, "ca", "ca_file")
    crl = nodes.either(ctx, node, f"{path}.", got, "crl", "crl_file")
    if nodes.MISSING in (ca, crl):
        return nodes.MISSING
    if ca is None and isinstance(node.value, dict):
        return ctx.problem(node.line, path, "ca or ca_file is required for downstream mTLS")
    extra = {k: got[k] for k in ("enforcement", "max_verify_depth") if k in got}
    return config.DownstreamMTLS(ca_pem=ca, crl_pem=crl, **extra)


SETTINGS_KEYS: dict[str, nodes.Reader] = {
    "address": values.r_address,
    "http_redirect_addr": values.r_address,
    "insecure_server": values.r_bool,
    "certificates": values.r_list(r_certificate),
    "certificate": values.r_pem("certificate"),
    "certificate_key": values.r_pem("private key"),
    "certificate_file": values.r_pem_file("certificate"),
    "certificate_key_file": values.r_pem_file("private key"),
    "metrics_address": values.r_address,
    "xff_num_trusted_hops": values.r_count,
    "timeout_idle": values.r_duration,
    "headers_with_underscores_action": values.r_enum("allow", "drop_header", "reject_request"),
    "default_upstream_timeout": values.r_duration,
    "authenticate_service_url": values.r_url,
    "idp_provider": values.r_str,
    "idp_provider_url": values.r_url,
    "idp_client_id": values.r_str,
    "idp_client_secret": values.r_str,
    "idp_client_secret_file": values.r_text_file,
    "idp_scopes": values.r_str_list,
    "idp_groups_claim": values.r_str,
    "idp_access_token_allowed_audiences": values.r_str_list,
    "idp_allow_unverified_email": values.r_bool,
    "cookie_secret": values.r_str,
    "cookie_secret_file": values.r_text_file,
    "cookie_name": values.r_str,
    "cookie_domain": values.r_str,
    "cookie_expire": values.r_duration,
    "cookie_secure": values.r_bool,
    "cookie_http_only": values.r_bool,
    "cookie_same_site": values.r_enum("lax", "strict", "none", "Lax", "Strict", "None"),
    "signing_key": values.r_signing_keys,
    "signing_key_file": values.r_signing_key_file,
    "jwt_claims_headers": values.r_claims_headers,
    "jwt_issuer_format": values.r_enum("hostOnly", "uri"),
    "jwt_groups_filter": values.r_str_list,
    "pass_identity_headers": values.r_bool,
    "pomerium_compatibility": values.r_bool,
    "downstream_mtls": r_downstream_mtls,
    "certificate_authority": values.r_pem("certificate"),
    "certificate_authority_file": values.r_pem_file("certificate"),
    "dev_mode": values.r_bool,
    "log_level": values.r_enum("debug", "info", "warn", "warning", "error"),
    "shared_secret": values.r_str,
    "shared_secret_file": values.r_text_file,
    "services": values.r_enum("all"),
    "routes": values.r_node,
    "policy": values.r_node,
}
"""Every top-level key. ``shared_secret`` and ``services: all`` are accepted and ignored:
they only matter between Pomerium's split services, and Vallum is one process."""

_SETTINGS_SAME = (
    "address",
    "http_redirect_addr",
    "insecure_server",
    "metrics_address",
    "xff_num_trusted_hops",
    "timeout_idle",
    "headers_with_underscores_action",
    "default_upstream_timeout",
    "authenticate_service_url",
    "idp_provider",
    "idp_provider_url",
    "idp_client_id",
    "idp_scopes",
    "idp_groups_claim",
    "idp_access_token_allowed_audiences",
    "idp_allow_unverified_email",
    "cookie_name",
    "cookie_domain",
    "cookie_expire",
    "cookie_secure",
    "cookie_http_only",
    "jwt_claims_headers",
    "jwt_issuer_format",
    "jwt_groups_filter",
    "pass_identity_headers",
    "pomerium_compatibility",
    "downstream_mtls",
    "dev_mode",
    "log_level",
)


def read_settings(ctx: nodes.Context, root: nodes.Node) -> config.Settings | None:
    """The whole file -> :class:`Settings` (None when the top level is not a mapping)."""
    got = ctx.section(root, "", SETTINGS_KEYS)
    if not isinstance(root.value, dict):
        return None
    kwargs: dict[str, Any] = {k: got[k] for k in _SETTINGS_SAME if k in got}
    if "cookie_same_site" in got:
        kwargs["cookie_same_site"] = got["cookie_same_site"].lower()
    if kwargs.get("log_level") == "warning":
        kwargs["log_level"] = "warn"
    for a, b, field in (
        ("idp_client_secret", "idp_client_secret_file", "idp_client_secret"),
        ("cookie_secret", "cookie_secret_file", "cookie_secret"),
        ("certificate_authority", "certificate_authority_file", "certificate_authority_pem"),
    ):
        value = nodes.either(ctx, root, "", got, a, b)
        if value not in (None, nodes.MISSING):
            kwargs[field] = value
    keys = nodes.either(ctx, root, "", got, "signing_key", "signing_key_file")
    if keys not in (None, nodes.MISSING):
        kwargs["signing_key"] = keys
    if "cookie_secret" in kwargs:
        _check_cookie_secret(ctx, root, kwargs["cookie_secret"])
    kwargs["certificates"] = _certificates(ctx, root, got)
    _check_listeners(ctx, root, kwargs)
    routes_key = "routes"
    if "routes" in got and "policy" in got:
        ctx.problem(
            root.key_lines["policy"],
            "policy",
            "set routes or policy (Pomerium's older name for routes), not both",
        )
    elif "policy" in got:
        routes_key = "policy"
    routes_node = root.value.get(routes_key)
    route_list: list[config.Route] = []
    if routes_node is not None:
        if not isinstance(routes_node.value, list):
            ctx.problem(
                routes_node.line,
                routes_key,
                f"expected a list of routes, got {nodes.kind(routes_node)}",
            )
        else:
            timeout = kwargs.get("default_upstream_timeout", 30.0)
            mtls = kwargs.get("downstream_mtls")
            for i, child in enumerate(routes_node.value):
                route = routes.read_route(ctx, child, f"{routes_key}[{i}]", timeout)
                if route is not nodes.MISSING:
                    routes.check_policy(ctx, child, f"{routes_key}[{i}]", route, mtls)
                    route_list.append(route)
    kwargs["routes"] = tuple(route_list)
    kwargs["watched_files"] = tuple(ctx.watched)
    try:
        return config.Settings(**kwargs)
    except (TypeError, ValueError) as exc:  # a reader's bug, not the user's: still no traceback
        ctx.problem(root.line, "", f"invalid settings: {exc}")
        return None


def _certificates(
    ctx: nodes.Context, root: nodes.Node, got: dict[str, Any]
) -> tuple[config.Certificate, ...]:
    """``certificates`` plus Pomerium's single ``certificate``/``certificate_key`` (or _file)."""
    certs = list(got.get("certificates", ()))
    cert = nodes.either(ctx, root, "", got, "certificate", "certificate_file")
    key = nodes.either(ctx, root, "", got, "certificate_key", "certificate_key_file")
    if nodes.MISSING in (cert, key):
        return tuple(certs)
    if (cert is None) != (key is None):
        line = root.key_lines.get("certificate_file", root.key_lines.get("certificate", 1))
        ctx.problem(line, "certificate", "certificate and certificate_key go together")
    elif cert is not None:
        certs.append(
            config.Certificate(
                cert_pem=cert,
                key_pem=key,
                cert_file=file_of(ctx, root, "certificate_file"),
                key_file=file_of(ctx, root, "certificate_key_file"),
            )
        )
    return tuple(certs)


def _check_cookie_secret(ctx: nodes.Context, root: nodes.Node, secret: str) -> None:
    try:
        size = len(base64.b64decode(secret, validate=True))
    except (binascii.Error, ValueError):
        size = len(secret.encode())
    if size < 32:
        key = "cookie_secret" if "cookie_secret" in root.key_lines else "cookie_secret_file"
        ctx.problem(
            root.key_lines.get(key, 1),
            key,
            f"must hold at least 32 bytes (base64 "
            f"of 32 random bytes: head -c32 /dev/urandom | base64), got {size}",
        )


_DEFAULT_ADDRESS = str(config.Settings.__dataclass_fields__["address"].default)
_EVERY_INTERFACE = (None, "0.0.0.0", "::")  # noqa: S104 - compared with, not bound


def _check_listeners(ctx: nodes.Context, root: nodes.Node, kwargs: dict[str, Any]) -> None:
    """Two of ``vallum serve``'s listeners on one port would fail to start (the admin listener
    does not share ports) or, worse, share it (the main and redirect listeners both set
    ``SO_REUSEPORT``, and the kernel would spread connections over them)."""
    keys = ["address", "metrics_address"]
    if not kwargs.get("insecure_server"):  # the redirect listener only runs beside HTTPS
        keys.insert(1, "http_redirect_addr")
    if any(key in root.value and key not in kwargs for key in keys):
        return  # one did not read: its problem is reported already
    seen: list[tuple[str, str | None, int]] = []
    for key in keys:
        text = kwargs.get(key, _DEFAULT_ADDRESS if key == "address" else None)
        if text is None:
            continue
        host, port = values.parse_address(text)
        for other, other_host, other_port in seen:
            if port and port == other_port and (
                host == other_host or host in _EVERY_INTERFACE or other_host in _EVERY_INTERFACE
            ):
                ctx.problem(
                    root.key_lines.get(key, 1),
                    key,
                    f"the same port as {other}: each listener needs its own",
                )
        seen.append((key, host, port))
