"""Signing the identity assertion, publishing the JWKS, verifying our own assertions.

Why this module exists: the assertion is the upstream's proof of who is calling ("no valid JWT,
no access"). It must be signed with a key the upstream can fetch (the JWKS), in the format its
libraries already verify (Pomerium's: ES256, header ``kid``), and cheaply enough that the hot path
does not sign on every request.

Public interface (used by the identity pipeline):

``AssertionMinter(settings)``
    Loads ``settings.signing_key`` (a tuple of PEM strings, each possibly holding several PEM
    blocks, or base64 of PEM as Pomerium takes it). The first key signs; every key (the signer and
    older/newer ones kept for rotation, private or public) is published. Only EC P-256 keys
    (ES256) are accepted. Without a key: in ``dev_mode`` a key is generated (with a warning; it
    dies with the process), otherwise :class:`~vallum.core.errors.ConfigError`.
``.mint(identity, route_host, now=None) -> str``
    The signed assertion. Cached per (session id, route host, identity's claims) until
    ``REFRESH_BEFORE`` seconds before it expires; the cache is bounded (LRU). Passing the same
    ``Identity`` object again (a cached session) skips even recomputing the claims, so treat
    an ``Identity`` as immutable, its ``claims`` mapping included.
``.mint_with_claims(...) -> Minted``
    The same token plus its payload, for :func:`vallum.core.claims.claim_headers`.
``.identity_headers(identity, route_host, now=None) -> list[(name, value)]``
    Everything ``pass_identity_headers`` adds: the assertion (``X-Vallum-Jwt-Assertion``, also
    ``X-Pomerium-Jwt-Assertion`` with ``pomerium_compatibility``) and the claim headers.
``.jwks_json() -> bytes``
    The public JWKS, served at ``/.well-known/vallum/jwks.json`` (and
    ``/.well-known/pomerium/jwks.json`` with ``pomerium_compatibility``) on every route host;
    :func:`jwks_paths` gives those paths for a configuration.
``.verify(token, audience) -> dict``
    Checks a token claims to be ours: ES256, a ``kid`` of ours, valid signature, not expired,
    ``aud`` one of ``audience`` (``None``: any) and ``iss`` matching ``aud`` in either issuer
    format. Raises :class:`~vallum.core.errors.IdentityError` otherwise.
``.original_user_headers(request_headers) -> list[(name, value)]``
    The original-user-context headers (``X-Vallum-Jwt-Assertion-For`` and, with
    ``pomerium_compatibility``, ``X-Pomerium-Jwt-Assertion-For``) for a request that arrived with
    an assertion; call it *before* the incoming identity headers are stripped. Only a token that
    :meth:`verify` accepts is carried on (Pomerium copies any value; see :mod:`vallum.core.claims`).

``kid`` is the RFC 7638 SHA-256 JWK thumbprint in hex, as Pomerium computes it
(``pkg/cryptutil/jose.go``), so the same key has the same ``kid`` in both. The JWT header is
``{"alg": "ES256", "kid": ..., "typ": "JWT"}`` and each JWK has ``use``, ``kty``, ``kid``, ``crv``,
``alg``, ``x``, ``y``, as Pomerium publishes them.

Deviations from Pomerium (on purpose):

- Outside ``dev_mode`` a missing ``signing_key`` is a configuration error; Pomerium quietly
  generates a key, which makes assertions unverifiable after every restart and differ between
  replicas.
- Only EC P-256 keys (ES256); Pomerium also signs RS256 with an RSA key.
- A minted token is reused for the same session, route host and claims until ~30 s before it
  expires, so its ``jti`` repeats across those requests (Pomerium signs per request). ``jti`` is
  therefore not a per-request nonce; it still identifies one signed token.
- The original-user-context header only carries a token Vallum verified.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vallum.core import claims, config, errors, identity

log = logging.getLogger("vallum.jwt")

ALGORITHM = "ES256"
REFRESH_BEFORE = 30.0
"""A cached assertion is replaced when less than this many seconds of its life remain."""
JWKS_PATH = "/.well-known/vallum/jwks.json"
POMERIUM_JWKS_PATH = "/.well-known/pomerium/jwks.json"
CACHE_SIZE = 10_000
"""Most assertions kept (one per session and route host); least recently used go first."""

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the key set: its ``kid``, public key and, when we can sign, the private key."""

    kid: str
    public: ec.EllipticCurvePublicKey
    private: ec.EllipticCurvePrivateKey | None = None

    def jwk(self) -> dict[str, str]:
        """The public JWK, members as Pomerium publishes them."""
        return {"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": ALGORITHM,
                **_coordinates(self.public)}


@dataclass(frozen=True, slots=True)
class Minted:
    """A signed assertion, the payload it carries and the identity headers that go with it."""

    token: str
    claims: Mapping[str, Any]
    expires_at: int
    headers: tuple[tuple[str, str], ...] = ()
    """Assertion header(s) then claim headers (:meth:`AssertionMinter.identity_headers`)."""

    def fresh(self, moment: float) -> bool:
        """Still good to send at ``moment`` (not within ``REFRESH_BEFORE`` of expiry)."""
        return bool(self.expires_at - REFRESH_BEFORE > moment >= self.claims["iat"])


