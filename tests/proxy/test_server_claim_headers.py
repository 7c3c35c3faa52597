"""A claim header added by a later table (a Settings change published by ``vallum controller``,
or a reloaded file) is never taken from a client: the server runs the real identity gate,
built from a first table that names no claim header, and a recording upstream shows what
arrives."""

from __future__ import annotations

import os
from pathlib import Path

from tests.proxy import dataplane as dp
from tests.support.net import free_port
from tests.support.recording import Recorder
from vallum.core import config
from vallum.proxy import accesslog, server

CLAIMS = (("X-Email", "email"), ("x-pomerium-claim-groups", "groups"), ("X-Team", "team"))
FORGED = (
    "X-Email: mallory@example.test\r\n"
    "X_Email: mallory@example.test\r\n"  # the CGI spelling, with underscores allowed
    "x-team: admins\r\n"
    "X-Vallum-Claim-Groups: admins\r\n"
    "X-Pomerium-Claim-Groups: admins\r\n"
    "X-Email-Note: kept\r\n"  # not a claim header: passes
    "Connection: close\r\n"
)


def assert_not_forged(rec: Recorder) -> None:
    req = rec.requests[-1]
    assert req.header("x-email-note") == "kept"
    names = set(req.names)
    for name in ("x-email", "x_email", "x-team", "x-vallum-claim-groups",
                 "x-pomerium-claim-groups"):
        assert name not in names, (name, req.headers)


def settings_text(port: int, upstream: str, *, claims: bool) -> str:
    text = (
        f"address: 127.0.0.1:{port}\ninsecure_server: true\n"
        "headers_with_underscores_action: allow\n"
    )
    if claims:
        text += "jwt_claims_headers:\n" + "".join(f"  {h}: {c}\n" for h, c in CLAIMS)
    return text + (
        f"routes:\n  - from: https://app.test\n    to: {upstream}\n"
        "    allow_public_unauthenticated_access: true\n"
    )


async def test_a_published_table_with_new_claim_headers_strips_them(tmp_path: Path) -> None:
    port = free_port()
    async with Recorder("up") as rec:
        def table(claims: tuple[tuple[str, str], ...]) -> config.RouteTable:
            return dp.table(dp.route("app.test", rec.url), address=f"127.0.0.1:{port}",
                            insecure_server=True, headers_with_underscores_action="allow",
                            jwt_claims_headers=claims)

        srv = server.Server(table(()), access_log=accesslog.AccessLog(enabled=False))
        await srv.start()
        try:
            await dp.raw_request(port, dp.get(extra="X-Team: before\r\nConnection: close\r\n"))
            assert rec.requests[-1].header("x-team") == "before"  # no claim header yet
            assert await srv.publish(table(CLAIMS)) is True
            reply = await dp.raw_request(port, dp.get(extra=FORGED))
            assert reply.startswith(b"HTTP/1.1 200")
            assert_not_forged(rec)
        finally:
            await srv.close(drain=0)


async def test_a_reloaded_file_with_new_claim_headers_strips_them(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "vallum.yaml"
    async with Recorder("up") as rec:
        path.write_text(settings_text(port, rec.url, claims=False))
        srv = server.Server(server.compile_file(str(path)), config_path=str(path),
                            access_log=accesslog.AccessLog(enabled=False))
        await srv.start()
        assert srv.reloader is not None
        await srv.reloader.stop()  # reloaded when the test says
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(settings_text(port, rec.url, claims=True))
            os.replace(tmp, path)
            assert await srv.reloader.reload() is True
            assert srv.holder.current.settings.jwt_claims_headers == CLAIMS
            await dp.raw_request(port, dp.get(extra=FORGED))
            assert_not_forged(rec)
        finally:
            await srv.close(drain=0)
