"""The HTTP/1.1 hot path against real upstreams on 127.0.0.1: keep-alive, pipelining, framing,
100-continue, errors, timeouts, websockets, upstream TLS and mTLS, and constant-memory streaming."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.proxy import dataplane as dp
from tests.support.certs import TestCA
from tests.support.net import free_port
from tests.support.transports import RecordingTransport
from vallum.proxy import http1, pipeline, upstream


async def test_keep_alive_reuses_one_upstream_connection() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        client = await dp.RawClient.connect(p.port)
        peers = set()
        for i in range(5):
            await client.send(dp.get(f"/n/{i}?q={i}"))
            status, _headers, body = await client.response()
            data = json.loads(body)
            assert status == 200
            assert data["path"] == f"/n/{i}" and data["query"] == f"q={i}"
            peers.add(data["peer"])
        await client.close()
        assert len(peers) == 1  # the same upstream socket every time
        assert p.ctx.pool.connects == 1
        assert [d["status"] for d in p.recorder.done] == [200] * 5


async def test_pipelined_requests_answer_in_order_with_bodies() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        client = await dp.RawClient.connect(p.port)
        burst = (
            dp.get("/one")
            + b"POST /two HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
            + b"PUT /three HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            + dp.get("/four")
        )
        await client.send(burst)
        seen = []
        for _ in range(4):
            status, _, body = await client.response()
            data = json.loads(body)
            seen.append((status, data["method"], data["path"], data["body"]))
        assert seen == [
            (200, "GET", "/one", ""),
            (200, "POST", "/two", "hello"),
            (200, "PUT", "/three", "abcde"),
            (200, "GET", "/four", ""),
        ]
        await client.close()


async def test_chunked_response_is_rechunked_and_http10_gets_close_delimited() -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"alpha-", b"beta-", b"gamma"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/s", stream)
    async with dp.upstream_app(app) as url, dp.serve(dp.table(dp.route("app.test", url))) as p:
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/s"))
        status, headers, body = await client.response()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert body == b"alpha-beta-gamma"
        await client.close()
        raw = await dp.raw_request(p.port, b"GET /s HTTP/1.0\r\nHost: app.test\r\n\r\n")
        head, _, body10 = raw.partition(b"\r\n\r\n")
        assert b"chunked" not in head.lower() and b"connection: close" in head.lower()
        assert body10 == b"alpha-beta-gamma"


async def test_head_response_has_no_body_and_connection_stays_usable() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        client = await dp.RawClient.connect(p.port)
        await client.send(b"HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n")
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await client.send(dp.get("/after"))
        status, _, body = await client.response()
        assert status == 200 and json.loads(body)["path"] == "/after"
        await client.close()
        assert p.ctx.pool.connects == 1


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        client = await dp.RawClient.connect(p.port)
        await client.send(
            b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"data")
        status, _, body = await client.response()
        data = json.loads(body)
        assert status == 200 and data["body"] == "data"
        assert "expect" not in data["headers"]
        await client.close()


async def test_refused_expect_100_gets_the_error_and_a_closed_connection() -> None:
    tbl = dp.table(dp.route("app.test", "http://127.0.0.1:9", public=False))
    async with dp.serve(tbl) as p:
        raw = await dp.raw_request(
            p.port,
            b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n",
        )
        assert raw.startswith(b"HTTP/1.1 403")
        assert b"100 Continue" not in raw and b"connection: close" in raw.lower()


async def test_unreachable_upstream_is_502_with_request_id_and_json_on_request() -> None:
    dead = free_port()
    async with dp.serve(dp.table(dp.route("app.test", f"http://127.0.0.1:{dead}"))) as p:
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/", extra="Accept: application/json\r\n"))
        status, headers, body = await client.response()
        assert status == 502
        data = json.loads(body)
        assert data["request_id"] == headers["x-request-id"] == p.recorder.done[0]["request_id"]
        await client.send(dp.get("/"))
        status, headers, body = await client.response()
        assert status == 502 and headers["content-type"].startswith("text/html")
        assert headers["x-request-id"].encode() in body
        await client.close()


async def test_slow_upstream_is_504_after_the_route_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", slow)
    async with (
        dp.upstream_app(app) as url,
        dp.serve(dp.table(dp.route("app.test", url, timeout=0.3))) as p,
    ):
        started = time.monotonic()
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/"))
        status, _, _ = await client.response()
        assert status == 504
        assert time.monotonic() - started < 1.2
        await client.close()


async def test_no_route_404_and_bad_requests() -> None:
    async with dp.serve(dp.table(dp.route("app.test", "http://127.0.0.1:9"))) as p:
        client = await dp.RawClient.connect(p.port)
        await client.send(dp.get("/", host="other.test"))
        assert (await client.response())[0] == 404
        await client.send(dp.get("/a/%2e%2e%2f%2e%2e/x"))  # traversal above the root
        assert (await client.response())[0] == 400
        await client.close()
        raw = await dp.raw_request(p.port, b"GET / HTTP/1.1\r\n\r\n")  # no Host
        assert raw.startswith(b"HTTP/1.1 400")
        raw = await dp.raw_request(p.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 400") and b"connection: close" in raw.lower()
        smuggle = (
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        raw = await dp.raw_request(p.port, smuggle)  # both framings: refused, never forwarded
        assert raw.startswith(b"HTTP/1.1 400")
        bad_chunk = b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        raw = await dp.raw_request(p.port, bad_chunk)  # cut off, no hang
        assert b"200 OK" not in raw
        big = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
        raw = await dp.raw_request(p.port, big)
        assert raw.startswith(b"HTTP/1.1 431")


async def test_hop_by_hop_and_forwarded_headers_reach_the_upstream_right() -> None:
    async with dp.upstream_app(dp.echo_app()) as url:
        tbl = dp.table(dp.route("app.test", url), xff_num_trusted_hops=1)
        async with dp.serve(tbl) as p:
            client = await dp.RawClient.connect(p.port)
            await client.send(
                dp.get(
                    "/h",
                    extra="Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n"
                    "X-Forwarded-For: 203.0.113.7\r\nX-Request-Id: spoofed\r\n"
                    "X-Pomerium-Jwt-Assertion: forged\r\n",
                )
            )
            _status, headers, body = await client.response()
            upstream_headers = json.loads(body)["headers"]
            assert "x-secret" not in upstream_headers and "keep-alive" not in upstream_headers
            assert "x-pomerium-jwt-assertion" not in upstream_headers
            assert upstream_headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
            assert upstream_headers["x-forwarded-proto"] == "http"
            assert upstream_headers["x-forwarded-host"] == "app.test"
            assert upstream_headers["x-request-id"] != "spoofed"
            assert "keep-alive" not in headers  # the upstream's hop-by-hop header is dropped
            await client.close()
            # One trusted hop: the client address is the one the proxy in front appended.
            ex = p.recorder.done[0]
            assert (ex["status"], ex["client_ip"]) == (200, "203.0.113.7")


async def test_websocket_echo_is_spliced_when_allowed() -> None:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    async with dp.upstream_app(app) as url:
        tbl = dp.table(dp.route("ws.test", url, allow_websockets=True), dp.route("app.test", url))
        async with dp.serve(tbl) as p, aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{p.port}/ws"
            async with session.ws_connect(base, headers={"Host": "ws.test"}) as ws:
                for i in range(3):
                    await ws.send_str(f"m{i}")
                    assert (await ws.receive(timeout=5)).data == f"echo:m{i}"
                await ws.send_bytes(b"\x01\x02\x03" * 1000)
                assert (await ws.receive(timeout=5)).data == b"\x03\x02\x01" * 1000
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with session.ws_connect(base, headers={"Host": "app.test"}):
                    pass
            assert refused.value.status == 403


async def test_upstream_tls_with_custom_ca_and_client_certificate(test_ca: TestCA) -> None:
    leaf = test_ca.issue("up.test", sans=["up.test", "127.0.0.1"])
    client_leaf = test_ca.issue("vallum-proxy", client=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*_write(leaf, "up"))
    server_ctx.load_verify_locations(cadata=test_ca.cert_pem)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    async def who(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in cert["subject"]) if cert else {}
        return web.Response(text=subject.get("commonName", "-"))

    app = web.Application()
    app.router.add_get("/", who)
    async with dp.upstream_app(app, ssl_context=server_ctx) as url:
        good = dp.route(
            "app.test",
            url,
            tls_custom_ca_pem=test_ca.cert_pem,
            tls_server_name="up.test",
            tls_client_cert_pem=client_leaf.cert_pem,
            tls_client_key_pem=client_leaf.key_pem,
        )
        no_client_cert = dp.route("bad.test", url, tls_custom_ca_pem=test_ca.cert_pem)
        untrusted = dp.route("untrusted.test", url)  # system CAs only: verification fails
        async with dp.serve(dp.table(good, no_client_cert, untrusted)) as p:
            client = await dp.RawClient.connect(p.port)
            await client.send(dp.get("/"))
            status, _, body = await client.response()
            assert (status, body) == (200, b"vallum-proxy")
            await client.send(dp.get("/", host="bad.test"))
            assert (await client.response())[0] == 502
            await client.send(dp.get("/", host="untrusted.test"))
            assert (await client.response())[0] == 502
            await client.close()


async def test_downstream_tls_and_client_certificate_reach_the_gate(test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.test", sans=["app.test"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*_write(leaf, "front"))
    seen: list[object] = []

    class Spy:
        async def intercept(self, req, table):  # type: ignore[no-untyped-def]
            seen.append(req.scheme)
            return None

        async def authorize(self, req, match, table):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0)  # a gate that really suspends
            return pipeline.Allow(request_headers=(("X-Gate", "yes"),))

        def strip_request_headers(self) -> frozenset[str]:
            return frozenset({"x-gate"})

    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url)), ssl_context=ctx, gate=Spy()) as p,
    ):
        client_ctx = ssl.create_default_context(cadata=test_ca.cert_pem)
        client = await dp.RawClient.connect(p.port, client_ctx)
        await client.send(dp.get("/", extra="X-Gate: forged\r\n"))
        status, _, body = await client.response()
        headers = json.loads(body)["header_list"]
        assert (
            status == 200 and ["x-gate", "yes"] in headers and ["x-gate", "forged"] not in headers
        )
        assert dict(headers)["x-forwarded-proto"] == "https"
        assert seen == ["https"]
        await client.close()


def _write(leaf: object, stem: str) -> tuple[str, str]:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    cert, key = leaf.write(folder, stem)  # type: ignore[attr-defined]
    return str(cert), str(key)


# -- streaming in constant memory, measured on a proxy in its own process --------------------


STREAM_BYTES = int(os.environ.get("VALLUM_STREAM_BYTES", str(64 * 1024 * 1024)))
RSS_GROWTH_LIMIT = 12 * 1024 * 1024
SLOW_EVERY = 1 << 20  # the slow side pauses 10 ms a MiB (~100 MB/s) so buffers would pile up


def _rss(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


async def test_streaming_upload_and_download_in_constant_memory(tmp_path: Path) -> None:
    chunk = b"v" * 65536
    received = {"bytes": 0}

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["n"])
        resp = web.StreamResponse(headers={"Content-Length": str(size)})
        await resp.prepare(request)
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await resp.write(part)
            sent += len(part)
        return resp

    async def upload(request: web.Request) -> web.Response:
        total = 0
        mark = 0
        async for data in request.content.iter_chunked(65536):
            total += len(data)
            if total - mark >= SLOW_EVERY:  # a slow reader: the proxy must hold the client back
                mark = total
                await asyncio.sleep(0.01)
        received["bytes"] = total
        return web.Response(text=str(total))

    app = web.Application(client_max_size=1 << 40)
    app.router.add_get("/down", download)
    app.router.add_post("/up", upload)
    async with dp.upstream_app(app) as url:
        port = free_port()
        config = tmp_path / "vallum.yaml"
        config.write_text(
            f"address: 127.0.0.1:{port}\ninsecure_server: true\nroutes:\n"
            f"  - from: https://app.test\n    to: {url}\n    timeout: 0\n"
            "    allow_public_unauthenticated_access: true\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "vallum.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await _wait_port(port)
            async with aiohttp.ClientSession() as session:
                target = f"http://127.0.0.1:{port}"
                await _transfer(session, target, 4 * 1024 * 1024, received)  # warm up
                rss_before, _ = _rss(proc.pid)
                await _transfer(session, target, STREAM_BYTES, received)
                _, peak = _rss(proc.pid)
            print(f"proxy RSS before {rss_before >> 20} MiB, peak {peak >> 20} MiB")
            assert peak - rss_before < RSS_GROWTH_LIMIT, (rss_before, peak)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
        assert b"Traceback" not in err, err.decode()


async def _transfer(
    session: aiohttp.ClientSession, target: str, size: int, received: dict[str, int]
) -> None:
    headers = {"Host": "app.test"}
    got = 0
    async with session.get(f"{target}/down?n={size}", headers=headers) as resp:
        assert resp.status == 200
        mark = 0
        async for data in resp.content.iter_chunked(1 << 20):
            got += len(data)
            if got - mark >= SLOW_EVERY:  # a slow client: the proxy must hold the upstream back
                mark = got
                await asyncio.sleep(0.01)
    assert got == size

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        block = b"u" * (1 << 20)
        while sent < size:
            part = block[: min(len(block), size - sent)]
            yield part
            sent += len(part)

    async with session.post(f"{target}/up", data=body(), headers=headers) as resp:
        assert resp.status == 200 and int(await resp.text()) == size
    assert received["bytes"] == size


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_request_head_sent_too_slowly_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from vallum.proxy import http1

    monkeypatch.setattr(http1, "HEAD_TIMEOUT", 0.5)
    async with dp.serve(dp.table(dp.route("app.test", "http://127.0.0.1:9"))) as p:
        client = await dp.RawClient.connect(p.port)
        await client.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n")  # never finished
        started = time.monotonic()
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
        assert time.monotonic() - started < 3
        await client.close()


async def test_idle_timeout_cuts_a_stalled_stream_and_timeout_zero_allows_long_ones() -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b"first")
        await asyncio.sleep(float(request.query["pause"]))
        await resp.write(b"x" * 95)
        return resp

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "8"})
        await resp.prepare(request)
        for _ in range(8):  # 1.2 s in all, never 0.4 s without a byte
            await asyncio.sleep(0.15)
            await resp.write(b"d")
        return resp

    app = web.Application()
    app.router.add_get("/", stall)
    app.router.add_get("/drip", drip)
    async with dp.upstream_app(app) as url:
        tbl = dp.table(dp.route("app.test", url, timeout=0, idle_timeout=0.4))
        async with dp.serve(tbl) as p:
            started = time.monotonic()
            raw = await dp.raw_request(p.port, dp.get("/?pause=1.5"))
            assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"first")  # cut off
            assert time.monotonic() - started < 1.2
            client = await dp.RawClient.connect(p.port)
            await client.send(dp.get("/?pause=0.1"))  # pauses shorter than the idle timeout
            status, _, body = await client.response()
            assert (status, len(body)) == (200, 100)
            # A download that keeps flowing for longer than the idle timeout is not idle.
            await client.send(dp.get("/drip"))
            status, _, body = await client.response()
            assert (status, body) == (200, b"d" * 8)
            await client.close()


async def test_a_stalled_upload_is_cut_after_the_idle_timeout() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url, idle_timeout=0.4))) as p,
    ):
        client = await dp.RawClient.connect(p.port)
        await client.send(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        data = await asyncio.wait_for(client.reader.read(), 5)
        assert time.monotonic() - started < 2
        assert data.startswith(b"HTTP/1.1 504")  # no response head yet: the error page
        await client.close()


async def test_client_identity_headers_are_stripped_also_after_a_reload() -> None:
    async with dp.upstream_app(dp.echo_app()) as url:
        route = dp.route("app.test", url)
        async with dp.serve(dp.table(route)) as p:
            forged = (
                "X-Email: forged@example.com\r\nX-Vallum-Claim-Groups: admins\r\n"
                "X-Pomerium-Claim-Email: forged@example.com\r\nX-Vallum-Future: 1\r\n"
            )
            client = await dp.RawClient.connect(p.port)
            await client.send(dp.get("/a", extra=forged))
            _status, _headers, body = await client.response()
            seen = json.loads(body)["headers"]
            assert not [k for k in seen if k.startswith(("x-vallum-", "x-pomerium-"))]
            assert seen["x-email"] == "forged@example.com"  # not a claim header (yet)
            # A reload adds a map-form claim header: the same keep-alive connection's next
            # request has it stripped.
            p.holder.current = dp.table(route, jwt_claims_headers=(("X-Email", "email"),))
            await client.send(dp.get("/b", extra=forged))
            _status, _headers, body = await client.response()
            seen = json.loads(body)["headers"]
            assert "x-email" not in seen
            assert not [k for k in seen if k.startswith(("x-vallum-", "x-pomerium-"))]
            await client.close()


async def test_corked_writes_of_a_round_go_out_together_when_the_round_ends() -> None:
    """A response's head and body (and anything written to the connection meanwhile) go out in
    one write after the round of callbacks, for every connection of the listener at once."""
    ctx = http1.Context(dp.Holder(dp.table()), dp.PublicOnlyGate(), upstream.Pool())
    first, second = ctx.protocol(), ctx.protocol()
    one, two = RecordingTransport(), RecordingTransport()
    first.connection_made(one)
    second.connection_made(two)
    for proto, name in ((first, b"a"), (second, b"b")):
        proto.cork()
        proto.write(b"head-" + name)
        proto.write(b"body-" + name)
        proto.uncork()
    first.write(b"-more")  # written while the batch waits: joins it, in order
    assert one.calls == [] and two.calls == []
    await asyncio.sleep(0)  # the round ends
    assert one.calls == [b"head-abody-a-more"] and two.calls == [b"head-bbody-b"]
    first.write(b"direct")  # no batch pending: written at once
    assert one.calls[-1] == b"direct"
    first.cork()
    first.write(b"last")
    first.uncork()
    first.close_when_idle()  # closing flushes the batch first
    assert one.calls[-1] == b"last"
    ctx.close()


# -- hostile request heads (issue 11: smuggling, host confusion, floods, trailers) ------------


async def _one(port: int, data: bytes) -> tuple[int, dict[str, Any], bytes]:
    client = await dp.RawClient.connect(port)
    try:
        await client.send(data)
        return await client.response()
    finally:
        await client.close()


async def test_a_connection_token_naming_content_length_cannot_smuggle_a_request() -> None:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "body": await request.read(),
                     "assertion": request.headers.get("X-Vallum-Jwt-Assertion")})
        return web.Response(text=f"for {request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with dp.upstream_app(app) as url, dp.serve(dp.table(dp.route("app.test", url))) as p:
        smuggled = (
            b"GET /admin HTTP/1.1\r\nHost: admin.test\r\nX-Vallum-Jwt-Assertion: forged\r\n\r\n"
        )
        status, _, body = await _one(
            p.port,
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Content-Length\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled),
        )
        assert (status, body) == (200, b"for /a")
        # A second client on the pooled upstream connection gets its own answer.
        status, _, body = await _one(p.port, dp.get("/b"))
        assert (status, body) == (200, b"for /b")
    assert [(s["path"], s["body"]) for s in seen] == [("/a", smuggled), ("/b", b"")]
    assert all(s["assertion"] is None for s in seen)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        # Two Host headers: which one a hop reads is the attack (RFC 9112 3.2).
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: admin.test\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: app.test, admin.test\r\n\r\n", 400),
        (b"GET http://user@app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
         b"0\r\n\r\n", 501),
        (b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n", 405),
        # 101 fields, each tiny: the count bounds the head, not only the bytes.
        (b"GET / HTTP/1.1\r\nHost: app.test\r\n" + b"x:\r\n" * 100 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\n" + b"x:\r\n" * 65_000 + b"\r\n", 431),
    ],
)
async def test_hostile_heads_are_refused_before_any_upstream(head: bytes, status: int) -> None:
    served: list[str] = []

    async def record(request: web.Request) -> web.Response:
        served.append(request.host)
        return web.Response(text="upstream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with dp.upstream_app(app) as url:
        tbl = dp.table(dp.route("app.test", url), dp.route("*", url))
        async with dp.serve(tbl) as p:
            raw = await dp.raw_request(p.port, head)
    assert raw.startswith(b"HTTP/1.1 %d" % status), raw[:80]
    assert served == []


async def test_an_absolute_form_authority_is_the_host_matched_authorised_and_forwarded() -> None:
    async with dp.upstream_app(dp.echo_app()) as url:
        tbl = dp.table(
            dp.route("public.test", url, preserve_host_header=True),
            dp.route("admin.test", url, public=False),
        )
        async with dp.serve(tbl) as p:
            status, _, body = await _one(
                p.port, b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\n\r\n"
            )
            assert status == 200
            hosts = [v for k, v in json.loads(body)["header_list"] if k == "host"]
            got = json.loads(body)["headers"]
            assert hosts == ["public.test"] and got["x-forwarded-host"] == "public.test"
            # ... and the other way round: the authority decides, and admin.test is refused.
            status, _, _ = await _one(
                p.port, b"GET http://admin.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n"
            )
            assert status == 403


async def test_trailers_never_become_request_headers() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        status, _, body = await _one(
            p.port,
            b"POST /t HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Vallum-Jwt-Assertion: forged\r\nX-Trailer: t\r\n"
            b"Host: evil.test\r\n\r\n",
        )
    got = json.loads(body)
    assert status == 200 and got["body"] == "abc"
    names = [k for k, _ in got["header_list"]]
    assert "x-trailer" not in names and "x-vallum-jwt-assertion" not in names
    assert names.count("host") == 1 and got["headers"]["host"] != "evil.test"


async def test_one_endless_header_is_cut_off_by_the_bytes_received() -> None:
    async with dp.serve(dp.table(dp.route("app.test", "http://127.0.0.1:9"))) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Long: ")
        answer = b""
        for _ in range(40):  # 40 x 8 KiB, never a line end
            writer.write(b"a" * 8192)
            await writer.drain()
            await asyncio.sleep(0)
            if reader.at_eof():
                break
        answer = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431")


async def test_header_floods_on_other_connections_do_not_stall_a_probe() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        flood = b"GET / HTTP/1.1\r\nHost: app.test\r\n" + b"x:\r\n" * 65_000 + b"\r\n"
        attackers = [
            asyncio.create_task(dp.raw_request(p.port, flood * 2, timeout=10))
            for _ in range(4)
        ]
        worst = 0.0
        for _ in range(10):
            started = time.perf_counter()
            status, _, _ = await _one(p.port, dp.get("/probe"))
            worst = max(worst, time.perf_counter() - started)
            assert status == 200
        for task in attackers:
            assert (await task).startswith(b"HTTP/1.1 431")
    assert worst < 1.0, f"a probe waited {worst:.2f} s behind the flood"


@pytest.mark.parametrize("action", ["allow", "drop_header", "reject_request"])
async def test_headers_with_underscores_action(action: str) -> None:
    async with dp.upstream_app(dp.echo_app()) as url:
        tbl = dp.table(dp.route("app.test", url), headers_with_underscores_action=action)
        async with dp.serve(tbl) as p:
            status, _, body = await _one(
                p.port, dp.get("/", extra="My_Header: v\r\nX_Vallum_Jwt_Assertion: forged\r\n")
            )
    if action == "reject_request":
        assert status == 400
        return
    got = json.loads(body)["headers"]
    assert status == 200 and "x_vallum_jwt_assertion" not in got
    assert ("my_header" in got) == (action == "allow")


async def test_sni_must_name_the_host_when_client_certificates_are_in_use(
    test_ca: TestCA,
) -> None:
    from vallum.core import config
    from vallum.proxy import tls

    leaf = test_ca.issue("app.test", ["app.test", "*.corp.test"])
    settings = dp.table(
        certificates=(config.Certificate(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem),),
        downstream_mtls=config.DownstreamMTLS(ca_pem=test_ca.cert_pem, enforcement="policy"),
    ).settings
    server_ctx = tls.server_context(settings, defer_client_verification=True)
    async with dp.upstream_app(dp.echo_app()) as url:
        tbl = dp.table(
            dp.route("app.test", url), dp.route("admin.corp.test", url),
            downstream_mtls=settings.downstream_mtls,
        )
        async with dp.serve(tbl, ssl_context=server_ctx) as p:
            client_ctx = ssl.create_default_context(cadata=test_ca.cert_pem)
            client = await dp.RawClient.connect(p.port, client_ctx)  # SNI app.test
            await client.send(dp.get("/", host="admin.corp.test"))
            assert (await client.response())[0] == 421
            await client.close()
            client = await dp.RawClient.connect(p.port, client_ctx)
            await client.send(dp.get("/", host="App.Test:443"))
            assert (await client.response())[0] == 200
            await client.close()


async def test_a_large_body_after_a_head_split_across_reads_is_not_taken_for_a_long_head() -> None:
    async with (
        dp.upstream_app(dp.echo_app()) as url,
        dp.serve(dp.table(dp.route("app.test", url))) as p,
    ):
        body = b"b" * 300_000
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /big HTTP/1.1\r\nHost: app.test\r\n")  # the head, in two reads
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        client = dp.RawClient(reader, writer)
        status, _, answer = await client.response()
        await client.close()
    assert status == 200 and len(json.loads(answer)["body"]) == len(body)
