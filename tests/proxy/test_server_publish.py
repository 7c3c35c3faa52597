"""``Server.publish``: a table built elsewhere (``vallum controller``) swapped in through a file
reload's checks, or rejected with the current table still serving."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.proxy import dataplane as dp
from tests.support.certs import TestCA
from tests.support.net import free_port
from vallum.core import config
from vallum.proxy import accesslog, server


@asynccontextmanager
async def started(table: config.RouteTable) -> AsyncIterator[server.Server]:
    srv = server.Server(
        table, gate=dp.PublicOnlyGate(), access_log=accesslog.AccessLog(enabled=False)
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close(drain=1)


async def status_of(port: int, host: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/", headers={"Host": host}
    ) as response:
        return response.status, await response.text()


async def test_publish_swaps_and_an_equal_table_is_no_swap() -> None:
    port = free_port()
    async with dp.upstream_app(dp.echo_app("a")) as url_a, dp.upstream_app(
        dp.echo_app("b")
    ) as url_b:
        first = dp.table(dp.route("a.test", url_a), address=f"127.0.0.1:{port}",
                         insecure_server=True)
        second = dp.table(dp.route("b.test", url_b), address=f"127.0.0.1:{port}",
                          insecure_server=True)
        async with started(first) as srv:
            assert (await status_of(port, "a.test"))[0] == 200
            assert await srv.publish(second) is True
            assert srv.holder.generation == 2
            assert srv.holder.current is second
            assert (await status_of(port, "b.test"))[0] == 200
            assert (await status_of(port, "a.test"))[0] == 404
            again = dp.table(dp.route("b.test", url_b), address=f"127.0.0.1:{port}",
                             insecure_server=True)
            assert await srv.publish(again) is True
            assert srv.holder.generation == 2  # same checksum: nothing to swap


async def test_a_table_the_listener_cannot_take_is_rejected() -> None:
    port = free_port()
    async with dp.upstream_app(dp.echo_app("a")) as url:
        first = dp.table(dp.route("a.test", url), address=f"127.0.0.1:{port}",
                         insecure_server=True)
        # Switching the listener from HTTP to HTTPS needs a restart: the reload refuses it.
        https = dp.table(dp.route("b.test", url), address=f"127.0.0.1:{port}")
        async with started(first) as srv:
            assert await srv.publish(https) is False
            assert srv.holder.current is first
            assert srv.holder.generation == 1
            assert srv.holder.last_error is not None
            assert "insecure_server" in srv.holder.last_error
            assert (await status_of(port, "a.test"))[0] == 200


# --- one route's bad upstream TLS material (vallum controller's Secrets) ---------------------


@asynccontextmanager
async def mtls_upstream(test_ca: TestCA, tmp_path: Path) -> AsyncIterator[str]:
    """An HTTPS upstream that requires a client certificate of ``test_ca`` and answers with
    the client certificate's common name."""
    leaf = test_ca.issue("up.test", sans=["up.test"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*leaf.write(tmp_path, "up"))
    server_ctx.load_verify_locations(cadata=test_ca.cert_pem)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    async def who(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in cert["subject"]) if cert else {}
        return web.Response(text=subject.get("commonName", "-"))

    app = web.Application()
    app.router.add_get("/", who)
    async with dp.upstream_app(app, ssl_context=server_ctx) as url:
        yield url


def mtls_route(host: str, url: str, ca: str, cert: str, key: str) -> config.Route:
    return dataclasses.replace(
        dp.route(host, url, tls_custom_ca_pem=ca, tls_server_name="up.test",
                 tls_client_cert_pem=cert, tls_client_key_pem=key),
        source=f"Ingress default/{host.split('.')[0]} spec.rules[0].http.paths[0]",
    )


async def test_one_routes_bad_tls_material_makes_only_that_route_unavailable(
    test_ca: TestCA, tmp_path: Path
) -> None:
    port = free_port()
    client = test_ca.issue("vallum-proxy", client=True)
    other_key = test_ca.issue("someone-else", client=True).key_pem
    async with mtls_upstream(test_ca, tmp_path) as mtls, dp.upstream_app(
        dp.echo_app("plain")
    ) as plain:
        def tables(*routes: config.Route) -> config.RouteTable:
            return dp.table(dp.route("plain.test", plain), *routes,
                            address=f"127.0.0.1:{port}", insecure_server=True)

        good = mtls_route("good.test", mtls, test_ca.cert_pem, client.cert_pem, client.key_pem)
        first = tables(good)
        broken = [
            # the key of another certificate (a half-rotated Secret)
            mtls_route("key.test", mtls, test_ca.cert_pem, client.cert_pem, other_key),
            # a CA bundle that is no PEM
            mtls_route("ca.test", mtls, "not a certificate", client.cert_pem, client.key_pem),
            # a truncated certificate
            mtls_route("cert.test", mtls, test_ca.cert_pem, client.cert_pem[:200],
                       client.key_pem),
        ]
        second = tables(good, *broken, dp.route("new.test", plain))
        async with started(first) as srv:
            assert await status_of(port, "good.test") == (200, "vallum-proxy")
            # As a file would be: refused whole, nothing of it goes live.
            assert await srv.publish(second) is False
            assert srv.holder.current is first
            assert (await status_of(port, "new.test"))[0] == 404
            # The controller's way: only the broken routes are unavailable.
            assert await srv.publish(second, isolate_routes=True) is True
            assert srv.holder.last_error is None
            assert (await status_of(port, "new.test"))[0] == 200
            assert await status_of(port, "good.test") == (200, "vallum-proxy")
            assert [p.route_index for p in srv.route_problems] == [2, 3, 4]
            assert [p.source for p in srv.route_problems] == [r.source for r in broken]
            for host, words in [("key.test", "tls_client_key"), ("ca.test", "tls_custom_ca"),
                                ("cert.test", "tls_client_cert")]:
                status, text = await status_of(port, host)
                assert status == 503, host
                assert "upstream TLS material" in text and words in text, text
                assert f"Ingress default/{host.split('.')[0]}" in text
            assert "PRIVATE KEY" not in str(srv.route_problems)
            served = srv.holder.current
            assert await srv.publish(second, isolate_routes=True) is True  # the same again
            assert srv.holder.current is served
            # The Secret fixed: the route is back, with its client certificate.
            fixed = tables(good, mtls_route("key.test", mtls, test_ca.cert_pem,
                                            client.cert_pem, client.key_pem))
            assert await srv.publish(fixed, isolate_routes=True) is True
            assert srv.route_problems == ()
            assert await status_of(port, "key.test") == (200, "vallum-proxy")


async def test_a_bad_global_certificate_authority_still_rejects_the_table(
    test_ca: TestCA, tmp_path: Path
) -> None:
    port = free_port()
    async with dp.upstream_app(dp.echo_app("a")) as url:
        first = dp.table(dp.route("a.test", url), address=f"127.0.0.1:{port}",
                         insecure_server=True)
        bad_ca = dp.table(dp.route("b.test", url), address=f"127.0.0.1:{port}",
                          insecure_server=True, certificate_authority_pem="garbage")
        async with started(first) as srv:
            assert await srv.publish(bad_ca, isolate_routes=True) is False
            assert srv.holder.current is first
            assert srv.holder.last_error is not None
            assert "certificate_authority" in srv.holder.last_error
            assert (await status_of(port, "a.test"))[0] == 200


def test_isolate_returns_the_table_itself_when_every_route_is_fine(test_ca: TestCA) -> None:
    client = test_ca.issue("vallum-proxy", client=True)
    table = dp.table(
        dp.route("a.test", "https://127.0.0.1:1", tls_custom_ca_pem=test_ca.cert_pem,
                 tls_client_cert_pem=client.cert_pem, tls_client_key_pem=client.key_pem),
        certificate_authority_pem=test_ca.cert_pem,
    )
    assert server.isolate_upstream_tls(table) == (table, ())
    lone_key = dataclasses.replace(table.settings.routes[0], tls_client_cert_pem=None)
    isolated, (problem,) = server.isolate_upstream_tls(dp.table(lone_key))
    assert "given together" in problem.problem
    (route,) = isolated.settings.routes
    assert route.unavailable is not None and route.tls_client_key_pem is None
    server.check_table(isolated)  # what remains passes the file's checks


def test_a_profile_that_loaded_once_is_not_built_again(test_ca: TestCA) -> None:
    """Every published table is checked; building a context reads the trust store (~20 ms), so
    profiles that loaded before are remembered: a second check of the same routes costs a
    fraction of the first. A bad one is still found every time."""
    clients = [test_ca.issue(f"client-{i}", client=True) for i in range(12)]
    routes = [
        dp.route(f"r{i}.test", "https://127.0.0.1:1", tls_custom_ca_pem=test_ca.cert_pem,
                 tls_client_cert_pem=c.cert_pem, tls_client_key_pem=c.key_pem)
        for i, c in enumerate(clients)
    ]
    table = dp.table(*routes)
    started = time.perf_counter()
    server.check_table(table)
    first = time.perf_counter() - started
    started = time.perf_counter()
    server.check_table(dp.table(*reversed(routes)))  # another table, the same profiles
    again = time.perf_counter() - started
    assert again < first / 4, (first, again)
    bad = dataclasses.replace(routes[0], tls_client_key_pem=clients[1].key_pem)
    for _ in range(2):
        _, problems = server.isolate_upstream_tls(dp.table(bad, *routes[1:]))
        assert [p.route_index for p in problems] == [0]
