"""The chart's own deployment in a kind cluster, as e2e/kind/run installs it: the image built from
the Dockerfile, two replicas with the ServiceAccount's permissions, the IngressClass ``vallum``.

Runs only with ``VALLUM_E2E_TARGET=kind`` (e2e/kind/run sets it): elsewhere there is no image,
no kubelet and no pod. The rest of the e2e suite runs unchanged against the same cluster.
Each pod is reached through ``kubectl port-forward``, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import pytest

from e2e.conftest import Cluster, _free_port, wait_until

pytestmark = pytest.mark.skipif(
    os.environ.get("VALLUM_E2E_TARGET") != "kind",
    reason="the chart's deployment exists only in the kind run (e2e/kind/run)",
)
NAMESPACE = os.environ.get("VALLUM_KIND_NAMESPACE", "vallum")
IMAGE = os.environ.get("VALLUM_KIND_IMAGE", "vallum:e2e")
INGRESS_CLASS = "vallum"


@contextlib.contextmanager
def forwarded(cluster: Cluster, target: str, port: int) -> Iterator[int]:
    """``kubectl port-forward`` of ``target`` (pod/NAME, svc/NAME) ``port`` to a local port."""
    local = _free_port()
    process = subprocess.Popen(
        [cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, "-n", NAMESPACE,
         "port-forward", target, f"{local}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _connects(local), timeout=20, what=f"port-forward {target}")
        yield local
    finally:
        process.terminate()
        process.wait(10)


def _connects(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def scrape(port: int) -> dict[str, float]:
    """The samples without labels of ``/metrics`` (name -> value)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def https_get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    """GET over TLS with ``host`` as SNI and Host (the proxy compares them); the certificate is
    the self-signed one Vallum makes when the Settings name none."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def pods(cluster: Cluster) -> list[str]:
    found = json.loads(cluster.kubectl(
        "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=vallum", "-o", "json"))
    return [p["metadata"]["name"] for p in found["items"]
            if p["status"].get("phase") == "Running"]


def test_two_ready_replicas_and_exactly_one_leader(cluster: Cluster) -> None:
    names = pods(cluster)
    assert len(names) == 2, names

    def leaders() -> list[float] | None:
        seen = []
        for name in names:
            with forwarded(cluster, f"pod/{name}", 9090) as port:
                samples = scrape(port)
            assert samples["vallum_ready"] == 1.0, (name, samples)
            seen.append(samples["vallum_controller_leader"])
        return seen if sorted(seen) == [0.0, 1.0] else None

    wait_until(leaders, timeout=60, interval=2, what="one replica holding the Lease")


def test_an_ingress_of_the_chart_class_reaches_an_in_cluster_upstream(
    cluster: Cluster, namespace: str,
) -> None:
    # The upstream: the same image (it has Python), serving a directory listing.
    cluster.apply(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: files}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: files}}}}
          template:
            metadata: {{labels: {{app: files}}}}
            spec:
              containers:
                - name: files
                  image: {IMAGE}
                  imagePullPolicy: Never
                  command: [python, -m, http.server, "8000", --directory, /opt]
                  ports: [{{containerPort: 8000}}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: files}}
        spec:
          selector: {{app: files}}
          ports: [{{port: 80, targetPort: 8000}}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: files
          annotations: {{ingress.vallum.dev/allow_public_unauthenticated_access: "true"}}
        spec:
          ingressClassName: {INGRESS_CLASS}
          rules:
            - host: files.kind.test
              http:
                paths:
                  - path: /
                    pathType: Prefix
                    backend: {{service: {{name: files, port: {{number: 80}}}}}}
    """, namespace)
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/files", "--timeout=120s")
    with forwarded(cluster, "svc/vallum-proxy", 443) as port:
        deadline = time.monotonic() + 60
        answer: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                answer = https_get(port, "files.kind.test")
                if answer[0] == 200:
                    break
            time.sleep(1)
        assert answer[0] == 200 and "Directory listing for /" in answer[1], answer
    # --publish-service: the proxy Service's address (its clusterIP: a NodePort has no load
    # balancer) in the Ingress's status.
    address = cluster.get("service", "vallum-proxy", NAMESPACE)["spec"]["clusterIP"]
    wait_until(
        lambda: cluster.get("ingress", "files", namespace)["status"].get("loadBalancer", {})
        .get("ingress") == [{"ip": address}],
        timeout=30, what="the Ingress's status.loadBalancer",
    )
