"""Signing, JWKS, caching and verification of the identity assertion (vallum.proxy.jwt)."""

from __future__ import annotations

import base64
import json
import logging
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey

from vallum.core import errors
from vallum.core.config import Settings
from vallum.core.identity import Identity
from vallum.proxy import jwt

ALICE = Identity(user="user-1", email="alice@example.com", groups=("staff",), session_id="s-1")
HOST = "app.vallum.test"


def _pem() -> str:
    return jwt.private_key_pem(jwt.generate_private_key())


def _public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def key_pem() -> str:
    return _pem()


@pytest.fixture
def minter(key_pem: str) -> jwt.AssertionMinter:
    return jwt.AssertionMinter(Settings(signing_key=(key_pem,)))


def test_token_header_and_signature_verify_with_the_published_key(
    minter: jwt.AssertionMinter,
) -> None:
    token = minter.mint(ALICE, HOST)
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": minter.kid, "typ": "JWT"}
    jwks = json.loads(minter.jwks_json())
    (jwk,) = jwks["keys"]
    assert set(jwk) == {"use", "kty", "kid", "crv", "alg", "x", "y"}
    public = pyjwt.PyJWK(jwk).key
    payload = pyjwt.decode(token, public, algorithms=["ES256"], audience=HOST, issuer=HOST)
    assert payload["sub"] == "user-1"
    assert payload["exp"] - payload["iat"] == 300


def test_kid_is_the_rfc7638_thumbprint_in_hex(minter: jwt.AssertionMinter) -> None:
    (jwk,) = json.loads(minter.jwks_json())["keys"]
    # joserfc (authlib's JOSE library) computes RFC 7638 thumbprints independently of our code.
    independent = ECKey.import_key(jwk).thumbprint()
    assert jwk["kid"] == base64.urlsafe_b64decode(independent + "=" * (-len(independent) % 4)).hex()
    assert len(jwk["kid"]) == 64


def test_cached_until_shortly_before_expiry(minter: jwt.AssertionMinter) -> None:
    now = time.time()
    first = minter.mint(ALICE, HOST, now=now)
    assert minter.mint(ALICE, HOST, now=now + 100) == first
    assert minter.mint(ALICE, HOST, now=now + 300 - jwt.REFRESH_BEFORE - 1) == first
    renewed = minter.mint(ALICE, HOST, now=now + 300 - jwt.REFRESH_BEFORE + 1)
    assert renewed != first
    assert pyjwt.decode(renewed, options={"verify_signature": False})["iat"] > int(now)


def test_cache_separates_hosts_sessions_and_identity_changes(minter: jwt.AssertionMinter) -> None:
    now = time.time()
    base = minter.mint(ALICE, HOST, now=now)
    assert minter.mint(ALICE, "other.vallum.test", now=now) != base
    other_session = Identity(user="user-1", email="alice@example.com", groups=("staff",),
                             session_id="s-2")
    assert minter.mint(other_session, HOST, now=now) != base
    new_groups = Identity(user="user-1", email="alice@example.com", groups=("staff", "admins"),
                          session_id="s-1")
    token = minter.mint(new_groups, HOST, now=now)
    assert pyjwt.decode(token, options={"verify_signature": False})["groups"] == ["staff", "admins"]


def test_cache_is_bounded(key_pem: str) -> None:
    small = jwt.AssertionMinter(Settings(signing_key=(key_pem,)), cache_size=3)
    now = time.time()
    first = small.mint(Identity(user="u0", session_id="0"), HOST, now=now)
    for i in range(1, 6):
        small.mint(Identity(user=f"u{i}", session_id=str(i)), HOST, now=now)
    assert len(small._cache) == 3
    assert small.mint(Identity(user="u0", session_id="0"), HOST, now=now) != first


def test_identity_headers_plain_and_pomerium_compatible(key_pem: str) -> None:
    plain = jwt.AssertionMinter(
        Settings(signing_key=(key_pem,), jwt_claims_headers=(("x-pomerium-claim-email", "email"),))
    )
    headers = plain.identity_headers(ALICE, HOST)
    assert [name for name, _ in headers] == ["X-Vallum-Jwt-Assertion", "X-Vallum-Claim-Email"]
    assert headers[1][1] == "alice@example.com"
    compat = jwt.AssertionMinter(
        Settings(signing_key=(key_pem,), pomerium_compatibility=True,
                 jwt_claims_headers=(("x-pomerium-claim-email", "email"),))
    )
    headers = compat.identity_headers(ALICE, HOST)
    assert [name for name, _ in headers] == [
        "X-Vallum-Jwt-Assertion", "X-Pomerium-Jwt-Assertion",
        "X-Vallum-Claim-Email", "X-Pomerium-Claim-Email",
    ]
    assert headers[0][1] == headers[1][1]


