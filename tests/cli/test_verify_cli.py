"""``vallum verify`` as a real process: flags, the sidecar forwarding and refusing, TLS with a
required client certificate on the Vallum-to-sidecar hop, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import vallum.verify as api
from tests.integration.serve_process import wait_listening
from tests.support.certs import TestCA
from tests.support.net import free_port
from tests.verify import world
from vallum.cli import main as cli_main

HOST = world.HOST


def test_help_names_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["verify", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--listen", "--upstream", "--jwks-url", "--audience", "--issuer", "--header",
                 "--leeway", "--tls-cert", "--tls-key", "--client-ca", "--jwks-ca"):
        assert flag in out, flag


@pytest.mark.parametrize(("flags", "message"), [
    (["--listen", "nowhere"], "expected HOST:PORT"),
    (["--upstream", "ftp://app"], "--upstream 'ftp://app'"),
    (["--client-ca", "ca.pem"], "--client-ca needs --tls-cert"),
    (["--tls-cert", "missing.pem", "--tls-key", "missing.pem"], "TLS files"),
])
def test_bad_flags_exit_1_with_a_message(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked before anything starts, so in this process (the runs below are real processes).
    base = {"--listen": "127.0.0.1:1", "--upstream": "http://127.0.0.1:2",
            "--jwks-url": "http://127.0.0.1:3/jwks.json", "--audience": HOST}
    for name, value in zip(flags[::2], flags[1::2], strict=True):
        base[name] = value
    status = cli_main.main(["verify", *[part for pair in base.items() for part in pair]])
    assert status == 1
    assert message in capsys.readouterr().err


@contextlib.asynccontextmanager
async def sidecar_process(port: int, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vallum.cli", "verify", "--listen", f"127.0.0.1:{port}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_listening(port, process)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err[-2000:]
        assert b"Traceback" not in err, err[-2000:]


async def test_the_process_forwards_valid_and_refuses_forged_assertions() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as jwks, world.app_server() as app:
        port = free_port()
        async with sidecar_process(
            port, "--upstream", app.url, "--jwks-url", jwks.url, "--audience", HOST,
        ), aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/hello"
            async with session.get(url, headers={api.DEFAULT_HEADER: world.mint(signer)}) as r:
                assert r.status == 200, await r.text()
            forged = world.unsigned(world.claims(), signer.kid)
            async with session.get(url, headers={api.DEFAULT_HEADER: forged}) as r:
                assert (r.status, await r.text()) == (401, "unsupported algorithm\n")
            async with session.get(url) as r:
                assert r.status == 401
        assert len(app.seen) == 1


async def test_the_pomerium_header_is_used_when_configured() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as jwks, world.app_server() as app:
        port = free_port()
        async with sidecar_process(
            port, "--upstream", app.url, "--jwks-url", jwks.url, "--audience", HOST,
            "--header", api.POMERIUM_HEADER,
        ), aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/"
            token = world.mint(signer)
            async with session.get(url, headers={api.DEFAULT_HEADER: token}) as r:
                assert r.status == 401  # only the configured header counts
            async with session.get(url, headers={api.POMERIUM_HEADER: token}) as r:
                assert r.status == 200
        assert len(app.seen) == 1


async def test_tls_with_a_required_client_certificate(test_ca: TestCA, tmp_path: Path) -> None:
    signer = world.minter()
    cert, key = test_ca.issue("sidecar", sans=["127.0.0.1"]).write(tmp_path, "sidecar")
    ca_file = test_ca.write(tmp_path, "ca")
    vallum_client = test_ca.issue("vallum", client=True)
    client_cert, client_key = vallum_client.write(tmp_path, "client")
    async with world.jwks_server(world.jwks(signer)) as jwks, world.app_server() as app:
        port = free_port()
        async with sidecar_process(
            port, "--upstream", app.url, "--jwks-url", jwks.url, "--audience", HOST,
            "--tls-cert", str(cert), "--tls-key", str(key), "--client-ca", str(ca_file),
        ):
            url = f"https://127.0.0.1:{port}/"
            headers = {api.DEFAULT_HEADER: world.mint(signer)}
            with_cert = ssl.create_default_context(cafile=str(ca_file))
            with_cert.load_cert_chain(str(client_cert), str(client_key))
            async with aiohttp.ClientSession() as session, session.get(
                url, headers=headers, ssl=with_cert
            ) as r:
                assert r.status == 200, await r.text()
            without = ssl.create_default_context(cafile=str(ca_file))
            with pytest.raises(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, session.get(
                    url, headers=headers, ssl=without
                ) as r:
                    await r.read()
        assert len(app.seen) == 1
