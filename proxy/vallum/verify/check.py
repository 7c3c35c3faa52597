"""Checking one assertion: the rules every Vallum (and Pomerium) assertion must pass.

Why this module exists: the point of the assertion is that an app trusts nothing but a valid
signature from the issuer's keys, so the checks must be strict and the same everywhere (the plain
function, both middlewares and the sidecar call :func:`check`). The token's header is only read
to learn the ``kid``; the algorithm is fixed (ES256) and the key comes from the key set, so
``alg: none``, HS256 "signed" with the public key, ``jku``/``x5u``/``jwk``/``x5c`` headers and
``crit`` extensions are all refused. ``exp`` is required; ``nbf`` and ``iat`` must not lie in
the future; every time check allows ``leeway`` seconds of clock skew.

:class:`VerificationError` carries a short ``reason`` that is safe to send to the client and a
``detail`` for the log.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec

from vallum.verify import keys as keys_mod

DEFAULT_HEADER = "X-Vallum-Jwt-Assertion"
POMERIUM_HEADER = "X-Pomerium-Jwt-Assertion"
DEFAULT_LEEWAY = 30.0
MAX_TOKEN_BYTES = 64 * 1024
"""A longer assertion is refused unparsed (Vallum's, with hundreds of groups, is ~15 KB)."""
_FORBIDDEN_HEADER_MEMBERS = ("jku", "x5u", "jwk", "x5c", "crit")
_TOKEN_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
)


class VerificationError(Exception):
    """The assertion is not acceptable. ``reason``: short, client-safe; ``detail``: for logs."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail or reason


def issuers_for(audience: str, issuer: str | None) -> tuple[str, ...]:
    """Accepted ``iss`` values: ``issuer`` if given, else the audience in both formats Vallum
    and Pomerium mint (``jwt_issuer_format``: ``host`` or ``https://host/``)."""
    if issuer is not None:
        return (issuer,)
    return (audience, f"https://{audience}/")


def single_token(values: Sequence[str]) -> str:
    """The one assertion among a header's ``values``; missing, repeated or malformed → error."""
    if not values:
        raise VerificationError("missing assertion")
    if len(values) > 1:
        raise VerificationError("more than one assertion", f"{len(values)} header fields")
    return well_formed(values[0].strip(" \t"))  # optional whitespace is not the value's


def well_formed(token: str) -> str:
    """``token`` if it looks like a compact JWS (bounded size, three base64url parts)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise VerificationError("assertion too large", f"{len(token)} bytes")
    if not token:
        raise VerificationError("missing assertion")
    if not set(token) <= _TOKEN_CHARACTERS or token.count(".") != 2:
        raise VerificationError("malformed assertion", "not a compact JWS")
    return token


def kid_of(token: str) -> str:
    """The ``kid`` of an ES256 token whose header asks for nothing we refuse to honour."""
    header = _header(token)
    alg = header.get("alg")
    if alg != keys_mod.ALGORITHM:
        raise VerificationError("unsupported algorithm", f"alg {alg!r}")
    refused = [name for name in _FORBIDDEN_HEADER_MEMBERS if name in header]
    if refused:
        raise VerificationError("unsupported token header", f"header has {', '.join(refused)}")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise VerificationError("unsupported token header", f"typ {typ!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > keys_mod.MAX_KID_LENGTH:
        raise VerificationError("unknown key", "no usable kid")
    return kid


def _header(token: str) -> dict[str, Any]:
    """The decoded JOSE header, read by us so that our refusals come before any library's."""
    part = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise VerificationError("malformed assertion", "header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise VerificationError("malformed assertion", "header is not a JSON object")
    return header


def check(
    token: str,
    key: ec.EllipticCurvePublicKey | None,
    audience: str | Iterable[str],
    issuers: Sequence[str],
    *,
    leeway: float = DEFAULT_LEEWAY,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` signed by ``key`` (the key its ``kid`` named; ``None``: unknown)."""
    if key is None:
        raise VerificationError("unknown key", "kid not in the key set")
    audiences = [audience] if isinstance(audience, str) else list(audience)
    try:
        claims: dict[str, Any] = pyjwt.decode(
            token, key, algorithms=[keys_mod.ALGORITHM],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "verify_aud": False, "verify_iss": False},
        )
    except pyjwt.InvalidSignatureError as exc:
        raise VerificationError("invalid signature") from exc
    except pyjwt.PyJWTError as exc:
        raise VerificationError("malformed assertion", str(exc)) from exc
    moment = time.time() if now is None else now
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if moment >= exp + leeway:
        raise VerificationError("assertion expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and moment + leeway < nbf:
        raise VerificationError("assertion not yet valid", "nbf in the future")
    iat = _number(claims, "iat")
    if iat is not None and moment + leeway < iat:
        raise VerificationError("assertion not yet valid", "iat in the future")
    aud = claims.get("aud")
    token_audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audiences for a in token_audiences):
        raise VerificationError("wrong audience", f"aud {aud!r}")
    if claims.get("iss") not in issuers:
        raise VerificationError("wrong issuer", f"iss {claims.get('iss')!r}")
    return claims


def _number(claims: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise VerificationError("malformed assertion", f"no {name!r} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerificationError("malformed assertion", f"{name!r} is not a number")
    return float(value)
