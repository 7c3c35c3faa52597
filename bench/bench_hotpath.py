"""The hot path alone: one public-route request and its upstream response, in process, repeated.

No sockets and no other process: :class:`vallum.proxy.http1.HTTP1` and one pooled
:class:`vallum.proxy.upstream.UpstreamConnection` get in-memory transports, and each request is
the bytes wrk sends fed to the first and the bytes nginx answers fed to the second; everything
between (parsing, pipeline and gate, forward plan, response framing, access log, metrics) runs
as in ``vallum serve``. What it measures is the Python cost per request, which ``bench/run``
cannot separate from system calls and the machine's noise:

* ``--time`` (default): microseconds per request, best of ``--rounds`` batches;
* ``--instructions``: instructions per request counted by valgrind's callgrind (two runs of
  different lengths, subtracted, so start-up cancels out). Deterministic: the same code gives
  the same count on any quiet or busy machine, so a change of 1 % is visible. Needs valgrind
  (``apt-get install valgrind``) and takes about two minutes.

Usage: ``python3 -m bench.bench_hotpath [--signed-in] [--requests N] [--rounds R]
[--instructions]``; ``--signed-in`` measures the route behind sign-in of ``bench/run``'s
``vallum-auth-*`` scenarios (session cookie, policy, ES256 assertion and claim headers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.transports import RecordingTransport

from vallum.proxy import accesslog, server, upstream

HOST = "bench.vallum.test"
REQUEST = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 15:19:08 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)
CONFIG = f"""\
address: 127.0.0.1:1
insecure_server: true
routes:
  - from: http://{HOST}
    to: http://127.0.0.1:2
    allow_public_unauthenticated_access: true
"""
WARMUP = 2000


def _setup(folder: Path, signed_in: bool) -> tuple[Path, bytes]:
    """The config file and the request bytes: the public route, or the bench's signed-in route
    (session cookie, policy, assertion and claim headers: ``bench.scenarios``)."""
    config = folder / "vallum.yaml"
    if not signed_in:
        config.write_text(CONFIG)
        return config, REQUEST
    from bench import scenarios  # the same settings and cookie as bench/run's vallum-auth-*
    from vallum.proxy import jwt

    settings = scenarios.authenticated_config(
        scenarios.vallum_config("http", 1, 2, folder / "unused.pem", folder / "unused.key"),
        jwt.private_key_pem(jwt.generate_private_key()),
    )
    config.write_text(json.dumps(settings))
    cookie = scenarios.session_cookie(config)
    return config, REQUEST[:-2] + b"Cookie: " + cookie.encode() + b"\r\n\r\n"


async def measure(requests: int, rounds: int, signed_in: bool = False) -> float:
    """Best microseconds per request over ``rounds`` batches of ``requests`` (after a warm-up)."""
    with tempfile.TemporaryDirectory(prefix="vallum-hotpath-") as tmp:
        config, request = _setup(Path(tmp), signed_in)
        table = server.compile_file(str(config))
    with open(os.devnull, "w") as sink:
        srv = server.Server(table, access_log=accesslog.AccessLog(sink), admin=False)
        ctx = srv.ctx
        client = RecordingTransport()
        proto = ctx.protocol()
        proto.connection_made(client)
        plan = ctx.plans.get(table, 0, table.settings.routes[0])
        conn = upstream.UpstreamConnection(srv.pool, plan.pool_keys[0])
        conn.connection_made(RecordingTransport())
        srv.pool.release(conn)
        feed_request, feed_response = proto.data_received, conn.data_received
        client_round, upstream_round = ctx.round.flush, srv.pool.round.flush

        def end_of_round() -> None:  # what the loop runs after a round of callbacks
            client_round()
            upstream_round()

        def batch(n: int) -> None:
            for _ in range(n):
                feed_request(request)
                feed_response(RESPONSE)
                end_of_round()  # under load a round carries one response per connection

        batch(WARMUP)
        if not client.calls or not client.calls[-1].startswith(b"HTTP/1.1 200 OK\r\n"):
            raise SystemExit(f"bench_hotpath: unexpected answer {client.calls[-1:]!r}")
        best = float("inf")
        for _ in range(rounds):
            client.calls.clear()
            start = time.perf_counter()
            batch(requests)
            best = min(best, time.perf_counter() - start)
            await asyncio.sleep(0)  # the access log and metrics flush, as between loop rounds
        return best / requests * 1e6


def count_instructions(requests: int, signed_in: bool = False) -> int:
    """Instructions per request: callgrind totals of runs with ``requests`` and 3x ``requests``
    batches, subtracted (start-up, imports and warm-up cancel out)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("bench_hotpath: valgrind is not installed (apt-get install valgrind)")
    totals = []
    for n in (requests, 3 * requests):
        cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
               "-m", "bench.bench_hotpath", "--requests", str(n), "--rounds", "1",
               *(["--signed-in"] if signed_in else [])]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise SystemExit(f"bench_hotpath: callgrind run failed:\n{run.stderr[-2000:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // (2 * requests)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.bench_hotpath",
        description="Python cost of one proxied public-route request, in process (no sockets).",
    )
    parser.add_argument("--requests", type=int, default=20_000, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=10, help="batches; the best is reported")
    parser.add_argument("--signed-in", action="store_true",
                        help="the signed-in route (cookie, policy, assertion) instead of the "
                             "public one")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per request with callgrind instead (slow)")
    args = parser.parse_args(argv)
    if args.requests <= 0 or args.rounds <= 0:
        parser.error("--requests and --rounds must be positive")
    if args.instructions:
        requests = min(args.requests, 1000)
        print(f"{count_instructions(requests, args.signed_in):,} instructions per request "
              f"(callgrind, {sys.implementation.name} {sys.version.split()[0]})")
        return 0
    try:
        import uvloop  # optional, as in vallum serve

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    per_request = runner(measure(args.requests, args.rounds, args.signed_in))
    print(f"{per_request:.2f} us per request (best of {args.rounds} x {args.requests:,}; "
          f"{sys.implementation.name} {sys.version.split()[0]} at {sys.executable})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
