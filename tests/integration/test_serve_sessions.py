"""Sessions across the worker processes of the real ``vallum serve --workers 2``.

Sign-out revokes the session in every worker and on every host, and a session is refreshed once
for all of them (the test provider rotates refresh tokens and, like real providers with reuse
detection, revokes the whole grant when a spent one comes back). Every request with a copied
cookie goes over a connection of its own, so the kernel spreads them over both workers
(``SO_REUSEPORT``); the workers' own log lines show that both answered.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.login_env import served_with_provider
from tests.support.browser import Browser, LoopbackResolver
from tests.support.certs import TestCA

APP, OTHER, AUTH = "app.example.test", "app.other.test", "auth.example.test"
COPIES = 16
"""Requests per host with a copied cookie, each on its own connection: both workers answer."""


async def fresh_get(ca: TestCA, url: str, cookie: str) -> tuple[int, dict[str, Any] | None]:
    """GET ``url`` with ``cookie`` over a new connection, as a client that stole it would."""
    context = ssl.create_default_context(cadata=ca.cert_pem)
    connector = aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver(), force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=20),
    ) as session, session.get(
        url, headers={"Accept": "application/json", "Cookie": cookie}, allow_redirects=False
    ) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body if resp.status == 200 else None


async def each_fresh(ca: TestCA, urls_and_cookies: list[tuple[str, str]]) -> list[int]:
    got = await asyncio.gather(*(fresh_get(ca, url, cookie) for url, cookie in urls_and_cookies))
    return [status for status, _ in got]


def jar_header(b: Browser, url: str) -> str:
    return "; ".join(f"{k}={v}" for k, v in b.cookies(url).items())


def events(stderr: bytes, name: str) -> list[dict[str, Any]]:
    lines = []
    for raw in stderr.decode(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == name:
            lines.append(line)
    return lines


async def test_sign_out_revokes_the_session_in_every_worker_and_on_every_host(
    test_ca: TestCA, tmp_path: Path
) -> None:
    """Issue 11, finding 12: a copy of alice's cookies, taken before she signs out, is refused
    afterwards on every host by both workers."""
    async with served_with_provider(test_ca, tmp_path, "--workers", "2") as (port, _up, served):
        def url(host: str, path: str = "/") -> str:
            return f"https://{host}:{port}{path}"

        async with Browser(test_ca) as b:
            assert (await b.sign_in(url(APP, "/a"), "alice")).status == 200
            assert (await b.get(url(OTHER, "/b"))).status == 200  # handed off to another domain
            copies = {host: jar_header(b, url(host)) for host in (APP, OTHER, AUTH)}
            requests = [(url(h, f"/{i}"), copies[h]) for h in (APP, OTHER) for i in range(COPIES)]
            assert set(await each_fresh(test_ca, requests)) == {200}  # both workers know it

            leg = await b.request("POST", url(APP, "/.vallum/sign_out"),
                                  headers={"Origin": f"https://{APP}:{port}"})
            assert "/session/end" in leg.url  # through the authenticate host to the provider
            await b.confirm_logout(leg)
            await asyncio.sleep(1.2)  # the other worker reads the revocation within ~0.5 s

            assert set(await each_fresh(test_ca, requests)) == {401}
            own = await fresh_get(test_ca, url(AUTH, "/.vallum/"), copies[AUTH])
            assert own[0] == 401
    serving = {line["pid"] for line in events(served.stderr, "serving")}
    refused = {line["pid"] for line in events(served.stderr, "revoked_session_refused")}
    assert len(serving) == 2 and refused == serving, (serving, refused)


async def test_a_session_is_refreshed_once_across_workers_and_hosts(
    test_ca: TestCA, tmp_path: Path
) -> None:
    """Issue 11, finding 13: with a provider that rotates refresh tokens and revokes the grant
    when one is used twice, concurrent requests with the same session on two hosts and two
    workers all pass, twice in a row, and the session keeps refreshing afterwards."""
    ttl = {"IdToken": 32, "AccessToken": 32}  # refresh is due 30 s before: 2 s after sign-in
    async with served_with_provider(
        test_ca, tmp_path, "--workers", "2", ttl=ttl, rotate_refresh_tokens=True
    ) as (port, _up, served):
        def url(host: str, path: str = "/") -> str:
            return f"https://{host}:{port}{path}"

        async with Browser(test_ca) as b:
            assert (await b.sign_in(url(APP, "/a"), "alice")).status == 200
            assert (await b.get(url(OTHER, "/b"))).status == 200
            copies = {host: jar_header(b, url(host)) for host in (APP, OTHER)}
            requests = [(url(h, f"/{i}"), copies[h]) for i in range(COPIES // 2)
                        for h in (APP, OTHER)]
            for round_ in range(2):  # the second round: the refreshed session is due again
                await asyncio.sleep(2.3)
                statuses = await each_fresh(test_ca, requests)
                assert statuses == [200] * len(statuses), (round_, statuses)
            await asyncio.sleep(2.3)
            for host in (APP, OTHER):  # the browser's own, refreshed cookies keep working
                page = await b.get(url(host, "/later"), headers={"Accept": "application/json"})
                assert page.status == 200 and page.json()["verified"]["user"] == "alice"
    failed = [line for line in served.stderr.decode(errors="replace").splitlines()
              if "session refresh failed" in line]
    assert not failed, failed
