"""``client_certificate`` and ``invalid_client_certificate`` with real certificates from the
test CA (and one self-signed certificate that carries an email SAN)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.core.policy.support import allows, decide, one, request
from tests.support.certs import Leaf, TestCA
from vallum.core import policy
from vallum.core.errors import PolicyError
from vallum.core.request import ClientCertificate


@pytest.fixture(scope="module")
def leaf(test_ca: TestCA) -> Leaf:
    return test_ca.issue("alice", sans=["alice.devices.example.com"], client=True)


def presented(leaf: Leaf, verified: bool = True) -> ClientCertificate:
    return ClientCertificate(der=leaf.der, verified=verified)


def fingerprint(leaf: Leaf) -> str:
    return hashlib.sha256(leaf.der).hexdigest()


def spki(leaf: Leaf) -> str:
    raw = leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(raw).digest()).decode()


def test_fingerprint_short_and_long_forms(leaf: Leaf, test_ca: TestCA) -> None:
    short = fingerprint(leaf)
    long = ":".join(short[i : i + 2] for i in range(0, 64, 2)).upper()
    other = test_ca.issue("bob", client=True)
    third = test_ca.issue("carol", client=True)
    for value in (short, long, [fingerprint(third), short]):
        data = one({"client_certificate": {"fingerprint": value}})
        assert allows(data, request(client_cert=presented(leaf)))
        assert not allows(data, request(client_cert=presented(other)))
        assert not allows(data, request())


def test_pinning_holds_for_an_unverified_certificate(leaf: Leaf) -> None:
    """TLS proved key possession; pinning by hash does not need the CA chain."""
    data = one({"client_certificate": {"fingerprint": fingerprint(leaf)}})
    assert allows(data, request(client_cert=presented(leaf, verified=False)))


def test_spki_hash(leaf: Leaf, test_ca: TestCA) -> None:
    data = one({"client_certificate": {"spki_hash": [spki(leaf)]}})
    assert allows(data, request(client_cert=presented(leaf)))
    assert not allows(data, request(client_cert=presented(test_ca.issue("x", client=True))))


def test_whole_certificate_pem(leaf: Leaf, test_ca: TestCA) -> None:
    data = one({"client_certificate": {"certificate": leaf.cert_pem}})
    assert allows(data, request(client_cert=presented(leaf)))
    assert not allows(data, request(client_cert=presented(test_ca.issue("x", client=True))))


def test_san_dns_requires_a_verified_certificate(leaf: Leaf) -> None:
    data = one({"client_certificate": {"san_dns": {"ends_with": ".devices.example.com"}}})
    assert allows(data, request(client_cert=presented(leaf)))
    assert not allows(data, request(client_cert=presented(leaf, verified=False)))


def test_san_email_on_a_certificate_with_an_email_name() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carol")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("carol@yourdomain.com")]), False
        )
        .sign(key, hashes.SHA256())
    )
    cc = ClientCertificate(der=cert.public_bytes(serialization.Encoding.DER), verified=True)
    assert allows(
        one({"client_certificate": {"san_email": {"ends_with": "@yourdomain.com"}}}),
        request(client_cert=cc),
    )
    assert not allows(
        one({"client_certificate": {"san_email": "dave@yourdomain.com"}}), request(client_cert=cc)
    )


def test_conditions_are_anded(leaf: Leaf) -> None:
    data = one({"client_certificate": {"fingerprint": fingerprint(leaf), "san_dns": "nope"}})
    assert not allows(data, request(client_cert=presented(leaf)))


def test_garbage_certificate_matches_nothing() -> None:
    cc = ClientCertificate(der=b"not a certificate", verified=True)
    d = decide(one({"client_certificate": {"fingerprint": "ab" * 32}}), request(client_cert=cc))
    assert not d.allowed
    assert d.reasons[0].code == "client-certificate-unauthorized"


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("yes", "allow.and[0].client_certificate"),
        ({}, "allow.and[0].client_certificate"),
        ({"fingerprint": "abc"}, "allow.and[0].client_certificate.fingerprint"),
        ({"fingerprint": ["ab" * 32, 7]}, "allow.and[0].client_certificate.fingerprint[1]"),
        ({"spki_hash": "bm90IDMyIGJ5dGVz"}, "allow.and[0].client_certificate.spki_hash"),
        ({"certificate": "-----BEGIN nothing"}, "allow.and[0].client_certificate.certificate"),
        ({"serial": "1"}, "allow.and[0].client_certificate.serial"),
        ({"san_dns": {"has": "x"}}, "allow.and[0].client_certificate.san_dns.has"),
    ],
)
def test_bad_certificate_matchers(value: object, where: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy.compile_policy(one({"client_certificate": value}))
    assert err.value.path == where


@pytest.mark.parametrize(
    ("client_ca", "cert", "invalid"),
    [
        (False, None, False),  # no CA configured, no certificate: nothing is invalid
        (True, None, True),  # CA configured: a certificate is required
        (False, "unverified", True),
        (True, "unverified", True),
        (False, "verified", False),
        (True, "verified", False),
    ],
)
def test_invalid_client_certificate(
    leaf: Leaf, client_ca: bool, cert: str | None, invalid: bool
) -> None:
    cc = None if cert is None else presented(leaf, verified=cert == "verified")
    data = {
        "allow": {"or": [{"accept": True}]},
        "deny": {"or": [{"invalid_client_certificate": 1}]},
    }
    d = decide(data, request(client_cert=cc), None, client_ca=client_ca)
    assert d.allowed is (not invalid)
    if invalid:
        assert d.reasons[0].message == "deny rule 1 matched: invalid_client_certificate"
