"""Which certificates a route table holds and when each expires, for
``vallum_certificate_expiration_timestamp_seconds`` (:mod:`vallum.proxy.metrics`).

A table names certificates in several places: the ones Vallum presents (``certificates``), the
client certificates routes present upstream (``tls_client_cert``) and the CA bundles it trusts
(``certificate_authority``, ``downstream_mtls.ca``, a route's ``tls_custom_ca``). Each distinct
certificate is one series, however many routes share it, so the label space is the table's
certificates and nothing else. Parsing is done once per table and once per PEM: a table of
thousands of routes sharing a few Secrets parses a few certificates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from vallum.core import config


@dataclass(frozen=True, slots=True)
class CertificateExpiry:
    """One series of ``vallum_certificate_expiration_timestamp_seconds``."""

    kind: str
    name: str
    serial: str
    not_after: float


def _certificate_names(cert: x509.Certificate) -> str:
    """The subject's common name, else its first SAN (DNS, IP, URI), else ``""``."""
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common and isinstance(common[0].value, str) and common[0].value:
        return common[0].value
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for kind in (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier):
        found = sans.get_values_for_type(kind)
        if found:
            return str(found[0])
    return ""


def _pem_sources(settings: config.Settings) -> Iterator[tuple[str, str, bool]]:
    """``(kind, pem, whole bundle)`` for every certificate PEM ``settings`` names."""
    for certificate in settings.certificates:
        yield "server", certificate.cert_pem, False
    if settings.certificate_authority_pem:
        yield "ca", settings.certificate_authority_pem, True
    if settings.downstream_mtls is not None and settings.downstream_mtls.ca_pem:
        yield "ca", settings.downstream_mtls.ca_pem, True
    for route in settings.routes:
        if route.tls_client_cert_pem:
            yield "upstream_client", route.tls_client_cert_pem, False
        if route.tls_custom_ca_pem:
            yield "ca", route.tls_custom_ca_pem, True


def _parse(pem: str, bundle: bool) -> tuple[tuple[str, str, float], ...]:
    """``(name, serial, notAfter)`` of the leaf, or of every certificate of a bundle; nothing
    for a PEM that does not parse (a table that is served has loaded it already)."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return ()
    return tuple(
        (_certificate_names(c), format(c.serial_number, "x"), c.not_valid_after_utc.timestamp())
        for c in (certs if bundle else certs[:1])
    )


class CertificateExpiries:
    """The certificates of the table being served, parsed once per table (and once per PEM,
    whatever number of routes share it)."""

    def __init__(self) -> None:
        self.series: tuple[CertificateExpiry, ...] = ()
        self._checksum: str | None = None
        self._parsed: dict[tuple[str, bool], tuple[tuple[str, str, float], ...]] = {}

    def update(self, table: config.RouteTable) -> None:
        if table.checksum == self._checksum:
            return
        parsed: dict[tuple[str, bool], tuple[tuple[str, str, float], ...]] = {}
        found: dict[tuple[str, str, str], CertificateExpiry] = {}
        for kind, pem, bundle in _pem_sources(table.settings):
            key = (pem, bundle)
            entries = parsed.get(key)
            if entries is None:
                entries = self._parsed.get(key)
                if entries is None:
                    entries = _parse(pem, bundle)
                parsed[key] = entries
            for name, serial, not_after in entries:
                found.setdefault((kind, name, serial),
                                 CertificateExpiry(kind, name, serial, not_after))
        self._parsed = parsed  # certificates that left the table are forgotten
        self.series = tuple(found[k] for k in sorted(found))
        self._checksum = table.checksum
