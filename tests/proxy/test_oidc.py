"""The OIDC client against the real test provider (npm oidc-provider over HTTPS on 127.0.0.1),
and its JWKS cache against a small key server of our own."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import oidc as oidc_support
from tests.support.browser import Browser, parse_forms
from tests.support.certs import TestCA
from vallum.core import config, errors
from vallum.proxy import oidc

REDIRECT = "https://auth.example.test/.vallum/callback"


@pytest.fixture
async def provider(test_ca: TestCA, tmp_path: Path) -> AsyncIterator[oidc_support.Provider]:
    async with oidc_support.start_provider(
        test_ca, tmp_path, redirect_uris=[REDIRECT], ttl={"IdToken": 120, "AccessToken": 120}
    ) as running:
        yield running


@pytest.fixture
async def client(provider: oidc_support.Provider) -> AsyncIterator[oidc.OIDCClient]:
    c = oidc.OIDCClient(config.Settings(**provider.settings()))
    yield c
    await c.close()


async def _code_for(
    ca: TestCA, start: oidc.LoginStart, user: str
) -> dict[str, str]:
    """Log in on the provider's forms; return the query of the redirect to our callback."""
    async with Browser(ca) as browser:
        page = await browser.get(start.url)
        for _ in range(3):
            forms = parse_forms(page.text)
            login = next((f for f in forms if "login" in f.fields), None)
            form = login or next(f for f in forms if f.fields.get("prompt") == "consent")
            values = {"login": user, "password": "x"} if login else {}
            action = urllib.parse.urljoin(page.url, form.action)
            page = await browser.request("POST", action, data={**form.fields, **values},
                                         follow=False)
            while page.status in (302, 303) and not page.headers["Location"].startswith(REDIRECT):
                page = await browser.get(urllib.parse.urljoin(action, page.headers["Location"]),
                                         follow=False)
            if page.status in (302, 303):
                location = page.headers["Location"]
                return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    raise AssertionError("never reached the callback")


async def test_discovery_reads_the_provider(client: oidc.OIDCClient,
                                            provider: oidc_support.Provider) -> None:
    meta = await client.metadata()
    assert meta.issuer == provider.issuer
    assert meta.end_session_endpoint is not None


async def test_authorization_url_has_pkce_state_and_nonce(client: oidc.OIDCClient) -> None:
    start = await client.begin(REDIRECT)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start.url).query))
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == start.state and query["nonce"] == start.nonce
    assert query["redirect_uri"] == REDIRECT and query["response_type"] == "code"
    assert "code_verifier" not in query


async def test_code_flow_login_refresh_and_end_session(
    client: oidc.OIDCClient, test_ca: TestCA
) -> None:
    start = await client.begin(REDIRECT)
    query = await _code_for(test_ca, start, "alice")
    assert query["state"] == start.state
    tokens = await client.exchange(query["code"], REDIRECT, start.code_verifier, start.nonce)
    assert tokens.claims["sub"] == "alice"
    assert tokens.claims["email"] == "alice@example.test"
    assert tokens.claims["groups"] == ["admins", "staff"]
    assert tokens.refresh_token
    assert time.time() < tokens.expires_at <= time.time() + 121
    ident = oidc.identity_from_claims(tokens.claims, client.settings, session_id="s",
                                      expires_at=tokens.expires_at)
    assert ident.groups == ("admins", "staff") and ident.name == "Alice Admin"
    assert "nonce" not in ident.claims

    refreshed = await client.refresh(tokens.refresh_token)
    assert refreshed.claims["sub"] == "alice"
    assert refreshed.access_token != tokens.access_token  # a new grant, not a replay

    url = await client.end_session_url("https://app.example.test/", tokens.id_token)
    assert url is not None and "post_logout_redirect_uri=" in url

    assert await client.revoke_refresh_token(refreshed.refresh_token)  # RFC 7009, at sign-out
    with pytest.raises(errors.IdentityError, match="invalid_grant"):
        await client.refresh(refreshed.refresh_token)


