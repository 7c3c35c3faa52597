"""The three assertion verifiers written by others, run as real processes with the same options.

Why this exists: "matching Pomerium's format" is only proven when libraries nobody here wrote
accept our token. Each verifier is a small program (Pomerium's Go SDK, npm ``jose``, PyJWT's
``PyJWKClient``) that fetches the JWKS over real HTTPS and verifies a token; this module runs
them uniformly so the compat tests, and end-to-end tests through the proxy, can ask all three::

    for verifier in VERIFIERS:
        verdict = verifier.verify(Check(token=..., audience="app.vallum.test",
                                        issuer="app.vallum.test", jwks_url=...,
                                        ca_file=ca_path, resolve={"app.vallum.test": addr}))
        assert verdict.accepted, verdict.stderr

``Check.jwks_url`` may be ``None`` for the Go SDK, which then derives
``https://<iss>/.well-known/pomerium/jwks.json`` from the token itself (as apps use it); the
``resolve`` map then needs the port (``"127.0.0.1:8443"``), because that URL has none.
Tools are built by ``scripts/build-compat`` (idempotent, cached), called here on first use.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TIMEOUT = 60


@dataclass(frozen=True)
class Check:
    """What to verify and how to reach the JWKS."""

    token: str
    audience: str | None = None
    issuer: str | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    """A local JWKS document instead of a URL (npm jose's ``createLocalJWKSet`` only)."""
    ca_file: Path | None = None
    resolve: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    claims: dict[str, Any]
    stderr: str
    returncode: int


@functools.cache
def build() -> Path:
    """Build (or find cached) verifier programs; the Go verifier's path."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-compat"), "--print-gosdk"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-compat failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def _common(check: Check) -> list[str]:
    args = ["--token", "-"]
    if check.issuer:
        args += ["--issuer", check.issuer]
    if check.audience:
        args += ["--audience", check.audience]
    if check.ca_file:
        args += ["--ca-file", str(check.ca_file)]
    for host, addr in check.resolve.items():
        args += ["--resolve", f"{host}={addr}"]
    return args


def _run(command: list[str], token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=token, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _verdict(done: subprocess.CompletedProcess[str], claims_key: str | None) -> Verdict:
    if done.returncode not in (0, 1):
        raise RuntimeError(f"verifier usage error ({done.returncode}): {done.stderr}")
    claims: dict[str, Any] = {}
    if done.returncode == 0:
        out = json.loads(done.stdout)
        claims = out[claims_key] if claims_key else out
    return Verdict(done.returncode == 0, claims, done.stderr, done.returncode)


@dataclass(frozen=True)
class Verifier:
    name: str

    def verify(self, check: Check) -> Verdict:
        if self.name == "gosdk":
            command = [str(build()), *(a[1:] if a.startswith("--") else a for a in _common(check))]
            if check.jwks_url:
                command += ["-jwks-url", check.jwks_url]
            return _verdict(_run(command, check.token), None)
        if self.name == "jose" and check.jwks_file is not None:
            build()
            command = ["node", str(HERE / "jose" / "verify.mjs"), *_common(check),
                       "--jwks-file", str(check.jwks_file)]
            return _verdict(_run(command, check.token), "payload")
        if check.jwks_url is None:
            raise ValueError(f"{self.name} needs Check.jwks_url")
        if self.name == "jose":
            build()
            command = ["node", str(HERE / "jose" / "verify.mjs"), *_common(check),
                       "--jwks-url", check.jwks_url]
            return _verdict(_run(command, check.token), "payload")
        if self.name == "pyjwt":
            command = [sys.executable, str(HERE / "pyjwt" / "verify.py"), *_common(check),
                       "--jwks-url", check.jwks_url]
            return _verdict(_run(command, check.token), "payload")
        raise ValueError(f"unknown verifier {self.name!r}")


VERIFIERS = (Verifier("gosdk"), Verifier("jose"), Verifier("pyjwt"))
"""Pomerium's Go SDK v0.0.9, npm jose v6, PyJWT with PyJWKClient."""
