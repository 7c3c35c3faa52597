"""No open redirect in any spelling: each trick a browser would follow off-site is refused."""

from __future__ import annotations

import pytest

from vallum.proxy import redirects

ALLOWED = redirects.host_matcher(["app.example.test", "*.apps.example.test", "auth.example.test"])
CURRENT = "https://app.example.test"


def _safe(url: str) -> str | None:
    return redirects.safe_return_url(url, allowed_host=ALLOWED, current=CURRENT)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/", "https://app.example.test/"),
        ("/dashboard?tab=1#top", "https://app.example.test/dashboard?tab=1#top"),
        ("https://app.example.test/x", "https://app.example.test/x"),
        ("HTTPS://APP.example.test/x", "https://app.example.test/x"),
        ("https://app.example.test:8443/x?y=1", "https://app.example.test:8443/x?y=1"),
        ("https://one.apps.example.test", "https://one.apps.example.test/"),
        ("https://app.example.test./x", "https://app.example.test/x"),
        ("/path%20with%20space", "https://app.example.test/path%20with%20space"),
    ],
)
def test_own_hosts_and_paths_are_kept(url: str, expected: str) -> None:
    assert _safe(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\\/evil.example",
        "https:evil.example",
        "https:/evil.example",
        "https:\\\\evil.example",
        "https:///evil.example",
        "HtTpS://evil.example",
        "https://evil.example",
        "https://evil.example/https://app.example.test",
        "https://app.example.test.evil.example/",
        "https://app.example.test@evil.example/",
        "https://evil.example@app.example.test/",
        "https://user:pw@app.example.test/",
        "https://evil.example\\@app.example.test/",
        "https://evil.example#@app.example.test",
        "https://a.b.apps.example.test/",
        "https://apps.example.test/",
        "/%2F%2Fevil.example",
        "/%2f%2fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%5cevil.example",
        "/%252F%252Fevil.example",
        "https://app.example.test%2F@evil.example",
        "https://app.example.test%40evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        " //evil.example",
        "/%09/evil.example",
        "javascript:alert(1)",
        "JaVaScRiPt://app.example.test/%0aalert(1)",
        "data:text/html,hi",
        "ftp://app.example.test/",
        "evil.example",
        "https://\uff41pp.example.test/",
        "/\uff0fevil.example",
        "https://app.example.test:99999/",
        "https://app.example.test//evil.example",
        "",
    ],
)
def test_every_open_redirect_spelling_is_refused(url: str) -> None:
    assert _safe(url) is None


def test_paths_need_a_current_host_we_serve() -> None:
    assert redirects.safe_return_url("/x", allowed_host=ALLOWED) is None
    assert redirects.safe_return_url("/x", allowed_host=ALLOWED, current="https://evil.example") \
        is None


def test_too_long_is_refused() -> None:
    assert _safe("/" + "a" * 5000) is None


def test_constant_time_equal() -> None:
    assert redirects.constant_time_equal("abc", "abc")
    assert redirects.constant_time_equal(b"abc", "abc")
    assert not redirects.constant_time_equal("abc", "abd")
    assert not redirects.constant_time_equal("abc", "ab")
