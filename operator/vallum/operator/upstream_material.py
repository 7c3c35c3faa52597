"""Checks of a route's own upstream TLS material (``tls_custom_ca``, ``tls_client_cert`` with
``tls_client_key``) that the routes file's value reader cannot make, made when its Ingress
compiles.

Why: the reader checks that each PEM holds what it should (:func:`vallum.core.config.parse_pem`),
but a client certificate with another certificate's key, or a CA bundle OpenSSL refuses, only
failed when the proxy built the route's TLS context, and there it refused the *whole* table: one
bad Secret (a cert-manager renewal half-written, a key pasted from the wrong Secret) kept every
other change in the cluster from going live. Checked here, the material is a problem of its
Ingress only: its routes deny with the reason, the rest of the table is served.

The reader's own PEM check is also made here (:func:`pem_problem`) when the material comes from
a Secret, so that the reason names the Secret and its key (``tls.crt``), not a route option the
Ingress never wrote.

Each distinct material is checked once (memoised by its text, so by Secret version); the key
material itself never appears in a message.
"""

from __future__ import annotations

import functools
import ssl
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vallum.core import config


def problems(route: config.Route) -> list[str]:
    """What is wrong with ``route``'s upstream TLS material (``option: reason``), or []."""
    out: list[str] = []
    if route.tls_custom_ca_pem:
        reason = ca_problem(route.tls_custom_ca_pem)
        if reason is not None:
            out.append(f"tls_custom_ca: cannot load CA: {reason}")
    cert, key = route.tls_client_cert_pem, route.tls_client_key_pem
    if cert or key:
        if not (cert and key):
            out.append("tls_client_cert and tls_client_key must be given together")
        else:
            reason = client_problem(cert, key)
            if reason is not None:
                out.append(f"tls_client_cert/tls_client_key: {reason}")
    return out


PEM_KINDS: dict[str, Literal["certificate", "private key"]] = {
    "tls_client_cert": "certificate",
    "tls_client_key": "private key",
    "tls_custom_ca": "certificate",
}
"""What each upstream TLS option's PEM must hold."""


@functools.lru_cache(maxsize=1024)
def pem_problem(option: str, text: str) -> str | None:
    """Why ``text`` is not the PEM that ``option`` needs (as the routes reader checks it), or
    None: checked where a Secret's key is read, so the reason can name the Secret and key
    rather than a route option the user never wrote."""
    try:
        config.parse_pem(text, PEM_KINDS[option])
    except ValueError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=1024)
def ca_problem(pem: str) -> str | None:
    """Why OpenSSL does not take ``pem`` as trusted CAs (as the proxy loads them), or None."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc)
    return None


@functools.lru_cache(maxsize=1024)
def client_problem(cert_pem: str, key_pem: str) -> str | None:
    """Why ``key_pem`` cannot be used with the first certificate of ``cert_pem``, or None."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except (ValueError, IndexError):
        return "the certificate does not load"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return "the private key does not load (an encrypted key is not supported)"
    except Exception:
        return "the private key's algorithm is not supported"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        matches = key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
    except (ValueError, TypeError):
        return "the certificate's key type is not supported"
    if not matches:
        return "the private key does not match the certificate"
    return None