def test_rotation_first_key_signs_all_are_published() -> None:
    old, new = _pem(), _pem()
    minter = jwt.AssertionMinter(Settings(signing_key=(new, old)))
    kids = [k["kid"] for k in json.loads(minter.jwks_json())["keys"]]
    assert len(kids) == 2
    assert kids[0] == minter.kid
    assert pyjwt.get_unverified_header(minter.mint(ALICE, HOST))["kid"] == kids[0]
    # A token signed earlier with the old key still verifies after rotation.
    before = jwt.AssertionMinter(Settings(signing_key=(old,))).mint(ALICE, HOST)
    assert minter.verify(before, HOST)["sub"] == "user-1"


def test_several_pem_blocks_in_one_entry_and_public_keys_after_the_first() -> None:
    signer, other = _pem(), _pem()
    minter = jwt.AssertionMinter(Settings(signing_key=(signer + "\n" + _public_pem(other),)))
    assert len(minter.keys) == 2
    assert minter.keys[1].private is None


def test_base64_pem_is_accepted_like_pomeriums_signing_key(key_pem: str) -> None:
    encoded = base64.b64encode(key_pem.encode()).decode()
    assert jwt.AssertionMinter(Settings(signing_key=(encoded,))).kid == jwt.AssertionMinter(
        Settings(signing_key=(key_pem,))
    ).kid


def test_missing_key_is_an_error_outside_dev_mode() -> None:
    with pytest.raises(errors.ConfigError, match="signing_key: required"):
        jwt.AssertionMinter(Settings())


def test_dev_mode_generates_a_key_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vallum.jwt"):
        minter = jwt.AssertionMinter(Settings(dev_mode=True))
    assert "generated a temporary signing key" in caplog.text
    assert minter.kid in caplog.text
    assert minter.verify(minter.mint(ALICE, HOST), HOST)["user"] == "user-1"


def test_public_key_first_is_an_error() -> None:
    with pytest.raises(errors.ConfigError, match=r"signing_key\[0\].*private key"):
        jwt.AssertionMinter(Settings(signing_key=(_public_pem(_pem()),)))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("not a key", r"signing_key\[1\]: no PEM key found"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
         r"signing_key\[1\]: cannot read private key"),
        ("rsa", r"signing_key\[1\]: RSAPublicKey keys are not supported"),
        ("p384", r"signing_key\[1\]: secp384r1 keys are not supported"),
    ],
)
def test_bad_keys_name_their_place(entry: str, message: str) -> None:
    if entry == "rsa":
        entry = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    elif entry == "p384":
        entry = jwt.private_key_pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(errors.ConfigError, match=message):
        jwt.AssertionMinter(Settings(signing_key=(_pem(), entry)))


def test_verify_accepts_ours_and_checks_audience(minter: jwt.AssertionMinter) -> None:
    token = minter.mint(ALICE, HOST)
    assert minter.verify(token, HOST)["email"] == "alice@example.com"
    assert minter.verify(token, [HOST, "x.test"])["sid"] == "s-1"
    assert minter.verify(token, None)["aud"] == HOST
    with pytest.raises(errors.IdentityError, match="audience"):
        minter.verify(token, "other.vallum.test")


def test_verify_rejects_tampered_expired_foreign_and_alg_none(
    minter: jwt.AssertionMinter, key_pem: str
) -> None:
    token = minter.mint(ALICE, HOST)
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["user"] = "admin"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(errors.IdentityError, match="Signature verification failed"):
        minter.verify(f"{head}.{forged_body}.{sig}", HOST)

    expired = minter.mint(Identity(user="old", session_id="old"), HOST, now=time.time() - 301)
    with pytest.raises(errors.IdentityError, match="expired"):
        minter.verify(expired, HOST)

    stranger = jwt.AssertionMinter(Settings(signing_key=(_pem(),))).mint(ALICE, HOST)
    with pytest.raises(errors.IdentityError, match="unknown key"):
        minter.verify(stranger, HOST)

    # Same kid as ours but signed by another key: the signature check must catch it.
    other = serialization.load_pem_private_key(_pem().encode(), password=None)
    spoof = pyjwt.encode(claims, other, algorithm="ES256",  # type: ignore[arg-type]
                         headers={"kid": minter.kid})
    with pytest.raises(errors.IdentityError, match="Signature verification failed"):
        minter.verify(spoof, HOST)

    unsigned = pyjwt.encode(claims, "", algorithm="none", headers={"kid": minter.kid})
    with pytest.raises(errors.IdentityError, match="not ES256"):
        minter.verify(unsigned, HOST)

    with pytest.raises(errors.IdentityError, match="malformed"):
        minter.verify("garbage", HOST)