def jwks_paths(settings: config.Settings) -> tuple[str, ...]:
    """Where the JWKS is served on every route host: ours, plus Pomerium's in compatibility."""
    return (JWKS_PATH, POMERIUM_JWKS_PATH) if settings.pomerium_compatibility else (JWKS_PATH,)


def thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC public key, hex-encoded (Pomerium's ``kid``)."""
    members = {"crv": "P-256", "kty": "EC", **_coordinates(public)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 key for ES256."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """PKCS#8 PEM of a private key (what ``vallum keys generate`` prints)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_keys(
    entries: Iterable[str], place: str = "signing_key", *, indexed: bool = True
) -> list[SigningKey]:
    """Parse every key in ``entries`` (PEM text, or base64 of PEM), in order.

    Raises :class:`ConfigError` naming each bad entry (``signing_key[1]: ...``; just ``place``
    when not ``indexed``); duplicates (same ``kid``) are kept once.
    """
    keys: list[SigningKey] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{place}[{index}]" if indexed else place
        text = _pem_text(entry)
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(text)]
        if not blocks:
            problems.append(f"{where}: no PEM key found (expected '-----BEGIN ... KEY-----')")
            continue
        for number, block in enumerate(blocks):
            label = where if len(blocks) == 1 else f"{where} block {number + 1}"
            try:
                key = _load_block(block)
            except ValueError as exc:
                problems.append(f"{label}: {exc}")
                continue
            if key.kid not in seen:
                seen.add(key.kid)
                keys.append(key)
    if problems:
        raise errors.ConfigError(problems)
    return keys


def jwks_document(keys: Iterable[SigningKey]) -> bytes:
    """The JWKS JSON of ``keys`` (public members only), compact and stable."""
    return json.dumps({"keys": [k.jwk() for k in keys]}, separators=(",", ":")).encode()


