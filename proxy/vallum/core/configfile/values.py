"""One reader per value form: ``(ctx, node, path) -> value``, or ``MISSING`` after recording a
problem that names the place. Pomerium's forms: Go durations, PEM or base64 PEM, ``*_file``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cryptography.hazmat.primitives import serialization

from vallum.core import config
from vallum.core.configfile import files, nodes


def r_str(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    if isinstance(node.value, bool) or not isinstance(node.value, (str, int, float)):
        return ctx.problem(node.line, path, f"expected a string, got {nodes.kind(node)}")
    return str(node.value)


def r_bool(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    if isinstance(node.value, bool):
        return node.value
    if isinstance(node.value, str) and node.value.lower() in ("true", "false"):
        return node.value.lower() == "true"
    return ctx.problem(node.line, path, f"expected true or false, got {nodes.kind(node)}")


def r_count(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < 0:
        return ctx.problem(node.line, path, f"expected a whole number >= 0, got {nodes.kind(node)}")
    return node.value


def r_duration(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    try:
        return config.parse_duration(node.value)
    except ValueError as exc:
        return ctx.problem(node.line, path, str(exc))


def r_str_list(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """A list of strings, or one string (comma-separated, as Pomerium's environment form)."""
    if isinstance(node.value, str):
        return tuple(part.strip() for part in node.value.split(",") if part.strip())
    if not isinstance(node.value, list):
        return ctx.problem(node.line, path, f"expected a list of strings, got {nodes.kind(node)}")
    values = [r_str(ctx, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    return nodes.MISSING if nodes.MISSING in values else tuple(values)


def r_str_map(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    if not isinstance(node.value, dict):
        return ctx.problem(
            node.line, path, f"expected a mapping of strings, got {nodes.kind(node)}"
        )
    pairs = [(k, r_str(ctx, v, nodes.key_path(path, k))) for k, v in node.value.items()]
    return nodes.MISSING if any(v is nodes.MISSING for _, v in pairs) else tuple(pairs)


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header field name: an RFC 9110 token (no space, colon, CR, LF or other separator)."""


def header_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a header name, or ``None`` when it can."""
    if isinstance(name, str) and _HEADER_NAME.fullmatch(name):
        return None
    return (
        f"{nodes.shown(name)} is not a header name (letters, digits and "
        "!#$%&'*+-.^_`|~ only: no space, colon or line break)"
    )


def r_header_map(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """A mapping of header names (RFC 9110 tokens) to strings."""
    pairs = r_str_map(ctx, node, path)
    if pairs is nodes.MISSING:
        return pairs
    bad = False
    for name, _ in pairs:
        problem = header_name_problem(name)
        if problem is not None:
            bad = True
            ctx.problem(node.line, path, problem)  # (the name, escaped, is in the message)
    return nodes.MISSING if bad else pairs


def r_header_list(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """A list of header names (RFC 9110 tokens), or one comma-separated string."""
    names = r_str_list(ctx, node, path)
    if names is nodes.MISSING:
        return names
    bad = False
    for index, name in enumerate(names):
        problem = header_name_problem(name)
        if problem is not None:
            bad = True
            ctx.problem(node.line, f"{path}[{index}]", problem)
    return nodes.MISSING if bad else names


def r_enum(*choices: str) -> nodes.Reader:
    def read(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
        if node.value not in choices:
            return ctx.problem(
                node.line, path, f"expected one of {', '.join(choices)}, got {nodes.kind(node)}"
            )
        return node.value

    return read


def parse_address(value: str) -> tuple[str | None, int]:
    """A listener address as Go's ``net.SplitHostPort`` reads it (so as Pomerium does):
    ``":443"``, ``"0.0.0.0:8443"``, ``"[::1]:443"``, ``"localhost:80"`` -> (host or None for
    every interface, port). Raises ``ValueError`` saying what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT or :PORT, got {nodes.shown(value)}")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"expected HOST:PORT or :PORT with a port from 0 to 65535, got {nodes.shown(value)}"
        )
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"not an IPv6 address in [...]: {nodes.shown(value)}") from None
        return host[1:-1], int(port_text)
    if ":" in host or "[" in host or "]" in host:
        raise ValueError(
            f"an IPv6 address goes in brackets, as [::1]:443; got {nodes.shown(value)}"
        )
    if host and not _HOST_NAME.match(host):
        raise ValueError(f"not a host name or IP address: {nodes.shown(value)}")
    if host and all(part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"not an IPv4 address: {nodes.shown(value)}") from None
    return (host or None), int(port_text)


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$"
)


def r_address(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """A listener address (``address``, ``http_redirect_addr``, ``metrics_address``)."""
    value = r_str(ctx, node, path)
    if value is nodes.MISSING:
        return value
    try:
        parse_address(value)
    except ValueError as exc:
        return ctx.problem(node.line, path, str(exc))
    return value


def r_url(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    value = r_str(ctx, node, path)
    if value is nodes.MISSING:
        return value
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        return ctx.problem(node.line, path, f"expected an http(s):// URL, got {nodes.shown(value)}")
    return value


def r_pem(kind: Any) -> nodes.Reader:
    def read(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
        value = r_str(ctx, node, path)
        if value is nodes.MISSING:
            return value
        try:
            return config.parse_pem(value, kind)
        except ValueError as exc:
            return ctx.problem(node.line, path, str(exc))

    return read


_FILE_KINDS: dict[str, files.Kind] = {"private key": "key", "crl": "crl"}


def r_pem_file(kind: Any) -> nodes.Reader:
    file_kind = _FILE_KINDS.get(kind, "certificate")

    def read(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
        text = ctx.read_file(node, path, file_kind)
        if text is None:
            return nodes.MISSING
        try:
            return config.parse_pem(text, kind)
        except ValueError as exc:
            return ctx.problem(node.line, path, f"{node.value}: {exc}")

    return read


def r_text_file(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """A secret in a file (``cookie_secret_file``, ...), surrounding whitespace removed."""
    text = ctx.read_file(node, path, "secret")
    return nodes.MISSING if text is None else text.strip()


def r_node(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """Keeps the node itself; the caller reads it (``routes``, ``to``)."""
    return node


def r_data(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    try:
        return node.plain()
    except ValueError as exc:
        return ctx.problem(node.line, path, str(exc))


def r_signing_keys(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """``signing_key``: one or several keys, each PEM or base64 of PEM (Pomerium's form)."""
    items = node.value if isinstance(node.value, list) else [node]
    keys = []
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]" if isinstance(node.value, list) else path
        value = r_str(ctx, item, item_path)
        if value is not nodes.MISSING:
            value = _signing_key(ctx, item, item_path, value)
        keys.append(value)
    return nodes.MISSING if nodes.MISSING in keys else tuple(keys)


def r_signing_key_file(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    text = ctx.read_file(node, path, "key")
    return nodes.MISSING if text is None else (_signing_key(ctx, node, path, text),)


def _signing_key(ctx: nodes.Context, node: nodes.Node, path: str, value: str) -> Any:
    try:
        pem = config.parse_pem(value, "any")
    except ValueError as exc:
        return ctx.problem(node.line, path, str(exc))
    blocks = [b for b in pem.split("-----END") if "-----BEGIN" in b]
    for block in blocks:
        begin = block[block.index("-----BEGIN") :]
        label = begin.split("-----")[1].removeprefix("BEGIN ")
        data = f"{begin}-----END {label}-----\n".encode()
        try:
            if "PRIVATE" in label:
                serialization.load_pem_private_key(data, password=None)
            else:
                serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            return ctx.problem(node.line, path, f"not a usable key ({label}): {exc}")
    return pem


def r_claims_headers(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    """``jwt_claims_headers``: ``{header: claim}``, or a list (or comma string) of claims whose
    headers are ``X-Pomerium-Claim-<Claim>`` (Pomerium's forms)."""
    if isinstance(node.value, dict):
        return r_header_map(ctx, node, path)
    if isinstance(node.value, str):  # Pomerium splits on commas and spaces
        node = nodes.Node(node.value.replace(" ", ",").replace("\t", ","), node.line)
    claims = r_str_list(ctx, node, path)
    if claims is nodes.MISSING:
        return claims
    return tuple((config.claim_header_name(c), c) for c in claims)


def r_idp_claims(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
    if not isinstance(node.value, dict):
        return ctx.problem(
            node.line, path, f"expected a mapping of claim: values, got {nodes.kind(node)}"
        )
    pairs = []
    for claim, child in node.value.items():
        values = child if isinstance(child.value, list) else nodes.Node([child], child.line)
        read = r_str_list(ctx, values, nodes.key_path(path, claim))
        if read is nodes.MISSING:
            return read
        pairs.append((claim, read))
    return tuple(pairs)


def r_list(item: nodes.Reader) -> nodes.Reader:
    def read(ctx: nodes.Context, node: nodes.Node, path: str) -> Any:
        if not isinstance(node.value, list):
            return ctx.problem(node.line, path, f"expected a list, got {nodes.kind(node)}")
        values = [item(ctx, child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        return tuple(v for v in values if v is not nodes.MISSING)

    return read
