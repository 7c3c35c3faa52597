"""Everything the identity gate derives from one configuration, built once per route table.

The gate is handed the current :class:`RouteTable` with every request; when its checksum changes
(a reload) a new :class:`Context` is built beside the old one and swapped in. Building never
raises: a problem (no ``cookie_secret``, no signing key, no provider) is kept as text, and every
request that would need the missing part is refused with it - fail closed - while public routes
keep working.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vallum.core import config, errors, policy, routing
from vallum.proxy import jwt, oidc, redirects, session_state, sessions

log = logging.getLogger("vallum.identity")

CACHE_SIZE = 10_000
CALLBACK_PATH = "/.vallum/callback"


@dataclass(frozen=True, slots=True)
class AuthenticateService:
    """Where sign-in happens: ``authenticate_service_url`` (scheme, host, port, base URL)."""

    base: str
    host: str

    @classmethod
    def parse(cls, url: str) -> AuthenticateService:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.ConfigError([f"authenticate_service_url: not an http(s) URL: {url!r}"])
        host = routing.normalize_host(parts.netloc)
        return cls(base=f"{parts.scheme}://{parts.netloc}", host=host)

    @property
    def callback(self) -> str:
        return self.base + CALLBACK_PATH


class LRU:
    """A bounded mapping with per-entry expiry (sessions, bearer tokens, hand-offs seen).

    Eviction is oldest-inserted first: a hit costs one dict lookup, which matters on the hot
    path more than keeping the most recently used entry a little longer.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._data: dict[str, tuple[float, Any]] = {}
        self._size = size

    def get(self, key: str, now: float) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._data[key]
            return None
        return item[1]

    def put(self, key: str, value: Any, until: float) -> None:
        self._data.pop(key, None)
        self._data[key] = (until, value)
        while len(self._data) > self._size:
            del self._data[next(iter(self._data))]

    def __contains__(self, key: str) -> bool:
        return self.get(key, time.time()) is not None


@dataclass
class Context:
    """Derived from one configuration: keys, cookies, provider, minter, policies, our hosts."""

    settings: config.Settings
    checksum: str
    problems: list[str] = field(default_factory=list)
    sealer: sessions.Sealer | None = None
    cookies: sessions.SessionCookies | None = None
    provider: oidc.OIDCClient | None = None
    minter: jwt.AssertionMinter | None = None
    authenticate: AuthenticateService | None = None
    allowed_host: Callable[[str], bool] = lambda _host: False
    policies: dict[int, policy.CompiledPolicy] = field(default_factory=dict)
    sessions_seen: LRU = field(default_factory=LRU)
    bearers_seen: LRU = field(default_factory=LRU)
    handoffs_used: LRU = field(default_factory=LRU)
    cookie_headers_seen: LRU = field(default_factory=lambda: LRU(2048))
    """Cookie header -> (session or None, the header without our cookies): the hot path."""
    retired: oidc.OIDCClient | None = None
    """The previous configuration's provider client, to be closed once swapped out."""
    state: session_state.SessionState = field(default_factory=session_state.LocalState)
    """Revocations and refreshes shared with the other processes (the gate's, across reloads)."""
    revoked_logged: set[str] = field(default_factory=set)
    """Signed-out session ids whose refusal this process has logged."""

    @classmethod
    def build(
        cls, table: config.RouteTable, previous: Context | None = None,
        state: session_state.SessionState | None = None,
    ) -> Context:
        settings = table.settings
        ctx = cls(settings=settings, checksum=table.checksum)
        if state is not None:
            ctx.state = state
        try:
            same_secret = (
                previous is not None and previous.sealer is not None
                and previous.settings.cookie_secret == settings.cookie_secret
            )
            # Keep the sealer across reloads when the secret is unchanged: in dev_mode the secret
            # is random, and a reload must not sign everybody out.
            ctx.sealer = (
                previous.sealer if same_secret and previous and previous.sealer
                else sessions.Sealer(sessions.secret_bytes(settings))
            )
            ctx.cookies = sessions.SessionCookies(settings, ctx.sealer)
        except errors.ConfigError as exc:
            ctx.problems.extend(exc.problems)
        if previous is not None:
            ctx.handoffs_used = previous.handoffs_used  # a reload must not allow a replay
            ctx.revoked_logged = previous.revoked_logged
        if settings.idp_provider_url or settings.idp_client_id:
            reuse = previous is not None and previous.provider is not None and _same_idp(
                previous.settings, settings
            )
            try:
                ctx.provider = (
                    previous.provider if reuse and previous else oidc.OIDCClient(settings)
                )
            except errors.ConfigError as exc:
                ctx.problems.extend(exc.problems)
        else:
            ctx.problems.append("idp_provider_url: not set, so nobody can sign in")
        try:
            ctx.minter = jwt.AssertionMinter(settings)
        except errors.ConfigError as exc:
            if _needs_assertion(settings):
                ctx.problems.extend(exc.problems)
        hosts: list[str] = [r.host for r in settings.routes]
        if settings.authenticate_service_url:
            try:
                ctx.authenticate = AuthenticateService.parse(settings.authenticate_service_url)
                hosts.append(ctx.authenticate.host)
            except errors.ConfigError as exc:
                ctx.problems.extend(exc.problems)
        ctx.allowed_host = redirects.host_matcher(hosts)
        if previous is not None and previous.provider not in (None, ctx.provider):
            ctx.retired = previous.provider
        return ctx

    @property
    def can_sign_in(self) -> bool:
        return not self.problems and self.provider is not None and self.cookies is not None

    def compiled_policy(self, route_index: int, route: config.Route) -> policy.CompiledPolicy:
        """The route's compiled policy (one that denies everything if it does not compile)."""
        compiled = self.policies.get(route_index)
        if compiled is None:
            compiled = policy.compile_route_policy(
                route, downstream_mtls=self.settings.downstream_mtls
            )
            if compiled.error is not None:
                log.error("route %s: policy does not compile: %s", route.from_url, compiled.error)
            self.policies[route_index] = compiled
        return compiled

    def authenticate_for(self, host_header: str, scheme: str) -> AuthenticateService:
        """The configured authenticate service, or this very host when none is configured."""
        if self.authenticate is not None:
            return self.authenticate
        return AuthenticateService(base=f"{scheme}://{host_header}",
                                   host=routing.normalize_host(host_header))

    def bearer_key(self, token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


def _same_idp(a: config.Settings, b: config.Settings) -> bool:
    fields = ("idp_provider_url", "idp_client_id", "idp_client_secret", "idp_scopes",
              "certificate_authority_pem", "idp_groups_claim",
              "idp_access_token_allowed_audiences")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _needs_assertion(settings: config.Settings) -> bool:
    if settings.pass_identity_headers:
        return True
    return any(r.pass_identity_headers for r in settings.routes)
