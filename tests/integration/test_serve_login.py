"""Sign-in through the real ``vallum serve`` process: the CLI wires the identity gate.

A YAML config file (the user's form, no Python objects) points the child process at the test
OpenID provider; a scripted browser signs in as alice; the upstream verifies the identity
assertion with PyJWT against the JWKS it fetches over HTTPS from the route host, through Vallum.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.login_env import served_with_provider
from tests.support.browser import Browser
from tests.support.certs import TestCA


async def test_sign_in_through_vallum_serve_reaches_an_upstream_that_verifies_it(
    test_ca: TestCA, tmp_path: Path
) -> None:
    async with served_with_provider(test_ca, tmp_path) as (port, up, served):
        url = f"https://app.example.test:{port}/hello?x=1"
        async with Browser(test_ca) as anonymous:
            page = await anonymous.get(url, headers={"Accept": "application/json"})
            assert page.status == 401, page.text  # an API client is not redirected
            public = await anonymous.get(f"https://public.example.test:{port}/p")
            assert public.status == 200 and public.json()["verified"] is None
        async with Browser(test_ca) as b:
            page = await b.sign_in(url, "alice")
            assert page.status == 200, page.text
            assert page.url == url
            seen = page.json()
            assert seen["error"] is None, seen["error"]
            claims = seen["verified"]
            assert claims["sub"] == "alice" and claims["email"] == "alice@example.test"
            assert claims["aud"] == "app.example.test"
            assert up.jwks_fetches >= 1  # fetched over HTTPS from the route host
            admin = await b.get(f"https://admin.example.test:{port}/")
            assert admin.status == 200 and admin.json()["verified"]["sub"] == "alice"
        async with Browser(test_ca) as bob:
            denied = await bob.sign_in(f"https://admin.example.test:{port}/", "bob")
            assert denied.status == 403, denied.text
    assert b"alice" in served.stdout  # the access log names the user
