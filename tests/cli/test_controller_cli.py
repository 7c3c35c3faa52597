"""``vallum controller``'s command line: help, refused flags with clear messages, no traceback
without credentials. (Serving from a real API server: ``e2e/``.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vallum.cli import controller, main


def _vallum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vallum.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_help_names_every_option() -> None:
    done = _vallum("controller", "--help")
    assert done.returncode == 0
    for option in (
        "--kubeconfig", "--address", "--http-redirect-address", "--metrics-address",
        "--controller-name", "--settings", "--namespaces", "--publish-service",
        "--publish-status-address", "--workers", "--insecure-server",
    ):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2"], "runs one worker for now"),
        (["--publish-service", "no-slash"], "expected NAMESPACE/NAME"),
        (["--publish-service", "a/b", "--publish-status-address", "1.2.3.4"], "not allowed with"),
        (["--namespaces", " , "], "expected namespace names"),
    ],
)
def test_refused_flags_say_why(args: list[str], message: str, capsys: pytest.CaptureFixture[str]
                               ) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.build_parser().parse_args(["controller", "--address", ":8443", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_become_routes_file_settings() -> None:
    args = main.build_parser().parse_args([
        "controller", "--address", "127.0.0.1:8443", "--http-redirect-address", ":8080",
        "--metrics-address", "127.0.0.1:9090", "--insecure-server", "--namespaces", "a, b",
        "--publish-service", "vallum/proxy",
    ])
    assert controller.base_settings(args) == {
        "address": "127.0.0.1:8443",
        "http_redirect_addr": ":8080",
        "metrics_address": "127.0.0.1:9090",
        "insecure_server": True,
    }
    assert args.namespaces == ("a", "b")
    assert args.publish_service == ("vallum", "proxy")
    assert (args.controller_name, args.settings) == ("vallum.dev/ingress-controller", "global")


def test_no_credentials_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    done = _vallum("controller", "--kubeconfig", str(tmp_path / "absent"), "--address", ":0")
    assert done.returncode == 1
    assert "no Kubernetes credentials" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_address_is_a_message(tmp_path: Path) -> None:
    done = _vallum("controller", "--address", "nowhere")
    assert done.returncode == 1
    assert "--address" in done.stderr
    assert "Traceback" not in done.stderr
