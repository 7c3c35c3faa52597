"""Sign-in end to end: a real OpenID provider, a real Vallum server with the identity gate, and
an upstream that verifies the assertion with PyJWT against the JWKS fetched from the route host.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from tests.integration.login_env import COOKIE_SECRET, World, route, world
from tests.support import oidc as oidc_support
from tests.support.browser import Browser, Page, parse_forms
from tests.support.certs import TestCA
from vallum.core import config
from vallum.proxy import sessions
from vallum.proxy.identity import authenticate

JSON = {"Accept": "application/json"}


@pytest.fixture
async def env(test_ca: TestCA, tmp_path: Path) -> AsyncIterator[World]:
    async with world(test_ca, tmp_path) as w:
        yield w


async def provider_tokens(w: World, user: str, resource: str | None = None) -> dict[str, Any]:
    """Tokens straight from the provider, as a command-line client would get them."""
    verifier = secrets.token_urlsafe(48)
    callback = f"https://auth.example.test:{w.port}/.vallum/callback"
    query = {
        "response_type": "code", "client_id": oidc_support.CLIENT_ID, "redirect_uri": callback,
        "scope": "openid email profile", "state": "st", "nonce": "nn",
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
    }
    if resource:
        query["resource"] = resource
    async with Browser(w.ca) as b:
        page = await b.sign_in(f"{w.provider.issuer}/auth?{urllib.parse.urlencode(query)}", user,
                               stop_at=callback)
    location = page.headers["Location"]
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback,
            "code_verifier": verifier}
    if resource:
        form["resource"] = resource
    basic = base64.b64encode(f"{oidc_support.CLIENT_ID}:{oidc_support.CLIENT_SECRET}".encode())
    context = ssl.create_default_context(cadata=w.ca.cert_pem)
    auth = {"Authorization": f"Basic {basic.decode()}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s, s.post(
        f"{w.provider.issuer}/token", data=form, headers=auth
    ) as resp:
        assert resp.status == 200, await resp.text()
        tokens: dict[str, Any] = await resp.json()
    return tokens


async def provider_refresh(w: World, refresh_token: str) -> int:
    """The provider's answer (status) to a refresh with ``refresh_token``."""
    basic = base64.b64encode(f"{oidc_support.CLIENT_ID}:{oidc_support.CLIENT_SECRET}".encode())
    context = ssl.create_default_context(cadata=w.ca.cert_pem)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s, s.post(
        f"{w.provider.issuer}/token", data=form,
        headers={"Authorization": f"Basic {basic.decode()}"},
    ) as resp:
        return resp.status


def refresh_token_in(cookie_header: str) -> str:
    """The refresh token sealed in a session cookie (the test knows ``cookie_secret``)."""
    settings = config.Settings(cookie_secret=COOKIE_SECRET)
    jar = sessions.SessionCookies(settings, sessions.Sealer(sessions.secret_bytes(settings)))
    session = jar.read(sessions.parse_cookies(cookie_header))
    assert session is not None and session.refresh_token
    return session.refresh_token


# --- sign-in -----------------------------------------------------------------------------------


async def test_scripted_login_reaches_upstream_which_verifies_the_assertion(env: World) -> None:
    async with Browser(env.ca) as b:
        page = await b.sign_in(env.url("app.example.test", "/hello?x=1"), "alice")
        assert page.status == 200, page.text
        assert page.url == env.url("app.example.test", "/hello?x=1")
        seen = page.json()
        claims = seen["verified"]
        assert seen["error"] is None and claims is not None
        assert claims["sub"] == claims["user"] == "alice"
        assert claims["email"] == "alice@example.test"
        assert claims["groups"] == ["admins", "staff"]
        assert claims["iss"] == claims["aud"] == "app.example.test"
        assert claims["exp"] - claims["iat"] == 300
        headers = seen["headers"]
        assert headers["x-pomerium-jwt-assertion"] == headers["x-vallum-jwt-assertion"]
        assert headers["x-vallum-claim-email"] == "alice@example.test"
        assert headers["x-pomerium-claim-email"] == "alice@example.test"
        assert "_vallum" not in headers.get("cookie", "")  # the session never reaches upstreams
        hops = [url for _, url in page.history]
        assert any("/.vallum/callback" in u for u in hops)
        assert any(u.startswith(env.url("app.example.test", "/.vallum/handoff")) for u in hops)
        assert "_vallum" in b.cookies(env.url("app.example.test"))
        assert "_vallum" in b.cookies(env.url("auth.example.test"))

        # A host on another domain: the authenticate host hands off, the provider is not asked.
        other = await b.get(env.url("app.other.test", "/x"))
        assert other.status == 200 and other.json()["verified"]["aud"] == "app.other.test"
        assert not any(env.provider.issuer in u for _, u in other.history)


