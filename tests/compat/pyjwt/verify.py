"""verify.py: verifies an identity assertion with PyJWT's ``PyJWKClient``, as Python apps do.

It exists so Vallum's tests (and later end-to-end tests through the proxy) can check a Python
app's view of the assertion with the same flags as the jose and Pomerium Go SDK verifiers:

    --token T          the JWT (or @FILE, or - for standard input)
    --jwks-url URL     JWKS endpoint, fetched over HTTPS by PyJWKClient
    --issuer S         expected iss (optional)
    --audience S       expected aud (optional)
    --ca-file F        PEM CA bundle trusted for HTTPS (optional; default: system roots)
    --resolve H=ADDR   connect to ADDR (ip or ip:port) whenever H is contacted (repeatable)

Exit 0 with ``{"payload": ..., "header": ...}`` on stdout when accepted, 1 with the error on
stderr when rejected, 2 on usage errors. Runs as its own process: ``--resolve`` patches this
process's name resolution only.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from typing import Any

import jwt
import jwt.types


def _install_resolve(mapping: dict[str, tuple[str, int | None]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        target = mapping.get(str(host).lower()) if host is not None else None
        if target is not None:
            host, port = target[0], target[1] if target[1] is not None else port
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def _parse_resolve(items: list[str]) -> dict[str, tuple[str, int | None]]:
    out: dict[str, tuple[str, int | None]] = {}
    for item in items:
        host, sep, target = item.partition("=")
        if not sep or not host or not target:
            raise SystemExit(f"usage: --resolve wants HOST=IP[:PORT], got {item!r}")
        ip, colon, port = target.rpartition(":")
        out[host.lower()] = (ip, int(port)) if colon and port.isdigit() else (target, None)
    return out


def _read_token(value: str) -> str:
    if value == "-":
        return sys.stdin.read().strip()
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as handle:
            return handle.read().strip()
    return value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--token", required=True)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--issuer")
    parser.add_argument("--audience")
    parser.add_argument("--ca-file")
    parser.add_argument("--resolve", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        _install_resolve(_parse_resolve(args.resolve))
        token = _read_token(args.token)
    except (SystemExit, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    context = ssl.create_default_context(cafile=args.ca_file)
    client = jwt.PyJWKClient(args.jwks_url, ssl_context=context, timeout=15)
    options: jwt.types.Options = {"require": ["exp", "iat", "iss", "aud", "sub"]}
    if not args.audience:
        options["verify_aud"] = False
    try:
        key = client.get_signing_key_from_jwt(token)
        payload = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience=args.audience,
            issuer=args.issuer,
            options=options,
        )
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        print(f"rejected: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"payload": payload, "header": header}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
