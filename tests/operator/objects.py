"""Plain Kubernetes objects (as the API server returns them) for the translator's tests."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from vallum.operator import snapshot as snap

CONTROLLER = "vallum.dev/ingress-controller"


def ingress_class(
    name: str = "vallum", controller: str = CONTROLLER, default: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"kind": "IngressClass", "metadata": meta, "spec": {"controller": controller}}


def backend(service: str = "app", port: int | str = 80) -> dict[str, Any]:
    ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": service, "port": ref}}


def path(
    value: str = "/", path_type: str = "Prefix", service: str = "app", port: int | str = 80
) -> dict[str, Any]:
    return {"path": value, "pathType": path_type, "backend": backend(service, port)}


def ingress(
    name: str = "app",
    namespace: str = "default",
    *,
    host: str | None = "app.example.com",
    paths: list[dict[str, Any]] | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    class_name: str | None = "vallum",
    rv: str = "1",
    **spec: Any,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"http": {"paths": paths if paths is not None else [path()]}}
    if host is not None:
        rule["host"] = host
    body: dict[str, Any] = {"rules": [rule], **spec}
    if class_name is not None:
        body["ingressClassName"] = class_name
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": rv}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    return {"kind": "Ingress", "metadata": meta, "spec": body}


def service(
    name: str = "app",
    namespace: str = "default",
    *,
    ports: list[dict[str, Any]] | None = None,
    rv: str = "1",
    **spec: Any,
) -> dict[str, Any]:
    if ports is None:
        ports = [{"name": "http", "port": 80, "targetPort": 8080}]
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "spec": {"ports": ports, **spec},
    }


def endpoint_slice(
    service_name: str = "app",
    namespace: str = "default",
    *,
    name: str | None = None,
    ready: list[str] | None = None,
    not_ready: list[str] = (),  # type: ignore[assignment]
    port_name: str | None = "http",
    port: int = 8080,
    rv: str = "1",
) -> dict[str, Any]:
    port_entry: dict[str, Any] = {"port": port, "protocol": "TCP"}
    if port_name is not None:
        port_entry["name"] = port_name
    endpoints: list[dict[str, Any]] = [
        {"addresses": [a], "conditions": {"ready": True}}
        for a in (ready if ready is not None else ["10.0.0.1"])
    ]
    endpoints += [{"addresses": [a], "conditions": {"ready": False}} for a in not_ready]
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-abcde",
            "namespace": namespace,
            "resourceVersion": rv,
            "labels": {snap.SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "ports": [port_entry],
        "endpoints": endpoints,
    }


def secret(
    name: str, data: Mapping[str, str], namespace: str = "default", rv: str = "1"
) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "type": "kubernetes.io/tls" if "tls.crt" in data else "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def policy(name: str, spec: Any, namespace: str = "default", rv: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "vallum.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "spec": spec,
    }


_FIELDS = {
    "Ingress": "ingresses",
    "Service": "services",
    "EndpointSlice": "endpoint_slices",
    "Secret": "secrets",
    "Policy": "policies",
}


def snapshot(
    *objects: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> snap.Snapshot:
    """A snapshot of ``objects`` (by their ``kind``); the ``vallum`` IngressClass unless one
    is given."""
    kinds: dict[str, dict[Any, Mapping[str, Any]]] = {f: {} for f in _FIELDS.values()}
    classes: dict[str, Mapping[str, Any]] = {}
    for obj in objects:
        if obj["kind"] == "IngressClass":
            classes[obj["metadata"]["name"]] = obj
        else:
            kinds[_FIELDS[obj["kind"]]][snap.key_of(obj)] = obj
    if not classes:
        classes["vallum"] = ingress_class()
    return snap.Snapshot(ingress_classes=classes, settings=settings, **kinds)
