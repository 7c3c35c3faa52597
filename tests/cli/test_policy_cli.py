"""``vallum policy check`` / ``vallum policy eval``: output, exit statuses, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.certs import TestCA
from vallum.cli.main import main

POLICY = """\
- allow:
    or:
      - groups: admins
      - email: {ends_with: "@corp.example"}
- deny:
    or:
      - http_method: DELETE
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["policy", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_check_prints_the_normalised_policy(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    status, out, err = run(capsys, "check", str(policy_file))
    assert status == 0
    assert yaml.safe_load(out) == [
        {
            "allow": {
                "or": [{"groups": {"has": "admins"}}, {"email": {"ends_with": "@corp.example"}}]
            }
        },
        {"deny": {"or": [{"http_method": {"is": "DELETE"}}]}},
    ]
    assert "valid policy" in err


def test_check_json(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    status, out, _ = run(capsys, "check", str(policy_file), "--json")
    assert status == 0
    assert json.loads(out)["ok"] is True


def test_check_reports_the_place(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "allow:\n  or:\n    - accept: true\n    - accept: true\n"
        "    - claim/groups: {hass: admins}\n"
    )
    status, out, err = run(capsys, "check", str(bad))
    assert status == 1
    assert "allow.or[2].claim/groups.hass: unknown list matcher 'hass'" in err
    assert "Traceback" not in err and out == ""
    status, out, _ = run(capsys, "check", str(bad), "--json")
    assert status == 1
    assert json.loads(out)["error"]["path"] == "allow.or[2].claim/groups.hass"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("allow: [\n", "p.yaml:2: not valid YAML"),
        ('{"allow": ', "p.yaml:2: not valid YAML"),
        ("42\n", "expected a rule or a list of rules"),
        ("allowed_users: [a]\nallow: {or: [{accept: true}]}\n", "put the rules under `policy:`"),
        ("allowed_users: 5\n", "allowed_users: expected a list"),
        (
            "allow_public_unauthenticated_access: yes\nallowed_users: [a@b.c]\n",
            "p.yaml:1: allow_public_unauthenticated_access: a public route cannot also restrict",
        ),
    ],
)
def test_check_bad_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(content)
    status, _, err = run(capsys, "check", str(path))
    assert status == 1
    assert fragment in err


def test_check_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "check", str(tmp_path / "nope.yaml"))
    assert status == 1 and "cannot read" in err


def test_route_like_file_compiles_legacy_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "route.yaml"
    path.write_text(
        "from: https://app.example.com\nto: http://10.0.0.5\n"
        "allowed_domains: [example.com]\n"
        "allowed_idp_claims: {groups: [ops]}\n"
        "policy:\n  deny:\n    or:\n      - http_path: {starts_with: /admin}\n"
    )
    status, out, err = run(capsys, "check", str(path))
    assert status == 0
    assert "ignoring route keys from, to" in err
    assert yaml.safe_load(out) == [
        {"allow": {"or": [{"domain": {"is": "example.com"}}]}},
        {"allow": {"or": [{"claim/groups": {"has": "ops"}}]}},
        {"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}},
    ]
    who = json.dumps({"user": "u", "email": "a@example.com"})
    status, out, _ = run(
        capsys, "eval", str(path), "--identity", who, "--request", '{"path": "/reports"}'
    )
    assert status == 0 and out.startswith("allow\n")
    assert "allowed_domains matched: domain is example.com" in out
    status, out, _ = run(
        capsys, "eval", str(path), "--identity", who, "--request", '{"path": "/admin/users?x=1"}'
    )
    assert status == 3 and "deny rule 1 matched: http_path starts_with /admin" in out


def test_eval_allow_and_deny(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    admin = json.dumps({"user": "u-1", "email": "a@x.com", "groups": ["admins"]})
    status, out, _ = run(
        capsys,
        "eval",
        str(policy_file),
        "--identity",
        admin,
        "--request",
        '{"method": "GET", "path": "/"}',
    )
    assert status == 0
    assert out.splitlines()[0] == "allow"
    status, out, _ = run(
        capsys,
        "eval",
        str(policy_file),
        "--identity",
        admin,
        "--request",
        '{"method": "DELETE", "path": "/"}',
        "--json",
    )
    assert status == 3
    assert json.loads(out) == {
        "allow": False,
        "needs_login": False,
        "reasons": [
            {
                "code": "deny-rule",
                "message": "deny rule 2 matched: http_method is DELETE",
                "path": "[1].deny.or[0].http_method",
            }
        ],
    }


def test_eval_anonymous_needs_sign_in(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    status, out, _ = run(capsys, "eval", str(policy_file), "--identity", "null")
    assert status == 3
    assert out.splitlines()[0] == "deny (sign-in required)"
    assert "sign-in required: requires group `admins`" in out


def test_eval_time_and_ip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "allow": {
                    "and": [
                        {"source_ip": "10.0.0.0/8"},
                        {
                            "time_of_day": {
                                "timezone": "Europe/Paris",
                                "after": "9:00",
                                "before": "18:00",
                            }
                        },
                    ]
                }
            }
        )
    )
    req = {"client_ip": "10.1.2.3", "time": "2026-11-25T09:30:00Z"}  # 10:30 in Paris
    status, _, _ = run(capsys, "eval", str(path), "--request", json.dumps(req))
    assert status == 0
    req["time"] = "2026-11-25T17:30:00Z"  # 18:30 in Paris
    status, out, _ = run(capsys, "eval", str(path), "--request", json.dumps(req))
    assert status == 3 and "time_of_day" in out


