"""Test certificate authorities and leaf certificates, generated with ``cryptography``.

Usage::

    ca = TestCA.create("Vallum Test CA")
    leaf = ca.issue("app.example.test", sans=["app.example.test", "127.0.0.1"])
    leaf.cert_pem, leaf.key_pem, ca.cert_pem
    client = ca.issue("alice", client=True)
    path = leaf.write(tmp_path)   # -> (cert_file, key_file)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _san(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return _key_pem(self.key)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def write(self, folder: Path, stem: str = "leaf") -> tuple[Path, Path]:
        cert_file, key_file = folder / f"{stem}.crt", folder / f"{stem}.key"
        cert_file.write_text(self.cert_pem)
        key_file.write_text(self.key_pem)
        return cert_file, key_file


@dataclass(frozen=True)
class TestCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    __test__ = False  # not a pytest test class

    @classmethod
    def create(cls, name: str = "Vallum Test CA") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        common_name: str,
        sans: list[str] | None = None,
        *,
        client: bool = False,
        days: int = 1,
        not_before: dt.datetime | None = None,
    ) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        now = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        names = sans if sans is not None else ([] if client else [common_name])
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(_san(names)), False)
        return Leaf(builder.sign(self.key, hashes.SHA256()), key)

    def crl_pem(self, revoked: list[Leaf]) -> str:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + dt.timedelta(days=1))
        )
        for leaf in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(leaf.cert.serial_number)
                .revocation_date(now - dt.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, folder: Path, stem: str = "ca") -> Path:
        path = folder / f"{stem}.crt"
        path.write_text(self.cert_pem)
        return path
