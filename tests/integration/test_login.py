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

from tests.integration.login_env import World, world
from tests.support import oidc as oidc_support
from tests.support.browser import Browser, parse_forms
from tests.support.certs import TestCA
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


async def test_sign_out_clears_sessions_and_ends_the_provider_session(env: World) -> None:
    async with Browser(env.ca) as b:
        await b.sign_in(env.url("app.example.test"), "alice")
        page = await b.get(env.url("app.example.test", "/.vallum/sign_out"))
        assert any("/.vallum/sign_out" in u and "auth.example.test" in u for _, u in page.history)
        assert page.url.startswith(env.provider.issuer + "/session/end")
        done = await b.confirm_logout(page)
        assert done.url.startswith(env.url("app.example.test", "/")) or done.status == 200
        assert "_vallum" not in b.cookies(env.url("app.example.test"))
        assert "_vallum" not in b.cookies(env.url("auth.example.test"))
        again = await b.get(env.url("app.example.test", "/"))
        assert any("login" in f.fields for f in parse_forms(again.text)), "provider forgot us"


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
