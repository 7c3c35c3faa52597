"""``vallum_certificate_expiration_timestamp_seconds`` and ``vallum_ready`` on a running server's
admin ``/metrics``: one series per certificate of the served table (server, upstream client, every
CA), the real ``notAfter``, and a certificate that leaves the table on reload leaves the scrape."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.test_server import running, write_config
from tests.support.certs import Leaf, TestCA
from tests.support.net import free_port
from vallum.proxy import certificate_expiry, metrics

EXPIRY = "vallum_certificate_expiration_timestamp_seconds"
Series = dict[tuple[str, str, str], float]


def expiries(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        if family.name == EXPIRY:
            for sample in family.samples:
                labels = sample.labels
                out[(labels["kind"], labels["name"], labels["serial"])] = sample.value
    return out


def gauge(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(family.samples[0].value)
    return None


def expected(kind: str, name: str, certs: Iterable[Leaf | TestCA]) -> Series:
    return {
        (kind, name, format(c.cert.serial_number, "x")): c.cert.not_valid_after_utc.timestamp()
        for c in certs
    }


def config(port: int, admin: int, files: dict[str, Path], *, second_client: bool) -> str:
    client = (
        f"    tls_client_cert_file: {files['client_cert']}\n"
        f"    tls_client_key_file: {files['client_key']}\n"
    )
    text = (
        f"address: 127.0.0.1:{port}\nmetrics_address: 127.0.0.1:{admin}\n"
        f"certificates:\n  - cert_file: {files['server_cert']}\n"
        f"    key_file: {files['server_key']}\n"
        f"certificate_authority_file: {files['upstream_ca']}\n"
        f"downstream_mtls:\n  ca_file: {files['client_ca']}\n"
        "routes:\n"
        "  - from: https://a.test\n    to: https://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
        f"{client}"
        f"    tls_custom_ca_file: {files['route_ca']}\n"
        "  - from: https://b.test\n    to: https://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
    )
    return text + client if second_client else text


async def scrape(session: aiohttp.ClientSession, admin: int) -> str:
    async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_every_certificate_of_the_table_once_and_removed_ones_dropped(
    tmp_path: Path,
) -> None:
    server_ca, upstream_ca, client_ca = (TestCA.create(n) for n in ("Srv CA", "Up CA", "Cl CA"))
    route_ca = TestCA.create("Route CA")
    server_leaf = server_ca.issue("a.test", sans=["a.test", "b.test"], days=30)
    client_leaf = upstream_ca.issue("vallum-client", client=True, days=9)
    files: dict[str, Path] = {}
    files["server_cert"], files["server_key"] = server_leaf.write(tmp_path, "server")
    files["client_cert"], files["client_key"] = client_leaf.write(tmp_path, "client")
    for stem in ("upstream_ca", "client_ca", "route_ca"):
        files[stem] = tmp_path / f"{stem}.pem"
    # A bundle of two CAs: each is a series.
    files["upstream_ca"].write_text(upstream_ca.cert_pem + server_ca.cert_pem)
    files["client_ca"].write_text(client_ca.cert_pem)
    files["route_ca"].write_text(route_ca.cert_pem)
    port, admin = free_port(), free_port()
    path = tmp_path / "vallum.yaml"
    write_config(path, config(port, admin, files, second_client=True))
    async with running(path) as srv, aiohttp.ClientSession() as session:
        text = await scrape(session, admin)
        want = (
            expected("server", "a.test", [server_leaf])
            # Two routes present the same client certificate: one series.
            | expected("upstream_client", "vallum-client", [client_leaf])
            | expected("ca", "Up CA", [upstream_ca]) | expected("ca", "Srv CA", [server_ca])
            | expected("ca", "Cl CA", [client_ca]) | expected("ca", "Route CA", [route_ca])
        )
        assert expiries(text) == want
        assert gauge(text, "vallum_ready") == 1.0
        # The kind of deadline an alert computes: 9 days left on the client certificate.
        left = want[next(k for k in want if k[0] == "upstream_client")] - time.time()
        assert 8.9 * 86400 < left < 9 * 86400

        # Rotation: a new server certificate, the route CA gone, one route without a client
        # certificate (the other still has it).
        renewed = server_ca.issue("a.test", sans=["a.test", "b.test"], days=60)
        files["server_cert"], files["server_key"] = renewed.write(tmp_path, "renewed")
        generation = srv.holder.generation
        write_config(
            path,
            config(port, admin, files, second_client=False).replace(
                f"    tls_custom_ca_file: {files['route_ca']}\n", ""
            ),
        )
        for _ in range(100):
            if srv.holder.generation > generation:
                break
            await asyncio.sleep(0.05)
        assert srv.holder.generation > generation, srv.holder.last_error
        after = expiries(await scrape(session, admin))
        assert after == (
            {k: v for k, v in want.items() if k[0] != "server" and k[1] != "Route CA"}
            | expected("server", "a.test", [renewed])
        )


def test_names_fall_back_to_the_first_san_and_bad_pem_is_skipped() -> None:
    from vallum.core import config as config_mod
    from vallum.core import routing

    # As cert-manager issues them: no subject, the names in the SAN only.
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
        .public_key(key.public_key()).serial_number(7)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("only-san.test")]), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    settings = config_mod.Settings(
        certificates=(config_mod.Certificate(pem, ""),),
        certificate_authority_pem="not a certificate",
    )
    collected = metrics.Metrics()
    collected.set_certificates(routing.build_table(settings))
    assert collected.certificates.series == (
        certificate_expiry.CertificateExpiry(
            "server", "only-san.test", "7", cert.not_valid_after_utc.timestamp()
        ),
    )


def test_leader_and_ready_are_exported_only_once_set() -> None:
    collected = metrics.Metrics()
    text = collected.render()[0].decode()
    assert "vallum_controller_leader" not in text and "vallum_ready" not in text
    collected.set_leader(True)
    collected.set_ready(False)
    text = collected.render()[0].decode()
    assert gauge(text, "vallum_controller_leader") == 1.0
    assert gauge(text, "vallum_ready") == 0.0
    collected.set_leader(False)
    assert gauge(collected.render()[0].decode(), "vallum_controller_leader") == 0.0