async def test_wrong_nonce_or_verifier_is_refused(
    client: oidc.OIDCClient, test_ca: TestCA
) -> None:
    start = await client.begin(REDIRECT)
    query = await _code_for(test_ca, start, "bob")
    with pytest.raises(errors.IdentityError, match="nonce"):
        await client.exchange(query["code"], REDIRECT, start.code_verifier, "other-nonce")
    start = await client.begin(REDIRECT)
    query = await _code_for(test_ca, start, "bob")
    with pytest.raises(errors.IdentityError, match="HTTP 400"):
        await client.exchange(query["code"], REDIRECT, "x" * 50, start.nonce)


async def test_issuer_mismatch_is_refused(provider: oidc_support.Provider) -> None:
    settings = {**provider.settings(), "idp_provider_url": f"https://localhost:{provider.port}"}
    c = oidc.OIDCClient(config.Settings(**settings))
    try:
        with pytest.raises(errors.IdentityError, match="issuer"):
            await c.metadata()
    finally:
        await c.close()


async def test_untrusted_provider_certificate_is_refused(provider: oidc_support.Provider) -> None:
    settings = {**provider.settings(), "certificate_authority_pem": TestCA.create().cert_pem}
    c = oidc.OIDCClient(config.Settings(**settings))
    try:
        with pytest.raises(errors.IdentityError, match="discovery"):
            await c.metadata()
    finally:
        await c.close()


async def test_authorization_response_issuer_rfc9207(
    client: oidc.OIDCClient, provider: oidc_support.Provider, key_server: KeyServer,
    test_ca: TestCA,
) -> None:
    assert (await client.metadata()).authorization_response_iss_parameter_supported
    await client.check_response_issuer(provider.issuer)
    for wrong in (None, "https://evil.example", provider.issuer + "/"):
        with pytest.raises(errors.IdentityError, match="RFC 9207"):
            await client.check_response_issuer(wrong)
    quiet = oidc.OIDCClient(config.Settings(  # a provider that does not advertise it
        idp_provider_url=key_server.issuer, idp_client_id="vallum",
        certificate_authority_pem=test_ca.cert_pem,
    ))
    try:
        await quiet.check_response_issuer(None)
        with pytest.raises(errors.IdentityError, match="RFC 9207"):
            await quiet.check_response_issuer("https://evil.example")
    finally:
        await quiet.close()


async def test_id_token_for_another_client_is_refused(
    key_server: KeyServer, test_ca: TestCA
) -> None:
    c = oidc.OIDCClient(config.Settings(
        idp_provider_url=key_server.issuer, idp_client_id="vallum",
        certificate_authority_pem=test_ca.cert_pem,
    ))
    try:
        assert (await c.verify_id_token(key_server.token("k1", azp="vallum"), nonce=None))
        assert (await c.verify_id_token(key_server.token("k1"), nonce=None))
        with pytest.raises(errors.IdentityError, match="azp"):
            await c.verify_id_token(key_server.token("k1", azp="another-client"), nonce=None)
        with pytest.raises(errors.IdentityError, match="azp"):
            await c.verify_id_token(key_server.token("k1", aud=["vallum", "x"]), nonce=None)
        several = key_server.token("k1", aud=["vallum", "x"], azp="vallum")
        assert (await c.verify_id_token(several, nonce=None))["sub"] == "svc"
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("verified", "allowed", "email"),
    [
        (True, False, "a@corp.test"), ("true", False, "a@corp.test"), (None, False, "a@corp.test"),
        (False, False, ""), ("false", False, ""), ("False", False, ""),
        (False, True, "a@corp.test"), ("false", True, "a@corp.test"),
    ],
)
def test_unverified_email_is_no_email(verified: object, allowed: bool, email: str) -> None:
    claims: dict[str, Any] = {"sub": "u1", "email": "a@corp.test"}
    if verified is not None:
        claims["email_verified"] = verified
    settings = config.Settings(idp_allow_unverified_email=allowed)
    who = oidc.identity_from_claims(claims, settings, session_id="s", expires_at=0.0)
    assert who.email == email
    assert who.claims.get("email", "") == email  # neither claim/email nor the assertion see it


