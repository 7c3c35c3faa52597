"""The protocol-independent pipeline: request value, intercept, match, authorize; fail closed."""

from __future__ import annotations

import datetime as dt
import json

from tests.proxy import dataplane as dp
from vallum.core import routing
from vallum.core.config import RouteTable
from vallum.core.request import ClientCertificate, RequestInfo
from vallum.proxy import pipeline


def info(target: str = "/x", host: str | None = "App.Test:443", **headers: str) -> RequestInfo:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if host is not None:
        hdrs["host"] = host
    req = pipeline.request_info(
        method="GET",
        target=target,
        headers=hdrs,
        scheme="https",
        peer_ip="10.0.0.9",
        trusted_hops=1,
        request_id="rid-1",
    )
    assert req is not None
    return req


def test_request_info_normalises_host_and_splits_query() -> None:
    req = info("/a/b?x=1&y", x_forwarded_for="203.0.113.5")
    assert (req.host, req.path, req.query) == ("app.test", "/a/b", "x=1&y")
    assert req.client_ip == "203.0.113.5"  # one trusted hop
    assert req.headers["x-request-id"] == "rid-1"


def test_request_info_sets_every_field_in_its_place() -> None:
    # request_info calls RequestInfo positionally (hot path): a reordered field must fail here.
    before = dt.datetime.now(dt.UTC)
    cert = ClientCertificate(der=b"leaf", verified=True)
    req = pipeline.request_info(
        method="PATCH",
        target="/p?q=1",
        headers={"host": "Host.Test.", "x-forwarded-for": "203.0.113.5"},
        scheme="http",
        peer_ip="10.0.0.9",
        trusted_hops=1,
        request_id="rid-2",
        client_cert=cert,
    )
    assert req is not None
    assert (req.method, req.host, req.path, req.query, req.scheme) == (
        "PATCH", "host.test", "/p", "q=1", "http"
    )
    assert (req.client_ip, req.client_cert) == ("203.0.113.5", cert)
    assert req.headers == {
        "host": "Host.Test.", "x-forwarded-for": "203.0.113.5", "x-request-id": "rid-2"
    }
    assert req.time.tzinfo is dt.UTC
    assert before - dt.timedelta(milliseconds=2) <= req.time <= dt.datetime.now(dt.UTC)
    # The host normalisation cache answers the same for the same raw host, whatever the case.
    for _ in range(2):
        assert info(host="HOST.test:8443").host == "host.test"
        assert info(host="host.TEST").host == "host.test"


def test_absolute_form_target_wins_over_host_header() -> None:
    req = info("http://Other.Test:8080/p?q", host="app.test")
    assert (req.host, req.path, req.query) == ("other.test", "/p", "q")


def test_malformed_requests_give_none() -> None:
    for target, host in (("*", "app.test"), ("/x", None), ("/x", "")):
        hdrs = {} if host is None else {"host": host}
        assert (
            pipeline.request_info(
                method="OPTIONS",
                target=target,
                headers=hdrs,
                scheme="https",
                peer_ip="1.1.1.1",
                trusted_hops=0,
                request_id="r",
            )
            is None
        )


def test_header_map_joins_repeats_and_cookies() -> None:
    got = pipeline.header_map(
        [(b"Accept", b"a"), (b"ACCEPT", b"b"), (b"Cookie", b"x=1"), (b"cookie", b"y=2")]
    )
    assert got == {"accept": "a, b", "cookie": "x=1; y=2"}


async def test_public_only_gate_allows_public_and_fails_closed_otherwise() -> None:
    tbl = dp.table(
        dp.route("app.test", "http://10.0.0.1:80"),
        dp.route("private.test", "http://10.0.0.2:80", public=False),
    )
    gate = dp.PublicOnlyGate()
    verdict = await pipeline.decide(info(), tbl, gate)
    assert isinstance(verdict, pipeline.Forward)
    assert verdict.match.route.host == "app.test" and verdict.allow == pipeline.Allow()
    denied = await pipeline.decide(info(host="private.test", accept="application/json"), tbl, gate)
    assert isinstance(denied, pipeline.Respond) and denied.status == 403
    body = json.loads(denied.body)
    assert body["request_id"] == "rid-1" and "requires sign-in" in body["message"]
    assert "x-pomerium-jwt-assertion" in gate.strip_request_headers()


async def test_no_route_is_404_and_bad_path_is_400() -> None:
    tbl = dp.table(dp.route("app.test", "http://10.0.0.1:80", prefix="/api"))
    gate = dp.PublicOnlyGate()
    missing = await pipeline.decide(info("/other"), tbl, gate)
    assert isinstance(missing, pipeline.Respond) and missing.status == 404
    bad = await pipeline.decide(info("/api/%2e%2e/%2e%2e/etc"), tbl, gate)
    assert isinstance(bad, pipeline.Respond) and bad.status == 400
    # The path that is forwarded is the normalised one.
    ok = await pipeline.decide(info("/api//v1/./x"), tbl, gate)
    assert isinstance(ok, pipeline.Forward) and ok.match.path == "/api/v1/x"


