"""The standalone YAML config file -> :class:`~vallum.core.config.Settings`.

Why a module of its own: a config file is read by people, so every problem must name the key
and the line it is on (``routes.yaml:14: routes[2].timeout: expected a duration like "30s",
got "fast"``), and all problems are reported at once in one ``ConfigError``. That needs YAML
*nodes* (which carry line marks), not the plain dicts ``yaml.safe_load`` returns.

Keys and value forms are Pomerium's (see docs/configuration.md): Go durations or seconds, ``to``
as one URL or a list (``url,weight``), PEM material inline (raw or base64, Pomerium's form) or
from ``*_file`` (relative to the config file's folder, recorded in ``Settings.watched_files``).
Unknown keys are errors, with the nearest known key suggested. Nothing here prints or exits.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import os
import re
from collections.abc import Callable
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from vallum.core import config, errors, policy, routing

Reader = Callable[["Context", "Node", str], Any]


@dataclasses.dataclass(slots=True)
class Node:
    """A YAML value with its line: ``value`` is a dict of ``Node``, a list of ``Node`` or a
    scalar; ``key_lines`` holds each mapping key's own line."""

    value: Any
    line: int
    key_lines: dict[str, int] = dataclasses.field(default_factory=dict)

    def plain(self, budget: list[int] | None = None) -> Any:
        """The value as plain data (dicts, lists, scalars), for ``policy``. ``budget`` counts
        down the values still allowed (aliases can make a small file expand enormously)."""
        budget = [MAX_PLAIN_VALUES] if budget is None else budget
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_PLAIN_VALUES} values (through aliases?)")
        if isinstance(self.value, dict):
            return {k: v.plain(budget) for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain(budget) for v in self.value]
        return self.value


MAX_PLAIN_VALUES = 100_000


MISSING: Any = object()
"""Returned by a reader that recorded a problem; the key is then left at its default."""


