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
        "--lease-namespace", "--lease-name",
    ):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "expected 1 to 256 workers"),
        (["--publish-service", "no-slash"], "expected NAMESPACE/NAME"),
        (["--publish-service", "a/b", "--publish-status-address", "1.2.3.4"], "not allowed with"),
        (["--namespaces", " , "], "expected namespace names"),
        (["--publish-status-address", "10.0.0.1,http://lb"], "'http://lb' is neither an IP"),
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


def test_status_addresses_are_read_as_the_flag_is_parsed() -> None:
    args = main.build_parser().parse_args([
        "controller", "--address", ":8443", "--publish-status-address", "192.0.2.1, lb.example",
    ])
    assert args.publish_status_address == [{"ip": "192.0.2.1"}, {"hostname": "lb.example"}]
    assert (args.lease_namespace, args.lease_name, args.publish_service) == (None, None, None)


def test_the_lease_defaults_to_the_pods_namespace_and_a_name_of_the_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    from vallum.operator import leadership

    monkeypatch.setenv("POD_NAMESPACE", "ingress")
    parse = main.build_parser().parse_args
    runner = controller.Runner(
        parse(["controller", "--address", ":8443", "--controller-name", "example.com/x"]),
        client.Configuration(),
    )
    if not Path(leadership.SERVICE_ACCOUNT_NAMESPACE).exists():  # outside a pod
        assert runner.lease_namespace == "ingress"
    assert runner.lease_name == leadership.lease_name("example.com/x")
    assert runner.session_state.namespace == runner.lease_namespace  # sign-outs shared there
    chosen = controller.Runner(
        parse(["controller", "--address", ":8443", "--lease-namespace", "vallum",
               "--lease-name", "mine"]),
        client.Configuration(),
    )
    assert (chosen.lease_namespace, chosen.lease_name) == ("vallum", "mine")
    assert chosen.session_state.namespace == "vallum"