async def test_user_page_shows_identity_groups_and_expiry(env: World) -> None:
    async with Browser(env.ca) as b:
        await b.sign_in(env.url("app.example.test"), "alice")
        data = (await b.get(env.url("app.example.test", "/.vallum/"), headers=JSON)).json()
        assert data["user"] == "alice" and data["groups"] == ["admins", "staff"]
        assert data["claims"]["email"] == "alice@example.test"
        assert data["session_expires_at"].startswith("20")
        html = await b.get(env.url("app.example.test", "/.vallum/"))
        assert "Alice Admin" in html.text and "staff" in html.text
        assert (await b.get(env.url("app.example.test", "/.pomerium/"), headers=JSON)).json()[
            "user"] == "alice"


async def test_denied_user_gets_403_with_reasons_and_request_id(env: World) -> None:
    async with Browser(env.ca) as b:
        first = await b.sign_in(env.url("admin.example.test"), "bob")
        assert first.status == 403  # signed in (hand-off to this host), then denied
        page = await b.get(env.url("admin.example.test", "/"), headers=JSON)
        assert page.status == 403
        body = page.json()
        assert "admins" in body["message"]
        assert body["request_id"] and page.headers["X-Request-Id"] == body["request_id"]
        html = await b.get(env.url("admin.example.test", "/"))
        assert html.status == 403 and html.headers["X-Request-Id"] in html.text
        assert "admins" in html.text
        async with Browser(env.ca) as alice:
            await alice.sign_in(env.url("admin.example.test"), "alice")
            assert (await alice.get(env.url("admin.example.test", "/"))).status == 200


async def test_anonymous_browser_redirected_api_client_gets_401(env: World) -> None:
    async with Browser(env.ca) as b:
        browser = await b.get(env.url("app.example.test", "/p?q=1"), follow=False)
        assert browser.status == 302
        location = browser.headers["Location"]
        assert location.startswith(env.url("auth.example.test", "/.vallum/sign_in?"))
        target = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        assert target["redirect_uri"] == env.url("app.example.test", "/p?q=1")
        api = await b.get(env.url("app.example.test", "/p"), headers=JSON)
        assert api.status == 401 and api.json()["status"] == 401
        assert api.headers["WWW-Authenticate"].startswith("Bearer")
        curl = await b.get(env.url("app.example.test", "/p"), headers={"Accept": "*/*"})
        assert curl.status == 401
        public = await b.get(env.url("public.example.test", "/open"), headers=JSON)
        assert public.status == 200 and public.json()["verified"] is None


async def test_open_redirects_refused_at_sign_in(env: World) -> None:
    async with Browser(env.ca) as b:
        for evil in ("https://evil.example/", "//evil.example", "/\\evil.example",
                     "https:evil.example", "/%2F%2Fevil.example",
                     f"https://app.example.test:{env.port}@evil.example/"):
            url = env.url("auth.example.test", "/.vallum/sign_in?") + urllib.parse.urlencode(
                {"redirect_uri": evil})
            page = await b.get(url, follow=False)
            assert page.status == 400, evil
            assert "Location" not in page.headers


# --- sessions: splitting, refresh, expiry, sign-out ----------------------------------------------


async def test_three_hundred_groups_split_the_cookie_and_reach_upstream(env: World) -> None:
    async with Browser(env.ca) as b:
        page = await b.sign_in(env.url("app.example.test", "/"), "heavy")
        assert page.status == 200, page.text
        assert len(page.json()["verified"]["groups"]) == 300
        jar = b.cookies(env.url("app.example.test"))
        chunks = sorted(k for k in jar if k.startswith("_vallum_") and k[8:].isdigit())
        assert len(chunks) >= 2 and "_vallum" not in jar
        assert all(len(k) + len(jar[k]) < 4000 for k in chunks)
        again = await b.get(env.url("app.example.test", "/again"))
        assert again.status == 200 and not again.history


