"""The table checksum spliced from routes encoded once equals ``Settings.checksum()``."""

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


def test_spliced_checksum_is_the_settings_checksum(test_ca: TestCA) -> None:
    routes = (
        route("a.example.com", prefix="/api", policy=[{"allow": {"or": [{"email": {"is": "é"}}]}}]),
        route("b.example.com", path="/x", set_request_headers=(("X-A", '"quoted"\\'),)),
        route("c.example.com", unavailable="no ready endpoints for Service default/c port 80"),
        route("*", regex="/v[0-9]+", name="\x00routes\x00", allowed_users=("a@b.org",)),
    )
    settings = config.Settings(
        address="127.0.0.1:8443", cookie_name="routes", jwt_claims_headers=(("X-Email", "email"),)
    )
    full = dataclasses.replace(settings, routes=routes)
    assert checksum.table_checksum(settings, {"routes": checksum.texts(routes)}) == full.checksum()
    assert checksum.table_checksum(full, {"routes": checksum.texts(routes)}) == full.checksum()
    assert checksum.table_checksum(settings, {"routes": ()}) == settings.checksum()
    leaf = test_ca.issue("a.example.com")
    certs = (
        config.Certificate(test_ca.cert_pem, test_ca.cert_pem),
        config.Certificate(leaf.cert_pem, leaf.key_pem),
    )
    with_certs = dataclasses.replace(full, certificates=certs)
    lists = {"routes": checksum.texts(routes), "certificates": checksum.texts(certs)}
    assert checksum.table_checksum(settings, lists) == with_certs.checksum()
    assert checksum.table_checksum(with_certs, {"routes": lists["routes"]}) == with_certs.checksum()
    fewer = checksum.table_checksum(settings, {"routes": checksum.texts(routes[:3])})
    assert fewer != full.checksum()
