"""The sidecar (``vallum.verify.sidecar``) in front of a real app, with a real JWKS server: what
reaches the app, what is refused, and hostile requests written byte by byte."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

import vallum.verify as api
from tests.support import rawclient
from tests.support.net import free_port
from tests.verify import world
from vallum.proxy import jwt as vjwt

HOST = world.HOST


@dataclass
class Setup:
    signer: vjwt.AssertionMinter
    jwks: world.JwksServer
    app: world.App
    cache: api.JwksCache
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as jwks, world.app_server() as app:
        cache = api.JwksCache(jwks.url, refetch_interval=0.2, retry_interval=0.2)
        verifier = api.Verifier(cache, HOST)
        try:
            async with world.sidecar_running(verifier, app.url) as port:
                yield Setup(signer, jwks, app, cache, port)
        finally:
            await cache.close()


async def fetch(
    url: str, token: str | None = None, method: str = "GET", data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    sent = dict(headers or {})
    if token is not None:
        sent[api.DEFAULT_HEADER] = token
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
        method, url, headers=sent, data=data
    ) as response:
        return response.status, dict(response.headers), await response.read()


def seen_header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


async def test_a_valid_assertion_reaches_the_app_with_path_query_and_the_token(
    setup: Setup,
) -> None:
    token = world.mint(setup.signer)
    status, headers, body = await fetch(f"{setup.url}/a%2Fb/c?x=1&y=%20", token)
    assert status == 200, body
    record = json.loads(body)
    assert record["path"] == "/a%2Fb/c?x=1&y=%20"
    assert seen_header(record, api.DEFAULT_HEADER) == [token]
    assert headers["X-App"] == "yes"
    assert len(setup.app.seen) == 1


async def test_bodies_stream_both_ways(setup: Setup) -> None:
    token = world.mint(setup.signer)
    payload = bytes(range(256)) * 12_000  # ~3 MB

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    status, _, body = await fetch(f"{setup.url}/upload", token, "POST", data=chunks())
    assert status == 200, body
    record = json.loads(body)
    assert record["body_length"] == len(payload)
    assert record["body_sha256"] == hashlib.sha256(payload).hexdigest()
    status, _, body = await fetch(f"{setup.url}/stream", token)
    assert status == 200 and body == b"".join(f"part {i}\n".encode() for i in range(5))


async def test_a_body_with_content_length_and_expect_100_continue(setup: Setup) -> None:
    token = world.mint(setup.signer)
    body = b"0123456789" * 1000
    head = rawclient.request("PUT", "/put", [
        ("Host", HOST), (api.DEFAULT_HEADER, token), ("Content-Length", str(len(body))),
        ("Expect", "100-continue"),
    ])
    [response] = await rawclient.send(setup.port, head + body)
    assert response.status == 200, response.body
    record = json.loads(response.body)
    assert record["body_length"] == len(body) and record["method"] == "PUT"
    assert seen_header(record, "Content-Length") == [str(len(body))]
    assert seen_header(record, "Expect") == []


async def test_an_app_that_hangs_up_mid_body_is_not_passed_off_as_complete(setup: Setup) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):  # not a hang, not a short "complete" body
        await asyncio.wait_for(fetch(f"{setup.url}/broken", world.mint(setup.signer)), 10)


async def test_hop_by_hop_headers_are_removed(setup: Setup) -> None:
    token = world.mint(setup.signer)
    request = rawclient.request("GET", "/h", [
        ("Host", HOST), (api.DEFAULT_HEADER, token), ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "hop"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("X-Kept", "end-to-end"),
    ])
    [response] = await rawclient.send(setup.port, request)
    assert response.status == 200, response.body
    record = json.loads(response.body)
    names = {k.lower() for k, _ in record["headers"]}
    assert not names & {"x-secret", "keep-alive", "te", "proxy-authorization"}
    assert seen_header(record, "X-Kept") == ["end-to-end"]
    assert seen_header(record, "Host") == [HOST]  # the public host, as Vallum sent it


def refused_tokens(signer: vjwt.AssertionMinter) -> dict[str, tuple[str | None, str]]:
    now = time.time()
    stranger = world.minter()
    return {
        "expired": (world.mint(signer, now=now - 400), "assertion expired"),
        "not yet valid": (world.sign(signer, world.claims(nbf=int(now) + 120)),
                          "assertion not yet valid"),
        "wrong audience": (world.mint(signer, host="other.example.test"), "wrong audience"),
        "wrong issuer": (world.sign(signer, world.claims(iss="evil.example")), "wrong issuer"),
        "unknown key": (world.mint(stranger), "unknown key"),
        "alg none": (world.unsigned(world.claims(), signer.kid), "unsupported algorithm"),
        "HS256 with the public key": (world.hs256_with_public_key(signer, world.claims()),
                                      "unsupported algorithm"),
        "missing": (None, "missing assertion"),
        "kid is a URL": (world.sign(signer, world.claims(), kid="https://evil.example/k"),
                         "unknown key"),
        "crit": (world.sign(signer, world.claims(), crit=["exp"]), "unsupported token header"),
        "jku": (world.sign(signer, world.claims(), jku="https://evil.example/jwks"),
                "unsupported token header"),
    }


async def test_every_refused_assertion_gets_401_and_never_reaches_the_app(setup: Setup) -> None:
    for case, (token, reason) in refused_tokens(setup.signer).items():
        status, headers, body = await fetch(f"{setup.url}/private", token, "POST", data=b"x")
        assert (status, body.decode().strip()) == (401, reason), case
        assert headers["WWW-Authenticate"].startswith("Bearer"), case
    assert setup.app.seen == []


@pytest.mark.parametrize("case", ["two headers", "inner whitespace", "oversized", "bearer"])
async def test_hostile_assertion_headers_written_by_hand(setup: Setup, case: str) -> None:
    token = world.mint(setup.signer)
    fields = {
        "two headers": [(api.DEFAULT_HEADER, token), (api.DEFAULT_HEADER.lower(), token)],
        "inner whitespace": [(api.DEFAULT_HEADER, token[:20] + " " + token[20:])],
        "oversized": [(api.DEFAULT_HEADER, token + "A" * 65_000)],
        "bearer": [(api.DEFAULT_HEADER, f"Bearer {token}")],
    }[case]
    request = rawclient.request("GET", "/private", [("Host", HOST), *fields])
    [response] = await rawclient.send(setup.port, request)
    assert response.status in (400, 401), (case, response.status, response.body)
    if case != "oversized":
        assert response.status == 401
    assert setup.app.seen == []


async def test_a_forged_second_assertion_header_is_not_passed_on(setup: Setup) -> None:
    token = world.mint(setup.signer)
    forged = world.sign(world.minter(), world.claims(sub="admin"))
    status, _, body = await fetch(
        f"{setup.url}/", token, headers={api.POMERIUM_HEADER: forged}
    )
    assert status == 200
    record = json.loads(body)
    assert seen_header(record, api.POMERIUM_HEADER) == []
    status, _, body = await fetch(f"{setup.url}/", token, headers={api.POMERIUM_HEADER: token})
    assert seen_header(json.loads(body), api.POMERIUM_HEADER) == [token]  # the same: kept


async def test_a_key_added_to_the_jwks_is_accepted_after_the_refetch(setup: Setup) -> None:
    newer = world.minter()
    setup.jwks.document = world.jwks(newer, setup.signer)
    await asyncio.sleep(0.25)  # past refetch_interval
    status, _, body = await fetch(f"{setup.url}/", world.mint(newer))
    assert status == 200, body


async def test_jwks_down_at_start_answers_503_until_the_keys_load() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer), status=503) as jwks, \
            world.app_server() as app:
        cache = api.JwksCache(jwks.url, retry_interval=0.2)
        try:
            async with world.sidecar_running(api.Verifier(cache, HOST), app.url) as port:
                token = world.mint(signer)
                status, _, body = await fetch(f"http://127.0.0.1:{port}/", token)
                assert (status, body) == (503, b"verification keys unavailable\n")
                jwks.status = 200
                await asyncio.sleep(0.25)
                status, _, _ = await fetch(f"http://127.0.0.1:{port}/", token)
                assert status == 200
                assert len(app.seen) == 1
        finally:
            await cache.close()


async def test_an_unreachable_app_is_502() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as jwks:
        cache = api.JwksCache(jwks.url)
        try:
            verifier = api.Verifier(cache, HOST)
            async with world.sidecar_running(verifier, f"http://127.0.0.1:{free_port()}") as port:
                status, _, _ = await fetch(f"http://127.0.0.1:{port}/", world.mint(signer))
                assert status == 502
        finally:
            await cache.close()


async def test_a_key_removed_from_the_jwks_is_refused_after_the_refresh() -> None:
    old, new = world.minter(), world.minter()
    async with world.jwks_server(world.jwks(new, old)) as jwks, world.app_server() as app:
        cache = api.JwksCache(jwks.url, refetch_interval=0.2, max_age=0.3)
        try:
            async with world.sidecar_running(api.Verifier(cache, HOST), app.url) as port:
                url = f"http://127.0.0.1:{port}/"
                assert (await fetch(url, world.mint(old)))[0] == 200
                jwks.document = world.jwks(new)
                await asyncio.sleep(0.35)
                status, _, body = await fetch(url, world.mint(old))
                assert (status, body) == (401, b"unknown key\n")
                assert (await fetch(url, world.mint(new)))[0] == 200
                assert len(app.seen) == 2
        finally:
            await cache.close()


async def test_a_smuggled_second_request_never_reaches_the_app(setup: Setup) -> None:
    token = world.mint(setup.signer)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked = b"0\r\n\r\n" + smuggled
    request = rawclient.request("POST", "/first", [
        ("Host", HOST), (api.DEFAULT_HEADER, token), ("Content-Length", str(len(chunked))),
        ("Transfer-Encoding", "chunked"),
    ], chunked)
    responses = await rawclient.send(setup.port, request, responses=2, timeout=2)
    assert [r.status for r in responses] == [400]  # both framings: refused as a whole
    assert setup.app.seen == []


async def test_an_absolute_form_target_still_goes_to_the_one_app(setup: Setup) -> None:
    token = world.mint(setup.signer)
    request = rawclient.request("GET", "http://evil.example/steal?x=1", [
        ("Host", HOST), (api.DEFAULT_HEADER, token),
    ])
    [response] = await rawclient.send(setup.port, request)
    assert response.status == 200, response.body
    assert [r["path"] for r in setup.app.seen] == ["/steal?x=1"]  # the path only, to our app