async def test_refresh_before_expiry_renews_the_cookie(
    test_ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authenticate, "REFRESH_MARGIN", 58.0)  # tokens live 60 s: due in 2 s
    async with world(test_ca, tmp_path, ttl={"IdToken": 60, "AccessToken": 60}) as w, \
            Browser(w.ca) as b:
        await b.sign_in(w.url("app.example.test"), "alice")
        before = b.cookies(w.url("app.example.test"))["_vallum"]
        quiet = await b.get(w.url("app.example.test", "/early"))
        assert "Set-Cookie" not in quiet.headers
        await asyncio.sleep(2.5)
        results = await asyncio.gather(*(b.get(w.url("app.example.test", f"/r{i}"))
                                         for i in range(3)))
        assert all(r.status == 200 for r in results)
        assert any("Set-Cookie" in r.headers for r in results)
        after = b.cookies(w.url("app.example.test"))["_vallum"]
        assert after != before
        page = await b.get(w.url("app.example.test", "/later"))
        assert page.status == 200 and page.json()["verified"]["user"] == "alice"
        assert "Set-Cookie" not in page.headers


async def test_expired_session_signs_in_again(test_ca: TestCA, tmp_path: Path) -> None:
    async with world(test_ca, tmp_path, cookie_expire=2.0) as w, Browser(w.ca) as b:
        assert (await b.sign_in(w.url("app.example.test"), "alice")).status == 200
        await asyncio.sleep(2.5)
        page = await b.get(w.url("app.example.test", "/"), follow=False)
        assert page.status == 302 and "/.vallum/sign_in" in page.headers["Location"]
        assert (await b.get(w.url("app.example.test", "/"), headers=JSON)).status == 401


def origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def sign_out(b: Browser, url: str) -> Page:
    """Press the sign-out button of the page at ``url``'s host, as a browser posts it."""
    return await b.request("POST", url, headers={"Origin": origin(url),
                                                 "Sec-Fetch-Site": "same-origin"})


async def test_sign_out_clears_sessions_and_ends_the_provider_session(env: World) -> None:
    async with Browser(env.ca) as b:
        await b.sign_in(env.url("app.example.test"), "alice")
        user_page = await b.get(env.url("app.example.test", "/.vallum/"))
        form = next(f for f in parse_forms(user_page.text) if f.method == "post")
        action = urllib.parse.urljoin(user_page.url, form.action)
        assert action == env.url("app.example.test", "/.vallum/sign_out")
        page = await sign_out(b, action)
        assert any("/.vallum/sign_out" in u and "auth.example.test" in u for _, u in page.history)
        assert page.url.startswith(env.provider.issuer + "/session/end")
        done = await b.confirm_logout(page)
        assert done.url.startswith(env.url("app.example.test", "/")) or done.status == 200
        assert "_vallum" not in b.cookies(env.url("app.example.test"))
        assert "_vallum" not in b.cookies(env.url("auth.example.test"))
        again = await b.get(env.url("app.example.test", "/"))
        assert any("login" in f.fields for f in parse_forms(again.text)), "provider forgot us"


async def test_sign_out_by_a_cross_site_get_or_post_signs_nobody_out(env: World) -> None:
    """Issue 11, finding 6: sign-out is a POST from this site; a GET (an <img> or a link on
    another site) only shows the button, and a cross-site POST is refused."""
    async with Browser(env.ca) as b:
        await b.sign_in(env.url("app.example.test"), "alice")
        sign_out_url = env.url("app.example.test", "/.vallum/sign_out")
        image = await b.get(sign_out_url, headers={"Accept": "image/avif,image/*,*/*;q=0.8",
                                                   "Sec-Fetch-Site": "cross-site"})
        assert image.status == 405 and not image.history
        link = await b.get(sign_out_url, headers={"Sec-Fetch-Site": "cross-site"})
        assert link.status == 200 and not link.history, link.text
        form = next(f for f in parse_forms(link.text) if f.method == "post")
        assert urllib.parse.urljoin(link.url, form.action) == sign_out_url
        assert link.headers["X-Frame-Options"] == "DENY"
        pomerium = await b.get(env.url("app.example.test", "/.pomerium/sign_out"))
        assert pomerium.status == 200 and "Sign out?" in pomerium.text  # Pomerium's URL works
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "null"}, {"Sec-Fetch-Site": "same-site"}):
            forged = await b.request("POST", sign_out_url, headers=headers, follow=False)
            assert forged.status == 403, headers
            assert "Set-Cookie" not in forged.headers
        assert "_vallum" in b.cookies(env.url("app.example.test"))
        still = await b.get(env.url("app.example.test", "/still"), headers=JSON)
        assert still.status == 200 and still.json()["verified"]["user"] == "alice"
        # A continuation token for someone else's session does not sign this browser out.
        async with Browser(env.ca) as other:
            await other.sign_in(env.url("app.example.test"), "bob")
            leg = await other.request("POST", sign_out_url, follow=False,
                                      headers={"Origin": origin(sign_out_url)})
            continuation = leg.headers["Location"]
            assert continuation.startswith(env.url("auth.example.test", "/.vallum/sign_out?"))
        replayed = await b.get(continuation, follow=False)
        assert replayed.status == 200 and "Sign out?" in replayed.text
        assert "_vallum" in b.cookies(env.url("auth.example.test"))


