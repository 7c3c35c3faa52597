"""The OpenID Connect client: how Vallum talks to the identity provider.

Discovery, the authorization-code flow with PKCE (authorization URLs and token requests built
with ``authlib``), ID-token and JWT access-token validation against the provider's JWKS (PyJWT;
keys cached and fetched again when a token names a ``kid`` we have not seen, at most every few
seconds), userinfo, the refresh-token grant and the end-session URL.

It does network I/O with aiohttp's client; none of it is on the hot path: it runs at sign-in,
at refresh, and for a bearer token the first time it is seen. The provider is trusted through the
system's CA store plus ``certificate_authority`` (Pomerium's setting for a private CA).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc6749 import parameters

from vallum.core import config, errors, identity

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
LEEWAY = 30.0
JWKS_MIN_REFETCH = 5.0
PROTOCOL_CLAIMS = frozenset(
    {"nonce", "at_hash", "c_hash", "aud", "exp", "iat", "nbf", "jti", "azp", "auth_time", "sid"}
)


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document Vallum uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    authorization_response_iss_parameter_supported: bool = False
    """RFC 9207: the provider names itself (``iss``) in every authorization response."""


@dataclass(frozen=True, slots=True)
class LoginStart:
    """Where to send the browser, and the secrets to keep (sealed) until the callback."""

    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token response, with the ID token's validated claims merged with userinfo."""

    claims: Mapping[str, Any]
    access_token: str
    refresh_token: str
    id_token: str
    expires_at: float


def ssl_context(settings: config.Settings) -> ssl.SSLContext:
    """The system's trust store plus ``certificate_authority`` when it is set."""
    context = ssl.create_default_context()
    if settings.certificate_authority_pem:
        context.load_verify_locations(cadata=settings.certificate_authority_pem)
    return context


