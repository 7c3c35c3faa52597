"""``vallum doctor``'s command line: its options and defaults (those of ``vallum controller``),
and one line, never a traceback, when there is nothing to check against (no CRDs, no
credentials, an API server that does not answer). A real cluster: ``e2e/test_doctor.py``."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from vallum.cli import controller, main
from vallum.cli import doctor as doctor_cli
from vallum.operator import leadership


def _vallum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vallum.cli", "doctor", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_help_names_every_option() -> None:
    done = _vallum("--help")
    assert done.returncode == 0
    for option in ("--kubeconfig", "--namespace", "--settings", "--controller-name",
                   "--lease-namespace", "--lease-name", "--crds", "--idp-timeout", "--output"):
        assert option in done.stdout


def test_defaults_are_the_controllers() -> None:
    args = main.build_parser().parse_args(["doctor"])
    got = doctor_cli.options(args)
    assert got.controller_name == controller.DEFAULT_CONTROLLER_NAME
    assert got.settings_name == "global"
    assert got.namespace == got.lease_namespace == "vallum"
    assert got.lease_name == leadership.lease_name(controller.DEFAULT_CONTROLLER_NAME)
    args = main.build_parser().parse_args(
        ["doctor", "--namespace", "ops", "--lease-namespace", "leases", "--controller-name",
         "example.com/x"])
    got = doctor_cli.options(args)
    assert (got.namespace, got.lease_namespace) == ("ops", "leases")
    assert got.lease_name == leadership.lease_name("example.com/x")


def test_a_crds_directory_without_crds_is_one_line(tmp_path: Path) -> None:
    done = _vallum("--crds", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("vallum doctor: cannot read the CRDs to compare with: no ")
    assert "Traceback" not in done.stderr


def test_no_credentials_is_one_line(tmp_path: Path) -> None:
    done = _vallum("--kubeconfig", str(tmp_path / "missing"))
    assert done.returncode == 1
    assert done.stderr.startswith("vallum doctor: no Kubernetes credentials: ")
    assert "Traceback" not in done.stderr


def test_an_api_server_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
        users: [{{name: u, user: {{token: t}}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
        current-context: x
    """))
    done = _vallum("--kubeconfig", str(kubeconfig))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("vallum doctor: cannot read the cluster: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
