"""``vallum serve`` as a real process: help, bad input without tracebacks, serving, stopping."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.net import free_port


def _vallum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vallum.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_names_the_options() -> None:
    done = _vallum("serve", "--help")
    assert done.returncode == 0
    for option in ("--config", "--workers", "--log-level"):
        assert option in done.stdout


def test_bad_config_lists_problems_with_places_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "address: 127.0.0.1:8443\n"
        "no_such_option: 1\n"
        "routes:\n"
        "  - from: https://app.test\n"
        "    to: http://127.0.0.1:9\n"
        "    timeout: soon\n"
    )
    done = _vallum("serve", "--config", str(config))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "no_such_option" in done.stderr and "bad.yaml" in done.stderr
    assert "timeout" in done.stderr and ":6" in done.stderr  # the line of the bad value


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    done = _vallum("serve", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "absent.yaml" in done.stderr
    assert _vallum("serve", "--config", "x", "--workers", "0").returncode == 2
    assert _vallum("serve").returncode == 2


def test_port_in_use_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "vallum.yaml"
        config.write_text(
            f"address: 127.0.0.1:{port}\ninsecure_server: true\nroutes:\n"
            "  - from: https://app.test\n    to: http://127.0.0.1:9\n"
        )
        done = _vallum("serve", "--config", str(config))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "address already in use" in done.stderr.lower()


def _public_app_config(tmp_path: Path) -> tuple[int, Path]:
    """A free port and a config serving app.test publicly there, to an upstream port where
    nothing listens (every request gets 502, and an access log line)."""
    port = free_port()
    config = tmp_path / "vallum.yaml"
    config.write_text(
        f"address: 127.0.0.1:{port}\ninsecure_server: true\nroutes:\n"
        "  - from: https://app.test\n    to: http://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
    )
    return port, config


def test_serves_the_shipped_example_shape_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port, config = _public_app_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vallum.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        status = _get_status(port, "app.test")
        assert status == 502  # nothing listens on port 9: the route is served, the upstream not
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b'"status":502' in out.replace(b" ", b"")  # the access log line, on stdout
    assert b"Traceback" not in err


def _get_status(port: int, host: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_unusable_certificate_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.crt").write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n")
    (tmp_path / "bad.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    config = tmp_path / "vallum.yaml"
    config.write_text(
        f"address: 127.0.0.1:{free_port()}\n"
        "certificates:\n  - cert_file: bad.crt\n    key_file: bad.key\n"
        "routes:\n  - from: https://app.test\n    to: http://127.0.0.1:9\n"
    )
    for workers in ("1", "2"):
        done = _vallum("serve", "--config", str(config), "--workers", workers)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "certificates[0]" in done.stderr


def test_without_sign_in_configured_public_routes_serve_and_others_fail_closed(
    tmp_path: Path,
) -> None:
    """The identity gate serves every config: with no IdP, a route that needs a user is refused
    with a page that says sign-in is not configured; a public route still works."""
    port = free_port()
    config = tmp_path / "vallum.yaml"
    config.write_text(
        f"address: 127.0.0.1:{port}\ninsecure_server: true\nroutes:\n"
        "  - from: https://public.test\n    to: http://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
        "  - from: https://app.test\n    to: http://127.0.0.1:9\n"
        "    allow_any_authenticated_user: true\n"
        "  - from: https://admin.test\n    to: http://127.0.0.1:9\n"
        "    policy:\n      - allow:\n          or:\n            - email:\n"
        "                is: alice@example.test\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vallum.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        started = b""
        while b'"serving"' not in started:  # what sign-in lacks is said at start
            line = proc.stderr.readline()
            assert line, "vallum serve exited"
            started += line
        assert b"idp_provider_url" in started and b"cookie_secret" in started
        assert _get_status(port, "public.test") == 502  # forwarded (nothing listens on port 9)
        for host in ("app.test", "admin.test"):
            for accept in ("text/html", "application/json"):
                status, body = _get(port, host, accept)
                assert status == 503, (host, accept, body)
                assert "Sign-in is not configured" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


def _get(port: int, host: str, accept: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"Host": host, "Accept": accept}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_right_after_a_request_keeps_its_access_log_line(
    tmp_path: Path, workers: str
) -> None:
    """Stopping writes every access log line, the last request's included (a worker ends with
    os._exit, which drops whatever is still buffered), also with a buffered stdout."""
    port, config = _public_app_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "vallum.cli", "serve", "--config", str(config), "-w", workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        _get_status(port, "app.test")  # wait until it serves (this line may be flushed)
        status, _ = _get(port, "app.test", "application/json")
        assert status == 502
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert len(lines) == 2, out  # both requests, the last one included
    assert all(line["status"] == 502 and line["host"] == "app.test" for line in lines)


def test_the_shipped_standalone_example_serves_through_the_identity_gate(tmp_path: Path) -> None:
    """examples/standalone.yaml, on free ports: self-signed HTTPS, the public route forwarded,
    a host without a route 404, the redirect listener and /readyz."""
    example = Path(__file__).resolve().parents[2] / "examples" / "standalone.yaml"
    https, redirect, admin, upstream = free_port(), free_port(), free_port(), free_port()
    text = example.read_text()
    for old, new in (("8443", https), ("8080", redirect), ("9090", admin), ("8000", upstream)):
        assert f"127.0.0.1:{old}" in text
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    config = tmp_path / "standalone.yaml"
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vallum.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # the example serves a generated self-signed certificate

    def https_status(host: str) -> int:
        request = urllib.request.Request(f"https://127.0.0.1:{https}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5, context=insecure) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    try:
        _get_status(admin, "admin")  # waits until it listens
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as resp:
            assert json.loads(resp.read())["ready"] is True
        assert https_status("localhost") == 502  # the public route, its upstream not running
        assert https_status("nowhere.test") == 404
        plain = http.client.HTTPConnection("127.0.0.1", redirect, timeout=5)
        plain.request("GET", "/p", headers={"Host": "localhost"})
        moved = plain.getresponse()
        assert moved.status == 301
        assert moved.getheader("Location") == f"https://localhost:{https}/p"
        plain.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
