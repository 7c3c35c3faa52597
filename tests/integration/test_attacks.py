"""Attacks on a running ``vallum serve``, the way an attacker makes them: raw sockets in, and an
upstream that records every byte it gets (:mod:`tests.support.recording`).

Each test says what the attacker tries and what must hold (issue 11's findings 1, 2, 3, 7, 8).
The questions asked of every request: how many requests did the upstream see, for which host,
with which identity headers; and of every pooled upstream connection: could it hold a response
nobody asked for.

One upstream serves every route (as in the issue's reproduction): the route a request was
authorised on is what Vallum says in ``X-Route`` (``set_request_headers``); a request that
arrives without it did not come from Vallum's forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serve_process import serve
from tests.support.certs import Leaf, TestCA
from tests.support.net import free_port
from tests.support.rawclient import Response, ResponseReader, request, send
from tests.support.recording import Recorder, unsolicited_response

PUBLIC = "public.example.test"  # anyone; the upstream Host is the `to` host
KEPT = "kept.example.test"  # anyone; preserve_host_header
ADMIN = "admin.example.test"  # only admin@example.test: never an anonymous client
OTHER = "other.example.test"  # no route of its own: the catch-all (public, preserve_host_header)

# What Vallum itself sets on every forwarded request, and the route's set_request_headers.
VALLUM_SET = ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id")
ROUTE_SET = {"X-Route": "public", "X-Tenant-Id": "tenant-1"}
CLAIM_HEADER = "X-Email"  # jwt_claims_headers: {X-Email: email}

# Header names only Vallum may send upstream (lower-case, "-" spelling).
RESERVED = {
    "x-vallum-jwt-assertion", "x-pomerium-jwt-assertion", "x-pomerium-claim-email",
    "x-vallum-jwt-assertion-for", "x-pomerium-jwt-assertion-for", "x-email",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-request-id",
    "x-route", "x-tenant-id", "host",
}


def _routes(up: Recorder) -> list[dict[str, Any]]:
    return [
        {"from": f"https://{PUBLIC}", "to": up.url, "allow_public_unauthenticated_access": True,
         "set_request_headers": ROUTE_SET},
        {"from": f"https://{KEPT}", "to": up.url, "allow_public_unauthenticated_access": True,
         "preserve_host_header": True, "set_request_headers": {"X-Route": "kept"}},
        {"from": f"https://{ADMIN}", "to": up.url, "set_request_headers": {"X-Route": "admin"},
         "policy": [{"allow": {"or": [{"email": {"is": "admin@example.test"}}]}}]},
        {"from": "https://*", "to": up.url, "allow_public_unauthenticated_access": True,
         "preserve_host_header": True, "set_request_headers": {"X-Route": "catch-all"}},
    ]


@dataclass
class World:
    port: int
    up: Recorder


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path, up: Recorder | None = None, **settings: Any
) -> AsyncIterator[World]:
    """``vallum serve`` (plain HTTP) with the routes above, all to one recording upstream."""
    async with contextlib.AsyncExitStack() as stack:
        if up is None:
            up = await stack.enter_async_context(Recorder("up"))
        elif up.port == 0:
            await stack.enter_async_context(up)
        port = free_port()
        config = tmp_path / "vallum.yaml"
        config.write_text(json.dumps({
            "address": f"127.0.0.1:{port}",
            "insecure_server": True,
            "jwt_claims_headers": {CLAIM_HEADER: "email"},
            **settings,
            "routes": _routes(up),
        }))
        await stack.enter_async_context(serve(config, port))
        async with asyncio.timeout(60):
            yield World(port, up)


def get(target: str, host: str = PUBLIC, *extra: tuple[str, str]) -> bytes:
    return request("GET", target, [("Host", host), *extra])


def own(resp: Response, target: str) -> bool:
    """Whether ``resp`` is the upstream's answer to the request for ``target``."""
    return resp.status == 200 and resp.text.startswith("resp-") and resp.text.endswith(
        f" {target}"
    )


# -- 1. smuggling through Connection-nominated framing headers -----------------------------------

SMUGGLED = request("GET", "/secret", [
    ("Host", ADMIN),
    ("X-Vallum-Jwt-Assertion", "forged"),
    ("X-Pomerium-Jwt-Assertion", "forged"),
    (CLAIM_HEADER, "admin@example.test"),
    ("Content-Length", "0"),
])


def _framed_by_length(connection: list[tuple[str, str]]) -> bytes:
    return request("POST", "/a", [
        ("Host", PUBLIC), *connection, ("Content-Length", str(len(SMUGGLED))),
    ], SMUGGLED)


