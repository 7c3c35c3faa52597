"""Upstream TLS against real aiohttp HTTPS servers on 127.0.0.1: custom CA, SNI override, mTLS,
rotation of PEMs into new contexts."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.certs import TestCA
from vallum.core import config, errors
from vallum.proxy import tls, upstream_tls


@asynccontextmanager
async def https_upstream(ctx: ssl.SSLContext) -> AsyncIterator[config.Upstream]:
    async def hello(request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        return web.Response(text=f"hello {subject.get('commonName', 'anonymous')}")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield config.Upstream(
            url=f"https://127.0.0.1:{port}", scheme="https", host="127.0.0.1", port=port
        )
    finally:
        await runner.cleanup()


def server_ctx(ca: TestCA, names: list[str], client_ca: TestCA | None = None) -> ssl.SSLContext:
    leaf = ca.issue(names[0], sans=names)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(ctx, leaf.cert_pem, leaf.key_pem)
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca.cert_pem)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def route(**options: object) -> config.Route:
    return config.Route(
        from_url="https://app.test", host=config.Host("app.test"), to=(), source="routes.yaml:3",
        **options,  # type: ignore[arg-type]
    )


async def fetch(holder: upstream_tls.UpstreamTLS, r: config.Route, up: config.Upstream) -> str:
    async with aiohttp.ClientSession() as session, session.get(
        up.url, ssl=holder.context_for(r), server_hostname=holder.server_hostname(r, up)
    ) as response:
        return await response.text()


async def test_custom_ca_and_server_name_override(test_ca: TestCA) -> None:
    holder = upstream_tls.UpstreamTLS()
    async with https_upstream(server_ctx(test_ca, ["upstream.internal"])) as up:
        good = route(tls_custom_ca_pem=test_ca.cert_pem, tls_server_name="upstream.internal")
        assert await fetch(holder, good, up) == "hello anonymous"
        # Without the override the name checked is 127.0.0.1, which the certificate lacks.
        no_name = route(tls_custom_ca_pem=test_ca.cert_pem)
        assert holder.server_hostname(no_name, up) == "127.0.0.1"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(holder, no_name, up)
        # The system store does not know the test CA.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(holder, route(tls_server_name="upstream.internal"), up)
        # A custom CA replaces the system store: another CA is not enough.
        other = TestCA.create("Other")
        wrong = route(tls_custom_ca_pem=other.cert_pem, tls_server_name="upstream.internal")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(holder, wrong, up)
        assert await fetch(holder, route(tls_skip_verify=True), up) == "hello anonymous"


async def test_ssl_cert_file_and_global_certificate_authority(
    test_ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = route(tls_server_name="upstream.internal")
    async with https_upstream(server_ctx(test_ca, ["upstream.internal"])) as up:
        with_global = upstream_tls.UpstreamTLS(certificate_authority_pem=test_ca.cert_pem)
        assert await fetch(with_global, r, up) == "hello anonymous"
        monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.write(tmp_path)))
        assert await fetch(upstream_tls.UpstreamTLS(), r, up) == "hello anonymous"


async def test_client_certificate_for_mtls_upstream(test_ca: TestCA) -> None:
    client_ca = TestCA.create("Upstream client CA")
    proxy_cert = client_ca.issue("vallum-proxy", client=True)
    holder = upstream_tls.UpstreamTLS()
    base = {"tls_custom_ca_pem": test_ca.cert_pem, "tls_server_name": "mtls.internal"}
    async with https_upstream(server_ctx(test_ca, ["mtls.internal"], client_ca)) as up:
        with pytest.raises(aiohttp.ClientError):
            await fetch(holder, route(**base), up)
        with_cert = route(
            **base, tls_client_cert_pem=proxy_cert.cert_pem, tls_client_key_pem=proxy_cert.key_pem
        )
        assert await fetch(holder, with_cert, up) == "hello vallum-proxy"


def test_contexts_are_cached_by_content_and_rotated(test_ca: TestCA) -> None:
    holder = upstream_tls.UpstreamTLS()
    old, new = test_ca.issue("a", client=True), test_ca.issue("a", client=True)
    r_old = route(tls_client_cert_pem=old.cert_pem, tls_client_key_pem=old.key_pem)
    r_old_again = route(tls_client_cert_pem=old.cert_pem, tls_client_key_pem=old.key_pem)
    r_new = route(tls_client_cert_pem=new.cert_pem, tls_client_key_pem=new.key_pem)
    assert holder.context_for(r_old) is holder.context_for(r_old_again)
    first = holder.context_for(r_old)
    rotated = holder.context_for(r_new)
    assert rotated is not first
    assert len(holder) == 2
    settings = config.Settings(routes=(r_new,))
    holder.retain(config.RouteTable(settings, settings.checksum()))
    assert len(holder) == 1
    assert holder.context_for(r_new) is rotated
    assert holder.context_for(r_old) is not first  # rebuilt: the old one was dropped


def test_bad_pem_names_route_and_option_without_leaking_key(test_ca: TestCA) -> None:
    holder = upstream_tls.UpstreamTLS()
    leaf, other = test_ca.issue("a", client=True), test_ca.issue("b", client=True)
    with pytest.raises(errors.ConfigError, match=r"routes.yaml:3: tls_custom_ca"):
        holder.context_for(route(tls_custom_ca_pem="garbage"))
    with pytest.raises(errors.ConfigError, match="must be given together"):
        holder.context_for(route(tls_client_cert_pem=leaf.cert_pem))
    with pytest.raises(errors.ConfigError) as caught:
        holder.context_for(
            route(tls_client_cert_pem=leaf.cert_pem, tls_client_key_pem=other.key_pem)
        )
    message = str(caught.value)
    assert message.startswith("routes.yaml:3: tls_client_cert/tls_client_key: cannot load")
    assert "PRIVATE KEY" not in message and other.key_pem[40:80] not in message