async def test_intercept_answers_before_matching_and_authorize_can_add_headers() -> None:
    class Gate:
        calls: list[str] = []

        async def intercept(self, req: RequestInfo, table: RouteTable) -> pipeline.Respond | None:
            self.calls.append("intercept")
            if req.path.startswith("/.vallum/"):
                return pipeline.Respond(200, (("Content-Type", "text/plain"),), b"internal")
            return None

        async def authorize(
            self, req: RequestInfo, match: routing.Match, table: RouteTable
        ) -> pipeline.Allow | pipeline.Respond:
            self.calls.append("authorize")
            return pipeline.Allow(request_headers=(("X-User", "alice"),))

        def strip_request_headers(self) -> frozenset[str]:
            return frozenset()

    gate = Gate()
    tbl = dp.table(dp.route("app.test", "http://10.0.0.1:80", public=False))
    internal = await pipeline.decide(info("/.vallum/x", host="nowhere.test"), tbl, gate)
    assert isinstance(internal, pipeline.Respond) and internal.body == b"internal"
    assert gate.calls == ["intercept"]
    allowed = await pipeline.decide(info(), tbl, gate)
    assert isinstance(allowed, pipeline.Forward)
    assert allowed.allow.request_headers == (("X-User", "alice"),)
    assert gate.calls == ["intercept", "intercept", "authorize"]


def test_match_cache_gives_routing_answers_and_stays_bounded() -> None:
    tbl = dp.table(
        dp.route("app.test", "http://10.0.0.1:80", prefix="/api"),
        dp.route("app.test", "http://10.0.0.2:80", path="/exact"),
    )
    cache = pipeline.MatchCache(size=4, max_path=20)
    for path in ("/api/x", "/exact", "/nope", "/api/%2e%2e/x", "/api//y", "/" + "a" * 30):
        for _ in range(2):
            assert cache.match(tbl, "app.test", path) == routing.match(tbl, "app.test", path)
    assert len(cache._entries) <= 4
    assert all(len(path) <= 20 for _, path in cache._entries)
    other = dp.table(dp.route("app.test", "http://10.0.0.3:80"))
    found = cache.match(other, "app.test", "/exact")  # a new table: nothing stale is served
    assert found is not None and found.route.to[0].host == "10.0.0.3"


async def test_the_policy_sees_the_normalised_path_so_no_spelling_escapes_a_deny_rule() -> None:
    from vallum.proxy.identity import build_gate

    deny_admin = {"allow": {"or": [{"accept": True}]},
                  "deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}
    tbl = dp.table(dp.route("app.test", "http://10.0.0.1:80", public=False, policy=deny_admin))
    gate = build_gate(tbl.settings)
    allowed = await pipeline.decide(info("/public/x", accept="application/json"), tbl, gate)
    assert isinstance(allowed, pipeline.Forward)
    for spelling in ("/admin/x", "//admin/x", "/./admin/x", "/public/../admin/x",
                     "/%61dmin/x", "/public/%2e%2e/admin/x", "/admin%2fx"):
        verdict = await pipeline.decide(info(spelling, accept="application/json"), tbl, gate)
        assert isinstance(verdict, pipeline.Respond), spelling
        assert verdict.status in (400, 403), (spelling, verdict.status)


class _CountingGate(dp.PublicOnlyGate):
    """Allows every route and counts the authorizations (a gate that would admit anyone)."""

    def __init__(self) -> None:
        self.calls = 0

    async def authorize(
        self, req: RequestInfo, match: routing.Match, table: RouteTable
    ) -> pipeline.Allow | pipeline.Respond:
        self.calls += 1
        return pipeline.ALLOW

    def intercepts(self, req: RequestInfo) -> bool:
        return False

    def authorize_now(
        self, req: RequestInfo, match: routing.Match, table: RouteTable
    ) -> pipeline.Allow | pipeline.Respond | None:
        self.calls += 1
        return pipeline.ALLOW


async def test_an_unavailable_route_answers_503_with_its_reason_before_the_gate() -> None:
    reason = "no ready endpoints for Service default/app port 80"
    tbl = dp.table(
        dp.route("app.test", "http://10.0.0.1:80", prefix="/down", unavailable=reason),
        dp.route("app.test", "http://10.0.0.2:80"),
    )
    gate = _CountingGate()
    for verdict in (
        await pipeline.decide(info("/down/x", accept="application/json"), tbl, gate),
        pipeline.decide_now(info("/down/x", accept="application/json"), tbl, gate),
    ):
        assert isinstance(verdict, pipeline.Respond) and verdict.status == 503
        assert reason in json.loads(verdict.body)["message"]
    assert gate.calls == 0  # refused before the gate: even a gate admitting anyone is not asked
    html = await pipeline.decide(info("/down"), tbl, gate)
    assert isinstance(html, pipeline.Respond) and reason.encode() in html.body
    # The rest of the table serves: the route beside it still forwards.
    for verdict in (
        await pipeline.decide(info("/up"), tbl, gate),
        pipeline.decide_now(info("/up"), tbl, gate),
    ):
        assert isinstance(verdict, pipeline.Forward) and verdict.match.route.to[0].port == 80
        assert verdict.match.route.unavailable is None
    assert gate.calls == 2