def test_eval_reads_at_files(
    capsys: pytest.CaptureFixture[str], policy_file: Path, tmp_path: Path
) -> None:
    who = tmp_path / "who.json"
    who.write_text(json.dumps({"email": "b@corp.example"}))
    status, _, _ = run(capsys, "eval", str(policy_file), "--identity", f"@{who}")
    assert status == 0


def test_eval_client_certificate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_ca: TestCA
) -> None:
    leaf = test_ca.issue("alice", sans=["alice.devices.example"], client=True)
    path = tmp_path / "p.yaml"
    path.write_text("allow:\n  or:\n    - client_certificate: {san_dns: alice.devices.example}\n")
    req = {"client_certificate": {"pem": leaf.cert_pem, "verified": True}}
    status, _, _ = run(
        capsys,
        "eval",
        str(path),
        "--request",
        json.dumps(req),
        "--downstream-mtls",
        "policy_with_default_deny",
    )
    assert status == 0
    status, _, _ = run(capsys, "eval", str(path), "--downstream-mtls", "policy")
    assert status == 3


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--identity", "{", "--identity: invalid JSON"),
        ("--identity", "[]", "--identity: expected null"),
        ("--identity", '{"groups": "admins"}', "--identity.groups: expected a list"),
        ("--identity", '{"claims": []}', "--identity.claims: expected an object"),
        ("--identity", '{"email": 5}', "--identity.email: expected a string"),
        ("--identity", "@/nonexistent/who.json", "--identity: cannot read"),
        ("--request", '{"time": "yesterday"}', "--request.time: not an RFC 3339 time"),
        ("--request", '{"client_ip": "10.0.0.300"}', "--request.client_ip: not an IP"),
        ("--request", '{"headers": {"x": 1}}', "--request.headers: expected an object"),
        ("--request", '{"verb": "GET"}', "--request.verb: unknown key"),
        ("--request", '{"client_certificate": {"pem": "x"}}', "not a PEM certificate"),
    ],
)
def test_eval_bad_input(
    capsys: pytest.CaptureFixture[str], policy_file: Path, flag: str, value: str, fragment: str
) -> None:
    status, _, err = run(capsys, "eval", str(policy_file), flag, value)
    assert status == 1
    assert fragment in err


def test_eval_bad_policy_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("allow: {or: [{emial: x}]}\n")
    status, _, err = run(capsys, "eval", str(path))
    assert status == 1 and "did you mean 'email'" in err


@pytest.mark.parametrize(
    "argv", [["policy", "--help"], ["policy", "check", "--help"], ["policy", "eval", "--help"]]
)
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_as_a_real_process_from_stdin(policy_file: Path) -> None:
    """The installed entry point, stdin as FILE, and no traceback on bad input."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vallum.cli",
            "policy",
            "eval",
            "-",
            "--identity",
            '{"email": "x@corp.example"}',
            "--json",
        ],
        input=POLICY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["allow"] is True
    done = subprocess.run(
        [sys.executable, "-m", "vallum.cli", "policy", "check", "-"],
        input="allow: {or: [{http_method: {hass: GET}}]}",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "allow.or[0].http_method.hass" in done.stderr and "Traceback" not in done.stderr
