"""Downstream TLS: the server context, SNI certificate selection and client certificates.

Built once per :class:`~vallum.core.config.Settings` (at start and on reload), never per request:
one :class:`ssl.SSLContext` per configured certificate, all configured identically (protocol
floor, ALPN, client-certificate verification), and an SNI callback that picks one by the name the
client asked for — exact SAN DNS name first, then a wildcard SAN (``*.example.com`` covers exactly
one label), then the first certificate as the default. With no certificate configured a
self-signed one is generated for ``localhost``, ``127.0.0.1`` and every route host (a warning is
logged: browsers will not trust it).

Downstream mTLS follows Pomerium's ``downstream_mtls`` settings. What Python's ``ssl`` module
offers (checked on CPython 3.11, OpenSSL 3.0):

* There is no verify callback. The server can ask for a certificate (``CERT_OPTIONAL``) or insist
  on one (``CERT_REQUIRED``), but in both modes OpenSSL *aborts the handshake* when a presented
  certificate fails verification (unknown CA, expired, revoked); asyncio then closes the
  connection without even flushing the alert. Only "no certificate at all" survives
  ``CERT_OPTIONAL``.
* ``SSLObject.getpeercert(binary_form=True)`` gives the leaf; the chain is available from the
  private ``_sslobj.get_verified_chain()`` / ``get_unverified_chain()`` (present since 3.10, made
  public as ``SSLObject.get_*_chain()`` in 3.13).
* ``SSL_CTX_set_verify_depth`` and the advertised client-CA list are not exposed: clients may
  offer any certificate, and ``max_verify_depth`` is checked after the handshake (a chain that is
  too deep is reported as unverified, so the default-deny rule refuses it).

The best real option for Pomerium's behaviour (an invalid certificate reaches policy, which
denies it with a reason) is :mod:`vallum.proxy.tls_deferred`: OpenSSL keeps verifying, a
``ctypes`` verify callback lets the handshake finish, and the verdict is read back per connection
— guarded by layout self-checks, off (fail closed) when they do not hold. It is opt-in
(``server_context(..., defer_client_verification=True)``) because it is only safe where the
pipeline enforces the ``invalid_client_certificate`` rule: the identity gate does, and
:func:`vallum.proxy.server.server_context` turns deferral on for the policy modes. With it:

=============================  ================  ==============================================
``enforcement``                ``verify_mode``   no certificate / invalid certificate
=============================  ================  ==============================================
``policy_with_default_deny``   ``CERT_OPTIONAL`` reaches the pipeline (default deny) / reaches it
                                                 with ``verified=False`` and OpenSSL's reason
``policy``                     ``CERT_OPTIONAL`` reaches policy / reaches it, ``verified=False``
``reject_connection``          ``CERT_REQUIRED`` handshake rejected / handshake rejected
=============================  ================  ==============================================

Without deferral (the default, or another interpreter), an invalid certificate is rejected at
the handshake in every mode. Trust anchors may be intermediates, as in Pomerium
(``VERIFY_X509_PARTIAL_CHAIN``); a CRL enables ``VERIFY_CRL_CHECK_LEAF``.
"""

from __future__ import annotations

import _ssl
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vallum.core import config, errors, request
from vallum.proxy import tls_deferred

log = logging.getLogger("vallum.proxy.tls")

ALPN = ("http/1.1",)
_self_signed_cache: dict[tuple[str, ...], config.Certificate] = {}
_ENCODING_DER: int = getattr(_ssl, "ENCODING_DER", 1)


