"""One loader, one answer (issue 11, finding 17): ``vallum config check`` passes a file exactly
when ``vallum serve`` starts with it, and ``vallum policy check`` says of a policy what
``config check`` says of the same policy in a route.

The serve side is the real thing: ``vallum serve --config FILE`` as a process, counted as started
once its port accepts a connection and as refused when it exits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.certs import TestCA
from tests.support.net import free_port
from vallum.cli.main import main as cli

ROUTE = (
    "routes:\n  - from: https://app.test\n    to: http://127.0.0.1:9\n"
    "    allow_public_unauthenticated_access: true\n"
)


def _files(tmp_path: Path, test_ca: TestCA) -> dict[str, Path]:
    one, two = test_ca.issue("app.test", sans=["app.test"]), test_ca.issue("other.test")
    cert, key = one.write(tmp_path, "one")
    _, other_key = two.write(tmp_path, "two")
    for path in (key, other_key):
        path.chmod(0o600)
    open_secret = tmp_path / "cookie_secret"
    open_secret.write_text("c" * 44)
    open_secret.chmod(0o666)
    return {"cert": cert, "key": key, "other_key": other_key, "open_secret": open_secret}


Case = Callable[[int, dict[str, Path]], str]
CORPUS: dict[str, Case] = {
    # Files both should accept (the serve probe must see these start).
    "plain": lambda p, f: f"address: 127.0.0.1:{p}\ninsecure_server: true\n{ROUTE}",
    "tls": lambda p, f: (
        f"address: 127.0.0.1:{p}\ncertificates:\n  - cert_file: {f['cert']}\n"
        f"    key_file: {f['key']}\n{ROUTE}"
    ),
    "unquoted time of day": lambda p, f: (
        f"address: 127.0.0.1:{p}\ninsecure_server: true\n"
        + ROUTE.replace(
            "    allow_public_unauthenticated_access: true\n",
            "    policy:\n      allow:\n        and:\n"
            "          - time_of_day: {after: 8:00, before: 17:00, timezone: UTC}\n",
        )
    ),
    # Files both must refuse.
    "port out of range": lambda p, f: f"address: 127.0.0.1:99999\ninsecure_server: true\n{ROUTE}",
    "metrics port out of range": lambda p, f: (
        f"address: 127.0.0.1:{p}\ninsecure_server: true\nmetrics_address: 127.0.0.1:70000\n{ROUTE}"
    ),
    "redirect address without a port": lambda p, f: (
        f"address: 127.0.0.1:{p}\nhttp_redirect_addr: localhost\n{ROUTE}"
    ),
    "IPv6 without brackets": lambda p, f: f"address: ::1:{p}\ninsecure_server: true\n{ROUTE}",
    "metrics on the main port": lambda p, f: (
        f"address: 127.0.0.1:{p}\ninsecure_server: true\nmetrics_address: 127.0.0.1:{p}\n{ROUTE}"
    ),
    "redirect on the main port": lambda p, f: (
        f"address: 127.0.0.1:{p}\nhttp_redirect_addr: :{p}\n{ROUTE}"
    ),
    "certificate with another key": lambda p, f: (
        f"address: 127.0.0.1:{p}\ncertificates:\n  - cert_file: {f['cert']}\n"
        f"    key_file: {f['other_key']}\n{ROUTE}"
    ),
    "upstream client certificate with another key": lambda p, f: (
        f"address: 127.0.0.1:{p}\ninsecure_server: true\n"
        + ROUTE.replace(
            "    allow_public",
            f"    tls_client_cert_file: {f['cert']}\n    tls_client_key_file: {f['other_key']}\n"
            "    allow_public",
        )
    ),
    "cookie secret every user may write": lambda p, f: (
        f"address: 127.0.0.1:{p}\ninsecure_server: true\ncookie_secret_file: {f['open_secret']}\n"
        f"{ROUTE}"
    ),
    "unknown key": lambda p, f: (
        f"address: 127.0.0.1:{p}\ninsecure_server: true\nadress: x\n{ROUTE}"
    ),
}
GOOD = {"plain", "tls", "unquoted time of day"}


def serve_starts(path: Path, port: int) -> tuple[bool, str]:
    """Run ``vallum serve`` on ``path``: True once ``port`` accepts, False if it exits first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vallum.cli", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False, proc.stderr.read() if proc.stderr else ""
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                with socket.socket(family) as probe:
                    probe.settimeout(0.5)
                    if probe.connect_ex((host, port)) == 0:
                        return True, ""
            time.sleep(0.1)
        raise AssertionError(f"vallum serve neither started nor exited on {path}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_config_check_passes_exactly_when_serve_starts(
    tmp_path: Path, test_ca: TestCA, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    port = free_port()
    path = tmp_path / "vallum.yaml"
    path.write_text(CORPUS[name](port, _files(tmp_path, test_ca)))
    checked = cli(["config", "check", "-q", str(path)]) == 0
    check_err = capsys.readouterr().err
    started, serve_err = serve_starts(path, port)
    assert checked == started, (
        f"config check {'passed' if checked else 'failed'} but serve "
        f"{'started' if started else 'did not start'}:\n{check_err}\n{serve_err}"
    )
    assert started == (name in GOOD), serve_err or check_err
    assert "Traceback" not in check_err + serve_err


POLICIES = {
    "unquoted time of day": (
        "allow:\n  and:\n    - time_of_day: {after: 8:00, timezone: UTC}\n",
        True,
    ),
    "duplicate key": (
        "allow:\n  or:\n    - email: {is: a@x.test}\nallow:\n  or:\n    - accept: true\n",
        False,
    ),
    "misspelt criterion": ("allow:\n  or:\n    - emial: {is: a@x.test}\n", False),
    "alias of a list as a key": ("a: &a [x]\nallow:\n  or:\n    - ? *a\n      : 1\n", False),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_check_and_config_check_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    text, valid = POLICIES[name]
    policy = tmp_path / "route.yaml"
    policy.write_text("policy:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
    config = tmp_path / "vallum.yaml"
    config.write_text(
        "routes:\n  - from: https://app.test\n    to: http://127.0.0.1:9\n    policy:\n"
        + "".join(f"      {line}\n" for line in text.splitlines())
    )
    by_policy = cli(["policy", "check", str(policy)]) == 0
    by_config = cli(["config", "check", "-q", str(config)]) == 0
    err = capsys.readouterr().err
    assert by_policy == by_config == valid, err
