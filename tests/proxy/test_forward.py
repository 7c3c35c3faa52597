"""Forwarding rules: trusted client address, hop-by-hop headers, rewrites, header options."""

from __future__ import annotations

from typing import Any

import pytest

from tests.proxy import dataplane as dp
from vallum.proxy import forward


@pytest.mark.parametrize(
    ("xff", "hops", "expected"),
    [
        (None, 0, "10.0.0.9"),
        ("203.0.113.7", 0, "10.0.0.9"),  # untrusted: the header is ignored
        ("203.0.113.7", 1, "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7", 1, "203.0.113.7"),  # the hop in front appended it
        ("198.51.100.1, 203.0.113.7", 2, "198.51.100.1"),
        ("203.0.113.7", 2, "10.0.0.9"),  # too short: fall back to the peer
        (" , ", 1, "10.0.0.9"),
    ],
)
def test_client_ip_follows_xff_num_trusted_hops(xff: str | None, hops: int, expected: str) -> None:
    assert forward.client_ip("10.0.0.9", xff, hops) == expected


def head_of(
    plan: forward.RoutePlan, headers: list[tuple[bytes, bytes]], **kw: object
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "method": "GET",
        "target": "/p",
        "raw_headers": headers,
        "connection": None,
        "upstream_index": 0,
        "host": "app.test",
        "scheme": "https",
        "peer_ip": "10.0.0.9",
        "request_id": "rid",
        "trusted_hops": 0,
    }
    args.update(kw)
    raw = plan.request_head(**args)
    assert raw.endswith(b"\r\n\r\n")
    lines = raw.decode().split("\r\n")
    out: dict[str, Any] = {"request_line": lines[0], "list": []}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(": ")
            out["list"].append((k.lower(), v))
    out["map"] = dict(out["list"])
    return out


