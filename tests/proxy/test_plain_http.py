"""``vallum.proxy.plain_http``: the ``http_redirect_addr`` listener forwards ACME HTTP-01
challenges of ``acme_http01_solver`` routes and redirects everything else to HTTPS, whatever
the spelling of the path or the host.

A real server (HTTPS listener, plain-HTTP listener, the identity gate) in front of recording
upstreams: a request that must not reach a route is checked at the upstream, not only by the
status code."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from tests.proxy import dataplane as dp
from tests.support.certs import TestCA
from tests.support.net import free_port
from tests.support.recording import Recorder
from vallum.core import config
from vallum.proxy import accesslog, plain_http, server

TOKEN = "/.well-known/acme-challenge/tok-123"


@dataclass
class Setup:
    srv: server.Server
    plain: int  # the plain-HTTP listener's port
    solver: Recorder  # the solver pod behind app.test's challenge path
    app: Recorder  # app.test's ordinary route (prefix /) and other.test's
    ca: TestCA

    async def plain_request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        client = await dp.RawClient.connect(self.plain)
        try:
            await client.send(raw)
            return await client.response()
        finally:
            await client.close()


@asynccontextmanager
async def running(test_ca: TestCA, *extra: config.Route) -> AsyncIterator[Setup]:
    leaf = test_ca.issue("app.test", sans=["app.test", "other.test", "wide.test"])
    port, plain = free_port(), free_port()
    async with Recorder("solver") as solver, Recorder("app") as app:
        routes = (
            dp.route("app.test", solver.url, path=TOKEN, preserve_host_header=True,
                     acme_http01_solver=True),
            dp.route("app.test", app.url),
            # Looks like a solver, is not flagged: plain HTTP must not reach it.
            dp.route("other.test", app.url, prefix="/.well-known/acme-challenge/"),
            *extra,
        )
        table = dp.table(
            *routes,
            address=f"127.0.0.1:{port}",
            http_redirect_addr=f"127.0.0.1:{plain}",
            certificates=(config.Certificate(leaf.cert_pem, leaf.key_pem),),
        )
        srv = server.Server(table, access_log=accesslog.AccessLog(enabled=False))
        await srv.start()
        try:
            yield Setup(srv, plain, solver, app, test_ca)
        finally:
            await srv.close(drain=1)


async def test_a_challenge_reaches_its_solver_on_plain_http(test_ca: TestCA) -> None:
    async with running(test_ca) as s:
        status, _, body = await s.plain_request(
            dp.get(TOKEN, extra="Cookie: _vallum=session\r\nX-Pomerium-Jwt-Assertion: forged\r\n")
        )
        assert status == 200 and body.startswith(b"resp-1 solver " + TOKEN.encode())
        (req,) = s.solver.requests
        assert req.header("host") == "app.test"  # preserve_host_header, as cert-manager wants
        assert req.header("x-forwarded-proto") == "http"
        assert req.header("cookie") is None  # a token fetch needs no cookie
        assert req.header("x-pomerium-jwt-assertion") is None
        assert s.app.requests == []


async def test_everything_else_is_redirected_to_https(test_ca: TestCA) -> None:
    async with running(test_ca) as s:
        for raw, location in [
            (dp.get("/p?q=1"), f"https://app.test:{s.srv.port}/p?q=1"),
            # The solver's host, a challenge path that is not its token: the app route, no.
            (dp.get("/.well-known/acme-challenge/other"),
             f"https://app.test:{s.srv.port}/.well-known/acme-challenge/other"),
            # A route on a challenge path that the operator did not flag.
            (dp.get(TOKEN, host="other.test"), f"https://other.test:{s.srv.port}{TOKEN}"),
            # No route at all: still a redirect (never a 404 on plain HTTP).
            (dp.get(TOKEN, host="nowhere.test"), f"https://nowhere.test:{s.srv.port}{TOKEN}"),
            # An ACME server only GETs: nothing else reaches the solver in clear text.
            (f"POST {TOKEN} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi"
             .encode(), f"https://app.test:{s.srv.port}{TOKEN}"),
            (f"PUT {TOKEN} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n"
             .encode(), f"https://app.test:{s.srv.port}{TOKEN}"),
            # Vallum's own endpoints are not served on plain HTTP.
            (dp.get("/.vallum/user"), f"https://app.test:{s.srv.port}/.vallum/user"),
        ]:
            status, headers, _ = await s.plain_request(raw)
            assert (status, headers.get("location")) == (301, location), raw
        assert s.solver.requests == [] and s.app.requests == []
        reply = await dp.raw_request(
            s.plain, f"HEAD {TOKEN} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
            .encode()
        )
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n")
        assert [r.method for r in s.solver.requests] == ["HEAD"]


@pytest.mark.parametrize(
    "path",
    [
        f"{TOKEN}/../../../p",
        "/.well-known/acme-challenge/%2e%2e/%2e%2e/p",
        "/.well-known/acme-challenge/..%2f..%2fp",
        "/.well-known/acme-challenge/..%2F..%2Fp",
        "/.well-known/acme-challenge/..\\..\\p",
        "/.well-known/acme-challenge/%252e%252e/p",  # double encoding: refused
        "/.well-known/acme-challenge/tok-123;x",  # ';' (servlet path parameters): refused
        "//.well-known/acme-challenge/../../p",
        "/.well-known/./acme-challenge/../../p",
    ],
)
async def test_no_spelling_of_a_challenge_path_reaches_another_route(
    test_ca: TestCA, path: str
) -> None:
    async with running(test_ca) as s:
        status, headers, _ = await s.plain_request(dp.get(path))
        assert status in (301, 400), (path, status)
        if status == 301:
            assert headers["location"].startswith("https://app.test:")
        assert s.app.requests == [] and s.solver.requests == []


async def test_a_dot_spelling_of_the_token_itself_is_served(test_ca: TestCA) -> None:
    """The route is judged on the normalised path: ``/x/../`` and ``%2d`` still name the token
    (the solver gets the canonical path)."""
    async with running(test_ca) as s:
        spelled = TOKEN.replace("/tok-123", "/x/../tok%2d123")
        status, _, _ = await s.plain_request(dp.get(spelled))
        assert status == 200
        (req,) = s.solver.requests
        assert req.target == TOKEN


async def test_the_host_decides_and_cannot_be_spoofed(test_ca: TestCA) -> None:
    async with running(test_ca) as s:
        # The absolute-form authority wins over Host (RFC 9112 3.2.2): other.test, redirected.
        status, headers, _ = await s.plain_request(
            f"GET http://other.test{TOKEN} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode()
        )
        assert status == 301 and headers["location"].startswith("https://other.test:")
        # ... and the solver's host in the authority reaches the solver, whatever Host says.
        status, _, _ = await s.plain_request(
            f"GET http://app.test{TOKEN} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode()
        )
        assert status == 200
        (req,) = s.solver.requests
        assert req.header("host") == "app.test"
        # Two Host headers: which one a hop reads is the attack; refused.
        status, _, _ = await s.plain_request(
            f"GET {TOKEN} HTTP/1.1\r\nHost: other.test\r\nHost: app.test\r\n\r\n".encode()
        )
        assert status == 400
        for host in ("app.test@other.test", "app.test other.test", "app.test/x", ""):
            status, _, _ = await s.plain_request(
                f"GET {TOKEN} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            assert status == 400, host
        # A port or a trailing dot is the same host.
        status, _, _ = await s.plain_request(dp.get(TOKEN, host="APP.test.:80"))
        assert status == 200
        assert len(s.solver.requests) == 2 and s.app.requests == []


async def test_a_flagged_route_serves_only_its_challenge_paths(test_ca: TestCA) -> None:
    async with Recorder("wide") as wide:
        routes = (
            # A solver Ingress written with path "/": its other paths still redirect.
            dp.route("wide.test", wide.url, acme_http01_solver=True),
            # Flagged but not public (not something the operator builds): never served.
            dp.route("private.test", wide.url, prefix="/.well-known/", public=False,
                     acme_http01_solver=True),
        )
        async with running(test_ca, *routes) as s:
            for path in ("/admin", "/.well-known/other", "/.well-known/acme-challenge/../../admin",
                         "/.well-known/acme-challenge/..%2F..%2Fadmin"):
                status, headers, _ = await s.plain_request(dp.get(path, host="wide.test"))
                assert status == 301 and headers["location"].endswith(path), path
            status, _, _ = await s.plain_request(
                dp.get("/.well-known/acme-challenge/t", host="wide.test")
            )
            assert status == 200
            status, _, _ = await s.plain_request(
                dp.get("/.well-known/acme-challenge/t", host="private.test")
            )
            assert status == 301
            assert [r.target for r in wide.requests] == ["/.well-known/acme-challenge/t"]


async def test_an_unavailable_solver_route_says_why_on_plain_http(test_ca: TestCA) -> None:
    broken = dp.route("down.test", "http://127.0.0.1:9", prefix="/.well-known/acme-challenge/",
                      acme_http01_solver=True, unavailable="Service default/solver not found")
    async with running(test_ca, broken) as s:
        status, _, body = await s.plain_request(dp.get(TOKEN, host="down.test"))
        assert status == 503 and b"Service default/solver not found" in body


async def test_keep_alive_mixes_redirects_and_challenges(test_ca: TestCA) -> None:
    async with running(test_ca) as s:
        client = await dp.RawClient.connect(s.plain)
        try:
            await client.send(dp.get("/one") + dp.get(TOKEN) + dp.get("/two"))
            answers = [await client.response() for _ in range(3)]
        finally:
            await client.close()
        assert [a[0] for a in answers] == [301, 200, 301]
        assert answers[2][1]["location"].endswith("/two")
        assert len(s.solver.requests) == 1 and s.app.requests == []


async def test_the_solver_route_still_works_over_https(test_ca: TestCA) -> None:
    async with running(test_ca) as s:
        context = ssl.create_default_context(cadata=s.ca.cert_pem)
        client = await dp.RawClient.connect(s.srv.port, context)
        try:
            await client.send(dp.get(TOKEN) + dp.get("/p"))
            first, second = await client.response(), await client.response()
        finally:
            await client.close()
        assert first[0] == 200 and first[2].startswith(b"resp-1 solver")
        assert second[0] == 200 and second[2].startswith(b"resp-1 app /p")
        assert s.solver.requests[0].header("x-forwarded-proto") == "https"


def test_solver_match_needs_flag_public_route_and_challenge_path() -> None:
    route = dp.route("a.test", "http://127.0.0.1:1", acme_http01_solver=True)
    assert plain_http.solver_route(route)
    assert not plain_http.solver_route(dp.route("a.test", "http://127.0.0.1:1"))
    assert not plain_http.solver_route(
        dp.route("a.test", "http://127.0.0.1:1", public=False, acme_http01_solver=True)
    )
