"""A property test of forwarding (issue 11's acceptance): generated hostile requests go through
one running ``vallum serve`` to recording upstreams, and what reaches the upstreams must follow
from what Vallum authorised.

Generated: methods; ``Host`` lines (none, one, two) and absolute-form targets for several
configured hosts (in any case); ``Connection`` tokens that name framing headers, ``Host`` and
the headers Vallum sets; bodies framed by ``Content-Length``, chunked (with and without
trailers, some carrying reserved names), both at once, or none, some of them a whole second
request; identity and forwarding headers, also spelled with underscores; one request or a
pipelined pair on one connection.

Asserted for each client request: the upstreams receive at most one request for it, exactly
one when the client got a proxied response, and nothing that is not one of the client's
requests (no smuggled request); the request arrives at the upstream of the route for the host
that was authorised, with that host as ``X-Forwarded-Host`` (and ``Host`` where the route
preserves it), its body intact and framed, and no header only Vallum may set coming from the
client; each client gets the response to its own request, in order. A request that is clean
(one ``Host``, origin form, a public route, no tricks) must be forwarded.

Every route has its own recording upstream, so the recorder that answered names the route; the
recorders run in a thread's event loop, the client uses blocking sockets, and one ``vallum
serve`` child process serves every example (output to files, so a long run never fills a pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from tests.support.net import free_port
from tests.support.rawclient import Response, send_sync
from tests.support.recording import Recorder, Request

PUBLIC, KEPT, ADMIN, OTHER = (
    "public.example.test", "kept.example.test", "admin.example.test", "other.example.test",
)
ROUTE_OF = {PUBLIC: "public", KEPT: "kept", ADMIN: "admin"}  # any other host: "catch"
PRESERVES_HOST = {"kept", "catch"}
HOSTS = [PUBLIC, KEPT, ADMIN, OTHER, "PUBLIC.Example.TEST", "Kept.example.test"]
CLAIM_HEADER = "X-Email"

RESERVED_PREFIXES = ("x-vallum-", "x-pomerium-")
NEVER_UPSTREAM = {CLAIM_HEADER.lower()}  # no identity for anonymous callers
SET_ONCE = ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
            "x-route")

FORGED = [  # headers only Vallum may set, in both spellings; the value marks them
    "X-Vallum-Jwt-Assertion", "X-Pomerium-Jwt-Assertion", "X-Pomerium-Claim-Email",
    CLAIM_HEADER, "X-Route", "X_Vallum_Jwt_Assertion", "X_Pomerium_Jwt_Assertion", "X_Email",
    "X_Forwarded_For", "X_Forwarded_Host", "X_Request_Id", "X_Route", "X-Forwarded-Host",
    "X-Request-Id",
]
TOKENS = [
    "keep-alive", "close", "Content-Length", "Transfer-Encoding", "Host", "X-Forwarded-For",
    "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id", "X-Route", "X-Vallum-Jwt-Assertion",
    CLAIM_HEADER, "TE", "Trailer",
]
TRAILERS = [
    ("X-Trailer-Custom", "t"), ("X-Vallum-Jwt-Assertion", "forged-t"), ("Host", ADMIN),
    (CLAIM_HEADER, "forged-t"), ("X-Forwarded-Host", ADMIN), ("Content-Length", "0"),
    ("X_Route", "forged-t"),
]
SMUGGLED = (
    b"GET /smuggled HTTP/1.1\r\nHost: admin.example.test\r\n"
    b"X-Vallum-Jwt-Assertion: forged-s\r\nContent-Length: 0\r\n\r\n"
)

T = TypeVar("T")


# -- the world: recorders in a thread, one vallum serve -----------------------------------------


class Harness:
    """Recording upstreams (one per route) in a background event loop, and ``vallum serve``."""

    def __init__(self, folder: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.recorders = {
            name: self.call(Recorder(name).start()) for name in ("public", "kept", "admin", "catch")
        }
        self.port = free_port()
        self.folder = folder
        config = folder / "vallum.yaml"
        config.write_text(json.dumps({
            "address": f"127.0.0.1:{self.port}",
            "insecure_server": True,
            "jwt_claims_headers": {CLAIM_HEADER: "email"},
            "routes": [
                self._route(PUBLIC, "public"),
                self._route(KEPT, "kept", preserve_host_header=True),
                self._route(ADMIN, "admin", public=False, policy=[
                    {"allow": {"or": [{"email": {"is": "admin@example.test"}}]}}
                ]),
                self._route("*", "catch", preserve_host_header=True),
            ],
        }))
        self.out = (folder / "stdout.log").open("wb")
        self.err = (folder / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vallum.cli", "serve", "--config", str(config)],
            stdout=self.out, stderr=self.err,
        )
        self.seen = {name: 0 for name in self.recorders}  # requests already checked
        self._wait_listening()

    def _route(self, host: str, name: str, public: bool = True, **more: Any) -> dict[str, Any]:
        route: dict[str, Any] = {
            "from": f"https://{host}", "to": self.recorders[name].url,
            "set_request_headers": {"X-Route": name}, **more,
        }
        if public:
            route["allow_public_unauthenticated_access"] = True
        return route

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (self.folder / "stderr.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "vallum serve did not start"
                time.sleep(0.05)

    def settle(self, quiet: float = 0.03, timeout: float = 2.0) -> None:
        """Until no upstream has read anything for ``quiet`` seconds."""

        def reads() -> int:
            return sum(len(c.reads) + 1 for r in self.recorders.values() for c in r.connections)

        deadline = time.monotonic() + timeout
        last = reads()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = reads()
            if now == last:
                return
            last = now

    def new_requests(self) -> list[tuple[str, Request]]:
        """Requests that arrived since the last call, with the name of their recorder."""
        out: list[tuple[str, Request]] = []
        for name, rec in self.recorders.items():
            arrived = list(rec.requests)
            out += [(name, r) for r in arrived[self.seen[name]:]]
            self.seen[name] = len(arrived)
        return out

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                status = self.process.wait(5)
        finally:
            for rec in self.recorders.values():
                with contextlib.suppress(Exception):
                    self.call(rec.close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()
            self.out.close()
            self.err.close()
        errors = (self.folder / "stderr.log").read_text()
        assert status == 0, errors[-3000:]
        assert "Traceback" not in errors, errors[-3000:]
        for rec in self.recorders.values():
            assert not rec.errors, (rec.name, rec.errors)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    world = Harness(tmp_path_factory.mktemp("fuzz"))
    try:
        yield world
    finally:
        world.close()


# -- generated requests ---------------------------------------------------------------------------


@dataclass
class Spec:
    """One client request, before it gets its id."""

    method: str
    hosts: list[str]  # the Host lines
    authority: str | None  # absolute-form target's host, if absolute
    tokens: list[str]  # Connection tokens (one Connection line each, or joined)
    split_connection: bool
    framing: str  # "none", "length", "chunked", "both"
    body: bytes
    trailers: list[tuple[str, str]]
    forged: list[str]  # header names sent with a "forged-..." value
    chunk: int = 7
    path: str = ""  # set when sent: /p/<id>
    wire: bytes = b""

    def build(self, ident: str) -> bytes:
        self.path = f"/p/{ident}"
        target = f"http://{self.authority}{self.path}" if self.authority else self.path
        lines = [f"{self.method} {target} HTTP/1.1"]
        lines += [f"Host: {h}" for h in self.hosts]
        if self.tokens:
            if self.split_connection:
                lines += [f"Connection: {t}" for t in self.tokens]
            else:
                lines.append("Connection: " + ", ".join(self.tokens))
        lines += [f"{name}: forged-{ident}" for name in self.forged]
        body = self.body
        if self.framing in ("length", "both"):
            lines.append(f"Content-Length: {len(body)}")
        if self.framing in ("chunked", "both"):
            lines.append("Transfer-Encoding: chunked")
            pieces = [body[i:i + self.chunk] for i in range(0, len(body), self.chunk)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n"
            body += "".join(f"{n}: {v}\r\n" for n, v in self.trailers).encode() + b"\r\n"
        self.wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        return self.wire

    # What Vallum should make of it.
    def authorised(self) -> str | None:
        """The host Vallum may authorise this request for; ``None``: it must not be forwarded."""
        if len(self.hosts) > 1 or self.framing == "both":
            return None
        host = self.authority or (self.hosts[0] if self.hosts else None)
        if host is None or route_of(host) == "admin":
            return None
        return host.lower()

    @property
    def clean(self) -> bool:
        """Nothing unusual: it must be forwarded."""
        return (
            self.authorised() is not None and self.authority is None
            and set(self.tokens) <= {"keep-alive"} and not self.forged and not self.trailers
        )


def route_of(host: str) -> str:
    return ROUTE_OF.get(host.lower(), "catch")


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    # Mostly one Host line, sometimes none or two (repeats in a list bias the choice).
    count = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    hosts = [draw(st.sampled_from(HOSTS)) for _ in range(count)]
    authority = draw(st.sampled_from([None, None, *HOSTS]))
    tokens = draw(st.lists(st.sampled_from(TOKENS), max_size=4, unique=True))
    framing = draw(st.sampled_from(["none", "none", "length", "length", "chunked", "both"]))
    body = b"" if framing == "none" else draw(st.sampled_from([b"", b"hello", SMUGGLED]))
    trailers = (
        draw(st.lists(st.sampled_from(TRAILERS), max_size=3, unique=True))
        if framing == "chunked" else []
    )
    return Spec(
        method=method, hosts=hosts, authority=authority, tokens=tokens,
        split_connection=draw(st.booleans()), framing=framing, body=body, trailers=trailers,
        forged=draw(st.lists(st.sampled_from(FORGED), max_size=4, unique=True)),
        chunk=draw(st.integers(1, 64)),
    )


# The reproduction, always tried first.
SMUGGLING = Spec("POST", [PUBLIC], None, ["keep-alive", "Content-Length"], False, "length",
                 SMUGGLED, [], [])

_ids = itertools.count(1)


# -- the oracle ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    spec: Spec
    response: Response | None
    upstream: list[tuple[str, Request]] = field(default_factory=list)


def proxied(resp: Response) -> bool:
    return resp.header("X-Recorder") is not None


def check(v: Verdict, ports: dict[str, int]) -> None:
    """What must hold for one client request (see module doc); ``ports``: the recorders'."""
    spec, resp, arrived = v.spec, v.response, v.upstream
    assert len(arrived) <= 1, f"{len(arrived)} upstream requests for one client request"
    if resp is None or not proxied(resp):
        assert not arrived, f"forwarded, but the client got {resp and resp.status}"
        return
    assert len(arrived) == 1, "a proxied response without an upstream request"
    name, seen = arrived[0]
    assert resp.text == f"resp-{seen.number} {name} {spec.path}", (
        f"the response {resp.text!r} is not the answer to {spec.path}"
    )
    host = spec.authorised()
    assert host is not None, f"must not be forwarded, yet reached {name!r}"
    assert name == route_of(host), f"authorised for {host}, arrived at {name!r}"
    for header in SET_ONCE:
        assert len(seen.values(header)) == 1, (header, seen.headers)
    assert seen.header("X-Route") == name
    assert (seen.header("X-Forwarded-Host") or "").lower() == host, seen.headers
    if name in PRESERVES_HOST:
        assert (seen.header("Host") or "").lower() == host, seen.headers
    else:
        assert seen.header("Host") == f"127.0.0.1:{ports[name]}", seen.headers
    assert seen.header("X-Forwarded-For") == "127.0.0.1", seen.headers
    for header, value in seen.headers:
        lowered = header.lower().replace("_", "-")
        assert "forged" not in value, (header, value)
        assert not lowered.startswith(RESERVED_PREFIXES), header
        assert lowered not in NEVER_UPSTREAM, header
        assert lowered != "x-trailer-custom", "a trailer became a header"
        if "_" in header:
            assert lowered not in SET_ONCE, header
    for header, value in seen.trailers:
        lowered = header.lower().replace("_", "-")
        assert "forged" not in value, ("trailer", header, value)
        assert lowered not in (*SET_ONCE, "content-length", "transfer-encoding"), header
        assert not lowered.startswith(RESERVED_PREFIXES) and lowered not in NEVER_UPSTREAM
    assert seen.method == spec.method and seen.target == spec.path, (seen.method, seen.target)
    assert seen.complete and seen.body == spec.body, (seen.body, spec.body)
    if spec.body:
        assert seen.framed, seen.headers


