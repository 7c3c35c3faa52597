"""npm jose with ``createLocalJWKSet``: an app that ships our JWKS instead of fetching it."""

from __future__ import annotations

from pathlib import Path

from tests.compat import verifiers
from vallum.core.config import Settings
from vallum.core.identity import Identity
from vallum.proxy import jwt

HOST = "app.vallum.test"


def test_local_jwks_accepts_ours_and_refuses_another_audience(tmp_path: Path) -> None:
    minter = jwt.AssertionMinter(
        Settings(signing_key=(jwt.private_key_pem(jwt.generate_private_key()),),
                 jwt_issuer_format="uri")
    )
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(minter.jwks_json())
    token = minter.mint(Identity(user="u-1", email="u@example.com", session_id="s"), HOST)
    jose = verifiers.Verifier("jose")
    good = jose.verify(verifiers.Check(token=token, audience=HOST, issuer=f"https://{HOST}/",
                                       jwks_file=jwks))
    assert good.accepted, good.stderr
    assert good.claims["email"] == "u@example.com"
    bad = jose.verify(verifiers.Check(token=token, audience="x.vallum.test", jwks_file=jwks))
    assert not bad.accepted
    assert "aud" in bad.stderr
