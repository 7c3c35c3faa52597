"""The one error page: HTML for browsers, JSON for API clients, always with the request id."""

from __future__ import annotations

import json

import pytest

from vallum.proxy import errors


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("*/*", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("application/json", True),
        ("application/json, text/plain, */*", True),
        ("text/html;q=0.5, application/json", True),
        ("application/json;q=0.2, text/html", False),
        ("application/problem+json", True),
        ("application/json;q=0", False),
        ("application/json;q=bogus", False),
    ],
)
def test_wants_json(accept: str | None, expected: bool) -> None:
    assert errors.wants_json(accept) is expected


def test_json_page_carries_status_message_and_request_id() -> None:
    page = errors.page(502, "abc123", accept="application/json", message="upstream down")
    headers = dict(page.headers)
    assert page.status == 502
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == "abc123"
    assert json.loads(page.body) == {
        "status": 502,
        "error": "Bad Gateway",
        "message": "upstream down",
        "request_id": "abc123",
    }


def test_html_page_escapes_and_shows_the_request_id() -> None:
    page = errors.page(404, "id<1>", message="no <route>")
    headers = dict(page.headers)
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    body = page.body.decode()
    assert "404 Not Found" in body
    assert "no &lt;route&gt;" in body and "<route>" not in body
    assert "id&lt;1&gt;" in body


def test_extra_headers_and_unknown_status() -> None:
    page = errors.page(599, "r", headers=(("Retry-After", "3"),))
    assert ("Retry-After", "3") in page.headers
    assert "599 Unknown" in page.body.decode()


def test_request_ids_are_unique_and_change_after_fork() -> None:
    ids = {errors.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    before = errors.new_request_id()
    errors.reset_after_fork()
    after = errors.new_request_id()
    assert before[:12] != after[:12]


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (495, "SSL Certificate Error"),
        (496, "SSL Certificate Required"),
        (431, "Request Header Fields Too Large"),
        (421, "Misdirected Request"),
        (403, "Forbidden"),
        (499, "Client Closed Request"),
        (599, "Unknown"),
    ],
)
def test_reason_phrases_include_nginx_certificate_statuses(status: int, phrase: str) -> None:
    assert errors.reason(status) == phrase
    html_page = errors.page(status, "rid", accept="text/html")
    assert f"<title>{status} {phrase}</title>".encode() in html_page.body
    assert f"<h1>{status} {phrase}</h1>".encode() in html_page.body
    json_page = json.loads(errors.page(status, "rid", accept="application/json").body)
    assert json_page["error"] == phrase and json_page["status"] == status
