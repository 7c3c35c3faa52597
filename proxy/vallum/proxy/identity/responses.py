"""The responses the identity gate makes itself: redirects, 401/403/495 pages, the user page.

Error pages go through :mod:`vallum.proxy.errors` (one look, HTML or JSON by ``Accept``, the
request id in body and header); this module only adds what identity needs on top: the sign-in
redirect, ``WWW-Authenticate`` on 401, the reasons on 403, and the ``/.vallum/`` page.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Sequence

from vallum.core.identity import Identity
from vallum.core.request import RequestInfo
from vallum.proxy import errors, metrics, pipeline

NO_STORE = ("Cache-Control", "no-store")
NO_FRAMES = (("Content-Security-Policy", "frame-ancestors 'none'"), ("X-Frame-Options", "DENY"))
"""On pages with a sign-out button: no other site may frame them and trick a click."""


def request_id(req: RequestInfo) -> str:
    return req.headers.get("x-request-id", "")


def wants_html(req: RequestInfo) -> bool:
    """A browser: its ``Accept`` names ``text/html`` and does not prefer JSON."""
    accept = req.headers.get("accept", "")
    return "text/html" in accept and not errors.wants_json(accept)


def redirect(location: str, cookies: Iterable[str] = (), status: int = 302) -> pipeline.Respond:
    headers = [("Location", location), NO_STORE, *(("Set-Cookie", c) for c in cookies)]
    return pipeline.Respond(status, tuple(headers), b"")


def error(
    req: RequestInfo, status: int, message: str, *, headers: Sequence[tuple[str, str]] = (),
    cookies: Iterable[str] = (),
) -> pipeline.Respond:
    extra = (*headers, *(("Set-Cookie", c) for c in cookies))
    page = errors.page(
        status, request_id(req), accept=req.headers.get("accept"), message=message,
        headers=tuple(extra),
    )
    return pipeline.Respond(page.status, page.headers, page.body)


def unauthenticated(
    req: RequestInfo, message: str, cookies: Iterable[str] = ()
) -> pipeline.Respond:
    """401 for API clients (JSON when they accept it), so a single-page app can react."""
    metrics.denied("unauthenticated")
    return error(
        req, 401, message, headers=[("WWW-Authenticate", 'Bearer realm="vallum"')],
        cookies=cookies,
    )


def forbidden(req: RequestInfo, reasons: Sequence[str]) -> pipeline.Respond:
    """403 with the policy's reasons (and the request id, from the error page)."""
    metrics.denied("policy")
    why = ", ".join(reasons) if reasons else "no rule allows this request"
    return error(req, 403, f"You are signed in, but this route's policy denies access: {why}.")


def invalid_client_certificate(req: RequestInfo, detail: str) -> pipeline.Respond:
    """495 (nginx's and Pomerium's status for a bad client certificate)."""
    metrics.denied("client_certificate")
    return error(req, 495, f"A valid client certificate is required for this route ({detail}).")


def json_response(data: object, status: int = 200) -> pipeline.Respond:
    body = json.dumps(data, separators=(",", ":"), sort_keys=True, default=str).encode()
    return pipeline.Respond(status, (("Content-Type", "application/json"), NO_STORE), body)


def user_page(req: RequestInfo, who: Identity, sign_out_url: str) -> pipeline.Respond:
    """``/.vallum/``: who is signed in, their groups and claims, when the session ends."""
    expires = dt.datetime.fromtimestamp(who.expires_at, dt.UTC).isoformat(timespec="seconds")
    data = {
        "user": who.user, "email": who.email, "name": who.name, "groups": list(who.groups),
        "claims": dict(who.claims), "session_expires_at": expires,
        "request_id": request_id(req),
    }
    if not wants_html(req):
        return json_response(data)
    esc = html.escape
    groups = "".join(f"<li>{esc(g)}</li>" for g in who.groups) or "<li><em>none</em></li>"
    claims = "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(json.dumps(v, default=str))}</td></tr>"
        for k, v in sorted(who.claims.items())
    )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in as {esc(who.email or who.user)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:50rem;margin:3rem auto;padding:0 1rem}}
th{{text-align:left;padding-right:1rem;vertical-align:top}}td{{font-family:monospace}}</style>
</head><body><h1>Signed in</h1>
<table><tr><th>User</th><td>{esc(who.user)}</td></tr>
<tr><th>Email</th><td>{esc(who.email)}</td></tr>
<tr><th>Name</th><td>{esc(who.name)}</td></tr>
<tr><th>Session expires</th><td>{esc(expires)}</td></tr></table>
<h2>Groups ({len(who.groups)})</h2><ul>{groups}</ul>
<h2>Claims</h2><table>{claims}</table>
<form method="post" action="{esc(sign_out_url)}"><button type="submit">Sign out</button></form>
<footer>Request id <code>{esc(request_id(req))}</code> &middot; Vallum</footer>
</body></html>
"""
    headers = (("Content-Type", "text/html; charset=utf-8"), NO_STORE, *NO_FRAMES)
    return pipeline.Respond(200, headers, body.encode())


def sign_out_page(req: RequestInfo, action: str) -> pipeline.Respond:
    """A GET of the sign-out URL (a link, or a third-party page): a button that POSTs, nothing
    signed out yet. Clients that are not browsers are told to POST."""
    if not wants_html(req):
        return error(req, 405, "Sign out with POST (from this site's own page).",
                     headers=[("Allow", "GET, POST")])
    esc = html.escape
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign out?</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}}
</style></head><body><h1>Sign out?</h1>
<form method="post" action="{esc(action)}"><button type="submit">Sign out</button></form>
<footer>Request id <code>{esc(request_id(req))}</code> &middot; Vallum</footer>
</body></html>
"""
    headers = (("Content-Type", "text/html; charset=utf-8"), NO_STORE, *NO_FRAMES)
    return pipeline.Respond(200, headers, body.encode())