def server_context(
    settings: config.Settings, *, defer_client_verification: bool = False
) -> ssl.SSLContext:
    """The listener's TLS context for ``settings``, with SNI selection wired in.

    ``defer_client_verification`` lets connections with an invalid client certificate through
    in the policy enforcement modes (see :mod:`vallum.proxy.tls_deferred`). Pass it only when
    the request pipeline evaluates the route policies with ``ClientCertificate.verified`` (the
    ``invalid_client_certificate`` default deny); otherwise those handshakes are refused.

    Raises :class:`ConfigError` naming ``certificates[i]`` or ``downstream_mtls`` when a
    certificate, key, CA bundle or CRL cannot be loaded.
    """
    problems: list[str] = []
    certificates = list(settings.certificates)
    if not certificates:
        names = tuple(_fallback_names(settings))
        if names not in _self_signed_cache:  # one per process and set of names, not per reload
            _self_signed_cache.clear()
            _self_signed_cache[names] = self_signed(names)
        certificates = [_self_signed_cache[names]]
        log.warning(
            "no certificates configured: serving a generated self-signed certificate",
            extra={"event": "self_signed_certificate", "names": list(names)},
        )
    contexts: list[ssl.SSLContext] = []
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for position, certificate in enumerate(certificates):
        place = f"certificates[{position}]"
        # A bad client CA or CRL raises here, once, for all certificates.
        ctx = _base_context(settings, defer_client_verification)
        try:
            load_cert_chain(ctx, certificate.cert_pem, certificate.key_pem)
            san_names = dns_names(certificate.cert_pem)
        except (ssl.SSLError, ValueError) as exc:
            problems.append(f"{place}: cannot load certificate and key: {describe_error(exc)}")
            continue
        contexts.append(ctx)
        for name in san_names:
            table = wildcard if name.startswith("*.") else exact
            table.setdefault(name[2:] if name.startswith("*.") else name, ctx)
    if problems:
        raise errors.ConfigError(problems)
    default = contexts[0]
    # Always set: besides choosing the certificate it records the SNI for the exchange's
    # SNI-versus-Host check (:func:`sni_of`).
    default.sni_callback = _sni_selector(exact, wildcard) if len(contexts) > 1 else _record_sni
    return default


