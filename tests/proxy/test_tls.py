"""Downstream TLS with real handshakes on 127.0.0.1: SNI selection, self-signed fallback, mTLS.

A small asyncio TLS server uses ``tls.server_context(settings)``; once the handshake is done it
answers with what ``tls.client_certificate()`` saw. Clients are plain ``ssl`` clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import socket
import ssl
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.certs import Leaf, TestCA
from vallum.core import config, errors
from vallum.proxy import tls, tls_deferred


@asynccontextmanager
async def tls_server(settings: config.Settings, defer: bool = False) -> AsyncIterator[int]:
    ctx = tls.server_context(settings, defer_client_verification=defer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cert = tls.client_certificate(writer.get_extra_info("ssl_object"), settings)
        answer: dict[str, Any] = {"cert": None}
        if cert is not None:
            answer["cert"] = {
                "cn": x509.load_der_x509_certificate(cert.der).subject.rfc4514_string(),
                "verified": cert.verified,
                "error": cert.error,
                "chain": len(cert.chain_der),
            }
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def client_context(ca: TestCA | None, client: Leaf | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca.cert_pem)
    if client is not None:
        tls.load_cert_chain(ctx, client.cert_pem, client.key_pem)
    return ctx


async def exchange(
    port: int, ctx: ssl.SSLContext, server_name: str | None = "localhost"
) -> tuple[dict[str, Any] | None, x509.Certificate | None, str]:
    """Handshake and read the answer: (answer or None if rejected, server certificate, reason).

    A blocking client in a thread: it surfaces the server's TLS alert (``unknown ca``,
    ``certificate revoked``) that asyncio's transport reports only as end of stream.
    """
    return await asyncio.to_thread(_exchange, port, ctx, server_name)


def _exchange(
    port: int, ctx: ssl.SSLContext, server_name: str | None
) -> tuple[dict[str, Any] | None, x509.Certificate | None, str]:
    server_cert = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(
            raw, server_hostname=server_name
        ) as conn:
            server_cert = x509.load_der_x509_certificate(conn.getpeercert(True) or b"")
            line = conn.makefile("rb").readline()
    except (ssl.SSLError, OSError) as exc:
        return None, server_cert, repr(exc)
    if not line:
        return None, server_cert, "closed"
    return json.loads(line), server_cert, ""


def names_of(cert: x509.Certificate | None) -> list[str]:
    assert cert is not None
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def certificate(leaf: Leaf) -> config.Certificate:
    return config.Certificate(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem)


# --- SNI selection ---------------------------------------------------------------------------


async def test_sni_picks_exact_then_wildcard_then_default(test_ca: TestCA) -> None:
    default = test_ca.issue("default.test")
    wild = test_ca.issue("wild", sans=["*.apps.test"])
    exact = test_ca.issue("exact", sans=["one.apps.test"])
    settings = config.Settings(certificates=tuple(map(certificate, (default, wild, exact))))
    trust = client_context(test_ca)
    async with tls_server(settings) as port:
        _, cert, _ = await exchange(port, trust, "one.apps.test")
        assert names_of(cert) == ["one.apps.test"]
        _, cert, _ = await exchange(port, trust, "ONE.Apps.test")
        assert names_of(cert) == ["one.apps.test"]
        _, cert, _ = await exchange(port, trust, "two.apps.test")
        assert names_of(cert) == ["*.apps.test"]
        # A wildcard covers exactly one label: deeper names get the default certificate.
        _, cert, _ = await exchange(port, client_context(None), "a.b.apps.test")
        assert names_of(cert) == ["default.test"]
        _, cert, _ = await exchange(port, client_context(None), "elsewhere.test")
        assert names_of(cert) == ["default.test"]
        _, cert, _ = await exchange(port, client_context(None), None)
        assert names_of(cert) == ["default.test"]


def test_select_is_a_dictionary_lookup() -> None:
    a, b = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    exact, wildcard = {"x.example.com": a}, {"example.com": b}
    assert tls.select(exact, wildcard, "x.example.com.") is a
    assert tls.select(exact, wildcard, "y.example.com") is b
    assert tls.select(exact, wildcard, "example.com") is None
    assert tls.select(exact, wildcard, "com") is None
    assert tls.select(exact, wildcard, None) is None


async def test_alpn_http11_and_tls12_floor(test_ca: TestCA) -> None:
    leaf = test_ca.issue("localhost")
    settings = config.Settings(certificates=(certificate(leaf),))
    async with tls_server(settings) as port:
        ctx = client_context(test_ca)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        await reader.readline()
        writer.close()
        old = client_context(test_ca)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        answer, _, reason = await exchange(port, old)
        assert answer is None and reason
    assert tls.server_context(settings).minimum_version == ssl.TLSVersion.TLSv1_2


async def test_self_signed_fallback_covers_localhost_ip_and_route_hosts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = config.Route(from_url="https://app.test", host=config.Host("app.test"), to=())
    settings = config.Settings(routes=(route,))
    async with tls_server(settings) as port:
        answer, cert, _ = await exchange(port, client_context(None), "app.test")
    assert answer == {"cert": None}
    assert cert is not None
    assert cert.issuer == cert.subject
    assert set(names_of(cert)) >= {"localhost", "app.test"}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_bad_certificate_names_its_place(test_ca: TestCA) -> None:
    good = test_ca.issue("good.test")
    other = test_ca.issue("other.test")
    mismatched = config.Certificate(cert_pem=good.cert_pem, key_pem=other.key_pem)
    garbage = config.Certificate(cert_pem="not a pem", key_pem="nope")
    settings = config.Settings(certificates=(certificate(good), mismatched, garbage))
    with pytest.raises(errors.ConfigError) as caught:
        tls.server_context(settings)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "certificates[1]", "certificates[2]"
    ]


def test_bad_client_ca_and_crl_are_named(test_ca: TestCA) -> None:
    leaf = certificate(test_ca.issue("localhost"))
    for mtls, place in (
        (config.DownstreamMTLS(ca_pem="garbage"), "downstream_mtls.ca"),
        (config.DownstreamMTLS(ca_pem=None), "downstream_mtls.ca"),
        (config.DownstreamMTLS(ca_pem=test_ca.cert_pem, crl_pem="nope"), "downstream_mtls.crl"),
    ):
        with pytest.raises(errors.ConfigError, match=place):
            tls.server_context(config.Settings(certificates=(leaf,), downstream_mtls=mtls))


# --- downstream mTLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    ca, other = TestCA.create("Client CA"), TestCA.create("Other CA")
    alice, bob = ca.issue("alice", client=True), ca.issue("bob", client=True)
    return {
        "ca": ca,
        "server": ca.issue("localhost"),
        "alice": alice,
        "bob_revoked": bob,
        "mallory": other.issue("mallory", client=True),
        "crl": ca.crl_pem([bob]),
    }


def mtls_settings(pki: dict[str, Any], enforcement: str) -> config.Settings:
    mtls = config.DownstreamMTLS(
        ca_pem=pki["ca"].cert_pem, crl_pem=pki["crl"], enforcement=enforcement  # type: ignore[arg-type]
    )
    return config.Settings(certificates=(certificate(pki["server"]),), downstream_mtls=mtls)


@pytest.mark.parametrize("enforcement", ["policy_with_default_deny", "policy", "reject_connection"])
async def test_mtls_matrix(pki: dict[str, Any], enforcement: str) -> None:
    ca = pki["ca"]
    async with tls_server(mtls_settings(pki, enforcement), defer=True) as port:
        valid, _, _ = await exchange(port, client_context(ca, pki["alice"]))
        wrong_ca, _, wrong_reason = await exchange(port, client_context(ca, pki["mallory"]))
        revoked, _, revoked_reason = await exchange(port, client_context(ca, pki["bob_revoked"]))
        none, _, _ = await exchange(port, client_context(ca))
    # (OpenSSL clients send the CA after the leaf when they have it: chain holds it.)
    assert valid == {"cert": {"cn": "CN=alice", "verified": True, "error": None, "chain": 1}}
    if enforcement == "reject_connection":
        # Refused in the handshake; asyncio closes without flushing OpenSSL's alert.
        assert wrong_ca is None and wrong_reason
        assert revoked is None and revoked_reason
        assert none is None
        return
    assert tls_deferred.available(), "deferral self-check failed on this interpreter"
    # Policy modes: the request reaches the pipeline, which sees why the certificate is bad.
    assert wrong_ca is not None and revoked is not None
    assert wrong_ca["cert"]["cn"] == "CN=mallory" and wrong_ca["cert"]["verified"] is False
    assert wrong_ca["cert"]["error"].startswith("certificate is not signed by a trusted")
    assert revoked["cert"]["cn"] == "CN=bob" and revoked["cert"]["verified"] is False
    assert revoked["cert"]["error"] == "certificate is revoked (OpenSSL: certificate revoked)"
    assert none == {"cert": None}  # the pipeline decides (default deny / policy)


@pytest.mark.parametrize("unavailable", [False, True])
async def test_without_deferral_invalid_certificates_fail_the_handshake(
    pki: dict[str, Any], monkeypatch: pytest.MonkeyPatch, unavailable: bool
) -> None:
    """The default, and what deferral does where the ctypes self-check fails: closed."""
    if unavailable:
        monkeypatch.setattr(tls_deferred, "_openssl", lambda: None)
    ca = pki["ca"]
    async with tls_server(mtls_settings(pki, "policy_with_default_deny"), unavailable) as port:
        valid, _, _ = await exchange(port, client_context(ca, pki["alice"]))
        wrong_ca, _, wrong_reason = await exchange(port, client_context(ca, pki["mallory"]))
        revoked, _, revoked_reason = await exchange(port, client_context(ca, pki["bob_revoked"]))
        none, _, _ = await exchange(port, client_context(ca))
    assert valid is not None and valid["cert"]["verified"] is True
    assert wrong_ca is None and wrong_reason
    assert revoked is None and revoked_reason
    assert none == {"cert": None}


async def test_revocation_is_what_rejects_a_revoked_certificate(pki: dict[str, Any]) -> None:
    settings = mtls_settings(pki, "policy")
    assert settings.downstream_mtls is not None
    without_crl = config.Settings(
        certificates=settings.certificates,
        downstream_mtls=dataclasses.replace(settings.downstream_mtls, crl_pem=None),
    )
    async with tls_server(without_crl) as port:
        answer, _, reason = await exchange(port, client_context(pki["ca"], pki["bob_revoked"]))
    assert answer is not None, reason
    assert answer["cert"]["cn"] == "CN=bob" and answer["cert"]["verified"] is True
    async with tls_server(settings, defer=True) as port:
        answer, _, reason = await exchange(port, client_context(pki["ca"], pki["bob_revoked"]))
    assert answer is not None, reason
    assert answer["cert"]["verified"] is False


async def test_sni_selected_context_still_verifies_clients(pki: dict[str, Any]) -> None:
    ca = pki["ca"]
    second = ca.issue("second.test")
    settings = mtls_settings(pki, "policy")
    settings = config.Settings(
        certificates=(*settings.certificates, certificate(second)),
        downstream_mtls=settings.downstream_mtls,
    )
    async with tls_server(settings, defer=True) as port:
        good, cert, _ = await exchange(port, client_context(ca, pki["alice"]), "second.test")
        bad, _, _ = await exchange(port, client_context(ca, pki["mallory"]), "second.test")
    assert names_of(cert) == ["second.test"]
    assert good is not None and good["cert"]["verified"] is True
    assert bad is not None and bad["cert"]["verified"] is False


async def test_depth_limit_reports_unverified(pki: dict[str, Any]) -> None:
    """A chain through an intermediate exceeds the default max_verify_depth of 1."""
    root = TestCA.create("Root CA")
    intermediate = _intermediate(root)
    user = intermediate.issue("carol", client=True)
    bundle = user.cert_pem + intermediate.cert_pem
    for depth, verified in ((1, False), (2, True), (0, True)):
        mtls = config.DownstreamMTLS(ca_pem=root.cert_pem, max_verify_depth=depth)
        settings = config.Settings(
            certificates=(certificate(pki["server"]),), downstream_mtls=mtls
        )
        ctx = client_context(pki["ca"])
        tls.load_cert_chain(ctx, bundle, user.key_pem)
        async with tls_server(settings) as port:
            answer, _, reason = await exchange(port, ctx)
        assert answer is not None, reason
        assert answer["cert"]["verified"] is verified, (depth, answer)
        assert answer["cert"]["chain"] == 1
        if not verified:
            assert "max_verify_depth 1" in answer["cert"]["error"]


def _intermediate(root: TestCA) -> TestCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA")]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), False
        )
        .sign(root.key, hashes.SHA256())
    )
    return TestCA(cert, key)


def test_client_certificate_without_tls_or_without_mtls(pki: dict[str, Any]) -> None:
    assert tls.client_certificate(None, config.Settings()) is None


def test_verify_chain_with_cryptography(pki: dict[str, Any]) -> None:
    """The fallback verifier, used where the TLS library's verified chain is not available."""
    ca = pki["ca"]
    mtls = config.DownstreamMTLS(ca_pem=ca.cert_pem, crl_pem=pki["crl"])
    assert tls.verify_chain(pki["alice"].der, (), mtls) is None
    assert tls.verify_chain(pki["bob_revoked"].der, (), mtls) == "certificate is revoked"
    assert "not signed by a trusted" in (tls.verify_chain(pki["mallory"].der, (), mtls) or "")
    root = TestCA.create("Root CA")
    intermediate = _intermediate(root)
    carol = intermediate.issue("carol", client=True)
    inter_der = intermediate.cert.public_bytes(serialization.Encoding.DER)
    deep = config.DownstreamMTLS(ca_pem=root.cert_pem, max_verify_depth=1)
    assert "max_verify_depth 1" in (tls.verify_chain(carol.der, (inter_der,), deep) or "")
    unlimited = config.DownstreamMTLS(ca_pem=root.cert_pem, max_verify_depth=0)
    assert tls.verify_chain(carol.der, (inter_der,), unlimited) is None
    # An intermediate in the bundle is a trust anchor, as in Pomerium.
    anchored = config.DownstreamMTLS(ca_pem=intermediate.cert_pem)
    assert tls.verify_chain(carol.der, (), anchored) is None
    expired = ca.issue("old", client=True, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(3))
    assert "expired" in (tls.verify_chain(expired.der, (), mtls) or "")


async def test_self_signed_survives_reload_and_key_files_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings = config.Settings(address=":8443")
    seen = []
    for _ in range(2):  # a reload builds the context again from equal settings
        async with tls_server(settings) as port:
            _, cert, _ = await exchange(port, client_context(None))
        assert cert is not None
        seen.append(cert.fingerprint(hashes.SHA256()))
    assert seen[0] == seen[1]
    assert list(tmp_path.iterdir()) == []  # the PEM files were written, loaded and removed
