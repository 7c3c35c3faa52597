"""``vallum serve``: placeholder until its issue lands; replaced by the real command."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("serve", help="(not built yet)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("vallum serve: not built yet", file=sys.stderr)
    return 2