def groups_from_claims(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The user's groups from ``idp_groups_claim`` (a list, a string, or a dotted path)."""
    value: Any = claims.get(claim)
    if value is None and "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(item) for item in value)
    return (str(value),)


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a JWT claims, unverified: only to tell whose token it is, never to trust it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def email_unverified(claims: Mapping[str, Any]) -> bool:
    """The provider says it has not verified the email (``email_verified`` false or "false")."""
    verified = claims.get("email_verified")
    if isinstance(verified, str):
        return verified.strip().lower() == "false"
    return verified is False


def identity_from_claims(
    claims: Mapping[str, Any], settings: config.Settings, *, session_id: str, expires_at: float
) -> identity.Identity:
    """An ``Identity`` from validated provider claims.

    An email the provider says it has not verified is no email at all (not in ``email``, not in
    the claims, so ``email``/``domain``/``allowed_users``/``allowed_domains``, ``claim/email``
    and the assertion never see it), unless ``idp_allow_unverified_email`` is set: anyone can
    type any address at many providers ("nOAuth").
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise errors.IdentityError("token has no subject (sub)")
    if "email" in claims and email_unverified(claims) and not settings.idp_allow_unverified_email:
        claims = {k: v for k, v in claims.items() if k != "email"}
    return identity.Identity(
        user=sub,
        email=str(claims.get("email") or ""),
        name=str(claims.get("name") or claims.get("preferred_username") or ""),
        groups=groups_from_claims(claims, settings.idp_groups_claim),
        claims={k: v for k, v in claims.items() if k not in PROTOCOL_CLAIMS},
        session_id=session_id,
        expires_at=expires_at,
    )


class OIDCClient:
    """One provider, as configured by the ``idp_*`` settings."""

    def __init__(self, settings: config.Settings) -> None:
        if not settings.idp_provider_url or not settings.idp_client_id:
            raise errors.ConfigError(
                ["idp_provider_url, idp_client_id: required to sign in users"]
            )
        self.settings = settings
        self.provider_url = settings.idp_provider_url.rstrip("/")
        self.client_id = settings.idp_client_id
        self._ssl = ssl_context(settings)
        self._http: aiohttp.ClientSession | None = None
        self._metadata: ProviderMetadata | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched = 0.0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._http

    async def _json(
        self, method: str, url: str, what: str, *, empty_ok: bool = False, **kw: Any
    ) -> dict[str, Any]:
        if asyncio.current_task() is None:
            # The hot path (vallum.proxy.exchange) runs the gate's first step with
            # coro.send(None) straight from the protocol callback, outside any task, and makes a
            # task only when the gate suspends. aiohttp's timeouts refuse to run outside a task
            # (RuntimeError -> 500), so the request runs in a task of its own; awaiting it is the
            # suspension that moves the rest of the gate into the exchange's task. Every network
            # call of the gate goes through here. Cancelling the exchange's task cancels it too.
            return await asyncio.ensure_future(
                self._json(method, url, what, empty_ok=empty_ok, **kw)
            )
        try:
            async with self._session().request(method, url, **kw) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise errors.IdentityError(
                        f"{what} ({url}): HTTP {resp.status}: {body[:300].decode(errors='replace')}"
                    )
                data = {} if empty_ok and not body.strip() else json.loads(body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise errors.IdentityError(f"{what} ({url}): {exc!r}") from exc
        if not isinstance(data, dict):
            raise errors.IdentityError(f"{what} ({url}): not a JSON object")
        return data

    async def metadata(self) -> ProviderMetadata:
        """The discovery document (fetched once); its issuer must be ``idp_provider_url``."""
        if self._metadata is not None:
            return self._metadata
        url = self.provider_url + "/.well-known/openid-configuration"
        doc = await self._json("GET", url, "idp_provider_url discovery")
        if str(doc.get("issuer", "")).rstrip("/") != self.provider_url:
            raise errors.IdentityError(
                f"idp_provider_url: discovery says issuer {doc.get('issuer')!r}, "
                f"expected {self.provider_url!r}"
            )
        required = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [k for k in required if not doc.get(k)]
        if missing:
            raise errors.IdentityError(f"idp_provider_url discovery ({url}): missing {missing}")
        self._metadata = ProviderMetadata(
            issuer=str(doc["issuer"]),
            authorization_endpoint=str(doc["authorization_endpoint"]),
            token_endpoint=str(doc["token_endpoint"]),
            jwks_uri=str(doc["jwks_uri"]),
            userinfo_endpoint=doc.get("userinfo_endpoint"),
            end_session_endpoint=doc.get("end_session_endpoint"),
            revocation_endpoint=doc.get("revocation_endpoint"),
            authorization_response_iss_parameter_supported=(
                doc.get("authorization_response_iss_parameter_supported") is True
            ),
        )
        return self._metadata

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: the authorization response's ``iss`` must be our provider's issuer when
        the provider advertises the parameter, and whenever it is present (a response from
        another provider, mixed up by the browser or an attacker, is refused)."""
        meta = await self.metadata()
        if iss is None:
            if meta.authorization_response_iss_parameter_supported:
                raise errors.IdentityError(
                    "the identity provider's answer has no iss parameter, which it "
                    "promises (RFC 9207)"
                )
            return
        if not secrets.compare_digest(iss.encode(), meta.issuer.encode()):
            raise errors.IdentityError(
                f"the answer names issuer {iss[:200]!r}, not this Vallum's provider "
                f"{meta.issuer!r} (RFC 9207)"
            )

    async def begin(self, redirect_uri: str, **extra: str) -> LoginStart:
        """A fresh authorization request (state, nonce, PKCE S256) for ``redirect_uri``."""
        meta = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        client = OAuth2Client(
            None, client_id=self.client_id, redirect_uri=redirect_uri,
            scope=" ".join(self.settings.idp_scopes), code_challenge_method="S256",
        )
        url, _ = client.create_authorization_url(
            meta.authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce, **extra
        )
        return LoginStart(url=str(url), state=state, nonce=nonce, code_verifier=verifier)

    def _client_headers(self) -> dict[str, str]:
        # client_secret_basic: RFC 6749 2.3.1 form-encodes id and secret before base64.
        pair = (
            urllib.parse.quote_plus(self.client_id) + ":"
            + urllib.parse.quote_plus(self.settings.idp_client_secret or "")
        )
        return {"Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    async def _token_request(self, what: str, **params: str) -> dict[str, Any]:
        meta = await self.metadata()
        body = parameters.prepare_token_request(params.pop("grant_type"), **params)
        return await self._json(
            "POST", meta.token_endpoint, what, data=body, headers=self._client_headers()
        )

    async def revoke_refresh_token(self, refresh_token: str) -> bool:
        """RFC 7009: ask the provider to revoke ``refresh_token`` (at sign-out, so a copy of
        the cookie cannot be refreshed even by a Vallum that never heard of the sign-out).
        ``False`` when the provider has no revocation endpoint."""
        meta = await self.metadata()
        if not meta.revocation_endpoint:
            return False
        body = urllib.parse.urlencode(
            {"token": refresh_token, "token_type_hint": "refresh_token"}
        )
        await self._json("POST", meta.revocation_endpoint, "revocation endpoint", data=body,
                         headers=self._client_headers(), empty_ok=True)
        return True

    async def exchange(
        self, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> Tokens:
        """Redeem an authorization code; validate the ID token (and its nonce); add userinfo."""
        data = await self._token_request(
            "token endpoint (authorization_code)", grant_type="authorization_code", code=code,
            redirect_uri=redirect_uri, code_verifier=code_verifier,
        )
        return await self._tokens(data, nonce=nonce, previous_refresh="")

    async def refresh(self, refresh_token: str) -> Tokens:
        """Use the refresh token; the provider may rotate it (the new one is returned)."""
        data = await self._token_request(
            "token endpoint (refresh_token)", grant_type="refresh_token",
            refresh_token=refresh_token,
        )
        return await self._tokens(data, nonce=None, previous_refresh=refresh_token)

    async def _tokens(
        self, data: Mapping[str, Any], *, nonce: str | None, previous_refresh: str
    ) -> Tokens:
        id_token = data.get("id_token")
        access_token = str(data.get("access_token") or "")
        if not isinstance(id_token, str) or not id_token:
            raise errors.IdentityError("token response has no id_token")
        claims = await self.verify_id_token(id_token, nonce=nonce)
        lifetimes = [float(claims["exp"])]
        if access_token:
            try:
                extra = await self.userinfo(access_token)
            except errors.IdentityError as exc:  # the ID token is enough to sign in
                log.warning("userinfo unavailable, using the ID token's claims: %s", exc)
                extra = None
            if extra is not None:
                if extra.get("sub") != claims.get("sub"):
                    raise errors.IdentityError("userinfo: sub differs from the ID token's")
                claims = {**claims, **extra}
        expires_in = data.get("expires_in")
        if isinstance(expires_in, (int, float)) and expires_in > 0:
            lifetimes.append(time.time() + float(expires_in))
        return Tokens(
            claims=claims, access_token=access_token,
            refresh_token=str(data.get("refresh_token") or previous_refresh),
            id_token=id_token, expires_at=min(lifetimes),
        )

    async def userinfo(self, access_token: str) -> dict[str, Any] | None:
        meta = await self.metadata()
        if not meta.userinfo_endpoint:
            return None
        return await self._json(
            "GET", meta.userinfo_endpoint, "userinfo endpoint",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )

    async def verify_id_token(self, token: str, *, nonce: str | None) -> dict[str, Any]:
        """Claims of an ID token for this client: signature, issuer, audience, expiry, nonce."""
        claims = await self.verify_jwt(token, audiences=(self.client_id,))
        aud, azp = claims.get("aud"), claims.get("azp")
        if azp is not None and azp != self.client_id:
            raise errors.IdentityError(f"id_token: issued to another client (azp {azp!r})")
        if isinstance(aud, list) and len(aud) > 1 and azp != self.client_id:
            raise errors.IdentityError("id_token: several audiences and azp is not our client")
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not secrets.compare_digest(got, nonce):
                raise errors.IdentityError("id_token: nonce does not match this sign-in")
        return claims

    async def verify_bearer(self, token: str) -> dict[str, Any]:
        """An ID token or JWT access token of this provider, for programmatic access.

        The audience must be our client id or one of ``idp_access_token_allowed_audiences``.
        """
        allowed = (self.client_id, *self.settings.idp_access_token_allowed_audiences)
        return await self.verify_jwt(token, audiences=allowed)

    async def verify_jwt(self, token: str, *, audiences: tuple[str, ...]) -> dict[str, Any]:
        meta = await self.metadata()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise errors.IdentityError(f"not a JWT: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise errors.IdentityError(f"token algorithm {alg!r} is not accepted")
        key = await self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key.key, algorithms=[str(alg)], audience=list(audiences),
                issuer=meta.issuer, leeway=LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise errors.IdentityError(f"token rejected: {exc}") from exc
        return claims

    async def _key(self, kid: object) -> jwt.PyJWK:
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            stale = time.monotonic() - self._keys_fetched >= JWKS_MIN_REFETCH
            if (not self._keys or (isinstance(kid, str) and kid not in self._keys)) and stale:
                await self._fetch_keys()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        raise errors.IdentityError(f"token signed with unknown key id {kid!r}")

    async def _fetch_keys(self) -> None:
        meta = await self.metadata()
        doc = await self._json("GET", meta.jwks_uri, "provider JWKS")
        keys: dict[str, jwt.PyJWK] = {}
        for index, raw in enumerate(doc.get("keys", [])):
            if raw.get("use", "sig") != "sig":
                continue
            try:
                keys[str(raw.get("kid", f"#{index}"))] = jwt.PyJWK(raw)
            except jwt.PyJWTError as exc:
                log.warning("provider JWKS: skipping key %s: %s", raw.get("kid"), exc)
        self._keys = keys
        self._keys_fetched = time.monotonic()

    async def end_session_url(
        self, post_logout_redirect_uri: str, id_token_hint: str | None = None
    ) -> str | None:
        """The provider's RP-initiated logout URL, or ``None`` if it has none."""
        meta = await self.metadata()
        if not meta.end_session_endpoint:
            return None
        query = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            query["id_token_hint"] = id_token_hint
        sep = "&" if "?" in meta.end_session_endpoint else "?"
        return meta.end_session_endpoint + sep + urllib.parse.urlencode(query)
