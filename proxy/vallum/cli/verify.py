"""``vallum verify``: run the JWT-verifying sidecar in front of an app that cannot check the
assertion itself.

Why this module exists: it turns command-line flags into a :class:`vallum.verify.JwksCache`, a
:class:`vallum.verify.Verifier` and the :mod:`vallum.verify.sidecar` server (optionally with TLS
and a required client certificate for the Vallum-to-sidecar hop), and stops cleanly on SIGTERM.

Exit statuses: 0 stopped by a signal, 1 bad input (a message, never a traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from typing import Any

import vallum.verify as api
from vallum.proxy import logs
from vallum.verify import check as check_mod
from vallum.verify import sidecar

EXAMPLE = (
    "example: vallum verify --listen 0.0.0.0:8443 --upstream http://127.0.0.1:8080 "
    "--jwks-url https://app.example.com/.well-known/vallum/jwks.json "
    "--audience app.example.com"
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="run a sidecar that forwards only requests with a valid Vallum assertion",
        description=(
            "Forward requests to UPSTREAM only when their assertion header holds an ES256 JWT "
            "signed by a key of the JWKS (chosen by kid), for AUDIENCE, from ISSUER, not "
            "expired. Everything else gets 401 (503 while the JWKS cannot be loaded) and never "
            "reaches the app. An unknown kid refetches the JWKS (at most every "
            "--refetch-interval seconds)."
        ),
        epilog=EXAMPLE,
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to listen on, e.g. 0.0.0.0:8443 or [::]:8443")
    parser.add_argument("--upstream", required=True, metavar="URL",
                        help="the app, e.g. http://127.0.0.1:8080")
    parser.add_argument("--jwks-url", required=True, metavar="URL",
                        help="Vallum's JWKS, e.g. https://HOST/.well-known/vallum/jwks.json")
    parser.add_argument("--audience", required=True, metavar="AUD",
                        help="the route host the assertion must be for (its 'aud')")
    parser.add_argument("--issuer", metavar="ISS",
                        help="the required 'iss' (default: the audience, as HOST or https://HOST/)")
    parser.add_argument("--header", default=check_mod.DEFAULT_HEADER, metavar="NAME",
                        help=f"header holding the assertion (default {check_mod.DEFAULT_HEADER}; "
                             f"{check_mod.POMERIUM_HEADER} for Pomerium)")
    parser.add_argument("--leeway", type=float, default=check_mod.DEFAULT_LEEWAY, metavar="SEC",
                        help="clock skew allowed for exp/nbf/iat (default %(default)s)")
    parser.add_argument("--jwks-ca", metavar="FILE",
                        help="CA bundle trusted for the JWKS URL (default: the system store)")
    parser.add_argument("--jwks-timeout", type=float, default=5.0, metavar="SEC",
                        help="timeout of one JWKS fetch (default %(default)s)")
    parser.add_argument("--refetch-interval", type=float, default=15.0, metavar="SEC",
                        help="least time between fetches for an unknown kid (default %(default)s)")
    parser.add_argument("--jwks-max-age", type=float, default=300.0, metavar="SEC",
                        help="refresh the JWKS when older than this, so removed keys stop "
                             "verifying (default %(default)s)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert")
    parser.add_argument("--client-ca", metavar="FILE",
                        help="require a client certificate from this CA (Vallum's upstream "
                             "client certificate); needs --tls-cert")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="log level (default %(default)s); logs are JSON lines on stderr")
    parser.set_defaults(func=_run)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port); :class:`ValueError` naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The listener's TLS context from the flags, or ``None`` for plain HTTP."""
    if args.client_ca and not args.tls_cert:
        raise ValueError("--client-ca needs --tls-cert and --tls-key")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if not args.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            context.load_verify_locations(cafile=args.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS files: {exc}") from exc
    return context


def _run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
        tls = server_tls(args)
        jwks_ssl = None
        if args.jwks_ca:
            try:
                jwks_ssl = ssl.create_default_context(cafile=args.jwks_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"--jwks-ca {args.jwks_ca}: {exc}") from exc
        options = sidecar.Options(upstream=args.upstream, header=args.header)
        sidecar.upstream_url(options.upstream)
    except ValueError as exc:
        print(f"vallum verify: {exc}", file=sys.stderr)
        return 1
    logs.setup_logging(args.log_level)
    cache = api.JwksCache(
        args.jwks_url, timeout=args.jwks_timeout, refetch_interval=args.refetch_interval,
        max_age=args.jwks_max_age, ssl_context=jwks_ssl,
    )
    verifier = api.Verifier(cache, args.audience, args.issuer, leeway=args.leeway)
    try:
        asyncio.run(_main(verifier, options, host, port, tls, cache))
    except ValueError as exc:
        print(f"vallum verify: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vallum verify: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _main(
    verifier: api.Verifier, options: sidecar.Options, host: str, port: int,
    tls: ssl.SSLContext | None, cache: api.JwksCache,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    try:
        await sidecar.serve(verifier, options, host, port, ssl_context=tls, stop=stop)
    finally:
        await cache.close()