async def test_sign_out_revokes_every_copy_of_the_session_on_every_host(env: World) -> None:
    """Issue 11, finding 12: after sign-out a copy of the cookie is refused on every host."""
    async with Browser(env.ca) as b:
        await b.sign_in(env.url("app.example.test"), "alice")
        assert (await b.get(env.url("app.other.test", "/"))).status == 200  # a hand-off
        copies = {host: "; ".join(f"{k}={v}" for k, v in b.cookies(env.url(host)).items())
                  for host in ("app.example.test", "app.other.test", "auth.example.test")}
        async with Browser(env.ca) as thief:
            for host in ("app.example.test", "app.other.test"):
                page = await thief.get(env.url(host, "/"), headers={**JSON,
                                                                    "Cookie": copies[host]})
                assert page.status == 200 and page.json()["verified"]["user"] == "alice"
            refresh_token = refresh_token_in(copies["app.example.test"])
            assert await provider_refresh(env, refresh_token) == 200
            page = await sign_out(b, env.url("app.example.test", "/.vallum/sign_out"))
            await b.confirm_logout(page)
            for host in ("app.example.test", "app.other.test"):
                page = await thief.get(env.url(host, "/"), headers={**JSON,
                                                                    "Cookie": copies[host]})
                assert page.status == 401, (host, page.text)
            mine = await thief.get(env.url("auth.example.test", "/.vallum/"),
                                   headers={**JSON, "Cookie": copies["auth.example.test"]})
            assert mine.status == 401
        # The provider revoked the refresh token too: a Vallum that never heard of this
        # sign-out (restarted, say) cannot keep the copy alive past the provider's tokens.
        assert await provider_refresh(env, refresh_token) == 400
        # Signing in again is a new session, not the revoked one.
        assert (await b.sign_in(env.url("app.example.test"), "alice")).status == 200


async def test_hand_off_link_made_for_one_browser_signs_in_no_other(env: World) -> None:
    """Issue 11, finding 5 (login CSRF): carol asks the authenticate host for a hand-off to a
    route host, does not follow it, and sends it to alice; alice is not signed in as carol."""
    other = env.url("app.other.test", "/.vallum/handoff")
    async with Browser(env.ca) as carol:
        await carol.sign_in(env.url("app.example.test"), "carol")
        ask = env.url("auth.example.test", "/.vallum/sign_in?") + urllib.parse.urlencode(
            {"redirect_uri": env.url("app.other.test", "/inbox")})
        page = await carol.get(ask, stop_at=other)
        link = urllib.parse.urljoin(page.url, page.headers["Location"])
        assert link.startswith(other)
    for started_own_sign_in in (False, True):
        async with Browser(env.ca) as alice:
            if started_own_sign_in:
                begun = await alice.get(env.url("app.other.test", "/"), follow=False)
                assert begun.status == 302
            landed = await alice.get(link)
            assert landed.status == 400, landed.text
            assert "not started in this browser" in landed.text
            assert "_vallum" not in alice.cookies(env.url("app.other.test"))
            inbox = await alice.get(env.url("app.other.test", "/inbox"), headers=JSON)
            assert inbox.status == 401
    # The browser that started the sign-in still gets through, by the same route.
    async with Browser(env.ca) as b:
        page = await b.sign_in(env.url("app.other.test", "/x"), "bob")
        assert page.status == 200 and page.json()["verified"]["user"] == "bob"


