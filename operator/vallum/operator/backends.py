"""An Ingress backend (Service name + port) -> the upstream URLs of a route.

Why a module of its own: this is how a request reaches pods, and every step has a Kubernetes
rule to get right. The Ingress names a Service port by number or by name; that entry of the
Service's ``spec.ports`` is the one whose EndpointSlice ports (matched by the Service port's
name; an unnamed port matches the slice's unnamed port) give the pods' numbers, so a
``targetPort`` given by name (resolved per pod by the EndpointSlice controller) works, and so
do Services without a selector whose slices are written by hand. Only ready endpoints
(``conditions.ready`` not false) are used, each address once; several are balanced.
``ExternalName`` Services go to ``<externalName>:<port>``; ``service_proxy_upstream`` to the
Service's cluster DNS name. The same decisions as the Pomerium ingress controller's
``getPathServiceHosts``, except that a Service without ready endpoints is not replaced by its
DNS name: its route answers 503 saying so.

Pure: objects come through :class:`vallum.operator.snapshot.Lookups`, which records them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

from vallum.operator import snapshot as snap


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """Where a path goes: ``upstreams`` (sorted URLs), or why it cannot.

    ``problem``: the Ingress is wrong (unknown Service or port): an Ingress problem.
    ``unavailable``: the Ingress is right but nothing serves (no ready endpoint): the route
    exists and answers 503 with this reason. ``server_name``: the TLS name to check on an
    https upstream reached by pod address (the Service's DNS name, as Pomerium)."""

    upstreams: tuple[str, ...] = ()
    problem: str | None = None
    unavailable: str | None = None
    server_name: str | None = None


def resolve(
    lookups: snap.Lookups,
    namespace: str,
    backend: Any,
    *,
    secure: bool = False,
    service_proxy: bool = False,
) -> Backend:
    """The upstreams of an Ingress ``backend`` (``{"service": {"name", "port": {...}}}``)."""
    if not isinstance(backend, Mapping):
        return Backend(problem=f"expected a backend, got {_kind(backend)}")
    if "resource" in backend:
        return Backend(problem="resource backends are not supported (use a Service)")
    service_ref = backend.get("service")
    if not isinstance(service_ref, Mapping) or not isinstance(service_ref.get("name"), str):
        return Backend(problem="the backend names no Service")
    name = service_ref["name"]
    port_ref = service_ref.get("port")
    port_ref = port_ref if isinstance(port_ref, Mapping) else {}
    wanted: int | str | None = port_ref.get("number")
    if not wanted:
        wanted = port_ref.get("name")
    if not isinstance(wanted, (int, str)) or isinstance(wanted, bool) or wanted in ("", 0):
        return Backend(problem=f"the backend of Service {name} names no port")
    where = f"Service {namespace}/{name}"
    service = lookups.service((namespace, name))
    if service is None:
        return Backend(problem=f"{where} not found")
    spec = service.get("spec") or {}
    scheme = "https" if secure else "http"
    entry = _service_port(spec.get("ports") or [], wanted)
    if spec.get("type") == "ExternalName":
        external = spec.get("externalName")
        if not isinstance(external, str) or not external:
            return Backend(problem=f"{where} is ExternalName without spec.externalName")
        number = entry.get("port") if entry is not None else wanted
        if not isinstance(number, int):
            return Backend(problem=f"{where} has no port {wanted}")
        return Backend(upstreams=(f"{scheme}://{_host(external.rstrip('.'))}:{number}",))
    if entry is None or not isinstance(entry.get("port"), int):
        return Backend(problem=f"{where} has no port {wanted}")
    if service_proxy:
        dns = f"{name}.{namespace}.svc.cluster.local"
        return Backend(upstreams=(f"{scheme}://{dns}:{entry['port']}",))
    upstreams = sorted(
        {
            f"{scheme}://{_host(address)}:{port}"
            for address, port in _ready_endpoints(lookups, (namespace, name), entry)
        }
    )
    if not upstreams:
        return Backend(unavailable=f"no ready endpoints for {where} port {wanted}")
    server_name = f"{name}.{namespace}.svc.cluster.local" if secure else None
    return Backend(upstreams=tuple(upstreams), server_name=server_name)


def _service_port(ports: Any, wanted: int | str) -> Mapping[str, Any] | None:
    """The ``spec.ports`` entry the Ingress names (by ``port`` number or by ``name``)."""
    for entry in ports if isinstance(ports, list) else []:
        if not isinstance(entry, Mapping):
            continue
        if isinstance(wanted, int) and entry.get("port") == wanted:
            return entry
        if isinstance(wanted, str) and entry.get("name") == wanted:
            return entry
    return None


def _ready_endpoints(
    lookups: snap.Lookups, service: snap.ObjectKey, entry: Mapping[str, Any]
) -> list[tuple[str, int]]:
    """``(address, port)`` of every ready endpoint of ``service`` for the Service port
    ``entry``: slice ports are matched by the Service port's name (both unnamed for a
    Service's single unnamed port); a slice port without a number uses a numeric
    ``targetPort`` (else the Service port), as "all ports" would be served there."""
    port_name = entry.get("name") or ""
    target = entry.get("targetPort")
    fallback = target if isinstance(target, int) and not isinstance(target, bool) else None
    out: list[tuple[str, int]] = []
    for slice_obj in lookups.endpoint_slices(service):
        numbers = []
        for port in slice_obj.get("ports") or []:
            if isinstance(port, Mapping) and (port.get("name") or "") == port_name:
                number = port.get("port")
                number = number if isinstance(number, int) else fallback or entry.get("port")
                numbers.append(number)
        if not numbers:
            continue
        for endpoint in slice_obj.get("endpoints") or []:
            if not isinstance(endpoint, Mapping):
                continue
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                if isinstance(address, str) and address:
                    out.extend((address, number) for number in numbers if isinstance(number, int))
    return out


def _host(address: str) -> str:
    """An address as the host of a URL: IPv6 in brackets."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    return f"[{parsed.compressed}]" if parsed.version == 6 else parsed.compressed


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)[:80]
