"""``client_certificate``: the client certificate presented on the connection matches.

The value is a *certificate matcher*, an object whose conditions must all hold:

    fingerprint   SHA-256 of the whole certificate (DER): one value or a list. Accepted forms:
                  64 hex digits, or 32 colon-separated hex bytes (``openssl -fingerprint``);
                  any letter case.
    spki_hash     base64 SHA-256 of the SubjectPublicKeyInfo: one value or a list.
    certificate   (Vallum) the whole certificate in PEM: one or a list; matches that exact leaf.
    san_dns, san_email, san_uri
                  a string matcher that some Subject Alternative Name of that type must satisfy.

Pinning conditions (fingerprint, spki_hash, certificate) also hold for a certificate that did
not chain to the configured CA: TLS has already proven the client holds its private key. SAN
conditions hold only for a *verified* certificate, because anyone can self-sign any name.
No certificate presented: false.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vallum.core.errors import PolicyError
from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "client_certificate"
ABOUT_USER = False
SUB_PATH = False

KEYS = ("fingerprint", "spki_hash", "certificate", "san_dns", "san_email", "san_uri")


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What the matcher compares, computed once per distinct certificate."""

    fingerprint: str
    spki_hash: str
    san_dns: tuple[str, ...]
    san_email: tuple[str, ...]
    san_uri: tuple[str, ...]


@functools.lru_cache(maxsize=512)
def facts(der: bytes) -> CertFacts | None:
    """Fingerprint, SPKI hash and SANs of a DER certificate; ``None`` if it does not parse."""
    try:
        cert = x509.load_der_x509_certificate(der)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = tuple(sans.get_values_for_type(x509.DNSName))
            email = tuple(sans.get_values_for_type(x509.RFC822Name))
            uri = tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            dns = email = uri = ()
    except Exception:  # any malformed certificate simply matches nothing
        return None
    return CertFacts(
        hashlib.sha256(der).hexdigest(),
        base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        dns,
        email,
        uri,
    )


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _strings(data: object, path: str, what: str) -> list[tuple[str, str]]:
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PolicyError(path, f"expected a {what} or a non-empty list of them")
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(data, list) else path
        if not isinstance(item, str) or not item.strip():
            raise PolicyError(where, f"expected a {what}, got {item!r}")
        out.append((item.strip(), where))
    return out


def _fingerprints(data: object, path: str) -> frozenset[str]:
    out = set()
    for text, where in _strings(data, path, "SHA-256 fingerprint"):
        value = text.replace(":", "").lower()
        if not _HEX64.match(value):
            raise PolicyError(
                where, f"not a SHA-256 fingerprint (64 hex digits, colons allowed): {text!r}"
            )
        out.add(value)
    return frozenset(out)


def _spki_hashes(data: object, path: str) -> frozenset[str]:
    out = set()
    for text, where in _strings(data, path, "base64 SPKI hash"):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise PolicyError(where, f"not a base64-encoded SHA-256 SPKI hash: {text!r}")
        out.add(base64.b64encode(raw).decode())
    return frozenset(out)


def _certificates(data: object, path: str) -> frozenset[str]:
    out = set()
    for text, where in _strings(data, path, "PEM certificate"):
        try:
            cert = x509.load_pem_x509_certificate(text.encode())
        except ValueError:
            raise PolicyError(where, "not a PEM certificate") from None
        out.add(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest())
    return frozenset(out)


def build(spec: base.Spec) -> base.Leaf:
    data = spec.data
    if not isinstance(data, dict) or not data:
        raise PolicyError(
            spec.path, "expected a certificate matcher object with one of: " + ", ".join(KEYS)
        )
    pin_sets: list[frozenset[str]] = []  # each: allowed fingerprints (all sets must match)
    spki_sets: list[frozenset[str]] = []
    san_tests: list[tuple[str, matchers.StringTest]] = []
    parts: list[str] = []
    normalized: dict[str, object] = {}
    for key, value in data.items():
        where = f"{spec.path}.{key}"
        if key == "fingerprint":
            prints = _fingerprints(value, where)
            pin_sets.append(prints)
            normalized[key] = sorted(prints)
            parts.append("fingerprint in " + ", ".join(p[:16] + "…" for p in sorted(prints)))
        elif key == "spki_hash":
            hashes = _spki_hashes(value, where)
            spki_sets.append(hashes)
            normalized[key] = sorted(hashes)
            parts.append("spki_hash in " + ", ".join(sorted(hashes)))
        elif key == "certificate":
            pin_sets.append(_certificates(value, where))
            normalized[key] = value
            parts.append("certificate is one of the given PEM certificates")
        elif key in ("san_dns", "san_email", "san_uri"):
            m = matchers.string_matcher(value, where)
            san_tests.append((key, m.test))
            normalized[key] = m.normalized
            parts.append(f"{key} {m.description}")
        else:
            raise PolicyError(
                where, f"unknown certificate matcher '{key}' (expected one of: {', '.join(KEYS)})"
            )
    pins, spkis, sans = tuple(pin_sets), tuple(spki_sets), tuple(san_tests)

    def test(subject: Subject) -> int:
        cert = subject.request.client_cert
        if cert is None:
            return logic.FALSE
        if sans and cert.verified is not True:
            return logic.FALSE
        info = facts(bytes(cert.der))
        if info is None:
            return logic.FALSE
        for allowed in pins:
            if info.fingerprint not in allowed:
                return logic.FALSE
        for allowed in spkis:
            if info.spki_hash not in allowed:
                return logic.FALSE
        for kind, match in sans:
            names: tuple[str, ...] = getattr(info, kind)
            if not any(match(name) for name in names):
                return logic.FALSE
        return logic.TRUE

    joined = " and ".join(parts)
    return base.Leaf(
        spec.key,
        test,
        f"client_certificate {joined}",
        f"a client certificate whose {joined}",
        "client-certificate-unauthorized",
        normalized,
        spec.path,
    )
