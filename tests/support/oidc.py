"""A real OpenID provider for integration tests: npm ``oidc-provider`` run with the machine's Node.

``start_provider`` writes a config file, starts ``tests/oidc/provider.mjs`` over HTTPS on
127.0.0.1 with a certificate from the test CA and waits for it to listen. Vallum trusts it through
its ordinary ``certificate_authority`` setting (no test-only code path).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.certs import TestCA
from tests.support.net import free_port

OIDC_DIR = Path(__file__).resolve().parent.parent / "oidc"
CLIENT_ID = "vallum"
CLIENT_SECRET = "vallum-test-client-secret-0123456789"
RESOURCE_AUDIENCE = "https://api.vallum.test"

# Group ids as Entra ID sends them: UUIDs, which do not compress much.
HEAVY_GROUPS = [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"vallum-group-{i}")) for i in range(300)]
USERS: dict[str, dict[str, Any]] = {
    "alice": {"email": "alice@example.test", "name": "Alice Admin", "groups": ["admins", "staff"]},
    "bob": {"email": "bob@example.test", "name": "Bob Staff", "groups": ["staff"]},
    "carol": {"email": "carol@other.test", "name": "Carol Outsider", "groups": []},
    "heavy": {"email": "heavy@example.test", "name": "Heavy Groups", "groups": HEAVY_GROUPS},
    # Typed someone else's address at a provider that does not check it ("nOAuth").
    "mallory": {"email": "alice@example.test", "email_verified": False, "name": "Mallory",
                "groups": []},
    "mallory2": {"email": "alice@example.test", "email_verified": "false", "name": "Mallory",
                 "groups": []},
    # An ID token issued to another client of the same provider (azp).
    "elsewhere": {"email": "elsewhere@example.test", "name": "Elsewhere", "groups": [],
                  "azp": "another-client"},
}


def spki_pin(cert: x509.Certificate) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)), as ``--ignore-certificate-errors-spki-list`` wants."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def require_node() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/bootstrap installs what the tests need)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("tests/oidc/node_modules missing: run scripts/bootstrap (npm ci)")


@dataclass
class Provider:
    """A running provider; ``issuer`` is ``https://127.0.0.1:<port>``."""

    issuer: str
    port: int
    ca: TestCA
    spki: str = ""
    """base64 SHA-256 of the server certificate's public key (Chromium's SPKI pin format)."""
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    users: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: USERS)

    def settings(self) -> dict[str, Any]:
        """The ``Settings`` fields that point Vallum at this provider."""
        return {
            "idp_provider_url": self.issuer,
            "idp_client_id": self.client_id,
            "idp_client_secret": self.client_secret,
            "certificate_authority_pem": self.ca.cert_pem,
        }


@contextlib.asynccontextmanager
async def start_provider(
    ca: TestCA,
    folder: Path,
    *,
    redirect_uris: Sequence[str],
    post_logout_redirect_uris: Sequence[str] = (),
    ttl: Mapping[str, int] | None = None,
    users: Mapping[str, Mapping[str, Any]] = USERS,
    rotate_refresh_tokens: bool = False,
) -> AsyncIterator[Provider]:
    """``rotate_refresh_tokens``: a new refresh token at every refresh, and a spent one used
    again revokes the whole grant (as providers with reuse detection do)."""
    require_node()
    # Two tries: on a loaded 2-core machine a start has been seen to fail once in a full run
    # (the port taken between free_port() and listen(), or no "ready" line); each try says why.
    failures: list[str] = []
    for _attempt in range(2):
        port = free_port()
        issuer = f"https://127.0.0.1:{port}"
        leaf = ca.issue("127.0.0.1", sans=["127.0.0.1", "localhost"])
        cert_file, key_file = leaf.write(folder, "oidc-provider")
        config = {
            "port": port,
            "issuer": issuer,
            "cert_file": str(cert_file),
            "key_file": str(key_file),
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": list(redirect_uris),
                "post_logout_redirect_uris": list(post_logout_redirect_uris),
            }],
            "users": dict(users),
            "ttl": dict(ttl or {}),
            "resource_audience": RESOURCE_AUDIENCE,
            "access_token_audience": CLIENT_ID,
            "rotate_refresh_tokens": rotate_refresh_tokens,
        }
        config_file = folder / "oidc-provider.json"
        config_file.write_text(json.dumps(config))
        process = await asyncio.create_subprocess_exec(
            "node", str(OIDC_DIR / "provider.mjs"), str(config_file),
            cwd=OIDC_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        except TimeoutError:
            line = b""
        if line.startswith(b"ready"):
            break
        process.kill()
        _, err = await process.communicate()
        failures.append(f"exit {process.returncode}, stdout {line!r}, stderr {err[-2000:]!r}")
    else:
        raise RuntimeError("oidc-provider did not start: " + " / ".join(failures))
    try:
        yield Provider(issuer=issuer, port=port, ca=ca, spki=spki_pin(leaf.cert), users=users)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=5)
            except TimeoutError:
                process.kill()
                await process.wait()