class AssertionMinter:
    """Signs assertions with the first configured key and publishes every key (see module doc)."""

    def __init__(self, settings: config.Settings, *, cache_size: int = CACHE_SIZE) -> None:
        self._settings = settings
        keys = load_keys(settings.signing_key)
        if not keys:
            if not settings.dev_mode:
                raise errors.ConfigError([
                    "signing_key: required to sign identity assertions (create one with "
                    "'vallum keys generate'); only dev_mode generates a temporary key"
                ])
            private = generate_private_key()
            keys = [SigningKey(thumbprint(private.public_key()), private.public_key(), private)]
            log.warning(
                "dev_mode: no signing_key configured; generated a temporary signing key "
                "(kid %s). Assertions signed with it stop verifying when Vallum restarts.",
                keys[0].kid,
            )
        if keys[0].private is None:
            raise errors.ConfigError([
                "signing_key[0]: the first key signs assertions and must be a private key "
                "(public keys may follow it, for rotation)"
            ])
        self._keys = tuple(keys)
        self._signer = keys[0]
        self._private: ec.EllipticCurvePrivateKey = keys[0].private
        self._by_kid = {k.kid: k for k in keys}
        self._jwks = jwks_document(keys)
        self._cache: collections.OrderedDict[tuple[Any, ...], Minted] = (
            collections.OrderedDict()
        )
        self._cache_size = max(1, cache_size)
        self._verified: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._recent: collections.OrderedDict[
            tuple[int, str], tuple[identity.Identity, Minted]
        ] = collections.OrderedDict()

    @property
    def kid(self) -> str:
        """The ``kid`` of the signing key."""
        return self._signer.kid

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._keys

    def jwks_json(self) -> bytes:
        """The public JWKS document (bytes, computed once)."""
        return self._jwks

    def mint(self, who: identity.Identity, route_host: str, now: float | None = None) -> str:
        """The signed assertion for ``who`` on ``route_host`` (cached; see module doc)."""
        return self.mint_with_claims(who, route_host, now).token

    def mint_with_claims(
        self, who: identity.Identity, route_host: str, now: float | None = None
    ) -> Minted:
        moment = time.time() if now is None else now
        # Fast path: the very same Identity object as a recent request (sessions are cached by
        # the identity gate), so the claims cannot have changed. The entry keeps the object
        # alive, so its id() cannot be reused by another while the entry exists.
        recent_key = (id(who), route_host)
        recent = self._recent.get(recent_key)
        if recent is not None and recent[0] is who and recent[1].fresh(moment):
            return recent[1]
        stable = claims.stable_claims(who, route_host, self._settings)
        key = (who.session_id, route_host, stable)
        minted = self._cache.get(key)
        if minted is not None and minted.fresh(moment):
            self._cache.move_to_end(key)
        else:
            minted = self._sign(who, route_host, moment, stable)
            self._remember(self._cache, key, minted)
        self._remember(self._recent, recent_key, (who, minted))
        return minted

    def identity_headers(
        self, who: identity.Identity, route_host: str, now: float | None = None
    ) -> list[tuple[str, str]]:
        """The assertion header(s) and claim headers for one forwarded request."""
        return list(self.mint_with_claims(who, route_host, now).headers)

    def _sign(
        self, who: identity.Identity, route_host: str, moment: float,
        stable: tuple[tuple[str, Any], ...],
    ) -> Minted:
        payload = claims.assertion_claims(who, route_host, self._settings, moment, stable=stable)
        token = pyjwt.encode(
            payload, self._private, algorithm=ALGORITHM,
            headers={"kid": self._signer.kid, "typ": "JWT"},
        )
        headers = [(claims.ASSERTION_HEADER, token)]
        if self._settings.pomerium_compatibility:
            headers.append((claims.POMERIUM_ASSERTION_HEADER, token))
        headers.extend(claims.claim_headers(payload, self._settings))
        return Minted(token, payload, int(payload["exp"]), tuple(headers))

    def _remember(self, cache: collections.OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    def verify(
        self, token: str, audience: str | Iterable[str] | None, now: float | None = None
    ) -> dict[str, Any]:
        """The payload of an assertion we signed; :class:`IdentityError` if it is not one."""
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError as exc:
            raise errors.IdentityError(f"assertion: malformed token ({exc})") from exc
        if header.get("alg") != ALGORITHM:
            raise errors.IdentityError(f"assertion: algorithm {header.get('alg')!r} is not ES256")
        key = self._by_kid.get(str(header.get("kid", "")))
        if key is None:
            raise errors.IdentityError("assertion: signed with an unknown key (kid)")
        try:
            payload: dict[str, Any] = pyjwt.decode(
                token, key.public, algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "iss", "aud"], "verify_aud": False,
                         "verify_iat": False},
            )
        except pyjwt.PyJWTError as exc:
            raise errors.IdentityError(f"assertion: {exc}") from exc
        moment = time.time() if now is None else now
        if not isinstance(payload["exp"], (int, float)) or payload["exp"] <= moment:
            raise errors.IdentityError("assertion: expired")
        aud = payload["aud"]
        if not isinstance(aud, str):
            raise errors.IdentityError("assertion: 'aud' is not a single host")
        if audience is not None:
            allowed = {audience} if isinstance(audience, str) else set(audience)
            if aud not in allowed:
                raise errors.IdentityError(f"assertion: audience {aud!r} is not accepted here")
        if payload["iss"] not in (aud, claims.issuer(aud, "uri")):
            raise errors.IdentityError("assertion: issuer does not match audience")
        return payload

    def original_user_headers(self, request_headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """``X-*-Jwt-Assertion-For`` for an incoming assertion we verified (else nothing).

        ``request_headers`` maps lower-case names to values (:class:`RequestInfo.headers`). An
        incoming ``-For`` header wins over an incoming assertion (Pomerium's order); the first
        candidate that verifies is carried on, unchanged.
        """
        for name in (
            claims.ASSERTION_FOR_HEADER, claims.POMERIUM_ASSERTION_FOR_HEADER,
            claims.ASSERTION_HEADER, claims.POMERIUM_ASSERTION_HEADER,
        ):
            token = request_headers.get(name.lower(), "").strip()
            if not token or not self._verified_once(token, name):
                continue
            out = [(claims.ASSERTION_FOR_HEADER, token)]
            if self._settings.pomerium_compatibility:
                out.append((claims.POMERIUM_ASSERTION_FOR_HEADER, token))
            return out
        return []

    def _verified_once(self, token: str, header: str) -> bool:
        """Whether ``token`` verifies; a verified token is remembered until it expires."""
        now = time.time()
        expires = self._verified.get(token)
        if expires is not None and expires > now:
            self._verified.move_to_end(token)
            return True
        try:
            payload = self.verify(token, None, now=now)
        except errors.IdentityError as exc:
            log.info("not carrying %s on: %s", header, exc)
            return False
        self._remember(self._verified, token, float(payload["exp"]))
        return True


def _coordinates(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem_text(entry: str) -> str:
    text = entry.strip()
    if "-----BEGIN" in text:
        return text
    try:  # Pomerium's signing_key is base64 of the PEM.
        return base64.b64decode("".join(text.split()), validate=True).decode()
    except (binascii.Error, ValueError):
        return text


def _load_block(block: str) -> SigningKey:
    data = block.encode()
    private: Any = None
    if "PRIVATE KEY" in block:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot read private key ({exc})") from exc
        public: Any = private.public_key()
    elif "PUBLIC KEY" in block:
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"cannot read public key ({exc})") from exc
    else:
        raise ValueError(f"{block.splitlines()[0]} is not a key")
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        kind = getattr(getattr(public, "curve", None), "name", None) or type(public).__name__
        raise ValueError(
            f"{kind} keys are not supported; use an EC P-256 key for ES256 "
            "('vallum keys generate')"
        )
    return SigningKey(thumbprint(public), public, private)
