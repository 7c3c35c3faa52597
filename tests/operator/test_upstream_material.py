"""A route's upstream TLS material that OpenSSL would refuse is a problem of its Ingress only:
its routes deny with the reason, every other Ingress is served (the proxy used to refuse the
whole table)."""

from __future__ import annotations

from tests.operator import objects as k8s
from tests.support.certs import TestCA
from vallum.core import config
from vallum.operator import translate, upstream_material

PUBLIC = {"ingress.pomerium.io/allow_public_unauthenticated_access": "true"}


def route(**tls: str) -> config.Route:
    upstream = config.parse_upstream("https://10.0.0.1:8443")
    return config.Route(from_url="https://a.example.com", host=config.Host("a.example.com"),
                        to=(upstream,), **tls)  # type: ignore[arg-type]


def test_a_matching_client_certificate_and_a_ca_are_fine(test_ca: TestCA) -> None:
    leaf = test_ca.issue("client", client=True)
    good = route(tls_client_cert_pem=leaf.cert_pem, tls_client_key_pem=leaf.key_pem,
                 tls_custom_ca_pem=test_ca.cert_pem)
    assert upstream_material.problems(good) == []
    assert upstream_material.problems(route()) == []


def test_a_key_of_another_certificate_is_named_without_the_material(test_ca: TestCA) -> None:
    one, other = test_ca.issue("one", client=True), test_ca.issue("other", client=True)
    bad = route(tls_client_cert_pem=one.cert_pem, tls_client_key_pem=other.key_pem)
    (problem,) = upstream_material.problems(bad)
    assert problem == "tls_client_cert/tls_client_key: the private key does not match the " \
        "certificate"
    half = route(tls_client_cert_pem=one.cert_pem)
    assert upstream_material.problems(half) == [
        "tls_client_cert and tls_client_key must be given together"
    ]


def test_a_ca_openssl_refuses() -> None:
    block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    (problem,) = upstream_material.problems(route(tls_custom_ca_pem=block))
    assert problem.startswith("tls_custom_ca: cannot load CA: ")


def test_only_the_ingress_with_the_bad_secret_breaks(test_ca: TestCA) -> None:
    one, other = test_ca.issue("one", client=True), test_ca.issue("other", client=True)
    secret = k8s.secret("mtls", {"tls.crt": one.cert_pem, "tls.key": other.key_pem})
    notes = {**PUBLIC, "ingress.vallum.dev/tls_client_secret": "mtls"}
    snapshot = k8s.snapshot(
        k8s.service(), k8s.endpoint_slice(), secret,
        k8s.ingress(annotations=notes),
        k8s.ingress("fine", host="fine.example.com", annotations=PUBLIC),
    )
    result = translate.translate(snapshot)
    assert result.ingresses[("default", "app")].problems == (
        "spec.rules[0].http.paths[0]: tls_client_cert/tls_client_key: the private key does not "
        "match the certificate (Secret default/mtls)",
    )
    assert result.ingresses[("default", "fine")].problems == ()
    assert result.table is not None
    denying = [r for r in result.table.settings.routes if r.unavailable]
    assert [r.host for r in denying] == ["app.example.com"]
    assert all(not r.tls_client_key_pem for r in result.table.settings.routes)


def test_pem_problem_names_what_the_option_needs(test_ca: TestCA) -> None:
    leaf = test_ca.issue("client", client=True)
    assert upstream_material.pem_problem("tls_client_cert", leaf.cert_pem) is None
    assert upstream_material.pem_problem("tls_client_key", leaf.key_pem) is None
    swapped = upstream_material.pem_problem("tls_client_key", leaf.cert_pem)
    assert swapped is not None and swapped.startswith("not a valid PEM private key: ")
    assert upstream_material.pem_problem("tls_custom_ca", "garbage") == (
        "expected PEM or base64-encoded PEM (certificate)"
    )


def test_a_secret_that_is_not_pem_is_named_by_its_secret_and_key(test_ca: TestCA) -> None:
    leaf = test_ca.issue("client", client=True)
    secrets = (
        k8s.secret("mtls", {"tls.crt": "not a certificate", "tls.key": leaf.key_pem}),
        k8s.secret("ca", {"ca.crt": "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                    "-----END CERTIFICATE-----\n"}),
    )
    notes = {**PUBLIC, "ingress.pomerium.io/tls_client_secret": "mtls",
             "ingress.pomerium.io/tls_custom_ca_secret": "ca"}
    snapshot = k8s.snapshot(
        k8s.service(), k8s.endpoint_slice(), *secrets,
        k8s.ingress(annotations=notes),
        k8s.ingress("fine", host="fine.example.com", annotations=PUBLIC),
    )
    result = translate.translate(snapshot)
    client, ca = result.ingresses[("default", "app")].problems
    assert client == (
        "ingress.pomerium.io/tls_client_secret: Secret default/mtls key tls.crt: expected PEM or "
        "base64-encoded PEM (certificate)"
    )
    assert ca.startswith("ingress.pomerium.io/tls_custom_ca_secret: Secret default/ca key ca.crt: "
                         "not a valid PEM certificate: ")
    assert result.ingresses[("default", "fine")].problems == ()
    assert result.table is not None
    assert [r.host for r in result.table.settings.routes if r.unavailable] == ["app.example.com"]