async def test_handoff_is_single_use_and_state_is_bound(env: World) -> None:
    async with Browser(env.ca) as b:
        page = await b.sign_in(env.url("app.example.test", "/"), "alice",
                               stop_at=env.url("app.example.test", "/.vallum/handoff"))
        handoff = urllib.parse.urljoin(page.url, page.headers["Location"])
        assert (await b.get(handoff, follow=False)).status == 302
        async with Browser(env.ca) as thief:
            replay = await thief.get(handoff, follow=False)
            assert replay.status == 400 and "already used" in replay.text
            other_host = handoff.replace("app.example.test", "api.example.test")
            assert (await thief.get(other_host, follow=False)).status == 400
            callback = env.url("auth.example.test", "/.vallum/callback?code=x&state=y")
            assert (await thief.get(callback, follow=False)).status == 400


# --- what the provider says: unverified email, azp, the response's issuer -------------------------


def email_routes(upstream_port: int) -> list[Any]:
    return [
        route("app.example.test", upstream_port, allowed_users=("alice@example.test",)),
        route("admin.example.test", upstream_port, allowed_domains=("example.test",)),
        route("api.example.test", upstream_port, policy=[{"allow": {"or": [
            {"email": {"is": "alice@example.test"}}]}}]),
        route("chain.example.test", upstream_port, policy=[{"allow": {"or": [
            {"claim/email": "alice@example.test"}]}}]),
        route("public.example.test", upstream_port, allow_any_authenticated_user=True),
    ]


async def test_unverified_email_is_no_email(test_ca: TestCA, tmp_path: Path) -> None:
    """Issue 11, finding 14 ("nOAuth"): mallory typed alice's address at the provider, which
    says it has not verified it; allowed_users, allowed_domains, email and claim/email do not
    take it, and the assertion carries no email."""
    hosts = ("app.example.test", "admin.example.test", "api.example.test", "chain.example.test")
    async with world(test_ca, tmp_path, routes=email_routes) as w:
        for user in ("mallory", "mallory2"):  # email_verified false, and "false"
            async with Browser(w.ca) as b:
                page = await b.sign_in(w.url("public.example.test", "/"), user)
                assert page.status == 200, page.text
                seen = page.json()
                assert seen["verified"]["email"] == "" and seen["verified"]["user"] == user
                assert not seen["headers"].get("x-vallum-claim-email")
                for host in hosts:
                    denied = await b.get(w.url(host, "/"))  # a hand-off, then the policy
                    assert denied.status == 403, (user, host, denied.text)
        async with Browser(w.ca) as alice:
            await alice.sign_in(w.url("public.example.test", "/"), "alice")
            for host in hosts:
                assert (await alice.get(w.url(host, "/"))).status == 200, host


async def test_id_token_issued_to_another_client_is_refused(env: World) -> None:
    """Issue 11, finding 14: an ID token whose azp names another client does not sign in."""
    async with Browser(env.ca) as b:
        page = await b.sign_in(env.url("app.example.test", "/"), "elsewhere")
        assert page.status == 403 and "Sign-in failed" in page.text
        assert "_vallum" not in b.cookies(env.url("auth.example.test"))


async def test_authorization_response_must_name_our_provider(env: World) -> None:
    """Issue 11, finding 14 (RFC 9207): the provider advertises ``iss`` in its responses; a
    callback naming another issuer, or none, is refused."""
    callback = env.url("auth.example.test", "/.vallum/callback")
    for change in ("other", "missing", None):
        async with Browser(env.ca) as b:
            page = await b.sign_in(env.url("app.example.test", "/"), "alice", stop_at=callback)
            location = urllib.parse.urljoin(page.url, page.headers["Location"])
            parts = urllib.parse.urlsplit(location)
            query = dict(urllib.parse.parse_qsl(parts.query))
            assert query["iss"] == env.provider.issuer
            if change == "other":
                query["iss"] = "https://evil.example"
            elif change == "missing":
                del query["iss"]
            landed = await b.get(parts._replace(query=urllib.parse.urlencode(query)).geturl())
            if change is None:
                assert landed.status == 200, landed.text
                continue
            assert landed.status == 400, (change, landed.text)
            assert "RFC 9207" in landed.text
            assert "_vallum" not in b.cookies(env.url("auth.example.test"))


# --- headers: stripping, original user context ---------------------------------------------------


