"""Verify Vallum's identity assertion in an app: a function, a verifier, two middlewares.

Why this package exists: an upstream behind Vallum should trust a request only when its
``X-Vallum-Jwt-Assertion`` (or Pomerium's ``X-Pomerium-Jwt-Assertion``) verifies; this is the
small, typed way to do that in Python, and the code the ``vallum verify`` sidecar runs. It needs
only PyJWT, cryptography and (to fetch a JWKS, and for the aiohttp middleware) aiohttp, and never
imports the proxy or the operator.

- :func:`verify` — ``verify(token, jwks_or_keyset, audience, issuer=None) -> claims``.
- :class:`Verifier` — the same check with keys from a :class:`JwksCache` (refetched on an unknown
  ``kid``, rate-limited): ``await Verifier(cache, audience).verify(token)``.
- :mod:`vallum.verify.middleware`: ``aiohttp_middleware(verifier)``,
  ``AsgiMiddleware(app, verifier)``.

Every failure raises :class:`VerificationError` (``reason`` is short and safe to show); no keys
loaded yet raises :class:`KeysUnavailable`. The issuer defaults to the audience (as Vallum and
Pomerium mint it, in either ``jwt_issuer_format``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from vallum.verify import check as _check
from vallum.verify import keys as _keys

DEFAULT_HEADER = _check.DEFAULT_HEADER
POMERIUM_HEADER = _check.POMERIUM_HEADER
DEFAULT_LEEWAY = _check.DEFAULT_LEEWAY
VerificationError = _check.VerificationError
KeysUnavailable = _keys.KeysUnavailable
KeySet = _keys.KeySet
JwksCache = _keys.JwksCache

__all__ = [
    "DEFAULT_HEADER",
    "DEFAULT_LEEWAY",
    "POMERIUM_HEADER",
    "JwksCache",
    "KeySet",
    "KeysUnavailable",
    "VerificationError",
    "Verifier",
    "verify",
]


def verify(
    token: str,
    keys: KeySet | Mapping[str, Any],
    audience: str,
    issuer: str | None = None,
    *,
    leeway: float = DEFAULT_LEEWAY,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a valid assertion; :class:`VerificationError` otherwise.

    ``keys`` is a :class:`KeySet` or a JWKS document (``{"keys": [...]}``, e.g. the parsed
    ``/.well-known/vallum/jwks.json``).
    """
    key_set = keys if isinstance(keys, KeySet) else KeySet.from_jwks(keys)
    token = _check.well_formed(token)
    kid = _check.kid_of(token)
    return _check.check(
        token, key_set.get(kid), audience, _check.issuers_for(audience, issuer),
        leeway=leeway, now=time.time() if now is None else now,
    )


class Verifier:
    """Checks assertions for one ``audience`` against keys that may change (a :class:`JwksCache`)
    or are fixed (a :class:`KeySet`)."""

    def __init__(
        self,
        keys: JwksCache | KeySet,
        audience: str,
        issuer: str | None = None,
        *,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        self.keys = keys
        self.audience = audience
        self.issuers = _check.issuers_for(audience, issuer)
        self.leeway = leeway

    async def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims of ``token``; :class:`VerificationError` or :class:`KeysUnavailable`."""
        token = _check.well_formed(token)
        kid = _check.kid_of(token)
        if isinstance(self.keys, KeySet):
            key = self.keys.get(kid)
        else:
            key = await self.keys.key_for(kid)
        return _check.check(token, key, self.audience, self.issuers, leeway=self.leeway, now=now)

    async def verify_values(self, values: list[str], now: float | None = None) -> dict[str, Any]:
        """Like :meth:`verify` for every value of the assertion header: exactly one must exist."""
        return await self.verify(_check.single_token(values), now)