def _framed_by_chunks(connection: list[tuple[str, str]]) -> bytes:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    return request("POST", "/a", [
        ("Host", PUBLIC), *connection, ("Transfer-Encoding", "chunked"),
    ], chunked)


EVERYTHING_VALLUM_SETS = ", ".join(
    ["Content-Length", "Transfer-Encoding", *VALLUM_SET, *ROUTE_SET]
)

SMUGGLING = {
    "keep-alive, Content-Length": _framed_by_length([("Connection", "keep-alive, Content-Length")]),
    "Content-Length in a second Connection line": _framed_by_length(
        [("Connection", "keep-alive"), ("Connection", "content-length")]
    ),
    "every header Vallum sets": _framed_by_length([("Connection", EVERYTHING_VALLUM_SETS)]),
    "chunked, Connection: Transfer-Encoding": _framed_by_chunks(
        [("Connection", f"keep-alive, {EVERYTHING_VALLUM_SETS}")]
    ),
}


@pytest.mark.parametrize("attack", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_a_connection_token_cannot_unframe_the_body_or_drop_what_vallum_sets(
    attack: bytes, tmp_path: Path
) -> None:
    """The attacker names ``Content-Length`` (or ``Transfer-Encoding``, ``Host``, the
    ``X-Forwarded-*`` headers, ``X-Request-Id``, the route's ``set_request_headers``) in
    ``Connection`` and sends, as the body of a public ``POST``, a whole request for the admin
    host with forged identity headers. The upstream must see exactly one request: the ``POST``,
    its body intact and framed by Vallum, with every header Vallum sets."""
    async with world(tmp_path) as w:
        responses = await send(w.port, attack)
        await w.up.settle()
    assert len(responses) == 1 and own(responses[0], "/a"), responses
    assert [(r.method, r.target) for r in w.up.requests] == [("POST", "/a")], w.up.requests
    seen = w.up.requests[0]
    assert seen.complete and seen.body == SMUGGLED, seen
    assert seen.framed, seen.headers
    if seen.header("content-length") is not None:
        assert seen.header("content-length") == str(len(SMUGGLED))
    for name in (*VALLUM_SET, *ROUTE_SET):
        assert len(seen.values(name)) == 1, (name, seen.headers)
    assert seen.header("X-Route") == "public" and seen.header("X-Tenant-Id") == "tenant-1"
    assert seen.header("X-Forwarded-Host") == PUBLIC
    assert not w.up.errors, w.up.errors


async def _clients(port: int, targets: list[str]) -> list[list[Response]]:
    """Several clients at once, one request each, each on its own connection."""
    return list(await asyncio.gather(*(send(port, get(t), timeout=4) for t in targets)))


async def test_after_a_smuggling_attempt_every_client_gets_its_own_response(
    tmp_path: Path,
) -> None:
    """After the attack above, the pooled upstream connection must hold no response nobody
    asked for: clients arriving together each get the answer to their own request (in the
    issue, an anonymous client received a signed-in user's response)."""
    attack = SMUGGLING["keep-alive, Content-Length"]
    async with world(tmp_path) as w:
        for round_ in range(3):
            await send(w.port, attack)
            targets = [f"/client-{round_}-{n}" for n in range(4)]
            answers = await _clients(w.port, targets)
            for target, got in zip(targets, answers, strict=True):
                assert len(got) == 1 and own(got[0], target), (target, got)
        await w.up.settle()
    assert not w.up.with_target("/secret"), w.up.with_target("/secret")


@pytest.mark.parametrize("when", ["with the response", "later, while idle"])
async def test_an_upstream_connection_that_sends_an_unsolicited_response_leaves_the_pool(
    when: str, tmp_path: Path
) -> None:
    """A misbehaving (or compromised) upstream sends a second response nobody asked for,
    right after its answer or a moment later while the connection is idle in the pool. The
    connection must be closed, never reused: no client ever gets the unsolicited response."""
    bogus = unsolicited_response("unsolicited")
    up = (
        Recorder("odd", extra=bogus) if when == "with the response"
        else Recorder("odd", late=bogus, late_delay=0.1)
    )
    async with world(tmp_path, up) as w:
        first = await send(w.port, get("/first"))
        assert len(first) == 1 and own(first[0], "/first"), first
        await asyncio.sleep(0.5)  # the late bytes are in; the connection is (or was) pooled
        assert w.up.connections[0].closed, "the connection that misbehaved is still open"
        for round_ in range(2):
            targets = [f"/next-{round_}-{n}" for n in range(4)]
            answers = await _clients(w.port, targets)
            for target, got in zip(targets, answers, strict=True):
                assert len(got) == 1 and own(got[0], target), (target, got)
            await asyncio.sleep(0.3)


# -- 2. one host authorises, another is forwarded -------------------------------------------------


@pytest.mark.parametrize("host", [PUBLIC, KEPT])
async def test_an_absolute_form_target_and_a_different_host_header_never_forward_that_host(
    host: str, tmp_path: Path
) -> None:
    """``GET http://public.example.test/x`` with ``Host: admin.example.test``: matched and
    authorised as the public route, so either refused (400) or forwarded with the public host
    as ``Host`` (with ``preserve_host_header``) and ``X-Forwarded-Host`` -- never the admin
    host."""
    attack = request("GET", f"http://{host}/x", [("Host", ADMIN)])
    async with world(tmp_path) as w:
        responses = await send(w.port, attack)
        await w.up.settle()
    assert len(responses) == 1, responses
    if responses[0].status == 400:
        assert not w.up.requests, w.up.requests
        return
    assert own(responses[0], "/x"), responses
    assert len(w.up.requests) == 1, w.up.requests
    seen = w.up.requests[0]
    assert seen.header("X-Route") == ("public" if host == PUBLIC else "kept")
    assert seen.header("X-Forwarded-Host") == host, seen.headers
    if host == KEPT:
        assert seen.header("Host") == KEPT, seen.headers
    assert not any(ADMIN in value for _, value in seen.headers), seen.headers


@pytest.mark.parametrize("second", [ADMIN, OTHER, PUBLIC])
async def test_two_host_headers_are_refused(second: str, tmp_path: Path) -> None:
    """Two ``Host`` lines (RFC 9112 section 3.2: 400), here through the catch-all route that
    would otherwise forward the second one with ``preserve_host_header``."""
    attack = request("GET", "/x", [("Host", OTHER), ("Host", second)])
    async with world(tmp_path) as w:
        responses = await send(w.port, attack)
        await w.up.settle()
    assert [r.status for r in responses] == [400], responses
    assert not w.up.requests, w.up.requests


MTLS = "mtls.example.test"


async def _tls_send(
    port: int, data: bytes, ca: TestCA, sni: str, cert_files: tuple[Path, Path] | None
) -> list[Response]:
    context = ssl.create_default_context(cadata=ca.cert_pem)
    if cert_files is not None:
        context.load_cert_chain(*cert_files)
    return await send(port, data, ssl_context=context, server_hostname=sni)


async def test_a_client_certificate_route_answers_421_when_sni_and_host_differ(
    test_ca: TestCA, tmp_path: Path
) -> None:
    """Under ``downstream_mtls`` a route's policy requires a valid client certificate. The
    attacker's TLS handshake names the public host (SNI), and the request names the mTLS route
    (``Host``): the certificate checks made for one host must not admit a request for another:
    421 Misdirected Request, as Envoy answers, and nothing reaches the upstream."""
    client_ca = TestCA.create("Vallum Client CA")
    leaf: Leaf = client_ca.issue("alice-laptop", client=True)
    cert_files = leaf.write(tmp_path, "client")
    server_cert, server_key = test_ca.issue("vallum", sans=[PUBLIC, MTLS]).write(tmp_path)
    async with Recorder("up") as up:
        port = free_port()
        config = tmp_path / "vallum.yaml"
        config.write_text(json.dumps({
            "address": f"127.0.0.1:{port}",
            "certificates": [{"cert_file": str(server_cert), "key_file": str(server_key)}],
            "downstream_mtls": {"ca_file": str(client_ca.write(tmp_path, "client-ca")),
                                "enforcement": "policy"},
            "routes": [
                {"from": f"https://{PUBLIC}", "to": up.url,
                 "allow_public_unauthenticated_access": True,
                 "set_request_headers": {"X-Route": "public"}},
                {"from": f"https://{MTLS}", "to": up.url,
                 "set_request_headers": {"X-Route": "mtls"},
                 "policy": [{"allow": {"or": [{"accept": True}]},
                             "deny": {"or": [{"invalid_client_certificate": True}]}}]},
            ],
        }))
        async with serve(config, port), asyncio.timeout(60):
            good = await _tls_send(port, get("/ok", MTLS), test_ca, MTLS, cert_files)
            assert [r.status for r in good] == [200], good  # the route works as configured
            before = len(up.requests)
            crossed = await _tls_send(port, get("/crossed", MTLS), test_ca, PUBLIC, cert_files)
            bare = await _tls_send(port, get("/bare", MTLS), test_ca, PUBLIC, None)
            await up.settle()
    assert [r.status for r in crossed] == [421], crossed
    assert len(bare) == 1 and bare[0].status in (421, 495), bare
    assert len(up.requests) == before, up.requests[before:]


# -- 3. header floods -------------------------------------------------------------------------

EMPTY_LINES = request("GET", "/flood", [("Host", PUBLIC), *[("x", "")] * 65_000])
# For the latency test: the same flood for a host Vallum answers itself (no sign-in here), so
# what slows the probe is Vallum's own work, not the recording upstream in this process.
FLOOD = request("GET", "/flood", [("Host", ADMIN), *[("x", "")] * 65_000])
REPEATED = request("GET", "/flood", [("Host", PUBLIC), *[("x-repeat", "a")] * 5_000])


@pytest.mark.parametrize(
    "attack", [EMPTY_LINES, REPEATED], ids=["65000 empty x: lines", "5000 repeats of one name"]
)
async def test_too_many_header_fields_get_431_quickly(attack: bytes, tmp_path: Path) -> None:
    """The head limit counts every field and its overhead, and the number of fields is capped:
    a flood of tiny header lines is refused with 431 at once and never forwarded."""
    async with world(tmp_path) as w:
        started = time.monotonic()
        responses = await send(w.port, attack, timeout=10)
        took = time.monotonic() - started
        await w.up.settle()
    assert [r.status for r in responses] == [431], responses
    assert took < 2.0, f"431 took {took:.2f} s"
    assert not w.up.requests, len(w.up.requests)


async def test_header_floods_on_four_connections_do_not_stall_another_client(
    tmp_path: Path,
) -> None:
    """Four connections send header floods over and over (pipelined, as long as the connection
    stays open); a probe client on another connection keeps a low latency (the issue measured
    8 ms before the attack and 3.5 s during it)."""
    latencies: list[float] = []
    answered: list[int] = []
    async with world(tmp_path) as w:
        stop = asyncio.Event()

        async def attacker() -> None:
            while not stop.is_set():
                got = await send(w.port, FLOOD * 8, responses=8, timeout=5)
                answered.extend(r.status for r in got)
                await asyncio.sleep(0.005)

        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        attackers: list[asyncio.Task[None]] = []
        try:
            for n in range(3):  # warm: the pooled upstream connection exists
                writer.write(get(f"/warm-{n}"))
                await asyncio.wait_for(_read_one(reader), 5)
            attackers = [asyncio.create_task(attacker()) for _ in range(4)]
            await asyncio.sleep(0.3)  # the floods are under way
            for n in range(20):
                started = time.monotonic()
                writer.write(get(f"/probe-{n}"))
                try:
                    resp = await asyncio.wait_for(_read_one(reader), 5)
                except TimeoutError:
                    latencies.append(float("inf"))
                    break
                latencies.append(time.monotonic() - started)
                assert own(resp, f"/probe-{n}"), resp
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            for task in attackers:
                task.cancel()
            await asyncio.gather(*attackers, return_exceptions=True)
            writer.close()
    assert max(latencies) < 1.0, f"probe latencies (slowest): {sorted(latencies)[-5:]}"
    assert answered and set(answered) == {431}, set(answered)


async def _read_one(reader: asyncio.StreamReader) -> Response:
    parsed = ResponseReader()
    while not parsed.done:
        chunk = await reader.read(65536)
        assert chunk, "connection closed"
        parsed.feed(chunk)
    return parsed.done[0]


# -- 7. chunked trailers --------------------------------------------------------------------------


def _chunked_with_trailers(trailers: list[tuple[str, str]]) -> bytes:
    tail = "".join(f"{n}: {v}\r\n" for n, v in trailers).encode()
    return request("POST", "/t", [("Host", PUBLIC), ("Transfer-Encoding", "chunked")],
                   b"5\r\nhello\r\n0\r\n" + tail + b"\r\n")


TRAILER_ATTACKS = {
    "identity and custom": [
        ("X-Vallum-Jwt-Assertion", "forged"), ("X-Pomerium-Jwt-Assertion", "forged"),
        (CLAIM_HEADER, "forged@example.test"), ("X-Forwarded-For", "6.6.6.6"),
        ("X-Whatever", "t"),
    ],
    "host": [("Host", "evil.example.test"), ("X-Whatever", "t")],
}


@pytest.mark.parametrize("trailers", TRAILER_ATTACKS.values(), ids=TRAILER_ATTACKS.keys())
async def test_chunked_trailers_never_become_request_headers(
    trailers: list[tuple[str, str]], tmp_path: Path
) -> None:
    """A chunked ``POST`` whose trailer section carries identity headers, ``Host`` and a
    custom field: the request is forwarded once, on the route its head named, and the
    upstream's head holds none of the trailer fields; a trailer that is passed on stays a
    trailer and is never a reserved name."""
    async with world(tmp_path) as w:
        responses = await send(w.port, _chunked_with_trailers(trailers))
        await w.up.settle()
    assert len(responses) == 1 and own(responses[0], "/t"), responses
    assert len(w.up.requests) == 1, w.up.requests
    seen = w.up.requests[0]
    assert seen.body == b"hello" and seen.complete, seen
    assert "x-whatever" not in seen.names, seen.headers
    assert seen.header("X-Route") == "public" and seen.header("X-Forwarded-Host") == PUBLIC
    assert not any(v in ("forged", "forged@example.test", "evil.example.test") or "6.6.6.6" in v
                   for _, v in seen.headers), seen.headers
    reserved = [(n, v) for n, v in seen.trailers if n.lower() in RESERVED
                or n.lower().startswith(("x-vallum-", "x-pomerium-"))
                or n.lower() in ("content-length", "transfer-encoding")]
    assert not reserved, seen.trailers


# -- 8. identity headers spelled with underscores -----------------------------------------------

UNDERSCORED = [
    ("X_Vallum_Jwt_Assertion", "forged-1"),
    ("X_Pomerium_Jwt_Assertion", "forged-2"),
    ("X_Pomerium_Claim_Email", "forged-3"),
    ("X_Email", "forged-4"),
    ("X_Forwarded_For", "forged-5"),
    ("X_Forwarded_Host", "forged-6"),
    ("X_Forwarded_Proto", "forged-7"),
    ("X_Request_Id", "forged-8"),
    ("X_Route", "forged-9"),
    ("X_Tenant_Id", "forged-10"),
    ("x-vallum_jwt-assertion", "forged-11"),
    ("X_VALLUM_JWT_ASSERTION_FOR", "forged-12"),
]


def _no_reserved_spelling(headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        if "forged" in value:
            raise AssertionError(f"{name}: {value} reached the upstream")
        if "_" in name:
            assert name.lower().replace("_", "-") not in RESERVED, name


async def _underscored(tmp_path: Path, **settings: Any) -> tuple[list[Response], Recorder]:
    attack = get("/u", PUBLIC, *UNDERSCORED, ("My_Header", "v"))
    async with world(tmp_path, **settings) as w:
        responses = await send(w.port, attack)
        await w.up.settle()
    return responses, w.up


async def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(
    tmp_path: Path,
) -> None:
    """``X_Vallum_Jwt_Assertion: forged`` and the underscore spellings of every header Vallum
    sets or reserves (claim headers, ``X-Forwarded-*``, ``X-Request-Id``, the route's
    ``set_request_headers``): CGI/WSGI apps read ``_`` as ``-``, so none may reach the
    upstream, whatever ``headers_with_underscores_action`` says (here: its default)."""
    responses, up = await _underscored(tmp_path)
    assert len(responses) == 1, responses
    if responses[0].status == 400:  # the default refuses underscores (Pomerium's default)
        assert not up.requests, up.requests
        return
    assert own(responses[0], "/u"), responses
    assert len(up.requests) == 1
    _no_reserved_spelling(up.requests[0].headers)


@pytest.mark.parametrize("action", ["allow", "drop_header", "reject_request"])
async def test_headers_with_underscores_action(action: str, tmp_path: Path) -> None:
    """Pomerium's (and Envoy's) global ``headers_with_underscores_action`` for headers that are
    not Vallum's: ``allow`` passes ``My_Header`` on, ``drop_header`` removes it,
    ``reject_request`` answers 400. Underscore spellings of Vallum's headers are removed under
    every value."""
    responses, up = await _underscored(tmp_path, headers_with_underscores_action=action)
    assert len(responses) == 1, responses
    if action == "reject_request":
        assert responses[0].status == 400, responses
        assert not up.requests, up.requests
        return
    assert own(responses[0], "/u"), responses
    assert len(up.requests) == 1
    seen = up.requests[0]
    _no_reserved_spelling(seen.headers)
    if action == "allow":
        assert seen.values("My_Header") == ["v"], seen.headers
        assert ("My_Header", "v") in seen.headers  # the spelling unchanged
    else:
        assert seen.values("My_Header") == [] and seen.values("My-Header") == [], seen.headers
