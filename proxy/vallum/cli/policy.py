"""``vallum policy``: check a policy file, or evaluate one for a given identity and request.

The tool an operator runs when a user says "I can't get in"::

    vallum policy check FILE                 validate; print the normalised policy
    vallum policy eval FILE --identity JSON --request JSON [--json]

FILE (YAML or JSON; ``-`` reads stdin; read as Pomerium reads it, so an unquoted ``2:20:00`` is a
time, not a base-60 number) holds either a *bare policy* (a rule with ``allow`` /
``deny``, a list of rules, or null) or a *route-like mapping*: a mapping with any of the route
options ``policy``, ``allowed_users``, ``allowed_domains``, ``allowed_idp_claims``,
``allow_any_authenticated_user``, ``allow_public_unauthenticated_access`` — compiled exactly as
the proxy compiles a route (other route keys such as ``from``/``to`` are ignored, with a note).

``--identity``: ``null`` (anonymous) or an object with ``user``, ``email``, ``groups`` (list),
``claims`` (object). ``--request``: an object with ``method`` (default GET), ``path`` (default
``/``; a ``?query`` is split off), ``host``, ``headers`` (object), ``client_ip``, ``time``
(RFC 3339; default now), and, as an extension, ``client_certificate``: ``{"pem": ...,
"verified": true}``. Either value may be ``@file`` to read it from a file.

Exit status: 0 allowed (or valid, for ``check``), 3 denied, 1 bad input (a message naming the
place, never a traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from vallum.core import policy
from vallum.core.config import DownstreamMTLS, Host, Route
from vallum.core.errors import PolicyError
from vallum.core.identity import Identity
from vallum.core.policy import yamltext
from vallum.core.request import ClientCertificate, RequestInfo

ROUTE_KEYS = (
    "policy",
    "allowed_users",
    "allowed_domains",
    "allowed_idp_claims",
    "allow_any_authenticated_user",
    "allow_public_unauthenticated_access",
)
EXIT_OK, EXIT_BAD_INPUT, EXIT_DENIED = 0, 1, 3


class BadInput(Exception):
    """Input the user can fix; the message names its place."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "policy",
        help="check or evaluate a policy",
        description="Check a policy file, or evaluate it for an identity and a request.",
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate a policy file and print its normalised form",
        description="Validate FILE (a bare policy or a route-like mapping) and print the policy "
        "in normalised form (every bare value spelled out). Exit 0 if valid, 1 with the error "
        "and its place otherwise.",
    )
    _common(check)
    check.set_defaults(func=run_check)

    ev = commands.add_parser(
        "eval",
        help="evaluate a policy for an identity and a request",
        description="Evaluate FILE for one identity and request; print allow/deny and the "
        "reasons. Exit 0 when allowed, 3 when denied, 1 on bad input.",
    )
    _common(ev)
    ev.add_argument(
        "--identity",
        default="null",
        metavar="JSON",
        help='null (anonymous) or {"user", "email", "groups": [...], "claims": {...}}; '
        "@FILE reads it from a file (default: null)",
    )
    ev.add_argument(
        "--request",
        default="{}",
        metavar="JSON",
        help='{"method", "path", "host", "headers": {...}, "client_ip", "time": RFC 3339}; '
        "@FILE reads it from a file (default: GET / now)",
    )
    ev.set_defaults(func=run_eval)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="YAML or JSON policy file; - for stdin")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--downstream-mtls",
        choices=("policy_with_default_deny", "policy"),
        default=None,
        metavar="ENFORCEMENT",
        help="evaluate as if a client CA were configured with this enforcement: "
        "policy_with_default_deny (adds the default deny rule to route-like files) or policy",
    )


# -- loading -----------------------------------------------------------------------------------


def load_file(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{name}: not UTF-8 text") from None
    try:
        return yamltext.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"{where}: not valid YAML/JSON: {problem}") from None


def is_route_like(data: Any) -> bool:
    return isinstance(data, dict) and any(key in data for key in ROUTE_KEYS)


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{key}: expected a list of non-empty strings")
    return tuple(value)


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise BadInput(f"{key}: expected true or false, got {value!r}")
    return value


def route_from(data: dict[str, Any], name: str) -> Route:
    """A ``Route`` carrying only the access options of a route-like mapping."""
    if "allow" in data or "deny" in data:
        raise BadInput(
            f"{name}: mixes route options ({', '.join(k for k in ROUTE_KEYS if k in data)}) with "
            "top-level allow/deny; put the rules under `policy:`"
        )
    ignored = sorted(str(k) for k in data if k not in ROUTE_KEYS)
    if ignored:
        print(f"note: {name}: ignoring route keys {', '.join(ignored)}", file=sys.stderr)
    claims_raw = data.get("allowed_idp_claims", {}) or {}
    if not isinstance(claims_raw, dict):
        raise BadInput("allowed_idp_claims: expected a mapping of claim name to list of values")
    claims: list[tuple[str, tuple[str, ...]]] = []
    for claim, values in claims_raw.items():
        items = values if isinstance(values, list) else [values]
        if not all(isinstance(v, (str, int, float, bool)) for v in items):
            raise BadInput(f"allowed_idp_claims.{claim}: expected a list of values")
        claims.append((str(claim), tuple(items)))
    source = data.get("from")
    return Route(
        from_url=source if isinstance(source, str) else "",
        host=Host(""),
        to=(),
        name=name,
        allowed_users=_strings(data, "allowed_users"),
        allowed_domains=_strings(data, "allowed_domains"),
        allowed_idp_claims=tuple(claims),
        allow_any_authenticated_user=_flag(data, "allow_any_authenticated_user"),
        allow_public_unauthenticated_access=_flag(data, "allow_public_unauthenticated_access"),
        policy=data.get("policy"),
    )


