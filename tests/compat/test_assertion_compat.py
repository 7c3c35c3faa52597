"""Libraries nobody here wrote accept Vallum's assertion, and reject bad ones.

Pomerium's Go SDK (v0.0.9), npm ``jose`` (v6) and PyJWT's ``PyJWKClient`` each fetch our real
JWKS over real HTTPS (a test CA, the route host name mapped to 127.0.0.1) and verify tokens minted
by :class:`vallum.proxy.jwt.AssertionMinter`: a genuine token must come out with the right
identity; a tampered one, one for another audience, an expired one and one with an unknown
``kid`` must be refused.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest

from tests.compat import verifiers
from tests.compat.jwks_server import JWKS_PATHS, JWKSServer, serve_jwks
from tests.support.certs import TestCA
from vallum.core.config import Settings
from vallum.core.identity import Identity
from vallum.proxy import jwt

HOST = "app.vallum.test"
ALICE = Identity(
    user="user-alice",
    email="alice@example.com",
    name="Alice Liddell",
    groups=("admins", "staff"),
    session_id="sess-alice",
)

pytestmark = pytest.mark.parametrize("verifier", verifiers.VERIFIERS, ids=lambda v: v.name)


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    """(current signing key, previous key kept for rotation)."""
    return (jwt.private_key_pem(jwt.generate_private_key()),
            jwt.private_key_pem(jwt.generate_private_key()))


@pytest.fixture(scope="module")
def minter(keys: tuple[str, str]) -> jwt.AssertionMinter:
    return jwt.AssertionMinter(Settings(signing_key=keys, pomerium_compatibility=True))


@pytest.fixture(scope="module")
def server(
    minter: jwt.AssertionMinter, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JWKSServer]:
    verifiers.build()
    with serve_jwks(minter.jwks_json(), test_ca, HOST, tmp_path_factory.mktemp("jwks")) as srv:
        yield srv


def _check(
    verifier: verifiers.Verifier,
    server: JWKSServer,
    token: str,
    *,
    audience: str = HOST,
    issuer: str = HOST,
    jwks_path: str | None = None,
) -> verifiers.Check:
    # The Go SDK finds the JWKS itself from iss (https://<iss>/.well-known/pomerium/jwks.json),
    # as a Pomerium app does; the others are given our JWKS URL.
    if verifier.name == "gosdk" and jwks_path is None:
        url = None
    else:
        url = server.url(jwks_path or JWKS_PATHS[0])
    return verifiers.Check(
        token=token, audience=audience, issuer=issuer, jwks_url=url,
        ca_file=server.ca_file, resolve={HOST: server.addr},
    )


def _aud(claims: dict[str, object]) -> object:
    aud = claims["aud"]
    return aud[0] if isinstance(aud, list) and len(aud) == 1 else aud


def test_accepts_our_assertion_with_the_identity_intact(
    verifier: verifiers.Verifier, minter: jwt.AssertionMinter, server: JWKSServer
) -> None:
    token = minter.mint(ALICE, HOST)
    verdict = verifier.verify(_check(verifier, server, token))
    assert verdict.accepted, verdict.stderr
    got = verdict.claims
    assert got["sub"] == "user-alice"
    assert got["user"] == "user-alice"
    assert got["email"] == "alice@example.com"
    assert got["name"] == "Alice Liddell"
    assert got["groups"] == ["admins", "staff"]
    assert got["iss"] == HOST
    assert _aud(got) == HOST
    assert got["exp"] - got["iat"] == 300
    if verifier.name == "gosdk":
        # Pomerium's kid: the hex RFC 7638 thumbprint, as go-jose computes it.
        assert got["kid"] == minter.kid
        assert got["kid_thumbprint"] is True
        assert got["alg"] == "ES256"


def test_empty_groups_arrive_as_an_empty_list(
    verifier: verifiers.Verifier, minter: jwt.AssertionMinter, server: JWKSServer
) -> None:
    token = minter.mint(Identity(user="user-bob", session_id="sess-bob"), HOST)
    verdict = verifier.verify(_check(verifier, server, token))
    assert verdict.accepted, verdict.stderr
    assert verdict.claims.get("groups", []) == []
    if verifier.name != "gosdk":  # the SDK's struct drops empty fields; the others show raw JSON
        assert verdict.claims["groups"] == []


def test_accepts_a_token_signed_with_the_previous_key(
    verifier: verifiers.Verifier, keys: tuple[str, str], server: JWKSServer
) -> None:
    previous = jwt.AssertionMinter(Settings(signing_key=(keys[1],)))
    verdict = verifier.verify(_check(verifier, server, previous.mint(ALICE, HOST)))
    assert verdict.accepted, verdict.stderr


def test_accepts_uri_issuer_format(
    verifier: verifiers.Verifier, keys: tuple[str, str], server: JWKSServer
) -> None:
    uri = jwt.AssertionMinter(Settings(signing_key=keys, jwt_issuer_format="uri"))
    token = uri.mint(ALICE, HOST)
    # The Go SDK would derive "https://app.vallum.test/" (the issuer URL itself) as the JWKS
    # endpoint for a uri issuer, so apps using that format give it the JWKS URL.
    verdict = verifier.verify(
        _check(verifier, server, token, issuer=f"https://{HOST}/", jwks_path=JWKS_PATHS[1])
    )
    assert verdict.accepted, verdict.stderr
    assert verdict.claims["iss"] == f"https://{HOST}/"


def test_rejects_a_tampered_token(
    verifier: verifiers.Verifier, minter: jwt.AssertionMinter, server: JWKSServer
) -> None:
    head, body, sig = minter.mint(ALICE, HOST).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["groups"] = ["admins", "staff", "root"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    verdict = verifier.verify(_check(verifier, server, f"{head}.{forged}.{sig}"))
    assert not verdict.accepted
    assert "signature" in verdict.stderr.lower()


def test_rejects_a_token_for_another_audience(
    verifier: verifiers.Verifier, minter: jwt.AssertionMinter, server: JWKSServer
) -> None:
    token = minter.mint(ALICE, HOST)
    verdict = verifier.verify(_check(verifier, server, token, audience="other.vallum.test"))
    assert not verdict.accepted
    assert "aud" in verdict.stderr.lower()


def test_rejects_an_expired_token(
    verifier: verifiers.Verifier, minter: jwt.AssertionMinter, server: JWKSServer
) -> None:
    old = Identity(user="user-alice", session_id="sess-old")
    token = minter.mint(old, HOST, now=time.time() - 600)  # expired 5 minutes ago
    verdict = verifier.verify(_check(verifier, server, token))
    assert not verdict.accepted
    assert "exp" in verdict.stderr.lower()


UNKNOWN_KID_ERRORS = {
    "gosdk": "no json web key found with matching keyid",
    "jose": "err_jwks_no_matching_key",
    "pyjwt": "unable to find a signing key that matches",
}


def test_rejects_an_unknown_kid(verifier: verifiers.Verifier, server: JWKSServer) -> None:
    stranger = jwt.AssertionMinter(
        Settings(signing_key=(jwt.private_key_pem(jwt.generate_private_key()),))
    )
    verdict = verifier.verify(_check(verifier, server, stranger.mint(ALICE, HOST)))
    assert not verdict.accepted
    assert UNKNOWN_KID_ERRORS[verifier.name] in verdict.stderr.lower()