async def test_client_cannot_send_identity_headers(env: World) -> None:
    forged = {
        "X-Vallum-Jwt-Assertion": "forged", "X-Pomerium-Jwt-Assertion": "forged",
        "X-Vallum-Claim-Email": "evil@example.test", "X-Pomerium-Claim-Email": "evil@example.test",
        "X-Vallum-Jwt-Assertion-For": "forged", "X-Pomerium-Jwt-Assertion-For": "forged",
        "X-Pomerium-Claim-Groups": "admins",
    }
    async with Browser(env.ca) as b:
        public = (await b.get(env.url("public.example.test"), headers=forged)).json()["headers"]
        for name in forged:
            assert name.lower() not in public, name
        await b.sign_in(env.url("app.example.test"), "bob")
        seen = (await b.get(env.url("app.example.test"), headers=forged)).json()
        assert seen["verified"]["email"] == "bob@example.test"
        assert seen["headers"]["x-vallum-claim-email"] == "bob@example.test"
        assert seen["headers"]["x-pomerium-jwt-assertion"] != "forged"
        assert "x-vallum-jwt-assertion-for" not in seen["headers"]
        assert "x-pomerium-claim-groups" not in seen["headers"]


async def test_bearer_id_token_and_jwt_access_token(env: World) -> None:
    tokens = await provider_tokens(env, "bob", resource=oidc_support.RESOURCE_AUDIENCE)
    access = tokens["access_token"]
    assert jwt.get_unverified_header(access)["typ"].lower() == "at+jwt"
    async with Browser(env.ca) as b:
        for token in (tokens["id_token"], access):
            page = await b.get(env.url("api.example.test", "/data"),
                               headers={**JSON, "Authorization": f"Bearer {token}"})
            assert page.status == 200, page.text
            assert page.json()["verified"]["user"] == "bob"
            assert page.json()["verified"]["groups"] == ["staff"]
        denied = await b.get(env.url("admin.example.test", "/"),
                             headers={**JSON, "Authorization": f"Bearer {access}"})
        assert denied.status == 403
        tampered = tokens["id_token"][:-4] + ("AAAA" if not tokens["id_token"].endswith("AAAA")
                                             else "BBBB")
        bad = await b.get(env.url("api.example.test", "/"),
                          headers={**JSON, "Authorization": f"Bearer {tampered}"})
        assert bad.status == 401 and "bearer token was refused" in bad.json()["message"]
        foreign = jwt.encode({"iss": "https://other.example", "sub": "x"}, "k" * 32)
        other = await b.get(env.url("api.example.test", "/"),
                            headers={**JSON, "Authorization": f"Bearer {foreign}"})
        assert other.status == 401 and "Sign in first" in other.json()["message"]


async def test_original_user_context_is_carried_on(env: World) -> None:
    async with Browser(env.ca) as alice:
        first = (await alice.sign_in(env.url("app.example.test", "/"), "alice")).json()
    alice_assertion = first["headers"]["x-vallum-jwt-assertion"]
    service = await provider_tokens(env, "bob")
    async with Browser(env.ca) as upstream_client:
        headers = {**JSON, "Authorization": f"Bearer {service['id_token']}",
                   "X-Vallum-Jwt-Assertion": alice_assertion}
        page = await upstream_client.get(env.url("chain.example.test", "/next"), headers=headers)
        seen = page.json()
        assert seen["verified"]["user"] == "bob"
        original = seen["headers"]["x-vallum-jwt-assertion-for"]
        assert original == alice_assertion == seen["headers"]["x-pomerium-jwt-assertion-for"]
        claims = await env.upstream.verify(original, "app.example.test")
        assert claims["user"] == "alice"
        # A third hop keeps the original; a forged one is never carried on.
        third = await upstream_client.get(env.url("chain.example.test", "/third"), headers={
            **headers, "X-Vallum-Jwt-Assertion": seen["headers"]["x-vallum-jwt-assertion"],
            "X-Vallum-Jwt-Assertion-For": original})
        assert third.json()["headers"]["x-vallum-jwt-assertion-for"] == alice_assertion
        forged = alice_assertion[:-6] + "AAAAAA"
        fake = await upstream_client.get(env.url("chain.example.test", "/f"), headers={
            **headers, "X-Vallum-Jwt-Assertion": forged})
        assert "x-vallum-jwt-assertion-for" not in fake.json()["headers"]