def compile_file(args: argparse.Namespace) -> policy.CompiledPolicy:
    data = load_file(args.file)
    mode = args.downstream_mtls
    if is_route_like(data):
        mtls = (
            None if mode is None else DownstreamMTLS(ca_pem="(--downstream-mtls)", enforcement=mode)
        )
        compiled = policy.compile_route_policy(route_from(data, args.file), downstream_mtls=mtls)
        if compiled.error is not None:
            raise compiled.error
        return compiled
    return policy.compile_policy(data, client_ca=mode is not None)


# -- identity and request ----------------------------------------------------------------------


def parse_json_arg(flag: str, text: str) -> Any:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{flag}: cannot read {text[1:]}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{flag}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _only(data: dict[str, Any], flag: str, known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            raise BadInput(f"{flag}.{key}: unknown key (expected one of: {', '.join(known)})")


def _text(data: dict[str, Any], flag: str, key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadInput(f"{flag}.{key}: expected a string, got {json.dumps(value)}")
    return value


def parse_identity(value: Any) -> Identity | None:
    flag = "--identity"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput(f"{flag}: expected null (anonymous) or an object")
    _only(value, flag, ("user", "email", "groups", "claims"))
    groups = value.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise BadInput(f"{flag}.groups: expected a list of strings")
    claims = value.get("claims", {})
    if not isinstance(claims, dict):
        raise BadInput(f"{flag}.claims: expected an object")
    return Identity(
        user=_text(value, flag, "user", ""),
        email=_text(value, flag, "email", ""),
        groups=tuple(groups),
        claims=claims,
    )


def parse_request(value: Any) -> RequestInfo:
    flag = "--request"
    if not isinstance(value, dict):
        raise BadInput(f"{flag}: expected an object")
    _only(
        value,
        flag,
        ("method", "path", "host", "headers", "client_ip", "time", "client_certificate"),
    )
    path, _, query = _text(value, flag, "path", "/").partition("?")
    headers = value.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BadInput(f"{flag}.headers: expected an object of string values")
    client_ip = _text(value, flag, "client_ip", "")
    if client_ip:
        try:
            ipaddress.ip_address(client_ip)
        except ValueError:
            raise BadInput(f"{flag}.client_ip: not an IP address: {client_ip!r}") from None
    when = dt.datetime.now(dt.UTC)
    if "time" in value:
        text = _text(value, flag, "time", "")
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BadInput(
                f"{flag}.time: not an RFC 3339 time: {text!r} (e.g. 2026-11-25T09:30:00Z)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    return RequestInfo(
        method=_text(value, flag, "method", "GET"),
        host=_text(value, flag, "host", "").lower(),
        path=path or "/",
        query=query,
        headers={str(k).lower(): v for k, v in headers.items()},
        client_ip=client_ip,
        client_cert=_client_certificate(value.get("client_certificate")),
        time=when,
    )


def _client_certificate(value: Any) -> ClientCertificate | None:
    flag = "--request.client_certificate"
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("pem"), str):
        raise BadInput(
            f'{flag}: expected {{"pem": "-----BEGIN CERTIFICATE-----...", "verified": true}}'
        )
    _only(value, flag, ("pem", "verified"))
    verified = value.get("verified", False)
    if not isinstance(verified, bool):
        raise BadInput(f"{flag}.verified: expected true or false")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(value["pem"].encode())
    except ValueError:
        raise BadInput(f"{flag}.pem: not a PEM certificate") from None
    return ClientCertificate(der=cert.public_bytes(serialization.Encoding.DER), verified=verified)


# -- commands ----------------------------------------------------------------------------------


def _fail(args: argparse.Namespace, message: str, path: str = "") -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": {"path": path, "message": message}}))
    print(f"vallum policy {args.policy_command}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_check(args: argparse.Namespace) -> int:
    try:
        compiled = compile_file(args)
    except BadInput as exc:
        return _fail(args, str(exc))
    except PolicyError as exc:
        return _fail(args, f"{args.file}: {exc}", exc.path)
    if args.json:
        print(json.dumps({"ok": True, "normalized": compiled.normalized}, default=str))
    else:
        print(
            f"{args.file}: valid policy ({len(compiled.allow)} allow, "
            f"{len(compiled.deny)} deny conditions)",
            file=sys.stderr,
        )
        text = yaml.safe_dump(compiled.normalized, sort_keys=False, allow_unicode=True)
        sys.stdout.write(text)
    return EXIT_OK


def run_eval(args: argparse.Namespace) -> int:
    try:
        identity = parse_identity(parse_json_arg("--identity", args.identity))
        request = parse_request(parse_json_arg("--request", args.request))
        compiled = compile_file(args)
    except BadInput as exc:
        return _fail(args, str(exc))
    except PolicyError as exc:
        return _fail(args, f"{args.file}: {exc}", exc.path)
    decision = policy.evaluate(compiled, request, identity)
    if args.json:
        print(json.dumps(decision.to_dict()))
    else:
        verdict = "allow" if decision.allowed else "deny"
        if decision.needs_login:
            verdict += " (sign-in required)"
        print(verdict)
        for reason in decision.reasons:
            where = f" at {reason.path}" if reason.path else ""
            print(f"  - {reason.message}  [{reason.code}{where}]")
    return EXIT_OK if decision.allowed else EXIT_DENIED
