"""The config loader's bounds (issue 11, finding 15): error texts stay small whatever the YAML,
``*_file`` reads are bounded and take regular files only, and a file every user may write is
refused (a secret every user may read is a warning)."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.certs import TestCA
from vallum.cli.main import main as cli
from vallum.core import configfile, errors

ROUTE = """\
routes:
  - from: https://app.test
    to: http://127.0.0.1:9
    allow_public_unauthenticated_access: true
"""
SECRET = "c" * 44  # 33 bytes, enough for cookie_secret


def problems_of(text: str, base: Path) -> list[str]:
    with pytest.raises(errors.ConfigError) as info:
        configfile.loads(textwrap.dedent(text), "vallum.yaml", base_dir=str(base))
    return list(info.value.problems)


def laughs(levels: int) -> str:
    """A YAML "billion laughs": each anchor a list of ten aliases of the one before."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- error texts


def test_an_alias_used_as_a_key_gives_a_short_message_quickly(tmp_path: Path) -> None:
    text = laughs(7) + "? *a6\n: 1\n"
    assert len(text) < 500
    started = time.monotonic()
    found = problems_of(text, tmp_path)
    assert time.monotonic() - started < 2
    assert sum(len(p) for p in found) < 5_000  # on 4704c96: 52 MB of message
    assert any("keys must be strings, got a list" in p for p in found)


def test_a_long_value_is_cut_with_an_ellipsis(tmp_path: Path) -> None:
    long = "ftp://" + "a" * 100_000
    found = problems_of(f"routes:\n  - from: {long}\n    to: http://127.0.0.1:9\n", tmp_path)
    (problem,) = [p for p in found if "routes[0].from" in p]
    assert "expected an https:// URL" in problem and "…" in problem
    assert len(problem) < 500


def test_a_long_unknown_key_is_cut_in_every_message(tmp_path: Path) -> None:
    key = "k" * 50_000
    children = "".join(f"  c{i}: 1\n" for i in range(200))
    found = problems_of(f"? {key}\n:\n{children}", tmp_path)
    assert len(found) == 1 and "unknown key" in found[0] and len(found[0]) < 500


def test_the_list_of_problems_is_bounded(tmp_path: Path) -> None:
    text = "".join(f"unknown_{i}: 1\n" for i in range(5_000))
    found = problems_of(text, tmp_path)
    assert len(found) == 101
    assert found[-1] == "vallum.yaml: … and 4900 more problems"


@pytest.mark.parametrize("depth", [100, 900])
def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path, depth: int) -> None:
    # 4704c96: RecursionError
    found = problems_of(f"routes: {'[' * depth}{']' * depth}\n", tmp_path)
    assert any("nested more than 64 levels deep" in p for p in found)


def test_aliases_cannot_nest_a_policy_past_the_bound(tmp_path: Path) -> None:
    nest = "[" * 40 + "x" + "]" * 40
    text = f"d0: &d0 {nest}\n" + "".join(
        f"d{i}: &d{i} [{'[' * 30}*d{i - 1}{']' * 30}]\n" for i in range(1, 40)
    )
    text += ROUTE.replace("    allow_public_unauthenticated_access: true\n", "    policy: *d39\n")
    found = problems_of(text, tmp_path)
    assert any("routes[0].policy: nested more than 64 levels deep" in p for p in found)


# ------------------------------------------------------------------------- *_file reads


def test_a_file_over_its_limit_is_refused_naming_file_and_limit(tmp_path: Path) -> None:
    big = tmp_path / "ca.pem"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    text = ROUTE.replace("allow_public", f"tls_custom_ca_file: {big}\n    allow_public")
    found = problems_of(text, tmp_path)
    assert any(
        f"routes[0].tls_custom_ca_file: cannot read {big}: larger than 1 MiB, the limit for a "
        "certificate file" in p
        for p in found
    ), found


def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    started = time.monotonic()
    found = problems_of(f"cookie_secret_file: /dev/zero\n{ROUTE}", tmp_path)  # 4704c96: MemoryError
    assert time.monotonic() - started < 2
    assert any(
        "cookie_secret_file: cannot read /dev/zero: a device, expected a regular file" in p
        for p in found
    ), found


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)  # 4704c96: open() waits for a writer forever
    found = problems_of(f"cookie_secret_file: secret\n{ROUTE}", tmp_path)
    assert any(f"cannot read {fifo}: a FIFO, expected a regular file" in p for p in found)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    found = problems_of(f"cookie_secret_file: {tmp_path}\n{ROUTE}", tmp_path)
    assert any("a folder, expected a regular file" in p for p in found)


def test_the_config_file_itself_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "vallum.yaml"
    path.write_bytes(b"# " + b"x" * (16 * 1024 * 1024) + b"\n")
    with pytest.raises(errors.ConfigError) as info:
        configfile.load(str(path))
    assert list(info.value.problems) == [
        f"{path}: cannot read config file: larger than 16 MiB, the limit for a config file"
    ]


# ------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(
    "key",
    [
        "cookie_secret_file",
        "idp_client_secret_file",
        "signing_key_file",
        "certificate_authority_file",
    ],
)
def test_a_file_every_user_may_write_is_refused(
    tmp_path: Path, test_ca: TestCA, key: str
) -> None:
    content = {
        "cookie_secret_file": SECRET,
        "idp_client_secret_file": "s3cret",
        "signing_key_file": test_ca.issue("signer").key_pem,
        "certificate_authority_file": test_ca.cert_pem,
    }[key]
    path = tmp_path / "file"
    path.write_text(content)
    path.chmod(0o666)
    found = problems_of(f"{key}: file\n{ROUTE}", tmp_path)  # 4704c96: accepted
    assert any(
        f"{key}: refusing {path}: writable by every user (mode 0666)" in p
        and f"chmod o-w {path}" in p
        for p in found
    ), found
    path.chmod(0o600)
    configfile.loads(f"{key}: file\n{ROUTE}", "vallum.yaml", base_dir=str(tmp_path))


def test_a_config_file_every_user_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vallum.yaml"
    path.write_text(ROUTE)
    path.chmod(0o646)
    with pytest.raises(errors.ConfigError, match="writable by every user"):
        configfile.load(str(path))


def test_a_secret_every_user_may_read_is_a_warning(
    tmp_path: Path, test_ca: TestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = test_ca.issue("app.test", sans=["app.test"])
    cert, key = leaf.write(tmp_path)
    secret = tmp_path / "cookie"
    secret.write_text(SECRET)
    cert.chmod(0o644)  # a certificate is public: no warning
    key.chmod(0o644)
    secret.chmod(0o640)  # group-readable (a ssl-cert style group): no warning
    path = tmp_path / "vallum.yaml"
    path.write_text(
        f"certificates:\n  - cert_file: {cert}\n    key_file: {key}\n"
        f"cookie_secret_file: cookie\n{ROUTE}"
    )
    warnings: list[str] = []
    configfile.load(str(path), warnings=warnings)  # 4704c96: no warnings at all
    assert warnings == [
        f"{path}:3: certificates[0].key_file: {key} holds a secret and is readable by every "
        f"user (mode 0644); consider chmod o-r {key}"
    ]
    assert cli(["config", "check", "-q", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {warnings[0]}" in err
