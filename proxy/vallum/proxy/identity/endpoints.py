"""Vallum's own endpoints: sign-in, the provider callback, the hand-off, sign-out, the user page
and the JWKS.

One authenticate host (``authenticate_service_url``) talks to the provider for every route:

1. A route host sends an anonymous browser to ``<auth>/.vallum/sign_in?redirect_uri=<url>&b=..``
   after setting a random *nonce* cookie of its own (``<cookie_name>_nonce``, host-only);
   ``b`` is a digest of that nonce. The hand-off that comes back must carry the same digest, so
   a hand-off link made for one browser (an attacker's) signs nobody else in (login CSRF).
   The authenticate host never hands off without ``b``: it sends the browser to the route
   host's own sign-in first, which sets the nonce.
2. The authenticate host keeps ``state``, ``nonce``, the PKCE verifier, the return URL and ``b``
   in a sealed ten-minute cookie bound to this browser, and sends it to the provider.
3. ``<auth>/.vallum/callback`` checks the provider's ``iss`` parameter (RFC 9207, when the
   provider advertises it) and ``state`` against that cookie (constant time), redeems the code,
   validates the ID token and its nonce, and sets the authenticate host's own session.
4. The browser goes back to the route host with a sealed, 60-second, single-use hand-off
   (``/.vallum/handoff?token=...``, bound to that host and to ``b``) that sets the route host's
   session cookie - also for hosts on other domains. A browser already signed in on the
   authenticate host skips the provider: step 2 hands off at once.

Sign-out is a POST from this site's own pages (``Origin``/``Sec-Fetch-Site`` checked); a GET
(a link, a cross-site image) only shows a page with the button. It revokes the session in the
shared :class:`~vallum.proxy.session_state.SessionState` (every host, every worker), clears the
cookies on the route host, then on the authenticate host (reached with a sealed, 60-second
continuation naming the revoked session), then sends the browser to the provider's end-session
endpoint. With ``pomerium_compatibility`` the same endpoints also answer under ``/.pomerium/``,
and the JWKS under ``/.well-known/pomerium/``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING

from vallum.core import errors
from vallum.core.request import RequestInfo
from vallum.proxy import metrics, pipeline, redirects, sessions
from vallum.proxy.identity import authenticate, context, responses

if TYPE_CHECKING:
    from vallum.proxy.identity.gate import IdentityGate

log = logging.getLogger("vallum.identity")

PREFIX = "/.vallum/"
SIGN_IN = "/.vallum/sign_in"
SIGN_OUT = "/.vallum/sign_out"
CALLBACK = context.CALLBACK_PATH
HANDOFF = "/.vallum/handoff"
JWKS = "/.well-known/vallum/jwks.json"
POMERIUM_JWKS = "/.well-known/pomerium/jwks.json"
STATE_TTL = 600.0
HANDOFF_TTL = 60.0
MAX_HANDOFF_URL = 7000
"""Longest hand-off URL sent (servers commonly refuse request lines over 8 KB)."""
SIGN_OUT_TTL = 60.0
_BINDING = re.compile(r"[0-9a-f]{32}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def state_cookie_name(ctx: context.Context) -> str:
    return f"{ctx.settings.cookie_name}_state"


def nonce_cookie_name(ctx: context.Context) -> str:
    return f"{ctx.settings.cookie_name}_nonce"


async def handle(
    gate: IdentityGate, ctx: context.Context, req: RequestInfo
) -> pipeline.Respond | None:
    path = req.path
    if path == JWKS or (path == POMERIUM_JWKS and ctx.settings.pomerium_compatibility):
        if ctx.minter is None:
            return None
        return pipeline.Respond(
            200, (("Content-Type", "application/json"), ("Cache-Control", "max-age=300")),
            ctx.minter.jwks_json(),
        )
    if ctx.settings.pomerium_compatibility and path.startswith("/.pomerium"):
        path = "/.vallum" + path[len("/.pomerium"):]
    if not (path == "/.vallum" or path.startswith(PREFIX)):
        return None
    auth = ctx.authenticate_for(req.headers.get("host") or req.host, req.scheme)
    on_auth_host = req.host == auth.host
    if not on_auth_host and not ctx.allowed_host(req.host):
        return None
    if path in ("/.vallum", PREFIX):
        return await user_page(gate, ctx, req)
    if path == SIGN_OUT:
        return await sign_out(ctx, req, on_auth_host)
    if not ctx.can_sign_in:
        return responses.error(
            req, 503, "Sign-in is not configured correctly on this Vallum (see its log)."
        )
    if path == SIGN_IN:
        return await sign_in(ctx, req, on_auth_host)
    if path == CALLBACK and on_auth_host:
        answer = await callback(ctx, req)
        metrics.signed_in(answer.status < 400)  # a hand-off redirect, else an error page
        return answer
    if path == HANDOFF:
        return handoff(ctx, req)
    return responses.error(req, 404, "No such Vallum endpoint.")


def _params(req: RequestInfo) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(req.query, keep_blank_values=True))


def _target(ctx: context.Context, req: RequestInfo, params: dict[str, str]) -> str | None:
    """The validated return URL (``redirect_uri``, or Pomerium's ``pomerium_redirect_uri``)."""
    host = req.headers.get("host") or req.host
    wanted = params.get("redirect_uri") or params.get("pomerium_redirect_uri") or "/"
    return redirects.safe_return_url(
        wanted, allowed_host=ctx.allowed_host, current=f"{req.scheme}://{host}"
    )


async def user_page(gate: IdentityGate, ctx: context.Context, req: RequestInfo) -> pipeline.Respond:
    resolved = await gate.resolver.resolve(ctx, req)
    if resolved.identity is None:
        return gate.sign_in_needed(ctx, req, resolved)
    respond = responses.user_page(req, resolved.identity, SIGN_OUT)
    cookies = tuple(("Set-Cookie", c) for c in resolved.set_cookies)
    return pipeline.Respond(respond.status, respond.headers + cookies, respond.body)


# --- sign-in, bound to the browser that started it ------------------------------------------------


def binding(nonce: str) -> str:
    """What the sign-in URL and the hand-off carry of the route host's nonce cookie."""
    return hashlib.sha256(b"vallum/sign-in-binding:" + nonce.encode()).hexdigest()[:32]


def sign_in_redirect(ctx: context.Context, req: RequestInfo, target: str) -> pipeline.Respond:
    """From this (route) host to the authenticate host's sign-in for ``target`` (on this host),
    with this browser's nonce cookie set and its digest in the URL."""
    auth = ctx.authenticate_for(req.headers.get("host") or req.host, req.scheme)
    query = {"redirect_uri": target}
    cookies: list[str] = []
    if auth.host != req.host:
        name = nonce_cookie_name(ctx)
        nonce = authenticate.request_cookies(req).get(name, "")
        if _NONCE.fullmatch(nonce) is None:  # reuse it: two tabs signing in at once both work
            nonce = secrets.token_urlsafe(32)
        cookies.append(sessions.cookie_header(name, nonce, ctx.settings, max_age=STATE_TTL,
                                              same_site="lax"))
        query["b"] = binding(nonce)
    return responses.redirect(f"{auth.base}{SIGN_IN}?{urllib.parse.urlencode(query)}", cookies)


def _sign_in_on(target: str) -> str:
    """The sign-in URL on ``target``'s own host (which binds the browser, then comes back)."""
    parts = urllib.parse.urlsplit(target)
    query = urllib.parse.urlencode({"redirect_uri": target})
    return f"{parts.scheme}://{parts.netloc}{SIGN_IN}?{query}"


def _needs_handoff(ctx: context.Context, req: RequestInfo, target: str) -> bool:
    """Whether the browser needs a hand-off to carry the session to ``target``'s host."""
    assert ctx.cookies is not None
    host = (urllib.parse.urlsplit(target).hostname or "").rstrip(".")
    shared = ctx.cookies.domain_for(host) is not None and ctx.cookies.domain_for(req.host)
    return not (host == req.host or shared)


async def sign_in(ctx: context.Context, req: RequestInfo, on_auth_host: bool) -> pipeline.Respond:
    params = _params(req)
    target = _target(ctx, req, params)
    if target is None:
        return responses.error(req, 400, "That sign-in return address is not allowed.")
    target_host = (urllib.parse.urlsplit(target).hostname or "").rstrip(".")
    if not on_auth_host:
        if target_host != req.host:
            return responses.redirect(_sign_in_on(target))
        return sign_in_redirect(ctx, req, target)
    bound = params.get("b", "")
    if _BINDING.fullmatch(bound) is None:
        bound = ""
        if _needs_handoff(ctx, req, target):  # started here, not on the route host: bind first
            return responses.redirect(_sign_in_on(target))
    now = time.time()
    cookies = authenticate.request_cookies(req)
    existing = authenticate.read_session(ctx, cookies, now)
    value = ctx.cookies.joined_value(cookies) if ctx.cookies else None
    if existing is not None and value and (not existing.refresh_at or existing.refresh_at > now):
        return hand_off(ctx, req, value, existing.expires_at, target, (), bound=bound)
    auth = ctx.authenticate_for(req.headers.get("host") or req.host, req.scheme)
    assert ctx.provider is not None and ctx.sealer is not None
    try:
        start = await ctx.provider.begin(auth.callback)
    except errors.IdentityError as exc:
        log.error("sign-in cannot start: %s", exc)
        return responses.error(req, 502, "The identity provider cannot be reached.")
    sealed = ctx.sealer.seal(
        "state",
        {"s": start.state, "n": start.nonce, "v": start.code_verifier, "r": target, "b": bound},
        STATE_TTL,
    )
    cookie = sessions.cookie_header(
        state_cookie_name(ctx), sealed, ctx.settings, max_age=STATE_TTL, path=CALLBACK,
        same_site="lax",
    )
    return responses.redirect(start.url, [cookie])


async def callback(ctx: context.Context, req: RequestInfo) -> pipeline.Respond:
    assert ctx.provider is not None and ctx.sealer is not None and ctx.cookies is not None
    params = _params(req)
    clear_state = sessions.cookie_header(
        state_cookie_name(ctx), "", ctx.settings, max_age=0, path=CALLBACK, same_site="lax"
    )
    try:
        await ctx.provider.check_response_issuer(params.get("iss"))
    except errors.IdentityError as exc:
        log.warning("sign-in refused: %s", exc)
        return responses.error(req, 400, f"Sign-in refused: {exc}.", cookies=[clear_state])
    if "error" in params:
        detail = params.get("error_description") or params["error"]
        return responses.error(req, 403, f"The identity provider refused sign-in: {detail}",
                               cookies=[clear_state])
    cookies = authenticate.request_cookies(req)
    sealed = cookies.get(state_cookie_name(ctx))
    if not sealed:
        return responses.error(req, 400, "Sign-in state is missing: start again (cookies must "
                                         "be enabled, and sign-in must finish in 10 minutes).")
    try:
        state = ctx.sealer.open("state", sealed)
    except errors.IdentityError as exc:
        return responses.error(req, 400, f"Sign-in state is not valid ({exc}): start again.",
                               cookies=[clear_state])
    if not redirects.constant_time_equal(params.get("state", ""), str(state["s"])):
        return responses.error(req, 400, "Sign-in state does not match this browser: start again.",
                               cookies=[clear_state])
    auth = ctx.authenticate_for(req.headers.get("host") or req.host, req.scheme)
    try:
        tokens = await ctx.provider.exchange(params.get("code", ""), auth.callback, str(state["v"]),
                                         str(state["n"]))
        session = authenticate.new_session(ctx, tokens)
    except errors.IdentityError as exc:
        log.warning("sign-in failed: %s", exc)
        return responses.error(req, 403, "Sign-in failed: the provider's answer was not valid.",
                               cookies=[clear_state])
    log.info("signed in: %s (%s)", session.identity.user, session.identity.email)
    value = ctx.cookies.encode(session)
    own = ctx.cookies.pair_headers(
        ctx.cookies.chunks(value), session.expires_at - time.time(), cookies, req.host,
        clear_stale=True,
    )
    return hand_off(ctx, req, value, session.expires_at, str(state["r"]), [clear_state, *own],
                    bound=str(state.get("b") or ""))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def hand_off(
    ctx: context.Context, req: RequestInfo, value: str, expires_at: float, target: str,
    cookies: list[str] | tuple[str, ...], index: int = 0, *, bound: str,
) -> pipeline.Respond:
    """Send the browser to ``target``; via hand-offs when its host needs its own cookie.

    ``value`` is the encoded session (the authenticate host's own cookie value). Each hand-off
    carries one cookie chunk of it, so a session of any size fits in URLs; the route host asks
    the authenticate host for the next chunk until it has them all. ``bound`` is the digest of
    the route host's nonce cookie in the browser that started the sign-in; without it the
    browser goes to the route host's sign-in first (which sets one).
    """
    assert ctx.sealer is not None and ctx.cookies is not None
    if not _needs_handoff(ctx, req, target):
        return responses.redirect(target, cookies)
    if not bound:
        return responses.redirect(_sign_in_on(target), cookies)
    parts = urllib.parse.urlsplit(target)
    host = (parts.hostname or "").rstrip(".")
    pairs = ctx.cookies.chunks(value)
    if not 0 <= index < len(pairs):
        return responses.error(req, 400, "The sign-in hand-off asked for a missing part.")
    token = ctx.sealer.seal(
        "handoff",
        {"j": secrets.token_urlsafe(12), "c": list(pairs[index]), "k": index, "n": len(pairs),
         "d": _digest(value), "x": expires_at, "r": target, "b": bound},
        HANDOFF_TTL, aad=host, compress=True,
    )
    url = f"{parts.scheme}://{parts.netloc}{HANDOFF}?token={token}"
    if len(url) > MAX_HANDOFF_URL:  # cannot happen with CHUNK_SIZE chunks; fail closed anyway
        return responses.error(req, 500, "The sign-in hand-off is too large.")
    return responses.redirect(url, cookies)


def next_chunk(ctx: context.Context, req: RequestInfo) -> pipeline.Respond:
    """On the authenticate host: the route host asks for the next chunk of the session."""
    assert ctx.cookies is not None
    params = _params(req)
    target = _target(ctx, req, params)
    cookies = authenticate.request_cookies(req)
    value = ctx.cookies.joined_value(cookies)
    session = authenticate.read_session(ctx, cookies, time.time())
    bound = params.get("b", "")
    if target is None or value is None or session is None or not _BINDING.fullmatch(bound):
        return responses.error(req, 400, "The sign-in hand-off cannot continue: sign in again.")
    if not redirects.constant_time_equal(params.get("d", ""), _digest(value)):
        return responses.error(req, 400, "The session changed during the sign-in hand-off.")
    try:
        index = int(params.get("k", ""))
    except ValueError:
        return responses.error(req, 400, "The sign-in hand-off asked for a missing part.")
    return hand_off(ctx, req, value, session.expires_at, target, (), index, bound=bound)


def handoff(ctx: context.Context, req: RequestInfo) -> pipeline.Respond:
    """On a route host: a one-time hand-off from the authenticate host sets one cookie chunk,
    if this browser started the sign-in (its nonce cookie matches the hand-off's digest)."""
    assert ctx.sealer is not None and ctx.cookies is not None
    params = _params(req)
    if "token" not in params:
        return next_chunk(ctx, req)
    try:
        data = ctx.sealer.open("handoff", params["token"], aad=req.host)
        name, value = (str(v) for v in data["c"])
        index, count = int(data["k"]), int(data["n"])
        target, digest, jti = str(data["r"]), str(data["d"]), str(data["j"])
        expires_at, bound = float(data["x"]), str(data.get("b") or "")
    except (errors.IdentityError, KeyError, TypeError, ValueError) as exc:
        return responses.error(req, 400, f"The sign-in hand-off is not valid ({exc}).")
    now = time.time()
    if ctx.handoffs_used.get(jti, now) is not None:
        return responses.error(req, 400, "The sign-in hand-off was already used.")
    present = authenticate.request_cookies(req)
    nonce = present.get(nonce_cookie_name(ctx), "")
    if not bound or not nonce or not redirects.constant_time_equal(bound, binding(nonce)):
        log.warning("sign-in hand-off refused: not started in this browser",
                    extra={"event": "handoff_unbound"})
        return responses.error(req, 400, "This sign-in was not started in this browser: open "
                                         "the page you wanted again to sign in.")
    ctx.handoffs_used.put(jti, True, now + HANDOFF_TTL + 5)
    if (urllib.parse.urlsplit(target).hostname or "").rstrip(".") != req.host:
        return responses.error(req, 400, "The sign-in hand-off is for another host.")
    set_cookies = ctx.cookies.pair_headers(
        [(name, value)], expires_at - now, (), req.host, clear_stale=False
    )
    if index + 1 < count:
        auth = ctx.authenticate_for(req.headers.get("host") or req.host, req.scheme)
        query = urllib.parse.urlencode(
            {"redirect_uri": target, "k": index + 1, "d": digest, "b": bound}
        )
        return responses.redirect(f"{auth.base}{HANDOFF}?{query}", set_cookies)
    # The last chunk: remove what is left of an older, differently split session.
    wanted = {name for name, _ in ctx.cookies.chunks("x" * (count * sessions.CHUNK_SIZE))[:count]}
    wanted = {ctx.cookies.name} if count == 1 else wanted
    stale = {ctx.cookies.name} if count > 1 else set()
    stale |= {n for n in present if ctx.cookies.is_ours(n)} - wanted
    domain = ctx.cookies.domain_for(req.host)
    set_cookies += [
        sessions.cookie_header(n, "", ctx.settings, max_age=0, domain=domain) for n in sorted(stale)
    ]
    return responses.redirect(target, set_cookies)


# --- sign-out ----------------------------------------------------------------------------------


def same_origin(req: RequestInfo) -> bool:
    """Whether a browser says this request comes from this host's own pages: ``Sec-Fetch-Site``
    (when sent) is ``same-origin``, ``Origin`` (when sent) names this host. A client that sends
    neither is not a browser a third-party page can drive."""
    site = req.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return False
    origin = req.headers.get("origin")
    if origin is None:
        return True
    scheme, sep, netloc = origin.strip().lower().partition("://")
    host = (req.headers.get("host") or req.host).lower()
    return bool(sep) and scheme in ("http", "https") and netloc == host


async def sign_out(ctx: context.Context, req: RequestInfo, on_auth_host: bool) -> pipeline.Respond:
    """POST from this site: revoke and clear. GET: the confirmation page, unless it is the
    authenticate host's leg of a sign-out that a route host has just done (sealed token)."""
    params = _params(req)
    if req.method == "POST":
        if not same_origin(req):
            log.warning("sign-out refused: cross-site request", extra={"event": "sign_out_refused"})
            return responses.error(req, 403, "Sign-out must be requested from this site's own "
                                             "page (cross-site request refused).")
        return await _sign_out(ctx, req, on_auth_host, params)
    if req.method not in ("GET", "HEAD"):
        return responses.error(req, 405, "Sign out with POST.", headers=[("Allow", "GET, POST")])
    if on_auth_host and "t" in params and _continues(ctx, req, params["t"]):
        return await _sign_out(ctx, req, on_auth_host, params)
    action = req.path + (f"?{req.query}" if req.query else "")
    return responses.sign_out_page(req, action)


def _continues(ctx: context.Context, req: RequestInfo, token: str) -> bool:
    """Whether ``token`` is a route host's sign-out continuation for this browser's session
    here (or this browser has no session here): a link made by someone else signs nobody out."""
    if ctx.sealer is None or ctx.cookies is None:
        return False
    try:
        data = ctx.sealer.open("sign-out", token, aad=req.host)
        revoked = str(data["s"])
    except (errors.IdentityError, KeyError, TypeError, ValueError):
        return False
    here = ctx.cookies.read(authenticate.request_cookies(req))
    return here is None or redirects.constant_time_equal(here.identity.session_id, revoked)


async def _refresh_tokens(ctx: context.Context, session: sessions.Session) -> list[str]:
    """The session's refresh tokens: the cookie's and the newest refresh's (another host's)."""
    newest = authenticate.open_session(ctx, await ctx.state.latest(session.identity.session_id))
    tokens = {session.refresh_token, newest.refresh_token if newest is not None else ""}
    return sorted(t for t in tokens if t)


async def _revoke_at_provider(ctx: context.Context, refresh_tokens: list[str]) -> None:
    """Revoke the session's refresh tokens at the provider too (best effort): then no copy of
    the cookie outlives the provider's current tokens, even where the revocation above is not
    known (a restarted Vallum, another deployment with the same ``cookie_secret``)."""
    if ctx.provider is None:
        return
    for token in refresh_tokens:
        try:
            await ctx.provider.revoke_refresh_token(token)
        except errors.IdentityError as exc:
            log.warning("sign-out: the provider did not revoke the refresh token: %s", exc)


async def _sign_out(
    ctx: context.Context, req: RequestInfo, on_auth_host: bool, params: dict[str, str]
) -> pipeline.Respond:
    host_header = req.headers.get("host") or req.host
    target = _target(ctx, req, params) or f"{req.scheme}://{host_header}/"
    present = authenticate.request_cookies(req)
    cleared = ctx.cookies.clear_headers(present, host=req.host) if ctx.cookies else []
    session = ctx.cookies.read(present) if ctx.cookies else None
    if session is not None and session.identity.session_id:
        refresh_tokens = await _refresh_tokens(ctx, session)
        await ctx.state.revoke(session.identity.session_id, session.expires_at)
        log.info("signed out: %s", session.identity.user,
                 extra={"event": "signed_out", "user": session.identity.user})
        await _revoke_at_provider(ctx, refresh_tokens)
    auth = ctx.authenticate_for(host_header, req.scheme)
    if not on_auth_host:
        query = {"redirect_uri": target}
        if ctx.sealer is not None:
            revoked = session.identity.session_id if session is not None else ""
            query["t"] = ctx.sealer.seal("sign-out", {"s": revoked}, SIGN_OUT_TTL, aad=auth.host)
        return responses.redirect(f"{auth.base}{SIGN_OUT}?{urllib.parse.urlencode(query)}",
                                  cleared)
    end: str | None = None
    if ctx.provider is not None:
        try:
            end = await ctx.provider.end_session_url(target)
        except errors.IdentityError as exc:
            log.warning("end-session endpoint unknown: %s", exc)
    return responses.redirect(end or target, cleared)
