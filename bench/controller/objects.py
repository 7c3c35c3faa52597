"""The cluster the controller benchmarks run against, as plain objects (pure, no I/O).

Why a module of its own: the same description gives the objects written to the API server, the
routes file that makes ``vallum serve`` build the same table (the throughput comparison), and
the hosts the probes ask for; and it can be tested without a cluster.

What it looks like (realistic enough to exercise the translation, deterministic by index):
Ingress ``i`` is ``app-NNNNN`` in namespace ``<prefix>-NN`` (20 namespaces, round robin), host
``app-NNNNN.<namespace>.bench.vallum.test``, backed by a selector-less Service of its own (port
80 named ``http`` -> the upstream's port) with one hand-written EndpointSlice naming the
upstream (the API server refuses loopback addresses there, hence ``10.200.0.1`` on ``lo``).
Public through Pomerium's ``allow_public_unauthenticated_access`` annotation, with some
annotations on some: a request header (every 4th), a timeout (every 6th), the Host header kept
(every 9th), a second path ``/api`` (every 10th). Every 100th (from 50 on) is protected instead:
``ingress.vallum.dev/policy-ref`` names the namespace's Policy object (no Settings object, so no
sign-in: the controller serves that route as one that refuses, which counts as serving it).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

NAMESPACES = 20
HOST_SUFFIX = "bench.vallum.test"
POLICY_NAME = "bench-admins"
POLICY_SPEC: dict[str, Any] = {
    "allow": {"or": [{"groups": {"has": "admins"}},
                     {"and": [{"email": {"ends_with": "@bench.vallum.test"}},
                              {"http_method": {"in": ["GET", "HEAD"]}}]}]},
    "deny": {"or": [{"http_method": {"is": "DELETE"}}]},
}
PUBLIC = "ingress.pomerium.io/allow_public_unauthenticated_access"
CHANGE_ANNOTATION = "ingress.vallum.dev/set_response_headers"
CHANGE_HEADER = "X-Bench-Change"
"""The response header a churn change sets on its Ingress's route (so its arrival is seen)."""


@dataclasses.dataclass(frozen=True)
class Population:
    """Objects numbered 0..n-1 for one benchmark cluster; see the module docstring."""

    prefix: str
    """Namespace prefix (``vbench``; with a shared cluster, one with a random part)."""
    class_name: str
    controller_name: str
    upstream_ip: str
    upstream_port: int
    namespaces: int = NAMESPACES

    def namespace(self, i: int) -> str:
        return f"{self.prefix}-{i % self.namespaces:02d}"

    def namespace_names(self) -> list[str]:
        return [f"{self.prefix}-{n:02d}" for n in range(self.namespaces)]

    @staticmethod
    def name(i: int) -> str:
        return f"app-{i:05d}"

    def host(self, i: int) -> str:
        return f"{self.name(i)}.{self.namespace(i)}.{HOST_SUFFIX}"

    @staticmethod
    def protected(i: int) -> bool:
        return i % 100 == 50

    @staticmethod
    def paths(i: int) -> list[str]:
        return ["/", "/api"] if i % 10 == 4 else ["/"]

    def annotations(self, i: int) -> dict[str, str]:
        notes: dict[str, str] = {}
        if self.protected(i):
            notes["ingress.vallum.dev/policy-ref"] = POLICY_NAME
        else:
            notes[PUBLIC] = "true"
        if i % 4 == 1:
            notes["ingress.pomerium.io/set_request_headers"] = json.dumps(
                {"X-Team": f"team-{i % 17}"})
        if i % 6 == 2:
            notes["ingress.vallum.dev/timeout"] = "45s"
        if i % 9 == 3:
            notes["ingress.pomerium.io/preserve_host_header"] = "true"
        return notes

    def ingress(self, i: int, *, name: str | None = None, host: str | None = None,
                extra: dict[str, str] | None = None) -> dict[str, Any]:
        """Ingress ``i`` (or, with ``name``/``host``, another one on Service ``i``)."""
        paths = [
            {"path": p, "pathType": "Prefix",
             "backend": {"service": {"name": self.name(i), "port": {"number": 80}}}}
            for p in self.paths(i)
        ]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": name or self.name(i),
                "namespace": self.namespace(i),
                "labels": {"app.kubernetes.io/part-of": "vallum-bench"},
                "annotations": {**self.annotations(i), **(extra or {})},
            },
            "spec": {
                "ingressClassName": self.class_name,
                "rules": [{"host": host or self.host(i), "http": {"paths": paths}}],
            },
        }

    def service(self, i: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name(i), "namespace": self.namespace(i)},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": self.upstream_port}]},
        }

    def endpoint_slice(self, i: int) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{self.name(i)}-1",
                "namespace": self.namespace(i),
                "labels": {"kubernetes.io/service-name": self.name(i)},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": self.upstream_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [self.upstream_ip], "conditions": {"ready": True}}],
        }

    def policy(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "vallum.dev/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": POLICY_NAME, "namespace": namespace},
            "spec": POLICY_SPEC,
        }

    def ingress_class(self) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": self.class_name},
            "spec": {"controller": self.controller_name},
        }

    @staticmethod
    def namespace_object(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    def routes(self, count: int) -> list[dict[str, Any]]:
        """The routes-file routes of Ingresses 0..count-1, in the translation's order (host by
        host, sorted, then path): what makes ``vallum serve`` build the controller's table."""
        order = sorted(range(count), key=self.host)
        return [route for i in order for route in self.ingress_routes(i)]

    def ingress_routes(self, i: int) -> list[dict[str, Any]]:
        options: dict[str, Any] = {}
        if self.protected(i):
            options["policy"] = [POLICY_SPEC]
        else:
            options["allow_public_unauthenticated_access"] = True
        if i % 4 == 1:
            options["set_request_headers"] = {"X-Team": f"team-{i % 17}"}
        if i % 6 == 2:
            options["timeout"] = "45s"
        if i % 9 == 3:
            options["preserve_host_header"] = True
        return [
            {"from": f"https://{self.host(i)}",
             "to": [f"http://{self.upstream_ip}:{self.upstream_port}"],
             "prefix": path, **options}
            for path in self.paths(i)
        ]

    def change(self, i: int, serial: int) -> dict[str, Any]:
        """A merge patch of Ingress ``i`` for churn: a response header naming ``serial``."""
        return {"metadata": {"annotations": {
            CHANGE_ANNOTATION: json.dumps({CHANGE_HEADER: str(serial)})}}}


def everything(pop: Population, start: int, stop: int) -> dict[str, list[dict[str, Any]]]:
    """The objects of Ingresses ``start..stop-1`` by kind, in the order to write them (backends
    before the Ingresses that name them)."""
    numbers = range(start, stop)
    return {
        "Service": [pop.service(i) for i in numbers],
        "EndpointSlice": [pop.endpoint_slice(i) for i in numbers],
        "Ingress": [pop.ingress(i) for i in numbers],
    }
