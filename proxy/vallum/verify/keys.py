"""The verification keys: a JWKS parsed into ES256 public keys, and a cache that fetches it.

Why this module exists: an app (or the ``vallum verify`` sidecar) must pick the key that checks
an assertion from the issuer's published JWKS, never from anything the token itself names, and
must notice new keys (rotation) without fetching the JWKS on every request. :class:`KeySet` holds
only EC P-256 keys usable for ES256 (a JWK with another ``kty``, ``crv``, ``alg`` or ``use`` is
left out); :class:`JwksCache` fetches one URL with a timeout and a size limit, keeps the last good
set, refreshes it every ``max_age`` seconds and, for a ``kid`` it has not seen, at most once every
``refetch_interval`` seconds (so a flood of made-up ``kid`` values costs one fetch per interval).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("vallum.verify")

ALGORITHM = "ES256"
MAX_JWKS_BYTES = 256 * 1024
"""A larger JWKS document is refused (a JWKS holds a handful of keys)."""
MAX_KEYS = 100
MAX_KID_LENGTH = 256


class KeysUnavailable(Exception):
    """No key set could be loaded yet (the JWKS endpoint is down or answers garbage)."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """ES256 public keys by ``kid``; built from a JWKS document with :meth:`from_jwks`."""

    keys: Mapping[str, ec.EllipticCurvePublicKey]

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> KeySet:
        """The usable keys of a JWKS (``{"keys": [...]}``); unusable entries are skipped (logged).

        Raises :class:`ValueError` when the document is not a JWKS at all.
        """
        entries = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWKS: no 'keys' list")
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for index, entry in enumerate(entries[:MAX_KEYS]):
            try:
                kid, key = _es256_key(entry)
            except ValueError as exc:
                log.debug("JWKS key %d skipped: %s", index, exc)
                continue
            keys.setdefault(kid, key)  # a repeated kid keeps its first key
        return cls(keys)

    def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self.keys.get(kid)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)


def _es256_key(entry: Any) -> tuple[str, ec.EllipticCurvePublicKey]:
    if not isinstance(entry, Mapping):
        raise ValueError("not an object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise ValueError("no usable 'kid'")
    if entry.get("kty") != "EC" or entry.get("crv") != "P-256":
        raise ValueError(f"kid {kid!r}: not an EC P-256 key")
    if entry.get("alg", ALGORITHM) != ALGORITHM:
        raise ValueError(f"kid {kid!r}: alg {entry.get('alg')!r} is not ES256")
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"kid {kid!r}: use {entry.get('use')!r} is not 'sig'")
    if "d" in entry:
        raise ValueError(f"kid {kid!r}: a private key has no place in a JWKS")
    x, y = _coordinate(entry.get("x")), _coordinate(entry.get("y"))
    try:  # cryptography checks that the point is on the curve
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as exc:
        raise ValueError(f"kid {kid!r}: invalid point ({exc})") from exc
    return kid, key


def _coordinate(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("missing coordinate")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("coordinate is not base64url") from exc
    if len(raw) != 32:
        raise ValueError("coordinate is not 32 bytes")
    return int.from_bytes(raw, "big")


class JwksCache:
    """The key set published at ``url``, fetched on demand and kept (see module doc).

    ``session``: an :class:`aiohttp.ClientSession` to fetch with (yours to close); without it the
    cache makes its own (closed by :meth:`close`), trusting ``ssl_context`` when given.
    A failed fetch keeps the previous keys; with none loaded yet, :meth:`key_for` raises
    :class:`KeysUnavailable` (closed: nothing verifies until keys load), retrying at most every
    ``retry_interval`` seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        refetch_interval: float = 15.0,
        retry_interval: float = 2.0,
        max_age: float = 300.0,
        session: aiohttp.ClientSession | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.refetch_interval = refetch_interval
        self.retry_interval = retry_interval
        self.max_age = max_age
        self._session = session
        self._own_session = session is None
        self._ssl = ssl_context
        self._keys: KeySet | None = None
        self._loaded_at = 0.0
        self._attempted_at: float | None = None
        self._last_ok = False
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Completed fetch attempts (successful or not), for tests and logs."""

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    async def key_for(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The key for ``kid``; refetches (rate-limited) when it is unknown or the set is old."""
        now = time.monotonic()
        keys = self._keys
        if keys is not None and now - self._loaded_at < self.max_age:
            key = keys.get(kid)
            if key is not None:
                return key
        await self._refresh_if_allowed()
        if self._keys is None:
            raise KeysUnavailable(f"no keys loaded from {self.url}")
        return self._keys.get(kid)

    async def refresh(self) -> KeySet:
        """Fetch now (no rate limit); raises :class:`KeysUnavailable` if it fails."""
        async with self._lock:
            await self._fetch()
        if not self._last_ok or self._keys is None:
            raise KeysUnavailable(f"cannot load keys from {self.url}")
        return self._keys

    async def _refresh_if_allowed(self) -> None:
        async with self._lock:  # one fetch at a time; waiters then see its result
            if self._attempted_at is not None:
                wait = self.refetch_interval if self._last_ok else self.retry_interval
                if time.monotonic() - self._attempted_at < wait:
                    return
            await self._fetch()

    async def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            document = await self._get()
            keys = KeySet.from_jwks(document)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._last_ok = False
            log.warning("cannot load the JWKS from %s: %s", self.url, exc or type(exc).__name__)
        else:
            if self._keys is None or set(self._keys) != set(keys):
                log.info("JWKS from %s: %d key(s): %s", self.url, len(keys), ", ".join(keys))
            self._keys, self._loaded_at, self._last_ok = keys, time.monotonic(), True
        finally:
            self.fetches += 1

    async def _get(self) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
            )
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._session.get(
            self.url, timeout=timeout, allow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError("not JSON") from exc

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
