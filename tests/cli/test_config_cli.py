"""``vallum config check``: a summary for a valid file, every problem for a bad one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vallum.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


def _vallum(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vallum.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_check_the_pomerium_example_prints_routes_in_match_order() -> None:
    done = _vallum("config", "check", "examples/pomerium-routes.yaml")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("examples/pomerium-routes.yaml: OK, 5 routes on 4 hosts (checksum ")
    httpbin = lines.index("  httpbin.localhost.pomerium.io")
    # Regex routes are tried before prefixes on the same host (documented order).
    assert lines[httpbin + 1].split()[:2] == ["regex", "^/v[0-9]+/.*$"]
    assert lines[httpbin + 2].split()[:2] == ["prefix", "/api/"]
    assert "(weight 10)" in lines[httpbin + 2] and "[allow lists]" in lines[httpbin + 2]
    assert any("path   /health" in line and "[public]" in line for line in lines)
    assert done.stderr == ""


def test_check_the_standalone_example() -> None:
    done = _vallum("config", "check", "examples/standalone.yaml")
    assert done.returncode == 0, done.stderr
    assert "listen 127.0.0.1:8443, redirect 127.0.0.1:8080, metrics 127.0.0.1:9090" in done.stdout
    assert "(a self-signed one is generated)" in done.stdout


def test_check_a_bad_file_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            address: 127.0.0.1:8443
            cookie_expire: fast
            routes:
              - from: https://a.example.com
                to: http://127.0.0.1:1
                timeout: soon
              - from: https://b.example.com
                to: http://127.0.0.1:2
                policy:
                  allow:
                    or:
                      - emial: {is: a@example.com}
              - from: https://c.example.com
                tls_custom_ca_file: missing-ca.pem
            """
        )
    )
    done = _vallum("config", "check", "routes.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "routes.yaml: 5 problems:"
    assert lines[1].startswith('  routes.yaml:2: cookie_expire: expected a duration like "30s"')
    assert lines[2].startswith("  routes.yaml:6: routes[0].timeout: expected a duration")
    assert lines[3].startswith("  routes.yaml:12: routes[1].policy.allow.or[0].emial: unknown")
    assert lines[4] == "  routes.yaml:13: routes[2]: to is required (one upstream URL or a list)"
    assert lines[5].startswith(
        f"  routes.yaml:14: routes[2].tls_custom_ca_file: cannot read {tmp_path}/missing-ca.pem"
    )


def test_check_a_missing_file_and_not_yaml(tmp_path: Path) -> None:
    done = _vallum("config", "check", str(tmp_path / "nope.yaml"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot read config file: No such file or directory" in done.stderr
    (tmp_path / "x.yaml").write_text("routes: [\n")
    done = _vallum("config", "check", str(tmp_path / "x.yaml"))
    assert done.returncode == 1 and "not valid YAML" in done.stderr


def test_quiet_prints_nothing_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", "-q", str(REPO / "examples/standalone.yaml")]) == 0
    assert capsys.readouterr().out == ""


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["config", "check"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["config", "check", "--help"])
    assert info.value.code == 0
    assert "route table" in capsys.readouterr().out
