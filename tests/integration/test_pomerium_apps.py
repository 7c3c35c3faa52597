"""An app that verifies Pomerium's assertion today accepts the one ``vallum serve`` forwards.

End to end, with libraries nobody here wrote: a user signs in through the real ``vallum serve``
process (``pomerium_compatibility: true``); the token the upstream received in
``X-Pomerium-Jwt-Assertion`` is handed to Pomerium's own Go SDK (which finds the JWKS from the
token's ``iss`` at ``https://<iss>/.well-known/pomerium/jwks.json``, served by Vallum on the route
host), to npm ``jose`` and to PyJWT, each fetching the JWKS over HTTPS from Vallum.
"""

from __future__ import annotations

from pathlib import Path

from tests.compat import verifiers
from tests.integration.test_serve_login import served_with_provider
from tests.support.browser import Browser
from tests.support.certs import TestCA

HOST = "app.example.test"


async def test_pomerium_sdks_accept_the_assertion_vallum_forwards(
    test_ca: TestCA, tmp_path: Path
) -> None:
    async with served_with_provider(
        test_ca, tmp_path, pomerium_compatibility=True, jwt_claims_headers=["email"]
    ) as (port, _up, _served), Browser(test_ca) as browser:
        page = await browser.sign_in(f"https://{HOST}:{port}/app", "alice")
        assert page.status == 200, page.text
        headers = page.json()["headers"]
        token = headers["x-pomerium-jwt-assertion"]
        assert headers["x-vallum-jwt-assertion"] == token
        assert headers["x-pomerium-claim-email"] == "alice@example.test"

        ca_file = test_ca.write(tmp_path, "apps-ca")
        jwks_url = f"https://{HOST}:{port}/.well-known/pomerium/jwks.json"
        for verifier in verifiers.VERIFIERS:
            check = verifiers.Check(
                token=token, audience=HOST, issuer=HOST, ca_file=ca_file,
                # The Go SDK derives the JWKS URL from `iss` (no port): map the host to ours.
                jwks_url=None if verifier.name == "gosdk" else jwks_url,
                resolve={HOST: f"127.0.0.1:{port}"},
            )
            verdict = verifiers.Verifier(verifier.name).verify(check)
            assert verdict.accepted, f"{verifier.name}: {verdict.stderr}"
            claims = verdict.claims
            assert claims.get("email") == "alice@example.test", (verifier.name, claims)

            forged = verifiers.Check(
                token=token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
                audience=HOST, issuer=HOST, ca_file=ca_file,
                jwks_url=None if verifier.name == "gosdk" else jwks_url,
                resolve={HOST: f"127.0.0.1:{port}"},
            )
            assert not verifiers.Verifier(verifier.name).verify(forged).accepted, (
                verifier.name
            )
