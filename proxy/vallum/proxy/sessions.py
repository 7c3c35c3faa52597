"""Stateless sessions: who is signed in lives in an encrypted, authenticated cookie.

Vallum keeps no session store: the browser carries its session, sealed with AES-GCM under a key
derived (HKDF-SHA256) from ``cookie_secret``, so any Vallum process with the same secret can read
it and nobody else can read or forge it. The same sealing, with a key per *purpose*, protects the
short-lived tokens of the login flow (the ``state`` cookie, the cross-domain hand-off), so one
kind of token can never be replayed as another.

The session is deflated before sealing (group names repeat a lot; the only secret inside is the
user's own refresh token, so compression leaks nothing across users). A session with hundreds of
groups still outgrows the browser's 4 KB cookie limit; it is then split over
``<name>_0``, ``<name>_1``, ... (the first chunk says how many there are) and joined again on
read. The AEAD covers the whole joined value, so a missing, stale or reordered chunk is simply an
invalid session.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vallum.core import config, errors, identity

log = logging.getLogger(__name__)

CHUNK_SIZE = 3800
"""Largest cookie value written; with name and attributes it stays under the 4096-byte limit."""
MAX_CHUNKS = 16
_VERSION = b"\x01"
_VERSION_DEFLATE = b"\x02"
MAX_INFLATED = 1 << 20
_NONCE = 12


def secret_bytes(settings: config.Settings) -> bytes:
    """The key material behind ``cookie_secret`` (Pomerium: base64 of 32 random bytes).

    Raises ``ConfigError`` when it is missing or too short, except in ``dev_mode``, where a
    random secret is made (sessions then end when the process does).
    """
    secret = settings.cookie_secret
    if not secret:
        if settings.dev_mode:
            log.warning("cookie_secret is not set: using a random one (dev mode only)")
            return os.urandom(32)
        raise errors.ConfigError(
            ["cookie_secret: required to sign in users (32 random bytes, base64)"]
        )
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raw = secret.encode()
    if len(raw) < 32:
        raise errors.ConfigError(
            [f"cookie_secret: must hold at least 32 bytes (base64 of 32 random bytes), "
             f"got {len(raw)}"]
        )
    return raw


class Sealer:
    """AES-GCM sealing with one derived key per purpose, and an expiry inside every token."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._keys: dict[str, AESGCM] = {}

    def _aead(self, purpose: str) -> AESGCM:
        aead = self._keys.get(purpose)
        if aead is None:
            key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"vallum/" + purpose.encode(),
            ).derive(self._secret)
            aead = self._keys[purpose] = AESGCM(key)
        return aead

    def seal(
        self, purpose: str, payload: Mapping[str, Any], ttl: float, *, aad: str = "",
        compress: bool = False,
    ) -> str:
        """Encrypt ``payload`` (JSON); only ``open`` with the same purpose and aad reads it.

        ``compress`` deflates first (for URLs; never for values an attacker partly chooses).
        """
        body = json.dumps({"exp": time.time() + ttl, "p": payload}, separators=(",", ":")).encode()
        version = _VERSION
        if compress:
            body, version = zlib.compress(body, 9), _VERSION_DEFLATE
        nonce = os.urandom(_NONCE)
        sealed = self._aead(purpose).encrypt(nonce, body, version + aad.encode())
        return base64.urlsafe_b64encode(version + nonce + sealed).rstrip(b"=").decode()

    def open(self, purpose: str, token: str, *, aad: str = "", now: float | None = None) -> Any:
        """The payload of a sealed token; ``IdentityError`` if forged, altered or expired."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise errors.IdentityError(f"{purpose}: not a sealed token") from exc
        version = raw[:1]
        if len(raw) < 1 + _NONCE + 16 or version not in (_VERSION, _VERSION_DEFLATE):
            raise errors.IdentityError(f"{purpose}: not a sealed token")
        try:
            body = self._aead(purpose).decrypt(
                raw[1 : 1 + _NONCE], raw[1 + _NONCE :], version + aad.encode()
            )
        except InvalidTag as exc:
            raise errors.IdentityError(f"{purpose}: forged or altered") from exc
        if version == _VERSION_DEFLATE:
            body = zlib.decompressobj().decompress(body, MAX_INFLATED)
        data = json.loads(body)
        if float(data["exp"]) <= (time.time() if now is None else now):
            raise errors.IdentityError(f"{purpose}: expired")
        return data["p"]


@dataclass(frozen=True, slots=True)
class Session:
    """What a session cookie holds.

    ``expires_at`` ends the session (``cookie_expire`` after sign-in); ``refresh_at`` is when the
    provider's tokens run out and the refresh token must be used (0: never).
    """

    identity: identity.Identity
    refresh_token: str = ""
    expires_at: float = 0.0
    refresh_at: float = 0.0
    issued_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        ident = self.identity
        groups = list(ident.groups)
        claims = dict(ident.claims)
        # The groups claim usually repeats the groups: store them once (a cookie is small).
        same = [k for k, v in claims.items() if v == groups and groups]
        for key in same:
            del claims[key]
        return {
            "u": ident.user, "e": ident.email, "n": ident.name, "g": groups, "gk": same,
            "c": claims, "s": ident.session_id, "r": self.refresh_token,
            "x": self.expires_at, "f": self.refresh_at, "i": self.issued_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Session:
        groups = [str(g) for g in data["g"]]
        claims = dict(data["c"])
        for key in data.get("gk", ()):
            claims[str(key)] = list(groups)
        return cls(
            identity=identity.Identity(
                user=str(data["u"]), email=str(data["e"]), name=str(data["n"]),
                groups=tuple(groups), claims=claims,
                session_id=str(data["s"]), expires_at=float(data["x"]),
            ),
            refresh_token=str(data["r"]),
            expires_at=float(data["x"]),
            refresh_at=float(data["f"]),
            issued_at=float(data["i"]),
        )


def parse_cookies(header: str) -> dict[str, str]:
    """A ``Cookie`` header as a dict (first value wins: browsers send the most specific first)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def cookie_header(
    name: str, value: str, settings: config.Settings, *, max_age: float | None, path: str = "/",
    domain: str | None = None, same_site: str | None = None,
) -> str:
    """One ``Set-Cookie`` value with the configured security attributes."""
    parts = [f"{name}={value}", f"Path={path}"]
    if domain:
        parts.append(f"Domain={domain}")
    if max_age is not None:
        parts.append(f"Max-Age={max(0, int(max_age))}")
    if settings.cookie_secure:
        parts.append("Secure")
    if settings.cookie_http_only:
        parts.append("HttpOnly")
    parts.append(f"SameSite={(same_site or settings.cookie_same_site).capitalize()}")
    return "; ".join(parts)


