"""The identity gate (``vallum.proxy.identity``) on its own: no network, sessions sealed here.

The provider is configured but never contacted: these tests carry valid session cookies, so the
gate decides from the cookie, the policy and the downstream certificate alone. Sign-in through a
real provider is in ``tests/integration/test_login.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
import uuid
from typing import Any

import pytest

from vallum.core import config, identity, request, routing
from vallum.proxy import jwt, pipeline, sessions
from vallum.proxy.identity import build_gate, gate

SECRET = "dmFsbHVtLXRlc3QtY29va2llLXNlY3JldC0zMmJ5dGVzISE="
KEY = jwt.private_key_pem(jwt.generate_private_key())


def _route(host: str, **options: Any) -> config.Route:
    up = config.Upstream(url="http://127.0.0.1:9", scheme="http", host="127.0.0.1", port=9)
    return config.Route(from_url=f"https://{host}", host=config.Host(host), to=(up,), **options)


def _table(**settings: Any) -> config.RouteTable:
    values: dict[str, Any] = {
        "cookie_secret": SECRET, "signing_key": (KEY,), "pass_identity_headers": True,
        "idp_provider_url": "https://idp.example.test", "idp_client_id": "vallum",
        "authenticate_service_url": "https://auth.example.test",
        "jwt_claims_headers": (("x-pomerium-claim-email", "email"),),
        "routes": (
            _route("app.example.test", allow_any_authenticated_user=True),
            _route("admin.example.test",
                   policy=[{"allow": {"or": [{"groups": {"has": "admins"}}]}}]),
            _route("public.example.test", allow_public_unauthenticated_access=True),
        ),
    }
    values.update(settings)
    return routing.build_table(config.Settings(**values))


def _cookie(table: config.RouteTable, groups: tuple[str, ...] = ("staff",), ttl: float = 600,
            refresh_in: float = 300) -> str:
    settings = table.settings
    jar = sessions.SessionCookies(settings, sessions.Sealer(sessions.secret_bytes(settings)))
    now = time.time()
    who = identity.Identity(user="alice", email="alice@example.test", name="Alice",
                            groups=groups, claims={"sub": "alice"}, session_id="sid-1",
                            expires_at=now + ttl)
    session = sessions.Session(who, "rt", expires_at=now + ttl, refresh_at=now + refresh_in)
    return "; ".join(h.split(";")[0] for h in jar.set_headers(session))


def _req(host: str, path: str = "/", **headers: str) -> request.RequestInfo:
    return request.RequestInfo(method="GET", host=host, path=path,
                               headers={"x-request-id": "rid-1", **headers})


async def _authorize(g: gate.IdentityGate, table: config.RouteTable,
                     req: request.RequestInfo) -> pipeline.Allow | pipeline.Respond:
    match = routing.match(table, req.host, req.path)
    assert match is not None
    return await g.authorize(req, match, table)


async def test_signed_in_request_gets_assertion_and_claim_headers() -> None:
    table = _table(pomerium_compatibility=True)
    g = build_gate(table.settings)
    cookie = _cookie(table) + "; theme=dark"
    verdict = await _authorize(g, table, _req("app.example.test", cookie=cookie))
    assert isinstance(verdict, pipeline.Allow)
    headers = dict(verdict.request_headers)
    assert headers["Cookie"] == "theme=dark"  # our session never goes upstream
    token = headers["X-Vallum-Jwt-Assertion"]
    assert headers["X-Pomerium-Jwt-Assertion"] == token
    assert headers["X-Vallum-Claim-Email"] == headers["X-Pomerium-Claim-Email"]
    claims = jwt.AssertionMinter(table.settings).verify(token, "app.example.test")
    assert claims["user"] == "alice" and claims["groups"] == ["staff"]
    assert verdict.identity is not None and verdict.identity.user == "alice"


async def test_anonymous_browser_redirects_api_client_401_denied_403() -> None:
    table = _table()
    g = build_gate(table.settings)
    html = "text/html,*/*;q=0.8"
    browser = await _authorize(g, table, _req("app.example.test", "/x", accept=html))
    assert isinstance(browser, pipeline.Respond) and browser.status == 302
    location = dict(browser.headers)["Location"]
    assert location.startswith("https://auth.example.test/.vallum/sign_in?redirect_uri=")
    api = await _authorize(g, table, _req("app.example.test", accept="application/json"))
    assert isinstance(api, pipeline.Respond) and api.status == 401
    assert json.loads(api.body)["request_id"] == "rid-1"
    denied = await _authorize(g, table, _req("admin.example.test", cookie=_cookie(table),
                                             accept="application/json"))
    assert isinstance(denied, pipeline.Respond) and denied.status == 403
    assert "admins" in json.loads(denied.body)["message"]
    admin = await _authorize(g, table, _req("admin.example.test",
                                            cookie=_cookie(table, groups=("admins",))))
    assert isinstance(admin, pipeline.Allow)


async def test_three_hundred_groups_in_split_cookies_are_read() -> None:
    table = _table()
    groups = tuple(str(uuid.uuid4()) for _ in range(300))  # random ids barely compress
    cookie = _cookie(table, groups=groups)
    assert "_vallum_1=" in cookie
    g = build_gate(table.settings)
    verdict = await _authorize(g, table, _req("app.example.test", cookie=cookie))
    assert isinstance(verdict, pipeline.Allow) and verdict.identity is not None
    assert verdict.identity.groups == groups


async def test_expired_or_forged_session_is_anonymous() -> None:
    table = _table()
    g = build_gate(table.settings)
    expired = _cookie(table, ttl=-1)
    forged = _cookie(table).replace("_vallum=A", "_vallum=B")
    for cookie in (expired, forged, "_vallum=nonsense"):
        verdict = await _authorize(g, table, _req("app.example.test", cookie=cookie,
                                                  accept="application/json"))
        assert isinstance(verdict, pipeline.Respond) and verdict.status == 401


async def test_misconfiguration_fails_closed_but_public_routes_work() -> None:
    table = _table(cookie_secret=None)
    g = build_gate(table.settings)
    verdict = await _authorize(g, table, _req("app.example.test", accept="text/html"))
    assert isinstance(verdict, pipeline.Respond) and verdict.status == 503
    public = await _authorize(g, table, _req("public.example.test"))
    assert public is pipeline.ALLOW


async def test_intercept_serves_jwks_and_ignores_ordinary_paths() -> None:
    table = _table(pomerium_compatibility=True)
    g = build_gate(table.settings)
    assert await g.intercept(_req("app.example.test", "/index.html"), table) is None
    for path in ("/.well-known/vallum/jwks.json", "/.well-known/pomerium/jwks.json"):
        resp = await g.intercept(_req("app.example.test", path), table)
        assert resp is not None and resp.status == 200
        assert json.loads(resp.body)["keys"][0]["alg"] == "ES256"
    plain = _table()
    assert await build_gate(plain.settings).intercept(
        _req("app.example.test", "/.well-known/pomerium/jwks.json"), plain) is None
    unknown = await g.intercept(_req("app.example.test", "/.vallum/nope"), table)
    assert unknown is not None and unknown.status == 404
    elsewhere = await g.intercept(_req("not-ours.example", "/.vallum/sign_in"), table)
    assert elsewhere is None


async def test_sign_in_refuses_foreign_return_urls() -> None:
    table = _table()
    g = build_gate(table.settings)
    for evil in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        query = "redirect_uri=" + evil.replace("/", "%2F").replace("\\", "%5C")
        req = request.RequestInfo(method="GET", host="auth.example.test", path="/.vallum/sign_in",
                                  query=query, headers={"x-request-id": "r"})
        resp = await g.intercept(req, table)
        assert resp is not None and resp.status == 400, evil


async def test_handoff_for_another_host_is_refused() -> None:
    table = _table()
    settings = table.settings
    sealer = sessions.Sealer(sessions.secret_bytes(settings))
    token = sealer.seal("handoff", {"j": "x", "c": ["_vallum", "v"], "k": 0, "n": 1, "d": "d",
                                    "x": time.time() + 60, "r": "https://app.example.test/"},
                        60, aad="admin.example.test", compress=True)
    req = request.RequestInfo(method="GET", host="app.example.test", path="/.vallum/handoff",
                              query=f"token={token}", headers={"x-request-id": "r"})
    resp = await build_gate(settings).intercept(req, table)
    assert resp is not None and resp.status == 400


async def test_handoff_needs_the_nonce_cookie_of_the_browser_that_started_sign_in() -> None:
    table = _table()
    settings = table.settings
    g = build_gate(settings)
    start = await _authorize(g, table, _req("app.example.test", "/x", accept="text/html"))
    assert isinstance(start, pipeline.Respond) and start.status == 302
    nonce_cookie = dict(start.headers)["Set-Cookie"]
    assert nonce_cookie.startswith("_vallum_nonce=") and "HttpOnly" in nonce_cookie
    nonce = nonce_cookie.split(";")[0].split("=", 1)[1]
    location = dict(start.headers)["Location"]
    bound = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["b"][0]
    assert nonce not in location  # only a digest of it travels
    sealer = sessions.Sealer(sessions.secret_bytes(settings))

    def handoff(jti: str, **cookies: str) -> request.RequestInfo:
        token = sealer.seal("handoff", {"j": jti, "c": ["_vallum", "v"], "k": 0, "n": 1,
                                        "d": "d", "x": time.time() + 60, "b": bound,
                                        "r": "https://app.example.test/x"},
                            60, aad="app.example.test", compress=True)
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return request.RequestInfo(method="GET", host="app.example.test",
                                   path="/.vallum/handoff", query=f"token={token}",
                                   headers={"x-request-id": "r", "cookie": cookie})

    for jti, cookies in (("a", {}), ("b", {"_vallum_nonce": "x" * 43})):
        refused = await g.intercept(handoff(jti, **cookies), table)
        assert refused is not None and refused.status == 400
        assert b"not started in this browser" in refused.body
    accepted = await g.intercept(handoff("c", _vallum_nonce=nonce), table)
    assert accepted is not None and accepted.status == 302
    assert any(v.startswith("_vallum=v;") for k, v in accepted.headers if k == "Set-Cookie")
    again = await _authorize(g, table, _req("app.example.test", "/y", accept="text/html",
                                            cookie=f"_vallum_nonce={nonce}"))
    assert isinstance(again, pipeline.Respond)  # a second tab keeps the same nonce
    assert dict(again.headers)["Set-Cookie"].startswith(f"_vallum_nonce={nonce};")


async def test_sign_out_revokes_the_session_on_the_hot_path_too() -> None:
    table = _table(idp_provider_url="https://127.0.0.1:9")  # no provider: no end-session URL
    g = build_gate(table.settings)
    try:
        await _sign_out_revokes(g, table)
    finally:
        await g.close()


async def _sign_out_revokes(g: gate.IdentityGate, table: config.RouteTable) -> None:
    cookie = _cookie(table)
    app = _req("app.example.test", cookie=cookie, accept="application/json")
    assert isinstance(await _authorize(g, table, app), pipeline.Allow)
    match = routing.match(table, app.host, app.path)
    assert match is not None
    assert isinstance(g.authorize_now(app, match, table), pipeline.Allow)  # cached: no I/O
    post = request.RequestInfo(
        method="POST", host="app.example.test", path="/.vallum/sign_out",
        headers={"x-request-id": "r", "cookie": cookie, "origin": "https://app.example.test",
                 "host": "app.example.test"})
    done = await g.intercept(post, table)
    assert done is not None and done.status == 302
    location = dict(done.headers)["Location"]
    assert location.startswith("https://auth.example.test/.vallum/sign_out?")
    refused = g.authorize_now(app, match, table)
    assert isinstance(refused, pipeline.Respond) and refused.status == 401
    assert g.state.is_revoked("sid-1", time.time())
    # The authenticate host's leg: the same session there is signed out by the continuation.
    leg = request.RequestInfo(
        method="GET", host="auth.example.test", path="/.vallum/sign_out",
        query=urllib.parse.urlsplit(location).query,
        headers={"x-request-id": "r", "cookie": cookie, "accept": "text/html"})
    ended = await g.intercept(leg, table)
    assert ended is not None and ended.status == 302
    assert any(v.startswith("_vallum=;") for k, v in ended.headers if k == "Set-Cookie")


def test_strip_names_cover_both_prefixes_claims_and_cookie() -> None:
    settings = config.Settings(jwt_claims_headers=(("x-pomerium-claim-department", "dept"),
                                                   ("X-Team", "team")))
    names = gate.strip_names(settings)
    for name in ("x-vallum-jwt-assertion", "x-pomerium-jwt-assertion",
                 "x-vallum-jwt-assertion-for", "x-pomerium-jwt-assertion-for",
                 "x-vallum-claim-email", "x-pomerium-claim-groups", "x-vallum-claim-department",
                 "x-pomerium-claim-department", "x-team", "cookie"):
        assert name in names, name


@pytest.mark.parametrize(
    ("mode", "cert", "refused"),
    [
        ("policy_with_default_deny", None, True),
        ("policy_with_default_deny", request.ClientCertificate(b"x", verified=False), True),
        ("policy_with_default_deny", request.ClientCertificate(b"x", verified=True), False),
        ("policy", None, False),
        ("reject_connection", None, True),
        ("reject_connection", request.ClientCertificate(b"x", verified=True), False),
    ],
)
def test_default_deny_for_client_certificates(
    mode: str, cert: request.ClientCertificate | None, refused: bool
) -> None:
    settings = config.Settings(downstream_mtls=config.DownstreamMTLS(
        ca_pem="pem", enforcement=mode))  # type: ignore[arg-type]
    req = request.RequestInfo(method="GET", host="a", path="/", client_cert=cert)
    assert (gate.client_certificate_refusal(settings, req) is not None) is refused
    assert gate.client_certificate_refusal(config.Settings(), req) is None


async def test_no_signing_key_never_forwards_without_the_assertion() -> None:
    table = _table(signing_key=())
    g = build_gate(table.settings)
    verdict = await _authorize(g, table, _req("app.example.test", cookie=_cookie(table)))
    assert isinstance(verdict, pipeline.Respond) and verdict.status == 503
    quiet = _table(signing_key=(), pass_identity_headers=False)
    allowed = await _authorize(build_gate(quiet.settings), quiet,
                               _req("app.example.test", cookie=_cookie(quiet) + "; a=b"))
    assert isinstance(allowed, pipeline.Allow)
    assert allowed.request_headers == (("Cookie", "a=b"),)


async def test_reload_keeps_sessions_and_the_replay_guard() -> None:
    first = _table(dev_mode=True, cookie_secret=None)
    g = build_gate(first.settings)
    before = g.context_for(first)
    before.handoffs_used.put("used-jti", True, time.time() + 60)
    second = _table(dev_mode=True, cookie_secret=None,
                    routes=(_route("app.example.test", allow_any_authenticated_user=True),))
    assert second.checksum != first.checksum
    after = g.context_for(second)
    assert after is not before
    assert after.sealer is before.sealer  # the random dev secret survives the reload
    assert after.handoffs_used.get("used-jti", time.time())
    assert after.state is before.state is g.state  # and sign-outs survive it too


def test_missing_sign_in_settings_warn_only_when_a_route_needs_a_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    public_only = routing.build_table(config.Settings(routes=(
        _route("public.example.test", allow_public_unauthenticated_access=True),
    )))
    needs_user = routing.build_table(config.Settings(routes=(
        _route("app.example.test", allow_any_authenticated_user=True),
    )))
    with caplog.at_level("INFO", logger="vallum"):
        build_gate(public_only.settings).context_for(public_only)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("every route is public" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("INFO", logger="vallum"):
        build_gate(needs_user.settings).context_for(needs_user)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("idp_provider_url" in w for w in warnings)
    assert any("cookie_secret" in w for w in warnings)


async def test_decide_now_answers_as_decide_or_defers_to_it() -> None:
    """The hot path's coroutine-free decision gives decide()'s answer whenever it gives one,
    and defers (None) exactly where I/O may be needed: an internal endpoint, a bearer token, a
    session cookie not read yet (after decide() has read it, decide_now answers too)."""
    cert = request.ClientCertificate(b"x", verified=False, error="unknown issuer")
    table = _table(routes=(
        *_table().settings.routes,
        _route("mtls.example.test", allow_public_unauthenticated_access=True),
    ))
    mtls = _table(downstream_mtls=config.DownstreamMTLS(ca_pem="pem",
                                                        enforcement="policy_with_default_deny"),
                  routes=table.settings.routes)
    staff, admins = _cookie(table), _cookie(table, groups=("admins",))
    g = build_gate(table.settings)
    cases: list[tuple[config.RouteTable, request.RequestInfo, bool, bool]] = [
        # (table, request, decide_now answers before decide ran, ... and after)
        (table, _req("public.example.test", "/a"), True, True),
        (table, _req("public.example.test", "//a/../b", cookie="x=1; _vallum=s"), True, True),
        (table, _req("nowhere.example.test"), True, True),  # 404
        (table, _req("public.example.test", "/%2e%2e%2f"), True, True),  # normalised, or 400
        (table, _req("public.example.test", "/.vallum/"), False, False),  # internal endpoint
        (table, _req("app.example.test"), True, True),  # anonymous: 401
        (table, _req("app.example.test", accept="text/html"), True, True),  # sign-in redirect
        (table, _req("app.example.test", authorization="Bearer a.b.c"), False, False),
        (table, _req("app.example.test", cookie=staff), False, True),  # allowed, with assertion
        (table, _req("admin.example.test", cookie=staff), True, True),  # 403 (read above)
        (table, _req("admin.example.test", cookie=admins), False, True),
        (mtls, dataclasses.replace(_req("app.example.test"), client_cert=cert), True, True),
    ]
    try:
        for tbl, req, before, after in cases:
            assert (pipeline.decide_now(req, tbl, g) is not None) is before, req
            later = await pipeline.decide(req, tbl, g)
            now = pipeline.decide_now(req, tbl, g)
            assert (now is not None) is after, req
            if now is None:
                continue
            if isinstance(later, pipeline.Respond) and later.status == 302:
                assert isinstance(now, pipeline.Respond) and now.status == 302  # a fresh state
            else:
                assert now == later, req
    finally:
        await g.close()  # the bearer case opened the provider's client


async def test_what_sign_in_lacks_is_logged_when_it_changes_not_per_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def public(host: str, **settings: Any) -> config.RouteTable:
        return routing.build_table(config.Settings(
            routes=(_route(host, allow_public_unauthenticated_access=True),), **settings))

    def lines() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.name == "vallum.identity"]
        caplog.clear()
        return found

    caplog.set_level("INFO", logger="vallum.identity")
    g = build_gate()
    g.context_for(public("a.example.test"))
    assert lines() == ["identity: sign-in is not configured; every route is public"]
    for host in ("b.example.test", "c.example.test"):  # new tables, the same state: quiet
        g.context_for(public(host))
        assert lines() == []
    wanting = public("d.example.test", idp_provider_url="https://idp.example.test")
    g.context_for(wanting)
    warned = lines()
    assert warned and all(line.startswith("identity: ") for line in warned)
    assert "identity: sign-in is not configured; every route is public" not in warned
    g.context_for(public("e.example.test", idp_provider_url="https://idp.example.test"))
    assert lines() == []  # the same problems
    g.context_for(_table())  # complete: nothing to say
    assert lines() == []
    g.context_for(public("f.example.test"))
    assert lines() == ["identity: sign-in is not configured; every route is public"]
    await g.close()


def test_the_gate_strips_the_same_names_whatever_its_first_table() -> None:
    """The table's own claim headers are the data plane's to strip, per table
    (``tests/proxy/test_server_claim_headers.py``): nothing here depends on the first one."""
    assert build_gate(_table().settings).strip_request_headers() == (
        build_gate().strip_request_headers()
    ) == gate.strip_names(None)
    assert "cookie" in gate.strip_names(None)
