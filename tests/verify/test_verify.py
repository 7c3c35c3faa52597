"""``vallum.verify.verify`` and ``Verifier``: every acceptance case, against tokens minted by
Vallum's own minter (valid) and forged by hand (invalid)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

import vallum.verify as api
from tests.verify import world
from vallum.proxy import jwt as vjwt

HOST = world.HOST


@pytest.fixture(scope="module")
def signer() -> vjwt.AssertionMinter:
    return world.minter()


@pytest.fixture(scope="module")
def document(signer: vjwt.AssertionMinter) -> dict[str, Any]:
    return world.jwks(signer)


def reason(token: str, document: dict[str, Any], audience: str = HOST, **kw: Any) -> str:
    with pytest.raises(api.VerificationError) as caught:
        api.verify(token, document, audience, **kw)
    return caught.value.reason


def test_an_assertion_minted_by_vallum_verifies_and_gives_its_claims(
    signer: vjwt.AssertionMinter, document: dict[str, Any]
) -> None:
    got = api.verify(world.mint(signer), document, HOST)
    assert got["sub"] == "alice" and got["email"] == "alice@example.test"
    assert got["aud"] == HOST and got["iss"] == HOST and got["groups"] == ["staff"]


def test_the_uri_issuer_format_verifies_with_the_default_issuer(
    document: dict[str, Any],
) -> None:
    uri = world.minter(jwt_issuer_format="uri")
    got = api.verify(world.mint(uri), world.jwks(uri), HOST)
    assert got["iss"] == f"https://{HOST}/"
    # ... but not when the app names the other issuer explicitly
    assert reason(world.mint(uri), world.jwks(uri), issuer=HOST) == "wrong issuer"


def test_expired(signer: vjwt.AssertionMinter, document: dict[str, Any]) -> None:
    old = world.mint(signer, now=time.time() - 300 - api.DEFAULT_LEEWAY - 5)
    assert reason(old, document) == "assertion expired"
    # inside the leeway it still verifies (clock skew)
    recent = world.mint(signer, now=time.time() - 300 - api.DEFAULT_LEEWAY + 5)
    assert api.verify(recent, document, HOST)["sub"] == "alice"


def test_not_yet_valid_by_nbf_or_iat(
    signer: vjwt.AssertionMinter, document: dict[str, Any]
) -> None:
    later = int(time.time()) + 120
    assert reason(world.sign(signer, world.claims(nbf=later)), document) == (
        "assertion not yet valid"
    )
    future = world.mint(signer, now=time.time() + 120)  # Vallum's own token, iat in the future
    assert reason(future, document) == "assertion not yet valid"
    skewed = world.sign(signer, world.claims(nbf=int(time.time()) + 5))
    assert api.verify(skewed, document, HOST)["sub"] == "alice"


def test_exp_is_required_and_must_be_a_number(
    signer: vjwt.AssertionMinter, document: dict[str, Any]
) -> None:
    assert reason(world.sign(signer, world.claims(exp=None)), document) == "malformed assertion"
    assert reason(world.sign(signer, world.claims(exp="9999999999")), document) == (
        "malformed assertion"
    )
    assert reason(world.sign(signer, world.claims(exp=True)), document) == "malformed assertion"


def test_wrong_audience(signer: vjwt.AssertionMinter, document: dict[str, Any]) -> None:
    other = world.mint(signer, host="other.example.test")
    assert reason(other, document) == "wrong audience"
    assert reason(world.sign(signer, world.claims(aud=None)), document) == "wrong audience"


def test_wrong_issuer(signer: vjwt.AssertionMinter, document: dict[str, Any]) -> None:
    assert reason(world.sign(signer, world.claims(iss="evil.example")), document) == (
        "wrong issuer"
    )
    assert reason(world.sign(signer, world.claims(iss=None)), document) == "wrong issuer"
    assert reason(world.mint(signer), document, issuer="https://issuer.example/") == (
        "wrong issuer"
    )


def test_unknown_key(document: dict[str, Any]) -> None:
    stranger = world.minter()  # a real Vallum key the JWKS does not publish
    assert reason(world.mint(stranger), document) == "unknown key"


def test_a_known_kid_with_another_key_s_signature(
    signer: vjwt.AssertionMinter, document: dict[str, Any]
) -> None:
    stranger = world.minter()
    forged = world.sign(stranger, world.claims(), kid=signer.kid)
    assert reason(forged, document) == "invalid signature"
    token = world.mint(signer)
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert reason(tampered, document) == "invalid signature"


def test_alg_none_is_refused(signer: vjwt.AssertionMinter, document: dict[str, Any]) -> None:
    assert reason(world.unsigned(world.claims(), signer.kid), document) == (
        "unsupported algorithm"
    )


def test_hs256_signed_with_the_public_key_is_refused(
    signer: vjwt.AssertionMinter, document: dict[str, Any]
) -> None:
    forged = world.hs256_with_public_key(signer, world.claims())
    assert reason(forged, document) == "unsupported algorithm"


@pytest.mark.parametrize("member", ["jku", "x5u", "jwk", "x5c", "crit"])
def test_header_members_naming_keys_or_extensions_are_refused(
    signer: vjwt.AssertionMinter, document: dict[str, Any], member: str
) -> None:
    value: Any = {"jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/c.pem",
                  "jwk": {"kty": "EC"}, "x5c": ["MIIB"], "crit": ["exp"]}[member]
    forged = world.sign(signer, world.claims(), **{member: value})
    assert reason(forged, document) == "unsupported token header"


def test_missing_empty_oversized_and_malformed_tokens(document: dict[str, Any]) -> None:
    assert reason("", document) == "missing assertion"
    assert reason("a" * (64 * 1024 + 1), document) == "assertion too large"
    assert reason("not a token", document) == "malformed assertion"
    assert reason("a.b", document) == "malformed assertion"
    assert reason("e30.e30.e30", document) == "unsupported algorithm"  # header {}


@pytest.mark.parametrize("kid", ["../../etc/passwd", "https://evil.example/jwks.json", "x" * 300])
def test_a_kid_that_is_a_path_or_url_is_only_a_name_that_is_not_found(
    signer: vjwt.AssertionMinter, document: dict[str, Any], kid: str
) -> None:
    assert reason(world.sign(signer, world.claims(), kid=kid), document) == "unknown key"


def test_the_jwks_keeps_only_es256_p256_signature_keys(signer: vjwt.AssertionMinter) -> None:
    good = world.jwks(signer)["keys"][0]
    entries = [
        {**good, "alg": "RS256"}, {**good, "use": "enc"}, {**good, "crv": "P-384"},
        {**good, "x": good["y"]},  # not on the curve
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
    ]
    assert len(api.KeySet.from_jwks({"keys": entries})) == 0
    assert list(api.KeySet.from_jwks({"keys": [*entries, good]})) == [signer.kid]
    with pytest.raises(ValueError, match="no 'keys' list"):
        api.KeySet.from_jwks({"kty": "EC"})


def test_single_token_refuses_two_header_fields(signer: vjwt.AssertionMinter) -> None:
    token = world.mint(signer)
    with pytest.raises(api.VerificationError, match="more than one assertion"):
        api.check.single_token([token, token])
    with pytest.raises(api.VerificationError, match="missing assertion"):
        api.check.single_token([])
    assert api.check.single_token([f" {token}\t"]) == token
    with pytest.raises(api.VerificationError, match="malformed"):
        api.check.single_token([f"Bearer {token}"])


async def test_verifier_with_a_fixed_key_set(signer: vjwt.AssertionMinter) -> None:
    verifier = api.Verifier(api.KeySet.from_jwks(world.jwks(signer)), HOST)
    assert (await verifier.verify(world.mint(signer)))["sub"] == "alice"
    with pytest.raises(api.VerificationError, match="wrong audience"):
        await verifier.verify(world.mint(signer, host="other.example.test"))


def test_importing_it_loads_no_other_part_of_vallum() -> None:
    code = ("import json, sys, vallum.verify, vallum.verify.middleware; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('vallum'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    loaded = json.loads(done.stdout)
    assert loaded == ["vallum", "vallum.verify", "vallum.verify.check", "vallum.verify.keys",
                      "vallum.verify.middleware"]
