"""``vallum``: the command line entry point. Each subcommand lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func`` (args -> exit status).

Exit statuses: 0 success, 1 bad input (a message, never a traceback), 2 usage error,
3 "denied" (``vallum policy eval``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vallum.cli import config as config_cmd
from vallum.cli import controller as controller_cmd
from vallum.cli import doctor as doctor_cmd
from vallum.cli import keys as keys_cmd
from vallum.cli import policy as policy_cmd
from vallum.cli import serve as serve_cmd
from vallum.cli import verify as verify_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vallum",
        description="Vallum: a zero-trust, identity-aware reverse proxy and Kubernetes ingress.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        serve_cmd, controller_cmd, config_cmd, policy_cmd, keys_cmd, doctor_cmd, verify_cmd
    ):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
