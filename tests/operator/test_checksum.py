"""The table checksum from per-host route digests: equal inputs, equal checksums; any change of
a route, a certificate, their order or a setting changes it."""

from __future__ import annotations

import dataclasses

from tests.support.certs import TestCA
from vallum.core import config
from vallum.operator import checksum


def route(host: str, **options: object) -> config.Route:
    upstream = config.parse_upstream("http://10.0.0.1:8080")
    return config.Route(
        from_url=f"https://{host}",
        host=config.Host(host),
        to=(upstream,),
        **options,  # type: ignore[arg-type]
    )


def test_encode_is_the_settings_checksum_encoding() -> None:
    settings = config.Settings(routes=(route("a.example.com", prefix="/é"),))
    text = checksum.encode(settings)
    assert checksum.digest(text)[:16] == settings.checksum()


def test_the_checksum_follows_every_part(test_ca: TestCA) -> None:
    routes = (
        route("a.example.com", prefix="/api", policy=[{"allow": {"or": [{"email": {"is": "é"}}]}}]),
        route("b.example.com", unavailable="no ready endpoints for Service default/b port 80"),
    )
    settings = config.Settings(address="127.0.0.1:8443", routes=routes)
    leaf = test_ca.issue("a.example.com")
    certs = [checksum.digest(t) for t in checksum.texts([config.Certificate(leaf.cert_pem,
                                                                             leaf.key_pem)])]
    hosts = [checksum.digest(t) for t in checksum.texts(routes)]
    first = checksum.table_checksum(settings, hosts, certs)
    assert len(first) == 16
    assert checksum.table_checksum(dataclasses.replace(settings, routes=()), hosts, certs) == first
    others = {
        checksum.table_checksum(settings, hosts[:1], certs),
        checksum.table_checksum(settings, hosts[::-1], certs),
        checksum.table_checksum(settings, hosts, ()),
        checksum.table_checksum(settings, [*hosts, *certs], ()),  # not the same as a certificate
        checksum.table_checksum(dataclasses.replace(settings, cookie_name="x"), hosts, certs),
    }
    assert first not in others and len(others) == 5
