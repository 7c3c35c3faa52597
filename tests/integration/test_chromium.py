"""One real browser: headless Chromium signs in through Vallum and the test provider.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with aiohttp. Test host names
map to 127.0.0.1 with ``--host-resolver-rules``; the two server certificates (Vallum's and the
provider's) are trusted by their public-key pins (``--ignore-certificate-errors-spki-list``), so
no other certificate error is ignored and no NSS database is touched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.login_env import world
from tests.support.certs import TestCA
from tests.support.net import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (scripts/bootstrap installs them as root)",
)


class WebDriver:
    """Just enough of the W3C WebDriver protocol for a sign-in."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.session = ""

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base}/session/{self.session}{path}" if self.session else self.base + path
        async with self.http.request(method, url, json=body) as resp:
            data = await resp.json()
        value = data.get("value")
        if resp.status >= 400:
            raise AssertionError(f"webdriver {method} {path}: {resp.status} {value}")
        return value

    async def start(self, args: list[str]) -> None:
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "acceptInsecureCerts": False,
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}}
        value = await self.call("POST", "/session", caps)
        self.session = value["sessionId"]

    async def find(self, css: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            url = f"{self.base}/session/{self.session}/element"
            async with self.http.post(url, json={"using": "css selector", "value": css}) as resp:
                data = await resp.json()
            if resp.status == 200:
                return str(next(iter(data["value"].values())))
            if time.monotonic() > deadline:
                page = await self.call("GET", "/url")
                raise AssertionError(f"no {css!r} on {page}")
            await asyncio.sleep(0.2)

    async def wait_gone(self, css: str, timeout: float = 15.0) -> None:
        """Until no element matches ``css``: the page a click left has been replaced (finding the
        next page's button before that can return the old page's, stale a moment later)."""
        deadline = time.monotonic() + timeout
        while await self.call("POST", "/elements", {"using": "css selector", "value": css}):
            if time.monotonic() > deadline:
                page = await self.call("GET", "/url")
                raise AssertionError(f"{css!r} still on {page}")
            await asyncio.sleep(0.1)

    async def wait_url(self, prefix: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            url = str(await self.call("GET", "/url"))
            if url.startswith(prefix):
                return url
            if time.monotonic() > deadline:
                raise AssertionError(f"stuck at {url}, wanted {prefix}")
            await asyncio.sleep(0.2)


async def test_headless_chromium_signs_in_and_reaches_the_upstream(
    test_ca: TestCA, tmp_path: Path
) -> None:
    assert CHROMEDRIVER is not None
    driver_port = free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={driver_port}"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with world(test_ca, tmp_path) as w, aiohttp.ClientSession() as http:
            wd = WebDriver(http, f"http://127.0.0.1:{driver_port}")
            for _ in range(50):  # chromedriver takes a moment to listen
                try:
                    await wd.call("GET", "/status")
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            await wd.start([
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
                "--host-resolver-rules=MAP *.example.test 127.0.0.1, MAP *.other.test 127.0.0.1",
                f"--ignore-certificate-errors-spki-list={w.spki},{w.provider.spki}",
            ])
            try:
                target = w.url("app.example.test", "/from-chromium?x=1")
                await wd.call("POST", "/url", {"url": target})
                login = await wd.find("input[name=login]")
                await wd.call("POST", f"/element/{login}/value", {"text": "heavy"})
                password = await wd.find("input[name=password]")
                await wd.call("POST", f"/element/{password}/value", {"text": "any"})
                await wd.call("POST", f"/element/{await wd.find('button[type=submit]')}/click", {})
                await wd.wait_gone("input[name=login]")  # the consent page replaced the login
                consent = await wd.find("button[type=submit]")
                await wd.call("POST", f"/element/{consent}/click", {})
                await wd.wait_url(target)
                body = await wd.find("body")
                seen = json.loads(await wd.call("GET", f"/element/{body}/text"))
                assert seen["verified"]["user"] == "heavy"
                assert len(seen["verified"]["groups"]) == 300  # a split cookie, in a real browser
                cookies = await wd.call("GET", "/cookie")
                names = {c["name"] for c in cookies}
                assert "_vallum_0" in names and "_vallum_1" in names
                assert all(c["httpOnly"] and c["secure"] for c in cookies if "_vallum" in c["name"])
                await wd.call("POST", "/url", {"url": w.url("app.example.test", "/.vallum/")})
                await wd.find("h1")
                shot = base64.b64decode(await wd.call("GET", "/screenshot"))
                assert shot.startswith(b"\x89PNG")
                (tmp_path / "user-page.png").write_bytes(shot)  # to look at when it fails
                text = await wd.call("GET", f"/element/{await wd.find('body')}/text")
                assert "Heavy Groups" in text and "Groups (300)" in text
            finally:
                await wd.call("DELETE", "")
    finally:
        driver.terminate()
        driver.wait(timeout=10)