# -- the property ------------------------------------------------------------------------------


def test_forwarding_follows_what_was_authorised(harness: Harness) -> None:
    ports = {name: rec.port for name, rec in harness.recorders.items()}
    started = time.monotonic()

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(specs(), min_size=1, max_size=2))
    @example([SMUGGLING, Spec("GET", [PUBLIC], None, [], False, "none", b"", [], [])])
    @example([Spec("GET", [OTHER, ADMIN], None, [], False, "none", b"", [], [])])
    def one_connection(requests: list[Spec]) -> None:
        number = next(_ids)
        wire = b"".join(spec.build(f"e{number}r{n}") for n, spec in enumerate(requests))
        note(f"sent: {wire!r}")
        responses = send_sync(harness.port, wire, responses=len(requests), timeout=3)
        harness.settle()
        arrived = harness.new_requests()
        paths = {spec.path for spec in requests}
        stray = [(name, r.method, r.target) for name, r in arrived if r.target not in paths]
        assert not stray, f"the upstream got requests no client sent: {stray}"
        assert not harness.recorders["admin"].requests, "the admin upstream was reached"
        keep_going = True
        for n, spec in enumerate(requests):
            resp = responses[n] if n < len(responses) else None
            mine = [(name, r) for name, r in arrived if r.target == spec.path]
            event("proxied" if resp is not None and proxied(resp)
                  else f"answered by Vallum: {resp and resp.status}")
            check(Verdict(spec, resp, mine), ports)
            if resp is None or (resp.header("Connection") or "").lower() == "close":
                keep_going = False
            elif spec.clean and keep_going:
                assert proxied(resp), f"a clean request got {resp.status}: {resp.text[:200]}"

    one_connection()
    assert time.monotonic() - started < 90