class SessionCookies:
    """Reads and writes the session cookie(s) for one configuration."""

    def __init__(self, settings: config.Settings, sealer: Sealer) -> None:
        self.settings = settings
        self.name = settings.cookie_name
        self._sealer = sealer

    def encode(self, session: Session, now: float | None = None) -> str:
        ttl = session.expires_at - (time.time() if now is None else now)
        return self._sealer.seal(
            "session", session.to_json(), max(ttl, 1.0), aad=self.name, compress=True
        )

    def decode(self, value: str) -> Session:
        return Session.from_json(self._sealer.open("session", value, aad=self.name))

    def read(self, cookies: Mapping[str, str]) -> Session | None:
        """The session in a request's cookies; ``None`` when there is none or it is not valid."""
        value = self.joined_value(cookies)
        if value is None:
            return None
        try:
            return self.decode(value)
        except (errors.IdentityError, KeyError, TypeError, ValueError) as exc:
            log.debug("ignoring session cookie: %s", exc)
            return None

    def joined_value(self, cookies: Mapping[str, str]) -> str | None:
        single = cookies.get(self.name)
        if single:
            return single
        first = cookies.get(f"{self.name}_0")
        if not first:
            return None
        count_text, sep, rest = first.partition(".")
        if not sep or not count_text.isdigit() or not 1 <= int(count_text) <= MAX_CHUNKS:
            return None
        parts = [rest]
        for index in range(1, int(count_text)):
            part = cookies.get(f"{self.name}_{index}")
            if part is None:
                return None
            parts.append(part)
        return "".join(parts)

    def domain_for(self, host: str | None) -> str | None:
        """``cookie_domain`` when it covers ``host`` (or no host is given), else host-only."""
        domain = self.settings.cookie_domain
        if not domain or host is None:
            return domain
        domain = domain.lstrip(".").lower()
        return domain if host == domain or host.endswith("." + domain) else None

    def chunks(self, value: str) -> list[tuple[str, str]]:
        """The cookies (name, value) that carry one encoded session ``value``."""
        if len(value) <= CHUNK_SIZE:
            return [(self.name, value)]
        step = CHUNK_SIZE - 4
        pieces = [value[i : i + step] for i in range(0, len(value), step)]
        if len(pieces) > MAX_CHUNKS:
            raise errors.IdentityError(
                f"session too large for {MAX_CHUNKS} cookies ({len(value)} bytes); "
                "reduce the groups or claims the provider sends"
            )
        pieces[0] = f"{len(pieces)}.{pieces[0]}"
        return [(f"{self.name}_{i}", piece) for i, piece in enumerate(pieces)]

    def set_headers(
        self, session: Session, present: Iterable[str] = (), now: float | None = None,
        host: str | None = None,
    ) -> list[str]:
        """``Set-Cookie`` values storing ``session`` for ``host``; ``present`` = cookie names
        the client sent (stale chunks among them are cleared)."""
        value = self.encode(session, now)
        max_age = session.expires_at - (time.time() if now is None else now)
        return self.pair_headers(self.chunks(value), max_age, present, host, clear_stale=True)

    def pair_headers(
        self, pairs: list[tuple[str, str]], max_age: float, present: Iterable[str],
        host: str | None, *, clear_stale: bool,
    ) -> list[str]:
        """``Set-Cookie`` values for some session chunks (and removal of stale ones)."""
        domain = self.domain_for(host)
        written = {name for name, _ in pairs}
        headers = [
            cookie_header(name, val, self.settings, max_age=max_age, domain=domain)
            for name, val in pairs
        ]
        if clear_stale:
            headers += [
                cookie_header(name, "", self.settings, max_age=0, domain=domain)
                for name in sorted(set(present))
                if self.is_ours(name) and name not in written
            ]
        return headers

    def clear_headers(self, present: Iterable[str] = (), host: str | None = None) -> list[str]:
        """``Set-Cookie`` values removing every session cookie (and the plain name, always)."""
        names = {self.name} | {n for n in present if self.is_ours(n)}
        domain = self.domain_for(host)
        return [
            cookie_header(name, "", self.settings, max_age=0, domain=domain)
            for name in sorted(names)
        ]

    def is_ours(self, cookie: str) -> bool:
        if cookie == self.name:
            return True
        prefix, _, index = cookie.rpartition("_")
        return prefix == self.name and index.isdigit()
