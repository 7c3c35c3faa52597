"""Who is calling: the session cookie or an ``Authorization: Bearer`` token, refreshed when due.

Per request this is the only identity work on the hot path, so it is cached: a session cookie
value already opened, or a bearer token already verified, is looked up in a bounded LRU instead
of decrypting or checking a signature again. A signed-out (revoked) session is refused on that
path too: one lookup in the shared :class:`~vallum.proxy.session_state.SessionState`.

A session whose provider tokens run out is refreshed with its refresh token once for all
processes and hosts: providers rotate refresh tokens and treat a reused one as theft. The
refresh runs under the session's lock in the shared state, with the newest refresh token
published for the session (a cookie copy on another host may carry an older one), and
publishes its result; a request that waited for the lock, or whose provider answers that the
token was already used, takes the published session instead of signing the user out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass

from vallum.core import errors
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo
from vallum.proxy import oidc, sessions
from vallum.proxy.identity import context

log = logging.getLogger("vallum.identity")

REFRESH_MARGIN = 30.0
"""Refresh this many seconds before the provider's tokens expire."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The caller's identity (``None``: anonymous), cookies to set, and why a bearer failed."""

    identity: Identity | None
    set_cookies: tuple[str, ...] = ()
    bearer_error: str | None = None
    via_bearer: bool = False


ANONYMOUS = Resolved(None)


def _bearer_token(req: RequestInfo) -> str | None:
    auth = req.headers.get("authorization")
    if auth is not None and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def _known_session(ctx: context.Context, header: str, now: float) -> Resolved | None:
    """The caller of a ``Cookie`` header already read and not due for refresh (one lookup,
    and one for revocation)."""
    seen = ctx.cookie_headers_seen.get(header, now)
    if seen is not None and seen[0] is not None and seen[0].refresh_at > now:
        if ctx.state.is_revoked(seen[0].identity.session_id, now):
            refused(ctx, seen[0])
            return ANONYMOUS
        return Resolved(seen[0].identity)
    return None


def refused(ctx: context.Context, session: sessions.Session) -> None:
    """Log (once per session and process) that a signed-out session's cookie came back."""
    sid = session.identity.session_id
    if sid in ctx.revoked_logged:
        return
    if len(ctx.revoked_logged) >= 1024:
        ctx.revoked_logged.clear()
    ctx.revoked_logged.add(sid)
    log.info(
        "refused a signed-out session of %s", session.identity.user,
        extra={"event": "revoked_session_refused", "user": session.identity.user,
               "pid": os.getpid()},
    )


def new_session(
    ctx: context.Context, tokens: oidc.Tokens, *, session_id: str | None = None,
    expires_at: float | None = None, now: float | None = None,
) -> sessions.Session:
    """A session from a token response (at sign-in, or a refresh keeping id and expiry).

    Every session has an id (new at sign-in, kept by refreshes): sign-out revokes it."""
    moment = time.time() if now is None else now
    ends = expires_at if expires_at is not None else moment + ctx.settings.cookie_expire
    sid = session_id or secrets.token_urlsafe(16)
    who = oidc.identity_from_claims(tokens.claims, ctx.settings, session_id=sid, expires_at=ends)
    refresh_at = min(tokens.expires_at - REFRESH_MARGIN, ends)
    return sessions.Session(
        identity=who, refresh_token=tokens.refresh_token, expires_at=ends,
        refresh_at=max(refresh_at, moment), issued_at=moment,
    )


def upstream_cookie(ctx: context.Context, header: str) -> tuple[tuple[str, str], ...] | None:
    """The ``Cookie`` header without Vallum's own cookies (``None``: nothing left to send).

    ``cookie`` is among the stripped headers, so the session - a credential for every route -
    never reaches an upstream; the other cookies are put back from here.
    """
    seen = ctx.cookie_headers_seen.get(header, time.time())
    if seen is not None:
        kept_header: tuple[tuple[str, str], ...] | None = seen[1]
        return kept_header
    ours = ctx.settings.cookie_name
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name.startswith(ours) and _is_vallum_cookie(name, ours):
            continue
        if part.strip():
            kept.append(part.strip())
    return (("Cookie", "; ".join(kept)),) if kept else None


def _is_vallum_cookie(name: str, ours: str) -> bool:
    rest = name[len(ours):]
    return rest in ("", "_state", "_nonce") or (rest[:1] == "_" and rest[1:].isdigit())


def request_cookies(req: RequestInfo) -> dict[str, str]:
    header = req.headers.get("cookie")
    return sessions.parse_cookies(header) if header else {}


def read_session(
    ctx: context.Context, cookies: dict[str, str], now: float
) -> sessions.Session | None:
    """The valid (not expired, not signed out) session in ``cookies``, from the cache when seen
    before."""
    jar = ctx.cookies
    if jar is None:
        return None
    value = jar.joined_value(cookies)
    if value is None:
        return None
    key = hashlib.blake2b(value.encode(), digest_size=16).hexdigest()  # small keys, not 15 KB
    session: sessions.Session | None = ctx.sessions_seen.get(key, now)
    if session is None:
        try:
            session = jar.decode(value)
        except (errors.IdentityError, KeyError, TypeError, ValueError):
            return None
        ctx.sessions_seen.put(key, session, session.expires_at)
    if session.expires_at <= now or not session.identity.session_id:
        return None  # (a session without an id could not be revoked: never minted by us)
    if ctx.state.is_revoked(session.identity.session_id, now):
        refused(ctx, session)
        return None
    return session