class Context:
    """One load: where the file is, the problems found so far, the files read."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.watched: list[str] = []

    def problem(self, line: int, path: str, message: str) -> Any:
        where = f"{self.source}:{line}: "
        self.problems.append(f"{where}{path}: {message}" if path else f"{where}{message}")
        return MISSING

    def read_file(self, node: Node, path: str) -> str | None:
        """The text of the file named by ``node`` (relative to the config file's folder)."""
        if not isinstance(node.value, str) or not node.value.strip():
            self.problem(node.line, path, f"expected a file path, got {node.value!r}")
            return None
        name = os.path.expanduser(node.value.strip())
        full = os.path.normpath(os.path.join(self.base_dir, name))
        if full not in self.watched:
            self.watched.append(full)
        try:
            with open(full, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problem(node.line, path, f"cannot read {full}: {reason}")
            return None

    def section(self, node: Node, path: str, spec: dict[str, Reader]) -> dict[str, Any]:
        """Read a mapping whose keys must all be in ``spec``; returns the values read."""
        if not isinstance(node.value, dict):
            self.problem(node.line, path, f"expected a mapping, got {_kind(node)}")
            return {}
        out: dict[str, Any] = {}
        for key, child in node.value.items():
            key_path = f"{path}.{key}" if path else key
            reader = spec.get(key)
            if reader is None:
                near = difflib.get_close_matches(key, list(spec), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.problem(node.key_lines.get(key, node.line), key_path, f"unknown key{hint}")
                continue
            value = reader(self, child, key_path)
            if value is not MISSING:
                out[key] = value
        return out


def load(path: str) -> config.Settings:
    """Read and validate the config file at ``path``; raise ``ConfigError`` with every problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise errors.ConfigError([f"{path}: cannot read config file: {reason}"]) from None
    return loads(
        text, path, base_dir=os.path.dirname(os.path.abspath(path)), file_path=os.path.abspath(path)
    )


def loads(
    text: str,
    source: str = "<config>",
    *,
    base_dir: str | None = None,
    file_path: str | None = None,
) -> config.Settings:
    """Parse config ``text``; ``source`` names it in messages (a file name, ``<stdin>``).

    Relative ``*_file`` paths resolve against ``base_dir`` (default: the folder of ``source``
    if it is a path, else the current directory).
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source)) if os.sep in source else os.getcwd()
    ctx = Context(source, base_dir)
    if file_path is not None:
        ctx.watched.append(file_path)
    root = parse_yaml(text, ctx)
    if root is None:
        raise errors.ConfigError(ctx.problems)
    if root.value is None or root.value == {}:
        ctx.problem(root.line, "", "the file is empty: expected settings and routes")
        raise errors.ConfigError(ctx.problems)
    settings = read_settings(ctx, root)
    if settings is not None and not ctx.problems:
        try:
            routing.build_table(settings)  # the same checks the proxy makes before serving
        except errors.ConfigError as exc:
            ctx.problems.extend(exc.problems)
    if ctx.problems or settings is None:
        raise errors.ConfigError(sorted(ctx.problems, key=_line_of))
    return settings


def _line_of(problem: str) -> int:
    """The line a problem names (``file:12: ...``), to report problems in file order."""
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0


# --------------------------------------------------------------------------------------------
# YAML with line numbers


class _Loader(yaml.SafeLoader):
    """Safe YAML (no Python objects); used for composing nodes and building scalars."""


def parse_yaml(text: str, ctx: Context) -> Node | None:
    """The document as a ``Node`` tree, or None (with a problem recorded) if it is not YAML."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        document = loader.get_single_node()
        if document is None:
            return Node(None, 1)
        return _convert(document, loader, ctx, "", {})
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        ctx.problem(line, "", f"not valid YAML: {exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        ctx.problem(1, "", f"not valid YAML: {exc}")
        return None
    finally:
        if loader is not None:
            loader.dispose()


def _convert(
    node: yaml.Node, loader: _Loader, ctx: Context, path: str, memo: dict[int, Node | None]
) -> Node:
    """Aliases share one converted ``Node`` (``memo``), so nested aliases stay linear in size;
    an alias inside its own anchor is refused rather than followed forever."""
    line = node.start_mark.line + 1
    if id(node) in memo:
        done = memo[id(node)]
        if done is None:
            ctx.problem(line, path, "an alias refers to the value that contains it")
            return Node(None, line)
        return done
    memo[id(node)] = None
    converted = _convert_new(node, loader, ctx, path, memo)
    memo[id(node)] = converted
    return converted


def _convert_new(
    node: yaml.Node, loader: _Loader, ctx: Context, path: str, memo: dict[int, Node | None]
) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = Node({}, line)
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
                continue
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                ctx.problem(key_line, path, f"keys must be strings, got {key!r}")
                continue
            key_path = f"{path}.{key}" if path else key
            if key in out.key_lines:
                ctx.problem(
                    key_line, key_path, f"duplicate key (first on line {out.key_lines[key]})"
                )
                continue
            out.key_lines[key] = key_line
            out.value[key] = _convert(value_node, loader, ctx, key_path, memo)
        for value_node in merges:  # keys written out beside ``<<`` win over merged ones
            _merge(out, _convert(value_node, loader, ctx, path, memo), ctx, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return Node(
            [_convert(v, loader, ctx, f"{path}[{i}]", memo) for i, v in enumerate(node.value)], line
        )
    return Node(loader.construct_object(node, deep=True), line)


def _merge(out: Node, merged: Node, ctx: Context, path: str) -> None:
    """YAML merge keys (``<<: *defaults``): keys already set win."""
    sources = merged.value if isinstance(merged.value, list) else [merged]
    for source in sources:
        if not isinstance(source.value, dict):
            ctx.problem(source.line, path, "a merge key (<<) needs a mapping")
            continue
        for key, child in source.value.items():
            if key not in out.value:
                out.value[key] = child
                out.key_lines[key] = source.key_lines.get(key, source.line)


def _kind(node: Node) -> str:
    value = node.value
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


# --------------------------------------------------------------------------------------------
# Value readers: (ctx, node, path) -> value, or MISSING after recording a problem.


def r_str(ctx: Context, node: Node, path: str) -> Any:
    if isinstance(node.value, bool) or not isinstance(node.value, (str, int, float)):
        return ctx.problem(node.line, path, f"expected a string, got {_kind(node)}")
    return str(node.value)


def r_bool(ctx: Context, node: Node, path: str) -> Any:
    if isinstance(node.value, bool):
        return node.value
    if isinstance(node.value, str) and node.value.lower() in ("true", "false"):
        return node.value.lower() == "true"
    return ctx.problem(node.line, path, f"expected true or false, got {_kind(node)}")


def r_count(ctx: Context, node: Node, path: str) -> Any:
    if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < 0:
        return ctx.problem(node.line, path, f"expected a whole number >= 0, got {_kind(node)}")
    return node.value


def r_duration(ctx: Context, node: Node, path: str) -> Any:
    try:
        return config.parse_duration(node.value)
    except ValueError as exc:
        return ctx.problem(node.line, path, str(exc))


def r_str_list(ctx: Context, node: Node, path: str) -> Any:
    """A list of strings, or one string (comma-separated, as Pomerium's environment form)."""
    if isinstance(node.value, str):
        return tuple(part.strip() for part in node.value.split(",") if part.strip())
    if not isinstance(node.value, list):
        return ctx.problem(node.line, path, f"expected a list of strings, got {_kind(node)}")
    values = [r_str(ctx, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    return MISSING if MISSING in values else tuple(values)


def r_str_map(ctx: Context, node: Node, path: str) -> Any:
    if not isinstance(node.value, dict):
        return ctx.problem(node.line, path, f"expected a mapping of strings, got {_kind(node)}")
    pairs = [(k, r_str(ctx, v, f"{path}.{k}")) for k, v in node.value.items()]
    return MISSING if any(v is MISSING for _, v in pairs) else tuple(pairs)


def r_enum(*choices: str) -> Reader:
    def read(ctx: Context, node: Node, path: str) -> Any:
        if node.value not in choices:
            return ctx.problem(
                node.line, path, f"expected one of {', '.join(choices)}, got {_kind(node)}"
            )
        return node.value

    return read


def r_url(ctx: Context, node: Node, path: str) -> Any:
    value = r_str(ctx, node, path)
    if value is MISSING:
        return value
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        return ctx.problem(node.line, path, f"expected an http(s):// URL, got {value!r}")
    return value


def r_pem(kind: Any) -> Reader:
    def read(ctx: Context, node: Node, path: str) -> Any:
        value = r_str(ctx, node, path)
        if value is MISSING:
            return value
        try:
            return config.parse_pem(value, kind)
        except ValueError as exc:
            return ctx.problem(node.line, path, str(exc))

    return read


def r_pem_file(kind: Any) -> Reader:
    def read(ctx: Context, node: Node, path: str) -> Any:
        text = ctx.read_file(node, path)
        if text is None:
            return MISSING
        try:
            return config.parse_pem(text, kind)
        except ValueError as exc:
            return ctx.problem(node.line, path, f"{node.value}: {exc}")

    return read


def r_text_file(ctx: Context, node: Node, path: str) -> Any:
    text = ctx.read_file(node, path)
    return MISSING if text is None else text.strip()


def r_node(ctx: Context, node: Node, path: str) -> Any:
    """Keeps the node itself; the caller reads it (``routes``, ``to``)."""
    return node


def r_data(ctx: Context, node: Node, path: str) -> Any:
    try:
        return node.plain()
    except ValueError as exc:
        return ctx.problem(node.line, path, str(exc))


def r_signing_keys(ctx: Context, node: Node, path: str) -> Any:
    """``signing_key``: one or several keys, each PEM or base64 of PEM (Pomerium's form)."""
    items = node.value if isinstance(node.value, list) else [node]
    keys = []
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]" if isinstance(node.value, list) else path
        value = r_str(ctx, item, item_path)
        if value is not MISSING:
            value = _signing_key(ctx, item, item_path, value)
        keys.append(value)
    return MISSING if MISSING in keys else tuple(keys)


def r_signing_key_file(ctx: Context, node: Node, path: str) -> Any:
    text = ctx.read_file(node, path)
    return MISSING if text is None else (_signing_key(ctx, node, path, text),)


def _signing_key(ctx: Context, node: Node, path: str, value: str) -> Any:
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


def r_claims_headers(ctx: Context, node: Node, path: str) -> Any:
    """``jwt_claims_headers``: ``{header: claim}``, or a list (or comma string) of claims whose
    headers are ``X-Pomerium-Claim-<Claim>`` (Pomerium's forms)."""
    if isinstance(node.value, dict):
        return r_str_map(ctx, node, path)
    if isinstance(node.value, str):  # Pomerium splits on commas and spaces
        node = Node(node.value.replace(" ", ",").replace("\t", ","), node.line)
    claims = r_str_list(ctx, node, path)
    if claims is MISSING:
        return claims
    return tuple((config.claim_header_name(c), c) for c in claims)


def r_idp_claims(ctx: Context, node: Node, path: str) -> Any:
    if not isinstance(node.value, dict):
        return ctx.problem(
            node.line, path, f"expected a mapping of claim: values, got {_kind(node)}"
        )
    pairs = []
    for claim, child in node.value.items():
        values = child if isinstance(child.value, list) else Node([child], child.line)
        read = r_str_list(ctx, values, f"{path}.{claim}")
        if read is MISSING:
            return read
        pairs.append((claim, read))
    return tuple(pairs)


def r_list(item: Reader) -> Reader:
    def read(ctx: Context, node: Node, path: str) -> Any:
        if not isinstance(node.value, list):
            return ctx.problem(node.line, path, f"expected a list, got {_kind(node)}")
        values = [item(ctx, child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        return tuple(v for v in values if v is not MISSING)

    return read


def _either(ctx: Context, node: Node, path: str, got: dict[str, Any], a: str, b: str) -> Any:
    """The value of inline key ``a`` or file key ``b`` (at most one may be set)."""
    if a in got and b in got:
        line = node.key_lines.get(b, node.line)
        return ctx.problem(line, f"{path}{b}", f"set {a} or {b}, not both")
    return got.get(a, got.get(b))


# --------------------------------------------------------------------------------------------
# Sections


def r_certificate(ctx: Context, node: Node, path: str) -> Any:
    spec = {
        "cert": r_pem("certificate"),
        "key": r_pem("private key"),
        "cert_file": r_pem_file("certificate"),
        "key_file": r_pem_file("private key"),
    }
    got = ctx.section(node, path, spec)
    cert = _either(ctx, node, f"{path}.", got, "cert", "cert_file")
    key = _either(ctx, node, f"{path}.", got, "key", "key_file")
    if cert is MISSING or key is MISSING:
        return MISSING
    if not cert or not key:
        if isinstance(node.value, dict) and len(got) == len(node.value):
            ctx.problem(
                node.line, path, "a certificate needs cert (or cert_file) and key (or key_file)"
            )
        return MISSING
    return config.Certificate(
        cert_pem=cert,
        key_pem=key,
        cert_file=_file_of(ctx, node, "cert_file"),
        key_file=_file_of(ctx, node, "key_file"),
    )


def _file_of(ctx: Context, node: Node, key: str) -> str | None:
    child = node.value.get(key) if isinstance(node.value, dict) else None
    if child is None or not isinstance(child.value, str):
        return None
    return os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(child.value)))


def r_downstream_mtls(ctx: Context, node: Node, path: str) -> Any:
    spec = {
        "ca": r_pem("certificate"),
        "ca_file": r_pem_file("certificate"),
        "crl": r_pem("crl"),
        "crl_file": r_pem_file("crl"),
        "enforcement": r_enum("policy_with_default_deny", "policy", "reject_connection"),
        "max_verify_depth": r_count,
    }
    got = ctx.section(node, path, spec)
    ca = _either(ctx, node, f"{path}.", got, "ca", "ca_file")
    crl = _either(ctx, node, f"{path}.", got, "crl", "crl_file")
    if MISSING in (ca, crl):
        return MISSING
    if ca is None and isinstance(node.value, dict):
        return ctx.problem(node.line, path, "ca or ca_file is required for downstream mTLS")
    extra = {k: got[k] for k in ("enforcement", "max_verify_depth") if k in got}
    return config.DownstreamMTLS(ca_pem=ca, crl_pem=crl, **extra)


ROUTE_KEYS: dict[str, Reader] = {
    "from": r_str,
    "to": r_node,
    "name": r_str,
    "description": r_str,
    "prefix": r_str,
    "path": r_str,
    "regex": r_str,
    "prefix_rewrite": r_str,
    "regex_rewrite_pattern": r_str,
    "regex_rewrite_substitution": r_str,
    "host_rewrite": r_str,
    "preserve_host_header": r_bool,
    "set_request_headers": r_str_map,
    "remove_request_headers": r_str_list,
    "set_response_headers": r_str_map,
    "timeout": r_duration,
    "idle_timeout": r_duration,
    "allow_websockets": r_bool,
    "tls_skip_verify": r_bool,
    "tls_server_name": r_str,
    "tls_upstream_server_name": r_str,
    "tls_custom_ca": r_pem("certificate"),
    "tls_custom_ca_file": r_pem_file("certificate"),
    "tls_client_cert": r_pem("certificate"),
    "tls_client_cert_file": r_pem_file("certificate"),
    "tls_client_key": r_pem("private key"),
    "tls_client_key_file": r_pem_file("private key"),
    "pass_identity_headers": r_bool,
    "allow_public_unauthenticated_access": r_bool,
    "allow_any_authenticated_user": r_bool,
    "allowed_users": r_str_list,
    "allowed_domains": r_str_list,
    "allowed_idp_claims": r_idp_claims,
    "policy": r_data,
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


def read_route(ctx: Context, node: Node, path: str, default_timeout: float) -> Any:
    """One entry of ``routes``: Pomerium's route options -> :class:`Route`."""
    before = len(ctx.problems)
    got = ctx.section(node, path, ROUTE_KEYS)
    if not isinstance(node.value, dict):
        return MISSING
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
                at(key), f"{path}.{key}", f"expected an absolute path like /app, got {value!r}"
            )
        else:  # stored normalised, as requests are: "//api/./v1" is "/api/v1"
            kwargs[key] = normal
    for key in ("regex", "regex_rewrite_pattern"):
        if key in got:
            try:
                re.compile(got[key])
            except re.error as exc:
                ctx.problem(at(key), f"{path}.{key}", f"invalid regular expression: {exc}")
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
    if got.get("allow_public_unauthenticated_access") and (
        got.get("allow_any_authenticated_user")
        or got.get("allowed_users")
        or got.get("allowed_domains")
        or got.get("allowed_idp_claims")
        or got.get("policy")
    ):
        ctx.problem(
            at("allow_public_unauthenticated_access"),
            f"{path}.allow_public_unauthenticated_access",
            "a public route cannot also restrict who may use it (remove the allow "
            "lists or the policy, or make the route non-public)",
        )
    names = [got.get(k) for k in ("tls_server_name", "tls_upstream_server_name") if k in got]
    if len(set(names)) > 1:
        ctx.problem(
            at("tls_upstream_server_name"),
            f"{path}.tls_upstream_server_name",
            "differs from tls_server_name; set one of them",
        )
    kwargs["tls_server_name"] = names[-1] if names else None
    kwargs["tls_custom_ca_pem"] = _either(
        ctx, node, f"{path}.", got, "tls_custom_ca", "tls_custom_ca_file"
    )
    cert = _either(ctx, node, f"{path}.", got, "tls_client_cert", "tls_client_cert_file")
    key = _either(ctx, node, f"{path}.", got, "tls_client_key", "tls_client_key_file")
    if (cert is None) != (key is None) and MISSING not in (cert, key):
        ctx.problem(
            node.line, path, "tls_client_cert and tls_client_key go together (inline or _file)"
        )
    kwargs["tls_client_cert_pem"], kwargs["tls_client_key_pem"] = cert, key
    if len(ctx.problems) > before or host is None or upstreams is None:
        return MISSING
    return config.Route(
        from_url=got["from"],
        host=config.Host(host),
        to=upstreams,
        source=f"{ctx.source}:{node.line}",
        **kwargs,
    )


def _route_from(ctx: Context, node: Node, path: str, value: str | None) -> str | None:
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
            f"expected an https:// URL, got {value!r} (TCP/UDP routes are not supported)",
        )
        return None
    if tail.strip("/") or "?" in authority or "#" in authority or "@" in authority:
        ctx.problem(
            line,
            f"{path}.from",
            f"the URL may hold only a host (put paths in prefix or path), got {value!r}",
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


def _route_to(ctx: Context, node: Node, path: str) -> tuple[config.Upstream, ...] | None:
    child = node.value.get("to")
    if child is None:
        ctx.problem(node.line, path, "to is required (one upstream URL or a list)")
        return None
    items = child.value if isinstance(child.value, list) else [child]
    out, weighted = [], set()
    for i, item in enumerate(items):
        item_path = f"{path}.to[{i}]" if isinstance(child.value, list) else f"{path}.to"
        if not isinstance(item.value, str):
            ctx.problem(item.line, item_path, f"expected an upstream URL, got {_kind(item)}")
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


SETTINGS_KEYS: dict[str, Reader] = {
    "address": r_str,
    "http_redirect_addr": r_str,
    "insecure_server": r_bool,
    "certificates": r_list(r_certificate),
    "certificate": r_pem("certificate"),
    "certificate_key": r_pem("private key"),
    "certificate_file": r_pem_file("certificate"),
    "certificate_key_file": r_pem_file("private key"),
    "metrics_address": r_str,
    "xff_num_trusted_hops": r_count,
    "timeout_idle": r_duration,
    "default_upstream_timeout": r_duration,
    "authenticate_service_url": r_url,
    "idp_provider": r_str,
    "idp_provider_url": r_url,
    "idp_client_id": r_str,
    "idp_client_secret": r_str,
    "idp_client_secret_file": r_text_file,
    "idp_scopes": r_str_list,
    "idp_groups_claim": r_str,
    "cookie_secret": r_str,
    "cookie_secret_file": r_text_file,
    "cookie_name": r_str,
    "cookie_domain": r_str,
    "cookie_expire": r_duration,
    "cookie_secure": r_bool,
    "cookie_http_only": r_bool,
    "cookie_same_site": r_enum("lax", "strict", "none", "Lax", "Strict", "None"),
    "signing_key": r_signing_keys,
    "signing_key_file": r_signing_key_file,
    "jwt_claims_headers": r_claims_headers,
    "jwt_issuer_format": r_enum("hostOnly", "uri"),
    "jwt_groups_filter": r_str_list,
    "pass_identity_headers": r_bool,
    "pomerium_compatibility": r_bool,
    "downstream_mtls": r_downstream_mtls,
    "certificate_authority": r_pem("certificate"),
    "certificate_authority_file": r_pem_file("certificate"),
    "dev_mode": r_bool,
    "log_level": r_enum("debug", "info", "warn", "warning", "error"),
    "shared_secret": r_str,
    "shared_secret_file": r_text_file,
    "services": r_enum("all"),
    "routes": r_node,
    "policy": r_node,
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
    "default_upstream_timeout",
    "authenticate_service_url",
    "idp_provider",
    "idp_provider_url",
    "idp_client_id",
    "idp_scopes",
    "idp_groups_claim",
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


def read_settings(ctx: Context, root: Node) -> config.Settings | None:
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
        value = _either(ctx, root, "", got, a, b)
        if value not in (None, MISSING):
            kwargs[field] = value
    keys = _either(ctx, root, "", got, "signing_key", "signing_key_file")
    if keys not in (None, MISSING):
        kwargs["signing_key"] = keys
    if "cookie_secret" in kwargs:
        _check_cookie_secret(ctx, root, kwargs["cookie_secret"])
    kwargs["certificates"] = _certificates(ctx, root, got)
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
    routes: list[config.Route] = []
    if routes_node is not None:
        if not isinstance(routes_node.value, list):
            ctx.problem(
                routes_node.line, routes_key, f"expected a list of routes, got {_kind(routes_node)}"
            )
        else:
            timeout = kwargs.get("default_upstream_timeout", 30.0)
            mtls = kwargs.get("downstream_mtls")
            for i, child in enumerate(routes_node.value):
                route = read_route(ctx, child, f"{routes_key}[{i}]", timeout)
                if route is not MISSING:
                    _check_policy(ctx, child, f"{routes_key}[{i}]", route, mtls)
                    routes.append(route)
    kwargs["routes"] = tuple(routes)
    kwargs["watched_files"] = tuple(ctx.watched)
    try:
        return config.Settings(**kwargs)
    except (TypeError, ValueError) as exc:  # a reader's bug, not the user's: still no traceback
        ctx.problem(root.line, "", f"invalid settings: {exc}")
        return None


def _certificates(ctx: Context, root: Node, got: dict[str, Any]) -> tuple[config.Certificate, ...]:
    """``certificates`` plus Pomerium's single ``certificate``/``certificate_key`` (or _file)."""
    certs = list(got.get("certificates", ()))
    cert = _either(ctx, root, "", got, "certificate", "certificate_file")
    key = _either(ctx, root, "", got, "certificate_key", "certificate_key_file")
    if MISSING in (cert, key):
        return tuple(certs)
    if (cert is None) != (key is None):
        line = root.key_lines.get("certificate_file", root.key_lines.get("certificate", 1))
        ctx.problem(line, "certificate", "certificate and certificate_key go together")
    elif cert is not None:
        certs.append(
            config.Certificate(
                cert_pem=cert,
                key_pem=key,
                cert_file=_file_of(ctx, root, "certificate_file"),
                key_file=_file_of(ctx, root, "certificate_key_file"),
            )
        )
    return tuple(certs)


def _check_cookie_secret(ctx: Context, root: Node, secret: str) -> None:
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


def _check_policy(
    ctx: Context, node: Node, path: str, route: config.Route, mtls: config.DownstreamMTLS | None
) -> None:
    """Compile the route's access rules as the proxy will; a policy that does not compile is a
    config problem here (the proxy, given one anyway, denies every request to that route)."""
    compiled = policy.compile_route_policy(route, downstream_mtls=mtls)
    error = compiled.error
    if error is None:
        return
    inner = error.path
    first = inner.split(".", 1)[0].split("[", 1)[0]
    policy_node = node.value.get("policy") if isinstance(node.value, dict) else None
    if policy_node is not None and first not in ROUTE_KEYS:
        target = _locate(policy_node, inner)
        separator = "" if not inner or inner.startswith("[") else "."
        full = f"{path}.policy{separator}{inner}"
    else:  # a problem in a legacy option (allowed_users, ...), named from the route
        target = _locate(node, inner)
        full = f"{path}.{inner}" if inner else path
    ctx.problem(target.line, full, error.message)


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _locate(node: Node, path: str) -> Node:
    """The deepest node along ``path`` (``allow.or[2].email``), for the line of a problem."""
    for index, key in _PATH_PART.findall(path):
        if index and isinstance(node.value, list) and int(index) < len(node.value):
            node = node.value[int(index)]
        elif key and isinstance(node.value, dict) and key in node.value:
            node = node.value[key]
        else:
            break
    return node
