"""``vallum controller`` against a real API server: Ingresses go live, change and go away.

Each test writes its objects with ``kubectl apply`` into a namespace of its own and watches the
proxy answer for its host. The backend is a selector-less Service with a hand-written
EndpointSlice naming the test upstream on 10.200.0.1 (conftest), or an ExternalName Service
naming ``localhost``.
"""

from __future__ import annotations

import json
from typing import Any

from e2e import conftest

PUBLIC = {"ingress.pomerium.io/allow_public_unauthenticated_access": "true"}


def backend(cluster: conftest.Cluster, namespace: str, upstream: conftest.Upstream,
            name: str = "app") -> None:
    """A selector-less Service ``name`` (port 80 -> the upstream's port) and its EndpointSlice."""
    cluster.apply(f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}}}
        spec:
          ports: [{{name: http, port: 80, targetPort: {upstream.port}}}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}-1
          labels: {{kubernetes.io/service-name: {name}}}
        addressType: IPv4
        ports: [{{name: http, port: {upstream.port}, protocol: TCP}}]
        endpoints:
        - addresses: ["{upstream.ip}"]
          conditions: {{ready: true}}
    """, namespace)


def ingress(cluster: conftest.Cluster, namespace: str, ingress_class: str, host: str,
            service: str = "app", port: int = 80, name: str = "web",
            annotations: dict[str, str] | None = None) -> None:
    """An Ingress ``name`` for ``host`` -> ``service``:``port`` (public unless ``annotations``
    says otherwise; the annotations are written as a JSON flow mapping, which YAML reads)."""
    notes = json.dumps(PUBLIC if annotations is None else annotations)
    cluster.apply(f"""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: {name}
          annotations: {notes}
        spec:
          ingressClassName: {ingress_class}
          rules:
          - host: {host}
            http:
              paths:
              - path: /
                pathType: Prefix
                backend:
                  service: {{name: {service}, port: {{number: {port}}}}}
    """, namespace)


def reached(status: int, body: dict[str, Any]) -> bool:
    return status == 200 and "upstream" in body


def test_ready_and_healthy(controller: conftest.Controller) -> None:
    status, body = controller.admin("/readyz")
    assert status == 200, body
    assert body["ready"] is True
    assert body["generation"] >= 1
    status, body = controller.admin("/healthz")
    assert (status, body) == (200, {"status": "ok"})


def test_selectorless_backend_goes_live(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    host = f"app.{namespace}.e2e.test"
    assert controller.request(host)[0] == 404  # nothing routes this host yet
    backend(cluster, namespace, upstream)
    ingress(cluster, namespace, ingress_class, host)
    _, body = controller.wait_for(host, reached, path="/hello?x=1")
    assert body["upstream"] == upstream.ip
    assert body["path"] == "/hello?x=1"


def test_edit_moves_the_route(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    first, second = f"one.{namespace}.e2e.test", f"two.{namespace}.e2e.test"
    backend(cluster, namespace, upstream)
    ingress(cluster, namespace, ingress_class, first)
    controller.wait_for(first, reached)
    ingress(cluster, namespace, ingress_class, second)  # the same Ingress, another host
    controller.wait_for(second, reached)
    controller.wait_for(first, lambda status, _body: status == 404)


def test_deleted_ingress_loses_its_route(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    host = f"gone.{namespace}.e2e.test"
    backend(cluster, namespace, upstream)
    ingress(cluster, namespace, ingress_class, host)
    controller.wait_for(host, reached)
    cluster.delete("ingress", "web", namespace)
    controller.wait_for(host, lambda status, _body: status == 404)


def test_other_class_is_left_alone(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    ours, theirs = f"ours.{namespace}.e2e.test", f"theirs.{namespace}.e2e.test"
    backend(cluster, namespace, upstream)
    ingress(cluster, namespace, "someone-else", theirs, name="theirs")
    ingress(cluster, namespace, ingress_class, ours, name="ours")
    controller.wait_for(ours, reached)  # applied after theirs: theirs was seen by now
    assert controller.request(theirs)[0] == 404


def test_externalname_service_naming_localhost(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    host = f"ext.{namespace}.e2e.test"
    cluster.apply(f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: outside}}
        spec:
          type: ExternalName
          externalName: localhost
          ports: [{{name: http, port: {upstream.local_port}}}]
    """, namespace)
    ingress(cluster, namespace, ingress_class, host, service="outside",
            port=upstream.local_port)
    _, body = controller.wait_for(host, reached)
    assert body["upstream"] == "127.0.0.1"


def test_unknown_service_denies_with_the_reason(
    cluster: conftest.Cluster, controller: conftest.Controller, namespace: str,
    ingress_class: str,
) -> None:
    host = f"broken.{namespace}.e2e.test"
    ingress(cluster, namespace, ingress_class, host, service="missing")
    status, body = controller.wait_for(host, lambda status, _body: status != 404)
    assert status == 503, body
    assert "missing" in str(body)
