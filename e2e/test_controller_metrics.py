"""``vallum controller``'s own metrics on its admin ``/metrics``: the Lease it holds
(``vallum_controller_leader``), readiness, and the expiry of an Ingress's certificate, which
leaves the scrape with the Ingress."""

from __future__ import annotations

import base64

from prometheus_client.parser import text_string_to_metric_families
from tests.support import certs

from e2e import conftest, test_controller

EXPIRY = "vallum_certificate_expiration_timestamp_seconds"


def samples(controller: conftest.Controller) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                      float]:
    status, body = controller.admin("/metrics")
    assert status == 200, body
    out = {}
    for family in text_string_to_metric_families(body["text"]):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_leader_ready_and_certificate_expiry(
    cluster: conftest.Cluster, namespace: str, ingress_class: str, upstream: conftest.Upstream,
    controller: conftest.Controller,
) -> None:
    # The only replica takes the Lease.
    conftest.wait_until(
        lambda: samples(controller).get(("vallum_controller_leader", ())) == 1.0,
        timeout=30, what="vallum_controller_leader 1",
    )
    assert samples(controller)[("vallum_ready", ())] == 1.0

    ca = certs.TestCA.create("Metrics e2e CA")
    leaf = ca.issue("metrics.e2e.test", days=20)
    serial = format(leaf.cert.serial_number, "x")
    key = ("vallum_certificate_expiration_timestamp_seconds",
           (("kind", "server"), ("name", "metrics.e2e.test"), ("serial", serial)))
    test_controller.backend(cluster, namespace, upstream)
    cluster.apply(f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: metrics-tls}}
        type: kubernetes.io/tls
        data:
          tls.crt: {b64(leaf.cert_pem)}
          tls.key: {b64(leaf.key_pem)}
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: web
          annotations: {{ingress.vallum.dev/allow_public_unauthenticated_access: "true"}}
        spec:
          ingressClassName: {ingress_class}
          tls: [{{hosts: [metrics.e2e.test], secretName: metrics-tls}}]
          rules:
          - host: metrics.e2e.test
            http:
              paths:
              - path: /
                pathType: Prefix
                backend: {{service: {{name: app, port: {{number: 80}}}}}}
    """, namespace)
    found = conftest.wait_until(lambda: samples(controller).get(key), timeout=15,
                                what=f"{EXPIRY} of the Ingress's certificate")
    assert found == leaf.cert.not_valid_after_utc.timestamp()

    cluster.delete("ingress", "web", namespace)
    conftest.wait_until(lambda: key not in samples(controller), timeout=15,
                        what="the certificate's series gone with its Ingress")