def test_request_head_drops_hop_by_hop_and_sets_forwarded_headers() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:8080"), strip={"x-assert"})
    got = head_of(
        plan,
        [
            (b"Host", b"app.test"),
            (b"Connection", b"keep-alive, X-Private"),
            (b"X-Private", b"1"),
            (b"Keep-Alive", b"300"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"h2c"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Forwarded-For", b"1.2.3.4"),
            (b"X-Forwarded-Proto", b"gopher"),
            (b"X-Request-Id", b"spoof"),
            (b"X-Assert", b"forged"),
            (b"Accept", b"*/*"),
        ],
        connection="keep-alive, X-Private",
    )
    names = {k for k, _ in got["list"]}
    for gone in ("connection", "x-private", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert gone not in names
    assert "transfer-encoding" not in names and "x-assert" not in names
    assert got["request_line"] == "GET /p HTTP/1.1"
    assert got["map"]["host"] == "10.1.1.1:8080"  # the to URL's host, as Envoy's auto rewrite
    assert got["map"]["x-forwarded-for"] == "1.2.3.4, 10.0.0.9"
    assert got["map"]["x-forwarded-proto"] == "https"  # untrusted client value replaced
    assert got["map"]["x-forwarded-host"] == "app.test"
    assert got["map"]["x-request-id"] == "rid"
    assert got["map"]["accept"] == "*/*"


def test_trusted_hop_keeps_its_forwarded_proto_but_never_another_host() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:8080"))
    headers = [
        (b"Host", b"internal:8443"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"public.example"),
    ]
    got = head_of(plan, headers, host="internal:8443", scheme="http", trusted_hops=1)
    assert got["map"]["x-forwarded-proto"] == "https"
    # The request was matched and authorised as internal: the app must not be told otherwise.
    assert got["map"]["x-forwarded-host"] == "internal:8443"
    assert [k for k, _ in got["list"]].count("x-forwarded-host") == 1


def test_chunked_and_upgrade_framing_are_re_added() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:8080"))
    got = head_of(
        plan, [(b"Host", b"app.test")], framing=forward.CHUNKED, upgrade="websocket"
    )
    assert got["map"]["transfer-encoding"] == "chunked"
    assert got["map"]["connection"] == "upgrade" and got["map"]["upgrade"] == "websocket"


def test_host_rewrite_and_preserve_host_header() -> None:
    rewrite = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80", host_rewrite="x.int"))
    assert head_of(rewrite, [(b"Host", b"app.test")])["map"]["host"] == "x.int"
    keep = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80", preserve_host_header=True))
    got = head_of(keep, [(b"Host", b"App.Test:443")], host="App.Test:443")
    assert got["map"]["host"] == "App.Test:443"


def test_the_clients_host_headers_are_never_forwarded_only_the_authorised_host() -> None:
    keep = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80", preserve_host_header=True))
    got = head_of(keep, [(b"Host", b"admin.test"), (b"HOST", b"admin.test")], host="app.test")
    assert [v for k, v in got["list"] if k == "host"] == ["app.test"]
    assert [v for k, v in got["list"] if k == "x-forwarded-host"] == ["app.test"]


@pytest.mark.parametrize("nominated", ["Content-Length", "Transfer-Encoding", "Host",
                                       "X-Forwarded-For", "X-Request-Id", "X-Env", "X-Gate"])
def test_no_connection_token_removes_framing_or_a_header_vallum_writes(nominated: str) -> None:
    plan = forward.RoutePlan(
        dp.route("app.test", "http://10.1.1.1:80", set_request_headers=(("X-Env", "prod"),))
    )
    got = head_of(
        plan,
        [(b"Host", b"app.test"), (b"Connection", f"keep-alive, {nominated}".encode()),
         (b"Content-Length", b"5")],
        connection=f"keep-alive, {nominated}",
        extra=(("X-Gate", "yes"),),
        framing=forward.request_framing(False, "5"),
    )
    m = got["map"]
    assert m["content-length"] == "5" and m["host"] == "10.1.1.1:80"
    assert m["x-request-id"] == "rid" and m["x-forwarded-for"] == "10.0.0.9"
    assert m["x-env"] == "prod" and m["x-gate"] == "yes"
    assert [k for k, _ in got["list"]].count("content-length") == 1


def test_the_gates_headers_are_encoded_once_per_tuple_and_the_memo_is_bounded() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"))
    forward._EXTRA_LINES.clear()
    alice = (("X-Email", "иван@corp.ru"), ("X-Evil", "a\r\nX-Injected: 1"))
    for _ in range(2):  # the second time from the memo: the same lines
        m = head_of(plan, [(b"Host", b"app.test")], extra=alice)["map"]
        assert m["x-email"] == "иван@corp.ru" and "x-injected" not in m
        assert m["x-evil"] == "a  X-Injected: 1"
    assert list(forward._EXTRA_LINES) == [alice]
    for i in range(forward._EXTRA_LINES_MAX + 5):
        head_of(plan, [(b"Host", b"app.test")], extra=(("X-N", str(i)),))
    assert 0 < len(forward._EXTRA_LINES) <= forward._EXTRA_LINES_MAX


def test_the_clients_framing_headers_never_pass_vallum_writes_its_own() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"))
    got = head_of(plan, [(b"Content-Length", b"007"), (b"Transfer-Encoding", b"chunked")])
    assert "content-length" not in got["map"] and "transfer-encoding" not in got["map"]
    assert forward.request_framing(False, "007") == b"Content-Length: 7\r\n"
    assert forward.request_framing(True, None) == forward.CHUNKED
    assert forward.request_framing(False, None) == b""


@pytest.mark.parametrize("action", ["allow", "drop_header"])
def test_underscore_spellings_of_headers_vallum_sets_are_always_removed(action: str) -> None:
    settings = dp.table(
        jwt_claims_headers=(("X-Email", "email"),), headers_with_underscores_action=action
    ).settings
    plan = forward.RoutePlan(
        dp.route("app.test", "http://10.1.1.1:80", set_request_headers=(("X-Team", "blue"),)),
        strip={"x-email"},
        settings=settings,
    )
    forged = [
        b"X_Vallum_Jwt_Assertion", b"x_pomerium_jwt_assertion", b"X_Vallum_Claim_Email",
        b"X_Email", b"X_Forwarded_For", b"X_Forwarded_Host", b"X_Forwarded_Proto",
        b"X_Request_Id", b"X_Team", b"Transfer_Encoding", b"Content_Length",
    ]
    got = head_of(plan, [(name, b"forged") for name in forged] + [(b"My_Header", b"v")])
    assert "forged" not in {v for _, v in got["list"]}
    assert ("my_header" in got["map"]) == (action == "allow")


def test_identity_header_values_are_utf8_and_cannot_inject_lines() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"))
    raw = plan.request_head(
        "GET", "/", [], None, 0, "app.test", "https", "10.0.0.9", "rid", 0,
        (("X-Email", "иван@corp.ru"), ("X-Name", "a\r\nX-Vallum-Jwt-Assertion: forged\x00")),
    )
    assert "X-Email: иван@corp.ru\r\n".encode() in raw
    assert b"\r\nX-Vallum-Jwt-Assertion" not in raw and b"\x00" not in raw
    # Two users whose addresses differ only outside Latin-1 stay different.
    assert forward.header_line("X-Email", "иван@corp.ru") != forward.header_line(
        "X-Email", "жжжж@corp.ru"
    )


def test_set_and_remove_request_headers_and_gate_headers() -> None:
    plan = forward.RoutePlan(
        dp.route(
            "app.test",
            "http://10.1.1.1:80",
            set_request_headers=(("X-Env", "prod"), ("Accept", "text/plain")),
            remove_request_headers=("Cookie",),
        )
    )
    got = head_of(
        plan,
        [(b"Host", b"app.test"), (b"Cookie", b"a=b"), (b"Accept", b"*/*")],
        extra=(("X-Pomerium-Jwt-Assertion", "jwt"),),
    )
    assert "cookie" not in got["map"]
    assert [v for k, v in got["list"] if k == "accept"] == ["text/plain"]  # replaced, not added
    assert got["map"]["x-env"] == "prod"
    assert got["map"]["x-pomerium-jwt-assertion"] == "jwt"


@pytest.mark.parametrize(
    ("options", "path", "expected"),
    [
        ({}, "/a/b", "/a/b"),
        ({"prefix": "/admin", "prefix_rewrite": "/"}, "/admin/x", "//x"),  # literal, as Envoy
        ({"prefix": "/admin/", "prefix_rewrite": "/"}, "/admin/x", "/x"),
        ({"prefix": "/admin/", "prefix_rewrite": "/"}, "/admin", "/"),
        ({"prefix": "/api", "prefix_rewrite": "/v2"}, "/api/users", "/v2/users"),
        ({"prefix_rewrite": "/base/"}, "/x", "/base/x"),
        ({"path": "/exact", "prefix_rewrite": "/other"}, "/exact", "/other"),
        (
            {
                "regex_rewrite_pattern": "^/service/([^/]+)(/.*)$",
                "regex_rewrite_substitution": "\\2/instance/\\1",
            },
            "/service/foo/bar",
            "/bar/instance/foo",
        ),
        ({"regex_rewrite_pattern": "o", "regex_rewrite_substitution": "0"}, "/foo", "/f00"),
    ],
)
def test_path_rewrites(options: dict[str, Any], path: str, expected: str) -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80", **options))
    assert plan.rewrite_path(path) == expected


def test_a_path_in_the_to_url_acts_as_prefix_rewrite() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80/anything/"))
    assert plan.rewrite_path("/x/y") == "/anything/x/y"
    both = forward.RoutePlan(dp.route("app.test", "http://a:80/one/", "http://b:80"))
    assert both.rewrite_path("/x", 0) == "/one/x" and both.rewrite_path("/x", 1) == "/x"


def test_response_headers_drop_hop_by_hop_and_apply_set_response_headers() -> None:
    plan = forward.RoutePlan(
        dp.route(
            "app.test",
            "http://10.1.1.1:80",
            set_response_headers=(("Strict-Transport-Security", "max-age=31536000"),),
        )
    )
    lines, has_length, chunked = plan.response_headers(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Strict-Transport-Security", b"max-age=1"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    assert (has_length, chunked) == (None, True)
    assert plan.response_headers([(b"Content-Length", b"3")])[1:] == (b"3", False)
    text = b"".join(lines).decode()
    assert "X-Hop" not in text and "Connection" not in text and "Transfer-Encoding" not in text
    assert "Strict-Transport-Security: max-age=31536000\r\n" in text and "max-age=1\r" not in text
    assert text.count("Set-Cookie") == 2


@pytest.mark.parametrize(
    "connection", [b"keep-alive", b"Content-Length", b"close, content-length, X-Hop"]
)
def test_the_response_content_length_line_is_vallums_and_no_connection_token_drops_it(
    connection: bytes,
) -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"))
    lines, length, chunked = plan.response_headers(
        [(b"content-length", b"3"), (b"Connection", connection), (b"X-Hop", b"1")]
    )
    text = b"".join(lines).decode()
    assert (length, chunked) == (b"3", False)
    assert text.count("Content-Length: 3\r\n") == 1 and "content-length" not in text
    assert ("X-Hop" in text) == (b"x-hop" not in connection.lower())


def test_plans_are_built_once_per_table_and_route() -> None:
    tbl = dp.table(dp.route("app.test", "http://10.1.1.1:80"))
    plans = forward.Plans()
    route = tbl.settings.routes[0]
    first = plans.get(tbl, 0, route)
    assert plans.get(tbl, 0, route) is first
    other = dp.table(dp.route("app.test", "http://10.1.1.1:80"))
    assert plans.get(other, 0, other.settings.routes[0]) is not first


def test_connection_tokens() -> None:
    assert forward.connection_tokens("Keep-Alive, X-A ,,x-b") == {"keep-alive", "x-a", "x-b"}
    assert forward.connection_tokens(None) == frozenset()


def test_reserved_prefixes_are_stripped_whatever_the_gate_names() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:8080"))
    got = head_of(
        plan,
        [
            (b"X-Vallum-Claim-Email", b"forged@example.com"),
            (b"x-pomerium-claim-groups", b"admins"),
            (b"X-POMERIUM-JWT-ASSERTION", b"forged"),
            (b"X-Vallum-Anything-New", b"1"),
            (b"X-Vallumish", b"kept"),
            (b"X-Pomerium", b"kept"),
            (b"X-Other", b"kept"),
        ],
    )
    assert [k for k, _ in got["list"] if k.startswith(("x-vallum", "x-pomerium"))] == [
        "x-vallumish",
        "x-pomerium",
    ]
    assert got["map"]["x-other"] == "kept"


def test_claim_header_names_are_the_map_form_names_lower_case() -> None:
    settings = dp.table(
        jwt_claims_headers=(("X-Email", "email"), ("x-pomerium-claim-groups", "groups"))
    ).settings
    assert forward.claim_header_names(settings) == {"x-email"}


def test_plans_strip_the_current_tables_claim_headers() -> None:
    route = dp.route("app.test", "http://10.1.1.1:8080")
    plans = forward.Plans({"x-gate"})
    headers = [(b"X-Email", b"forged"), (b"X-Gate", b"g"), (b"X-User-Id", b"u1")]
    first = dp.table(route, jwt_claims_headers=(("X-Email", "email"),))
    got = head_of(plans.get(first, 0, first.settings.routes[0]), headers)
    assert "x-email" not in got["map"] and "x-gate" not in got["map"]
    assert got["map"]["x-user-id"] == "u1"
    # A reload (a new table) that adds a map-form claim header strips it from then on.
    second = dp.table(route, jwt_claims_headers=(("X-Email", "email"), ("X-User-Id", "sub")))
    got = head_of(plans.get(second, 0, second.settings.routes[0]), headers)
    assert "x-email" not in got["map"] and "x-user-id" not in got["map"]
    assert "x-gate" not in got["map"]


@pytest.mark.parametrize(
    "cookie",
    [b"_vallum=forged; Path=/; Domain=.corp.example", b"_vallum_0=x", b"_vallum_3=x",
     b"_vallum_state=x", b" _vallum_csrf =x", b"_vallum=; Max-Age=0"],
)
def test_an_upstream_cannot_set_vallums_cookies(cookie: bytes) -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"))
    for extra in ([], [(b"Connection", b"X-Hop")]):  # also on the slow (Connection) path
        lines, _, _ = plan.response_headers(
            [(b"Set-Cookie", cookie), (b"Set-Cookie", b"app=1"), (b"Set-Cookie", b"_vallumx=1"),
             *extra]
        )
        text = b"".join(lines)
        assert cookie not in text
        assert text.count(b"Set-Cookie") == 2  # the app's own cookies pass


def test_vallums_cookie_name_follows_the_settings() -> None:
    settings = dp.table(cookie_name="_pomerium").settings
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"), settings=settings)
    lines, _, _ = plan.response_headers(
        [(b"Set-Cookie", b"_pomerium=x"), (b"Set-Cookie", b"_vallum=y")]
    )
    assert b"".join(lines) == b"Set-Cookie: _vallum=y\r\n"


def test_method_and_path_overrides_never_reach_the_app() -> None:
    plan = forward.RoutePlan(dp.route("app.test", "http://10.1.1.1:80"))
    got = head_of(
        plan,
        [(b"X-HTTP-Method-Override", b"DELETE"), (b"X-Original-URL", b"/admin"),
         (b"X-Rewrite-URL", b"/admin"), (b"X-HTTP-Method", b"PUT"),
         (b"X-Method-Override", b"PUT"), (b"X_Original_URL", b"/admin")],
    )
    assert not {k for k, _ in got["list"]} & {n.decode() for n in (
        b"x-http-method-override", b"x-original-url", b"x-rewrite-url", b"x-http-method",
        b"x-method-override", b"x_original_url")}