def select(exact: dict[str, ssl.SSLContext], wildcard: dict[str, ssl.SSLContext],
           server_name: str | None) -> ssl.SSLContext | None:
    """The context for ``server_name``: exact name, then one-label wildcard, else ``None``."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    found = exact.get(name)
    if found is not None:
        return found
    _, dot, parent = name.partition(".")
    return wildcard.get(parent) if dot else None


_SNI_ATTRIBUTE = "_vallum_sni"


def _record_sni(
    ssl_object: ssl.SSLObject, server_name: str | None, _default: ssl.SSLContext
) -> int | None:
    if server_name:
        setattr(ssl_object, _SNI_ATTRIBUTE, server_name.lower().rstrip("."))
    return None


def sni_of(ssl_object: object) -> str | None:
    """The server name the client asked for in its TLS handshake (lower case, no trailing
    dot), or ``None`` when it sent none (the server side of ``ssl`` does not keep it)."""
    name = getattr(ssl_object, _SNI_ATTRIBUTE, None)
    return name if isinstance(name, str) else None


def _sni_selector(
    exact: dict[str, ssl.SSLContext], wildcard: dict[str, ssl.SSLContext]
) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    def on_sni(
        ssl_object: ssl.SSLObject, server_name: str | None, _default: ssl.SSLContext
    ) -> int | None:
        _record_sni(ssl_object, server_name, _default)
        chosen = select(exact, wildcard, server_name)
        if chosen is not None:
            ssl_object.context = chosen
        return None

    return on_sni


def _base_context(settings: config.Settings, defer: bool) -> ssl.SSLContext:
    """A server context with everything but the certificate: identical for every SNI choice.

    OpenSSL keeps the verify mode of the first context and uses the store of the selected one,
    so every per-certificate context must verify client certificates the same way.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(ALPN))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    mtls = settings.downstream_mtls
    if mtls is None:
        return ctx
    if not mtls.ca_pem:
        raise errors.ConfigError(["downstream_mtls.ca: required for downstream mTLS"])
    try:
        ctx.load_verify_locations(cadata=mtls.ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise errors.ConfigError(
            [f"downstream_mtls.ca: cannot load CA bundle: {describe_error(exc)}"]
        ) from None
    flags = ctx.verify_flags | ssl.VERIFY_X509_PARTIAL_CHAIN
    if mtls.crl_pem:
        try:
            _load_crl(ctx, mtls.crl_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise errors.ConfigError(
                [f"downstream_mtls.crl: cannot load CRL: {describe_error(exc)}"]
            ) from None
        flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_flags = flags
    if mtls.enforcement == "reject_connection":
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        if defer:
            # Let requests with invalid certificates reach policy, as Pomerium does.
            tls_deferred.defer_verification(ctx)
    return ctx


def _load_crl(ctx: ssl.SSLContext, crl_pem: str) -> None:
    # ``cadata`` only takes certificates; OpenSSL's file loader takes CRLs too.
    pem_crls(crl_pem)  # a clear error for a PEM that holds no (or a broken) CRL
    with _private_dir() as folder:
        path = os.path.join(folder, "crl.pem")
        _write_private(path, crl_pem)
        ctx.load_verify_locations(cafile=path)


def load_cert_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a PEM certificate chain and key into ``ctx``.

    ``ssl`` only reads them from files, so they go to a private (0700) temporary directory that
    is removed as soon as OpenSSL has read them. Key material is never logged.
    """
    with _private_dir() as folder:
        cert_path = os.path.join(folder, "cert.pem")
        key_path = os.path.join(folder, "key.pem")
        _write_private(cert_path, cert_pem)
        _write_private(key_path, key_pem)
        ctx.load_cert_chain(cert_path, key_path)


@contextlib.contextmanager
def _private_dir() -> Iterator[str]:
    """A 0700 temporary directory whose files are overwritten with zeros before removal."""
    path = tempfile.mkdtemp(prefix="vallum-tls-")
    try:
        yield path
    finally:
        for name in os.listdir(path):
            try:
                file = os.path.join(path, name)
                with open(file, "r+b") as handle:
                    handle.write(b"\0" * os.path.getsize(file))
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def dns_names(cert_pem: str) -> list[str]:
    """The lower-case SAN DNS names of the first certificate in ``cert_pem`` (CN if none)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n).lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [
            str(a.value).lower().rstrip(".")
            for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return names


def _fallback_names(settings: config.Settings) -> list[str]:
    names = ["localhost", "127.0.0.1"]
    for route in settings.routes:
        if route.host and route.host not in names:
            names.append(route.host)
    return names


def self_signed(names: Sequence[str], days: int = 365) -> config.Certificate:
    """A freshly generated self-signed certificate (EC P-256) for ``names``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vallum self-signed")])
    now = dt.datetime.now(dt.UTC)
    san: list[x509.GeneralName] = []
    for name in names:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            san.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return config.Certificate(cert_pem=cert_pem, key_pem=key_pem)


# --- client certificates -------------------------------------------------------------------


def client_certificate(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, settings: config.Settings
) -> request.ClientCertificate | None:
    """The client certificate on this connection, as the pipeline's policy needs it.

    ``None`` when the connection is not TLS or no certificate was presented. ``verified`` is true
    only when the certificate chains to ``downstream_mtls.ca`` within ``max_verify_depth`` (and,
    with a CRL, is not revoked); ``error`` says why not. The answer cannot change during a
    connection, so call it once per connection, not per request.
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    # The presented chain starts with the leaf on the server side (CPython prepends it).
    intermediates = tuple(c for c in _chain(ssl_object, "get_unverified_chain") or () if c != der)
    mtls = settings.downstream_mtls
    if mtls is None or not mtls.ca_pem:
        return request.ClientCertificate(
            der=der, verified=False, chain_der=intermediates,
            error="downstream mTLS is not configured",
        )
    verdict = tls_deferred.verify_result(ssl_object)
    if verdict is None and tls_deferred.is_deferred(ssl_object.context):
        error: str | None = "cannot read the TLS library's verification result"
    elif verdict is not None and verdict[0] != 0:
        # OpenSSL decides; it reports the *last* problem it met (often a missing CRL for an
        # unknown issuer), so our own verifier names the first one where it can.
        reason = verify_chain(der, intermediates, mtls) or "invalid certificate"
        error = f"{reason} (OpenSSL: {verdict[1]})"
    elif verified_chain := _chain(ssl_object, "get_verified_chain"):
        # OpenSSL verified it during the handshake (chain, dates, CRL); only depth is left.
        error = _depth_error(len(verified_chain) - 1, mtls.max_verify_depth)
    else:
        error = verify_chain(der, intermediates, mtls)
    return request.ClientCertificate(
        der=der, verified=error is None, chain_der=intermediates, error=error
    )


def _chain(ssl_object: Any, method: str) -> list[bytes] | None:
    getter = getattr(ssl_object, method, None)  # public on 3.13+
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), method, None)  # 3.10-3.12
    if getter is None:
        return None
    chain = getter()
    if not chain:
        return None
    return [c if isinstance(c, bytes) else bytes(c.public_bytes(_ENCODING_DER)) for c in chain]


