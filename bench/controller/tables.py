"""The controller's table and ``vallum serve``'s, built here from the same objects (pure).

Why: the throughput comparison is only fair when both serve the same table. The benchmark
writes ``vallum serve``'s routes file from :meth:`Population.routes` and checks, before it runs,
that the routes file and the controller's own translation of the objects give equal routes
(every field but ``source``, which names the file line or the Ingress path).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.controller import objects
from vallum.core import config, configfile
from vallum.operator import snapshot as snap
from vallum.operator import translate


def snapshot(pop: objects.Population, count: int) -> snap.Snapshot:
    """The snapshot the controller would hold with Ingresses 0..count-1 written."""
    made = objects.everything(pop, 0, count)

    def keyed(items: Sequence[Mapping[str, Any]]) -> dict[snap.ObjectKey, Mapping[str, Any]]:
        return {snap.key_of(obj): obj for obj in items}

    return snap.Snapshot(
        ingresses=keyed(made["Ingress"]),
        services=keyed(made["Service"]),
        endpoint_slices=keyed(made["EndpointSlice"]),
        policies=keyed([pop.policy(ns) for ns in pop.namespace_names()]),
        ingress_classes={pop.class_name: pop.ingress_class()},
    )


def controller_routes(pop: objects.Population, count: int,
                      base: Mapping[str, Any]) -> tuple[config.Route, ...]:
    options = translate.Options(controller_name=pop.controller_name, base=dict(base))
    result = translate.Translator(options).translate(snapshot(pop, count))
    if result.table is None:
        raise ValueError(f"the objects do not translate: {result.settings_problems}")
    broken = {key: out.problems for key, out in result.ingresses.items() if out.problems}
    if broken:
        first = next(iter(broken.items()))
        raise ValueError(f"{len(broken)} Ingress(es) have problems, e.g. {first}")
    return result.table.settings.routes


def serve_config(pop: objects.Population, count: int, address: str) -> dict[str, Any]:
    """``vallum serve``'s config: plain HTTP on ``address`` and the Ingresses' routes."""
    return {"address": address, "insecure_server": True, "routes": pop.routes(count)}


def serve_routes(document: Mapping[str, Any]) -> tuple[config.Route, ...]:
    """The routes ``vallum serve`` builds from ``document`` (written to a private temp file)."""
    with tempfile.TemporaryDirectory(prefix="vallum-bench-cfg-") as tmp:
        path = Path(tmp) / "vallum.yaml"
        path.write_text(json.dumps(document))
        os.chmod(path, 0o600)
        return configfile.load(str(path)).routes


def difference(a: Sequence[config.Route], b: Sequence[config.Route]) -> str | None:
    """None when the routes are equal but for ``source``, in any order; else the first
    difference. Order is left out because every generated Ingress has a host of its own, so no
    two routes compete for a request and their order cannot change what serves it (and the
    translation's order is its own business)."""
    if len(a) != len(b):
        return f"{len(a)} routes against {len(b)}"
    for x, y in zip(_ordered(a), _ordered(b), strict=True):
        if x != y:
            return f"{x} against {y}"
    return None


def _ordered(routes: Sequence[config.Route]) -> list[config.Route]:
    bare = [dataclasses.replace(route, source="") for route in routes]
    return sorted(bare, key=lambda r: (r.host, r.prefix or "", r.path or "", r.regex or ""))