def test_verify_rejects_issuer_that_does_not_match_audience(minter: jwt.AssertionMinter) -> None:
    own = serialization.load_pem_private_key(
        minter_pem(minter).encode(), password=None
    )
    now = int(time.time())
    body = {"iss": "evil.test", "aud": HOST, "iat": now, "exp": now + 300, "sub": "x"}
    token = pyjwt.encode(body, own, algorithm="ES256",  # type: ignore[arg-type]
                         headers={"kid": minter.kid})
    with pytest.raises(errors.IdentityError, match="issuer"):
        minter.verify(token, HOST)
    body["iss"] = f"https://{HOST}/"
    token = pyjwt.encode(body, own, algorithm="ES256",  # type: ignore[arg-type]
                         headers={"kid": minter.kid})
    assert minter.verify(token, HOST)["sub"] == "x"


def minter_pem(minter: jwt.AssertionMinter) -> str:
    private = minter.keys[0].private
    assert private is not None
    return jwt.private_key_pem(private)


def test_original_user_headers_carry_a_verified_assertion(key_pem: str) -> None:
    minter = jwt.AssertionMinter(Settings(signing_key=(key_pem,), pomerium_compatibility=True))
    user_token = minter.mint(ALICE, "app.vallum.test")
    service_token = minter.mint(Identity(user="svc", session_id="svc"), "app.vallum.test")
    # The assertion the upstream forwarded becomes -For.
    assert minter.original_user_headers({"x-pomerium-jwt-assertion": user_token}) == [
        ("X-Vallum-Jwt-Assertion-For", user_token),
        ("X-Pomerium-Jwt-Assertion-For", user_token),
    ]
    # An incoming -For wins over an incoming assertion (Pomerium's order).
    got = minter.original_user_headers(
        {"x-vallum-jwt-assertion": service_token, "x-vallum-jwt-assertion-for": user_token}
    )
    assert got[0] == ("X-Vallum-Jwt-Assertion-For", user_token)
    # Nothing incoming, nothing carried.
    assert minter.original_user_headers({}) == []


def test_original_user_headers_never_carry_a_forgery(key_pem: str) -> None:
    minter = jwt.AssertionMinter(Settings(signing_key=(key_pem,)))
    foreign = jwt.AssertionMinter(Settings(signing_key=(_pem(),))).mint(ALICE, HOST)
    good = minter.mint(ALICE, HOST)
    assert minter.original_user_headers({"x-vallum-jwt-assertion-for": foreign}) == []
    assert minter.original_user_headers({"x-pomerium-jwt-assertion": "x.y.z"}) == []
    # A forged -For does not hide a genuine assertion behind it.
    assert minter.original_user_headers(
        {"x-vallum-jwt-assertion-for": foreign, "x-vallum-jwt-assertion": good}
    ) == [("X-Vallum-Jwt-Assertion-For", good)]


def test_original_user_context_is_remembered_only_until_it_expires(
    key_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    minter = jwt.AssertionMinter(Settings(signing_key=(key_pem,)))
    token = minter.mint(ALICE, HOST)
    headers = {"x-vallum-jwt-assertion": token}
    assert minter.original_user_headers(headers) == [("X-Vallum-Jwt-Assertion-For", token)]
    assert token in minter._verified
    assert minter.original_user_headers(headers) == [("X-Vallum-Jwt-Assertion-For", token)]
    later = time.time() + 400
    monkeypatch.setattr(time, "time", lambda: later)
    assert minter.original_user_headers(headers) == []


def test_same_identity_object_takes_the_fast_path_and_still_expires(
    minter: jwt.AssertionMinter,
) -> None:
    who = Identity(user="fast", session_id="fast-1", groups=tuple(f"g{i}" for i in range(300)))
    now = time.time()
    first = minter.identity_headers(who, HOST, now=now)
    again = minter.identity_headers(who, HOST, now=now + 10)
    assert again == first
    again.append(("X-Junk", "1"))  # callers get their own list
    assert minter.identity_headers(who, HOST, now=now + 20) == first
    later = minter.identity_headers(who, HOST, now=now + 300)
    assert later[0][1] != first[0][1]
    assert pyjwt.decode(later[0][1], options={"verify_signature": False})["iat"] == int(now + 300)


def test_jwks_paths_follow_pomerium_compatibility() -> None:
    assert jwt.jwks_paths(Settings()) == ("/.well-known/vallum/jwks.json",)
    assert jwt.jwks_paths(Settings(pomerium_compatibility=True)) == (
        "/.well-known/vallum/jwks.json", "/.well-known/pomerium/jwks.json",
    )