def test_groups_claim_shapes() -> None:
    assert oidc.groups_from_claims({"groups": ["a", "b"]}, "groups") == ("a", "b")
    assert oidc.groups_from_claims({"groups": "a"}, "groups") == ("a",)
    assert oidc.groups_from_claims({}, "groups") == ()
    assert oidc.groups_from_claims({"realm": {"roles": ["r"]}}, "realm.roles") == ("r",)


def test_missing_provider_settings_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="idp_provider_url"):
        oidc.OIDCClient(config.Settings())


# --- JWKS cache: refreshed on an unknown kid, at most every few seconds -------------------------


class KeyServer:
    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {
            "k1": ec.generate_private_key(ec.SECP256R1())
        }
        self.jwks_hits = 0
        self.issuer = ""

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": out}

    def token(self, kid: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": "svc", "aud": "vallum", "iat": now, "exp": now + 60,
                   **claims}
        return jwt.encode(payload, self.keys[kid], algorithm="ES256", headers={"kid": kid})


@pytest.fixture
async def key_server(test_ca: TestCA, tmp_path: Path, port: int) -> AsyncIterator[KeyServer]:
    import ssl

    ks = KeyServer()
    ks.issuer = f"https://127.0.0.1:{port}"

    async def discovery(_: web.Request) -> web.Response:
        return web.json_response({
            "issuer": ks.issuer, "authorization_endpoint": ks.issuer + "/auth",
            "token_endpoint": ks.issuer + "/token", "jwks_uri": ks.issuer + "/jwks",
        })

    async def jwks(_: web.Request) -> web.Response:
        ks.jwks_hits += 1
        return web.json_response(ks.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*test_ca.issue("127.0.0.1", sans=["127.0.0.1"]).write(tmp_path, "ks"))
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx)
    await site.start()
    yield ks
    await runner.cleanup()


async def test_jwks_refetched_for_unknown_kid_but_not_too_often(
    key_server: KeyServer, test_ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = oidc.OIDCClient(config.Settings(
        idp_provider_url=key_server.issuer, idp_client_id="vallum",
        certificate_authority_pem=test_ca.cert_pem,
    ))
    try:
        assert (await c.verify_bearer(key_server.token("k1")))["sub"] == "svc"
        assert (await c.verify_bearer(key_server.token("k1")))["sub"] == "svc"
        assert key_server.jwks_hits == 1
        key_server.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
        monkeypatch.setattr(oidc, "JWKS_MIN_REFETCH", 0.0)
        assert (await c.verify_bearer(key_server.token("k2")))["sub"] == "svc"
        assert key_server.jwks_hits == 2
        monkeypatch.setattr(oidc, "JWKS_MIN_REFETCH", 60.0)
        key_server.keys["k3"] = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(errors.IdentityError, match="unknown key id"):
            await c.verify_bearer(key_server.token("k3"))
        assert key_server.jwks_hits == 2  # an unknown kid cannot hammer the provider
        with pytest.raises(errors.IdentityError, match="Audience"):
            await c.verify_bearer(key_server.token("k1", aud="someone-else"))
        with pytest.raises(errors.IdentityError, match="expired"):
            await c.verify_bearer(key_server.token("k1", exp=int(time.time()) - 120))
        with pytest.raises(errors.IdentityError, match="issuer"):
            await c.verify_bearer(key_server.token("k1", iss="https://evil.example"))
        forged = key_server.token("k1")
        key_server.keys["k1"] = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(errors.IdentityError, match="Signature"):
            await c.verify_bearer(key_server.token("k1"))
        assert (await c.verify_bearer(forged))["sub"] == "svc"
    finally:
        await c.close()
