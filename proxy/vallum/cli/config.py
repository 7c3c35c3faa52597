"""``vallum config check FILE``: validate a config file and show what it routes where.

Why this module exists: a config file is checked before it is deployed (CI, a pre-commit hook,
a human editing it) by the very function ``vallum serve`` loads it with at start and on every
reload (:func:`vallum.proxy.server.compile_file`: the loader, the route table, the listener
addresses, the TLS contexts of the listener and of the upstreams), so a file that passes here is
one ``serve`` starts with, short of binding its sockets. Every problem is printed at once, each
naming the file, line and key; never a traceback. Warnings (a secret file readable by every
user) are printed too and do not fail the check.

Exit statuses: 0 valid, 1 invalid (each problem on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from vallum.core import config, errors, routing
from vallum.proxy import server


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="check a config file",
        description="Work with Vallum's standalone YAML configuration (Pomerium's key names).",
    )
    commands = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = commands.add_parser(
        "check",
        help="validate a config file and print its routes",
        description=(
            "Validate FILE exactly as 'vallum serve' does before it listens (every setting, "
            "route and file it names, the route table, the listener addresses and TLS "
            "certificates and keys) and print the routes per host in the order they are "
            "matched. Exit status 1 lists every problem, each with its line and key."
        ),
    )
    check.add_argument("file", metavar="FILE", help="the YAML config file")
    check.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when the file is valid"
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        table = server.compile_file(args.file, warnings=warnings)
    except errors.ConfigError as exc:
        count = len(exc.problems)
        print(
            f"{args.file}: {count} problem{'s' if count != 1 else ''}:",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    finally:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if not args.quiet:
        try:
            print("\n".join(summary(args.file, table)), flush=True)
        except BrokenPipeError:  # `vallum config check f | head`: not an error
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
    return 0


def summary(name: str, table: config.RouteTable) -> list[str]:
    """Human-readable lines: the listeners, then each host's routes in match order."""
    s = table.settings
    hosts: list[str] = []
    for route in s.routes:
        if route.host not in hosts:
            hosts.append(route.host)
    count = len(s.routes)
    lines = [
        f"{name}: OK, {count} route{'s' if count != 1 else ''} on {len(hosts)} "
        f"host{'s' if len(hosts) != 1 else ''} (checksum {table.checksum})",
        f"  listen {s.address}"
        + (" (plain HTTP: insecure_server)" if s.insecure_server else "")
        + (f", redirect {s.http_redirect_addr}" if s.http_redirect_addr else "")
        + (f", metrics {s.metrics_address}" if s.metrics_address else ""),
        f"  certificates: {len(s.certificates)}"
        + ("" if s.certificates or s.insecure_server else " (a self-signed one is generated)"),
    ]
    for host in hosts:
        lines.append(f"  {host}")
        probe = "x." + host[2:] if host.startswith("*.") else host
        for route in _host_routes(table, probe, host):
            rule = {"exact": "path  ", "prefix": "prefix", "regex": "regex "}[route.path_match]
            upstreams = ", ".join(
                u.url + (f" (weight {u.weight})" if len(route.to) > 1 else "") for u in route.to
            )
            lines.append(
                f"    {rule} {route.path_value:<24} -> {upstreams}  [{_access(route)}]"
                f"  {route.source}"
            )
    if len(s.watched_files) > 1:
        lines.append("  files read: " + ", ".join(s.watched_files[1:]))
    return lines


def _host_routes(table: config.RouteTable, probe: str, host: str) -> list[config.Route]:
    if host == "*":
        return [r for r in table.settings.routes if r.host == "*"]
    return [r for r in routing.host_routes(table, probe) if r.host == host]


def _access(route: config.Route) -> str:
    """Who the route lets in, in a word or two (the policy itself is checked elsewhere)."""
    if route.allow_public_unauthenticated_access:
        return "public"
    kinds = []
    if route.allow_any_authenticated_user:
        kinds.append("any signed-in user")
    if route.allowed_users or route.allowed_domains or route.allowed_idp_claims:
        kinds.append("allow lists")
    if route.policy is not None:
        kinds.append("policy")
    return ", ".join(kinds) if kinds else "no one (no policy: denied)"
