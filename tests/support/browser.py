"""A scripted browser: an aiohttp client with its own cookie jar that follows redirects by hand
and fills in the test provider's login and consent forms.

Every host name resolves to 127.0.0.1, so ``https://app.example.test:PORT/`` reaches the Vallum
under test and nothing ever leaves the machine. It trusts the test CA and may present a client
certificate.
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from tests.support.certs import Leaf, TestCA


class _Jar(aiohttp.CookieJar):
    """aiohttp's jar, without its cap of 8190 bytes on the whole ``Cookie`` header.

    Chromium caps each cookie at 4096 bytes and a domain at 180 cookies, not the header; Vallum
    accepts 64 KB of request head. The per-cookie limit is what splitting must respect, and the
    tests check it themselves.
    """

    _limits_enabled = False


class LoopbackResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [{
            "hostname": host, "host": "127.0.0.1", "port": port,
            "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST,
        }]

    async def close(self) -> None:
        return None


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]
    form_id: str = ""


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None
        self._buttons: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower(), {},
                                 a.get("id", ""))
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("name"):
            if a.get("form") or self._current is None:
                self._buttons.append(a)
            elif a["name"] not in self._current.fields:
                self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None

    def close(self) -> None:
        super().close()
        for button in self._buttons:  # the first named submit button for each form id
            for form in self.forms:
                if form.form_id and form.form_id == button.get("form"):
                    form.fields.setdefault(button["name"], button.get("value", ""))


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


@dataclass
class Page:
    status: int
    url: str
    headers: Any
    text: str
    history: list[tuple[int, str]] = field(default_factory=list)

    def json(self) -> Any:
        import json

        return json.loads(self.text)


class Browser:
    """``async with Browser(ca) as b: page = await b.sign_in(url, "alice")``."""

    def __init__(self, ca: TestCA, *, client_cert: Leaf | None = None, tmp: Any = None) -> None:
        self.context = ssl.create_default_context(cadata=ca.cert_pem)
        if client_cert is not None:
            assert tmp is not None, "a client certificate needs a folder to write it to"
            cert_file, key_file = client_cert.write(tmp, "browser-client")
            self.context.load_cert_chain(cert_file, key_file)
        self.jar = _Jar(unsafe=True)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Browser:
        self.session = aiohttp.ClientSession(
            cookie_jar=self.jar,
            connector=aiohttp.TCPConnector(ssl=self.context, resolver=LoopbackResolver()),
            timeout=aiohttp.ClientTimeout(total=20),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None,
        data: Any = None, follow: bool = True, max_hops: int = 25, stop_at: str | None = None,
    ) -> Page:
        """One request, following redirects by hand (not to a URL starting with ``stop_at``)."""
        assert self.session is not None
        history: list[tuple[int, str]] = []
        hdrs = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", **(headers or {})}
        for _ in range(max_hops):
            async with self.session.request(
                method, URL(url, encoded=True), headers=hdrs, data=data, allow_redirects=False
            ) as resp:
                text = await resp.text(errors="replace")
                page = Page(resp.status, url, resp.headers, text, history)
            location = resp.headers.get("Location")
            if not follow or resp.status not in (301, 302, 303, 307, 308) or not location:
                return page
            target = urllib.parse.urljoin(url, location)
            if stop_at is not None and target.startswith(stop_at):
                return page
            history.append((resp.status, url))
            url = target
            if resp.status in (301, 302, 303):
                method, data = "GET", None
        raise AssertionError(f"too many redirects: {history}")

    async def get(self, url: str, **kw: Any) -> Page:
        return await self.request("GET", url, **kw)

    async def submit(
        self, page: Page, form: Form, stop_at: str | None = None, **values: str
    ) -> Page:
        fields = {**form.fields, **values}
        action = urllib.parse.urljoin(page.url, form.action or page.url)
        return await self.request(form.method.upper(), action, data=fields, stop_at=stop_at)

    async def sign_in(
        self, url: str, user: str, *, max_forms: int = 4, stop_at: str | None = None
    ) -> Page:
        """Open ``url``; on the provider's pages, log in as ``user`` and grant consent."""
        page = await self.get(url, stop_at=stop_at)
        for _ in range(max_forms):
            forms = parse_forms(page.text) if page.status == 200 else []
            login = next((f for f in forms if "login" in f.fields), None)
            consent = next((f for f in forms if f.fields.get("prompt") == "consent"), None)
            if login is not None:
                page = await self.submit(page, login, stop_at, login=user, password="any")
            elif consent is not None:
                page = await self.submit(page, consent, stop_at)
            else:
                return page
        return page

    async def confirm_logout(self, page: Page) -> Page:
        """On the provider's "sign out?" page, answer yes."""
        form = next(f for f in parse_forms(page.text) if "logout" in f.fields or "xsrf" in f.fields)
        return await self.submit(page, form, logout="yes")

    def cookies(self, url: str) -> dict[str, str]:
        return {k: v.value for k, v in self.jar.filter_cookies(URL(url)).items()}