def open_session(ctx: context.Context, sealed: str | None) -> sessions.Session | None:
    """A session value from the shared state (sealed like a cookie); ``None`` if unreadable."""
    if sealed is None or ctx.cookies is None:
        return None
    try:
        return ctx.cookies.decode(sealed)
    except (errors.IdentityError, KeyError, TypeError, ValueError):
        return None


class Resolver:
    """Finds the caller's identity; holds the in-flight refreshes."""

    def __init__(self) -> None:
        self._refreshing: dict[str, asyncio.Future[sessions.Session | None]] = {}

    def resolve_now(self, ctx: context.Context, req: RequestInfo) -> Resolved | None:
        """:meth:`resolve` when it needs no I/O, as it usually does not: no session cookie, or
        a cookie header already read and not due for refresh. ``None``: run :meth:`resolve`
        (a bearer token, a cookie not seen yet or due for refresh)."""
        if _bearer_token(req) is not None:
            return None
        header = req.headers.get("cookie")
        if header is None:
            return ANONYMOUS
        return _known_session(ctx, header, time.time())

    async def resolve(self, ctx: context.Context, req: RequestInfo) -> Resolved:
        now = time.time()
        token = _bearer_token(req)
        if token is not None:
            resolved = await self._bearer(ctx, token, now)
            if resolved is not None:
                return resolved
        header = req.headers.get("cookie")
        if header is None:
            return ANONYMOUS
        known = _known_session(ctx, header, now)
        if known is not None:
            return known
        cookies = request_cookies(req)
        session = read_session(ctx, cookies, now)
        if session is None:
            return ANONYMOUS
        if len(header) < 8192:
            until = min(session.expires_at, session.refresh_at or session.expires_at)
            ctx.cookie_headers_seen.put(header, (session, upstream_cookie(ctx, header)), until)
        if session.refresh_at and session.refresh_at <= now:
            refreshed = await self.refresh(ctx, session)
            if refreshed is None:
                return ANONYMOUS
            assert ctx.cookies is not None
            host = req.host
            return Resolved(
                refreshed.identity,
                tuple(ctx.cookies.set_headers(refreshed, present=cookies, host=host)),
            )
        return Resolved(session.identity)

    async def _bearer(self, ctx: context.Context, token: str, now: float) -> Resolved | None:
        """A bearer token of our provider; ``None`` when it is not one of its JWTs at all."""
        if ctx.provider is None or token.count(".") != 2:
            return None
        key = ctx.bearer_key(token)
        seen = ctx.bearers_seen.get(key, now)
        if isinstance(seen, Identity):
            return Resolved(seen, via_bearer=True)
        if isinstance(seen, str):
            return Resolved(None, bearer_error=seen, via_bearer=True)
        try:
            meta = await ctx.provider.metadata()
            issuer = oidc.unverified_issuer(token)
            if issuer is None or issuer.rstrip("/") != meta.issuer.rstrip("/"):
                return None  # someone else's token (the upstream's own scheme): not ours to judge
            claims = await ctx.provider.verify_bearer(token)
            expires = float(claims["exp"])
            who = oidc.identity_from_claims(
                claims, ctx.settings, session_id="bearer-" + key[:24], expires_at=expires
            )
        except errors.IdentityError as exc:
            message = str(exc)
            ctx.bearers_seen.put(key, message, now + 30.0)
            log.info("bearer token refused: %s", message)
            return Resolved(None, bearer_error=message, via_bearer=True)
        ctx.bearers_seen.put(key, who, expires)
        return Resolved(who, via_bearer=True)

    async def refresh(
        self, ctx: context.Context, session: sessions.Session
    ) -> sessions.Session | None:
        """The session refreshed with its refresh token; ``None`` if that is not possible.

        Concurrent calls for one session in this process share one refresh; other processes
        wait for it through the shared state's lock (see the module doc)."""
        if not session.refresh_token or ctx.provider is None or ctx.cookies is None:
            return None
        sid = session.identity.session_id
        pending = self._refreshing.get(sid)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[sessions.Session | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._refreshing[sid] = future
        result: sessions.Session | None = None
        try:
            result = await self._refresh_once(ctx, session)
        finally:
            future.set_result(result)
            del self._refreshing[sid]
        return result

    async def _refresh_once(
        self, ctx: context.Context, session: sessions.Session
    ) -> sessions.Session | None:
        assert ctx.provider is not None and ctx.cookies is not None
        state, sid = ctx.state, session.identity.session_id
        async with state.hold(sid):
            now = time.time()
            if state.is_revoked(sid, now):
                return None
            base = session
            newest = open_session(ctx, await state.latest(sid))
            if newest is not None and newest.issued_at > session.issued_at:
                if newest.refresh_at > now:
                    return newest  # refreshed by another process or for another host's cookie
                base = newest  # due again: refresh with the newest refresh token
            try:
                tokens = await ctx.provider.refresh(base.refresh_token)
                if tokens.claims.get("sub") != session.identity.user:
                    raise errors.IdentityError("refresh returned another user")
            except errors.IdentityError as exc:
                # A refresh we could not coordinate with (another replica, a lock given up on)
                # may have used this token first: its result is as good as ours.
                again = open_session(ctx, await state.latest(sid))
                if again is not None and again.issued_at > base.issued_at and (
                    not state.is_revoked(sid, time.time())
                ):
                    return again
                log.info("session refresh failed for %s: %s", session.identity.user, exc)
                return None
            result = new_session(ctx, tokens, session_id=sid, expires_at=session.expires_at)
            try:
                await state.publish(sid, ctx.cookies.encode(result), result.expires_at)
            except OSError as exc:  # the user keeps this refresh; other copies refresh again
                log.error("session refresh: cannot share the result: %s", exc)
            return result
