"""``vallum keys``: generate a signing key, print a key file's JWKS (run as a real process)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from vallum.core.config import Settings
from vallum.proxy import jwt


def _vallum(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vallum.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )


def test_generate_prints_a_pem_key_the_minter_accepts() -> None:
    done = _vallum("keys", "generate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("-----BEGIN PRIVATE KEY-----")
    minter = jwt.AssertionMinter(Settings(signing_key=(done.stdout,)))
    assert len(minter.kid) == 64
    # Each run makes a new key.
    assert _vallum("keys", "generate").stdout != done.stdout


def test_generate_base64_decodes_to_pem() -> None:
    done = _vallum("keys", "generate", "--format", "base64")
    assert done.returncode == 0, done.stderr
    pem = base64.b64decode(done.stdout.strip()).decode()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert jwt.AssertionMinter(Settings(signing_key=(done.stdout.strip(),))).kid


def test_jwks_of_a_key_file_matches_what_the_minter_serves(tmp_path: Path) -> None:
    first = jwt.private_key_pem(jwt.generate_private_key())
    second = jwt.private_key_pem(jwt.generate_private_key())
    path = tmp_path / "keys.pem"
    path.write_text(first + second)
    done = _vallum("keys", "jwks", str(path))
    assert done.returncode == 0, done.stderr
    minter = jwt.AssertionMinter(Settings(signing_key=(first, second)))
    assert json.loads(done.stdout) == json.loads(minter.jwks_json())
    assert "d" not in json.loads(done.stdout)["keys"][0]  # never the private part


def test_jwks_reads_standard_input() -> None:
    pem = jwt.private_key_pem(jwt.generate_private_key())
    done = _vallum("keys", "jwks", "-", stdin=pem)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["keys"]) == 1


def test_jwks_bad_input_is_a_message_naming_the_file(tmp_path: Path) -> None:
    missing = _vallum("keys", "jwks", str(tmp_path / "nope.pem"))
    assert missing.returncode == 1
    assert "nope.pem: cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    bad = _vallum("keys", "jwks", str(junk))
    assert bad.returncode == 1
    assert "junk.pem" in bad.stderr
    assert "no PEM key found" in bad.stderr


def test_help_and_usage() -> None:
    helped = _vallum("keys", "--help")
    assert helped.returncode == 0
    assert "generate" in helped.stdout
    assert "jwks" in helped.stdout
    assert _vallum("keys").returncode == 2
    assert _vallum("keys", "generate", "--format", "der").returncode == 2
