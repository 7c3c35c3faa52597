"""``vallum policy``: check a policy file, or evaluate one for a given identity and request.

The tool an operator runs when a user says "I can't get in"::

    vallum policy check FILE                 validate; print the normalised policy
    vallum policy eval FILE --identity JSON --request JSON [--json]

FILE (YAML or JSON; ``-`` reads stdin) is read by the config file's reader
(:mod:`vallum.core.configfile.policyfile`), so it means here what it means in a route of
``vallum serve``: read as Pomerium reads YAML (an unquoted ``2:20:00`` is a time, not a base-60
number), duplicate keys refused. It holds either a *bare policy* (a rule with ``allow`` /
``deny``, a list of rules, or null) or a *route-like mapping*: a mapping with any of the route
options ``policy``, ``allowed_users``, ``allowed_domains``, ``allowed_idp_claims``,
``allow_any_authenticated_user``, ``allow_public_unauthenticated_access`` — read by the route
readers and compiled exactly as the proxy compiles a route (other route keys such as
``from``/``to`` are ignored, with a note; an unknown key is an error).

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
from typing import Any

import yaml

from vallum.core import errors, policy
from vallum.core.config import DownstreamMTLS
from vallum.core.configfile import files, policyfile
from vallum.core.errors import PolicyError
from vallum.core.identity import Identity
from vallum.core.request import ClientCertificate, RequestInfo

EXIT_OK, EXIT_BAD_INPUT, EXIT_DENIED = 0, 1, 3


class BadInput(Exception):
    """Input the user can fix; the message names its place (``path``: inside the policy)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


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


def load_file(name: str) -> policyfile.PolicyFile:
    """The policy file ``name`` (``-``: standard input), read by the config file's reader."""
    limit = files.LIMITS["policy"]
    if name == "-":
        text = sys.stdin.read(limit + 1)
        if len(text) > limit:
            raise BadInput(f"standard input: larger than {files.describe_size(limit)}")
    else:
        try:
            text, _ = files.read_text(name, "policy", check_mode=False)
        except files.FileProblem as exc:
            raise BadInput(str(exc)) from None
    try:
        return policyfile.loads(text, "<stdin>" if name == "-" else name)
    except errors.ConfigError as exc:
        raise BadInput("\n  ".join(exc.problems)) from None


def compile_file(args: argparse.Namespace) -> policy.CompiledPolicy:
    loaded = load_file(args.file)
    mode = args.downstream_mtls
    try:
        if loaded.route is not None:
            if loaded.ignored:
                print(
                    f"note: {args.file}: ignoring route keys {', '.join(sorted(loaded.ignored))}",
                    file=sys.stderr,
                )
            mtls = None
            if mode is not None:
                mtls = DownstreamMTLS(ca_pem="(--downstream-mtls)", enforcement=mode)
            compiled = policy.compile_route_policy(loaded.route, downstream_mtls=mtls)
            if compiled.error is not None:
                raise compiled.error
            return compiled
        return policy.compile_policy(loaded.policy, client_ca=mode is not None)
    except PolicyError as exc:
        line, path = loaded.locate(exc.path)
        where = f"{loaded.source}:{line}: "
        message = f"{where}{path}: {exc.message}" if path else where + exc.message
        raise BadInput(message, path) from None


# -- identity and request ----------------------------------------------------------------------


def parse_json_arg(flag: str, text: str) -> Any:
    if text.startswith("@"):
        try:
            text, _ = files.read_text(text[1:], "json", check_mode=False)
        except files.FileProblem as exc:
            raise BadInput(f"{flag}: {exc}") from None
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
    """Print the problem (JSON too with ``--json``); the exit status of bad input."""
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": {"path": path, "message": message}}))
    print(f"vallum policy {args.policy_command}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_check(args: argparse.Namespace) -> int:
    try:
        compiled = compile_file(args)
    except BadInput as exc:
        return _fail(args, str(exc), exc.path)
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
        return _fail(args, str(exc), exc.path)
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
