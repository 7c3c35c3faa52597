"""An Ingress backend -> upstream URLs: Service ports by number and name, targetPort by name,
ready endpoints only, selector-less Services, ExternalName, the Service's DNS name, IPv6."""

from __future__ import annotations

from typing import Any

from tests.operator import objects as k8s
from vallum.operator import backends
from vallum.operator import snapshot as snap


def resolve(*objs: dict[str, Any], port: int | str = 80, **flags: bool) -> backends.Backend:
    lookups = snap.Lookups(k8s.snapshot(*objs))
    return backends.resolve(lookups, "default", k8s.backend("app", port), **flags)


def test_ready_endpoints_of_every_slice_sorted_each_once() -> None:
    got = resolve(
        k8s.service(),
        k8s.endpoint_slice(name="app-1", ready=["10.0.0.9", "10.0.0.2"], not_ready=["10.0.0.5"]),
        k8s.endpoint_slice(name="app-2", ready=["10.0.0.2", "10.0.0.3"]),
        k8s.endpoint_slice("other", name="other-1", ready=["10.9.9.9"]),
    )
    assert got.upstreams == (
        "http://10.0.0.2:8080",
        "http://10.0.0.3:8080",
        "http://10.0.0.9:8080",
    )
    assert got.problem is None and got.unavailable is None


def test_an_endpoint_without_ready_condition_counts_as_ready() -> None:
    obj = k8s.endpoint_slice(ready=[])
    obj["endpoints"] = [{"addresses": ["10.0.0.4"]}, {"addresses": ["10.0.0.5"], "conditions": {}}]
    assert resolve(k8s.service(), obj).upstreams == ("http://10.0.0.4:8080", "http://10.0.0.5:8080")


def test_port_by_name_and_target_port_by_name() -> None:
    svc = k8s.service(
        ports=[
            {"name": "metrics", "port": 9090, "targetPort": 9090},
            {"name": "web", "port": 80, "targetPort": "http-alt"},
        ]
    )
    slices = (
        k8s.endpoint_slice(name="a", port_name="web", port=8081),
        k8s.endpoint_slice(name="b", port_name="metrics", port=9090, ready=["10.0.0.7"]),
    )
    assert resolve(svc, *slices, port="web").upstreams == ("http://10.0.0.1:8081",)
    assert resolve(svc, *slices, port=80).upstreams == ("http://10.0.0.1:8081",)
    assert resolve(svc, *slices, port="metrics").upstreams == ("http://10.0.0.7:9090",)


def test_an_unnamed_single_port_matches_the_unnamed_slice_port() -> None:
    svc = k8s.service(ports=[{"port": 80, "targetPort": 3000}])
    got = resolve(svc, k8s.endpoint_slice(port_name=None, port=3000))
    assert got.upstreams == ("http://10.0.0.1:3000",)
    named = resolve(svc, k8s.endpoint_slice(port_name="http", port=3000))
    assert named.unavailable is not None  # a named slice port is another Service port


def test_a_selector_less_service_with_hand_written_slices() -> None:
    svc = k8s.service(ports=[{"name": "http", "port": 80}])  # no selector, no targetPort
    hand = k8s.endpoint_slice(name="app-manual", ready=["192.0.2.10"], port=8443)
    assert resolve(svc, hand).upstreams == ("http://192.0.2.10:8443",)


def test_no_ready_endpoint_is_unavailable_not_a_problem() -> None:
    for objs in (
        (k8s.service(),),
        (k8s.service(), k8s.endpoint_slice(ready=[], not_ready=["10.0.0.1"])),
    ):
        got = resolve(*objs)
        assert got.upstreams == () and got.problem is None
        assert got.unavailable == "no ready endpoints for Service default/app port 80"


def test_unknown_service_or_port_is_a_problem() -> None:
    assert resolve().problem == "Service default/app not found"
    assert resolve(k8s.service(), port=81).problem == "Service default/app has no port 81"
    assert resolve(k8s.service(), port="grpc").problem == "Service default/app has no port grpc"
    lookups = snap.Lookups(k8s.snapshot(k8s.service()))
    refused = backends.resolve(lookups, "default", {"resource": {"kind": "Bucket", "name": "x"}})
    assert refused.problem is not None and "resource backends" in refused.problem


def test_external_name() -> None:
    svc = k8s.service(type="ExternalName", externalName="api.partner.example.", ports=[])
    assert resolve(svc, port=8443).upstreams == ("http://api.partner.example:8443",)
    named = k8s.service(
        type="ExternalName", externalName="api.partner.example", ports=[{"name": "h", "port": 99}]
    )
    assert resolve(named, port="h", secure=True).upstreams == ("https://api.partner.example:99",)
    assert resolve(named, port="other").problem is not None


def test_service_proxy_upstream_uses_the_cluster_dns_name() -> None:
    got = resolve(k8s.service(), k8s.endpoint_slice(), service_proxy=True)
    assert got.upstreams == ("http://app.default.svc.cluster.local:80",)


def test_secure_upstream_is_https_checked_against_the_service_name() -> None:
    got = resolve(k8s.service(), k8s.endpoint_slice(), secure=True)
    assert got.upstreams == ("https://10.0.0.1:8080",)
    assert got.server_name == "app.default.svc.cluster.local"


def test_ipv6_addresses_are_bracketed() -> None:
    obj = k8s.endpoint_slice(ready=["fd00:0:0::1"])
    obj["addressType"] = "IPv6"
    assert resolve(k8s.service(), obj).upstreams == ("http://[fd00::1]:8080",)


def test_every_object_read_is_recorded_with_its_version() -> None:
    lookups = snap.Lookups(k8s.snapshot(k8s.service(rv="7"), k8s.endpoint_slice(rv="3")))
    backends.resolve(lookups, "default", k8s.backend())
    backends.resolve(lookups, "default", k8s.backend("missing"))
    assert lookups.used == {
        ("Service", ("default", "app")): "7",
        ("EndpointSlices", ("default", "app")): ((("default", "app-abcde"), "3"),),
        ("Service", ("default", "missing")): None,
    }
