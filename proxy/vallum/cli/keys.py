"""``vallum keys``: create a signing key for the identity assertion, show a key set's JWKS.

Why this module exists: the assertion's signing key must come from configuration outside dev
mode, so operators need a one-line way to make one (``vallum keys generate > key.pem``, or
``--format base64`` for Pomerium's base64 ``signing_key``/a Kubernetes Secret's data) and to check
what the upstreams will see (``vallum keys jwks key.pem``: the public JWKS with each ``kid``).

Exit statuses: 0 success, 1 bad input (a message naming the file, never a traceback).
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from vallum.core import errors
from vallum.core.configfile import files
from vallum.proxy import jwt


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keys",
        help="create an assertion signing key; print a key set's public JWKS",
        description="Signing keys for the identity assertion (ES256, EC P-256).",
    )
    commands = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    generate = commands.add_parser(
        "generate",
        help="print a new EC P-256 private key (PEM) for signing_key",
        description=(
            "Print a new EC P-256 private key for the signing_key setting. "
            "Example: vallum keys generate > signing-key.pem && "
            "kubectl create secret generic vallum-signing-key --from-file=signing-key.pem"
        ),
    )
    generate.add_argument(
        "--format",
        choices=("pem", "base64"),
        default="pem",
        help="pem (default) or base64 of the PEM, as Pomerium's signing_key takes it",
    )
    generate.set_defaults(func=_generate)

    jwks = commands.add_parser(
        "jwks",
        help="print the public JWKS of the keys in FILE",
        description=(
            "Print the public JWKS (as served at /.well-known/vallum/jwks.json) of every key in "
            "FILE: PEM, several PEM blocks, or base64 of PEM. '-' reads standard input."
        ),
    )
    jwks.add_argument("file", metavar="FILE", help="key file (PEM or base64 PEM), or -")
    jwks.set_defaults(func=_jwks)


def _generate(args: argparse.Namespace) -> int:
    pem = jwt.private_key_pem(jwt.generate_private_key())
    if args.format == "base64":
        sys.stdout.write(base64.b64encode(pem.encode()).decode() + "\n")
    else:
        sys.stdout.write(pem)
    return 0


def _jwks(args: argparse.Namespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    limit = files.LIMITS["key"]  # read as the config loader reads a key file: bounded
    try:
        if args.file == "-":
            text = sys.stdin.read(limit + 1)
            if len(text) > limit:
                raise files.FileProblem(name, f"larger than {files.describe_size(limit)}")
        else:
            text, _ = files.read_text(args.file, "key", check_mode=False)
    except files.FileProblem as exc:
        print(f"vallum keys jwks: {name}: cannot read: {exc.reason}", file=sys.stderr)
        return 1
    try:
        keys = jwt.load_keys([text], place=name, indexed=False)
    except errors.ConfigError as exc:
        for problem in exc.problems:
            print(f"vallum keys jwks: {problem}", file=sys.stderr)
        return 1
    if not keys:
        print(f"vallum keys jwks: {name}: no key found", file=sys.stderr)
        return 1
    sys.stdout.write(jwt.jwks_document(keys).decode() + "\n")
    return 0