def _depth_error(depth: int, max_depth: int) -> str | None:
    if max_depth > 0 and depth > max_depth:
        return f"certificate chain depth {depth} exceeds max_verify_depth {max_depth}"
    return None


def verify_chain(
    leaf_der: bytes, intermediates: Iterable[bytes], mtls: config.DownstreamMTLS
) -> str | None:
    """Verify a client certificate with ``cryptography``; ``None`` if good, else the reason.

    Used where the TLS library's own verification result is not available. Builds the path
    leaf -> presented intermediates -> a CA in ``mtls.ca_pem`` (any CA in the bundle is an
    anchor), checks signatures, that issuers are CAs, the leaf's extended key usage, validity
    dates, the depth limit and, with a CRL, the leaf's revocation.
    """
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        pool = [x509.load_der_x509_certificate(d) for d in intermediates]
        anchors = x509.load_pem_x509_certificates((mtls.ca_pem or "").encode())
    except ValueError as exc:
        return f"unreadable certificate: {exc}"
    if not _client_usage(leaf):
        return "certificate is not meant for client authentication (extended key usage)"
    now = dt.datetime.now(dt.UTC)
    current, depth = leaf, 0
    while True:
        if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
            return f"certificate {current.subject.rfc4514_string()} is expired or not yet valid"
        anchor = _issued_by(current, anchors)
        if anchor is not None:
            depth += 1
            break
        parent = _issued_by(current, pool)
        if parent is None or depth > len(pool):
            return "certificate is not signed by a trusted certificate authority"
        current, depth = parent, depth + 1
    depth_error = _depth_error(depth, mtls.max_verify_depth)
    if depth_error:
        return depth_error
    if mtls.crl_pem:
        for crl in pem_crls(mtls.crl_pem):
            if crl.issuer == leaf.issuer and crl.get_revoked_certificate_by_serial_number(
                leaf.serial_number
            ) is not None:
                return "certificate is revoked"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.version == x509.Version.v1  # old self-signed roots carry no extensions


def _client_usage(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    wanted = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    return any(oid in usages for oid in wanted)


_CRL_BEGIN = "-----BEGIN X509 CRL-----"


def pem_crls(pem: str) -> list[x509.CertificateRevocationList]:
    """Every CRL in a PEM bundle; ``ValueError`` if there is none or one is unreadable."""
    blocks = [_CRL_BEGIN + part for part in pem.split(_CRL_BEGIN)[1:]]
    if not blocks:
        raise ValueError("no X509 CRL found in PEM data")
    return [x509.load_pem_x509_crl(block.encode()) for block in blocks]


def _issued_by(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> (
    x509.Certificate | None
):
    for candidate in candidates:
        if candidate.subject != cert.issuer or not _is_ca(candidate):
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def describe_error(exc: BaseException) -> str:
    """A short reason for a TLS or PEM loading error (OpenSSL's reason code, readable)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__
