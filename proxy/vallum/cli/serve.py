"""``vallum serve``: run the proxy from a config file (standalone mode).

Every configuration is served through the identity gate (:mod:`vallum.proxy.identity`): public
routes, sign-in, bearer tokens and downstream mTLS; a route that needs a user while sign-in is not
configured is refused with a page that says so (fail closed).

Bad input never shows a traceback: a config that does not load prints every problem (each with
its file and line) on stderr and exits 1; so does a listener that cannot start (port in use).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vallum.core import errors
from vallum.proxy import identity, logs, server


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the proxy from a config file",
        description=(
            "Serve the routes of a Pomerium-style config file: HTTPS on `address` (plain HTTP "
            "with `insecure_server`), redirects on `http_redirect_addr`, health and metrics on "
            "`metrics_address`. The file is reloaded when it changes and on SIGHUP."
        ),
    )
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="the config file")
    parser.add_argument(
        "--workers",
        "-w",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes sharing the port with SO_REUSEPORT (default 1)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level of the JSON logs on stderr (default info)",
    )
    parser.set_defaults(func=_run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level)
    try:
        return server.run(args.config, workers=args.workers, gate_factory=identity.build_gate)
    except errors.ConfigError as exc:
        print(f"vallum serve: the configuration cannot be used ({args.config}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vallum serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
