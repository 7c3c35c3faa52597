"""The translator's memory: translating after any sequence of changes gives exactly the table,
checksum and outcomes of a fresh translation of the final snapshot; and a host belongs to the
namespace of its oldest Ingress (another namespace cannot take it, nor one of its paths)."""

from __future__ import annotations

import random
import types
from collections.abc import Mapping
from typing import Any

import pytest

from tests.operator import objects as k8s
from tests.support.certs import TestCA
from vallum.core import config, routing
from vallum.operator import snapshot as snap
from vallum.operator import translate

FIELDS = ("ingresses", "services", "endpoint_slices", "secrets", "policies")
CLASS = k8s.ingress_class()


def created(obj: dict[str, Any], when: str) -> dict[str, Any]:
    obj["metadata"]["creationTimestamp"] = when
    return obj


class World:
    """Objects by kind, handing out snapshots as the store does (a new mapping for a changed
    kind only, unchanged objects shared)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rv = 0
        self.kinds: dict[str, dict[snap.ObjectKey, Mapping[str, Any]]] = {f: {} for f in FIELDS}
        self.views: dict[str, Mapping[snap.ObjectKey, Mapping[str, Any]]] = {
            f: types.MappingProxyType({}) for f in FIELDS
        }

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.kinds[kind][snap.key_of(obj)] = obj
        self.views[kind] = types.MappingProxyType(dict(self.kinds[kind]))

    def drop(self, kind: str, key: snap.ObjectKey) -> None:
        if self.kinds[kind].pop(key, None) is not None:
            self.views[kind] = types.MappingProxyType(dict(self.kinds[kind]))

    def snapshot(self) -> snap.Snapshot:
        return snap.Snapshot(ingress_classes={"vallum": CLASS}, **self.views)

    def fresh(self) -> snap.Snapshot:
        """The same objects in new mappings and copies: nothing shared with any memory."""
        copies = {f: {k: dict(v) for k, v in self.kinds[f].items()} for f in FIELDS}
        classes = {"vallum": k8s.ingress_class()}
        return snap.Snapshot(ingress_classes=classes, **copies)

    def change(self) -> None:
        rng = self.rng
        ns = rng.choice(["a", "b", "c"])
        n = rng.randrange(6)
        action = rng.randrange(9)
        if action <= 2:
            paths = [k8s.path(rng.choice(["/", "/x", "/admin"]), service=f"s{rng.randrange(4)}")]
            if rng.random() < 0.3:
                paths.append(k8s.path("/y", path_type="Exact", service=f"s{rng.randrange(4)}"))
            notes = {}
            if rng.random() < 0.3:
                notes["ingress.vallum.dev/policy-ref"] = "p"
            if rng.random() < 0.2:
                notes["ingress.vallum.dev/tls_client_secret"] = "mtls"
            if rng.random() < 0.1:
                notes["ingress.pomerium.io/timeout"] = "fast"  # broken
            host = rng.choice(
                ["h0.example.com", "h1.example.com", "h2.example.com", "*.example.com"]
            )
            obj = k8s.ingress(f"i{n}", ns, host=host, paths=paths, annotations=notes)
            self.put("ingresses", created(obj, f"2026-01-0{1 + rng.randrange(3)}T00:00:00Z"))
        elif action == 3:
            self.drop("ingresses", (ns, f"i{n}"))
        elif action == 4:
            self.put("services", k8s.service(f"s{n % 4}", ns))
        elif action == 5:
            ready = [f"10.0.{n}.{rng.randrange(3)}"] if rng.random() < 0.8 else []
            self.put("endpoint_slices", k8s.endpoint_slice(f"s{n % 4}", ns, ready=ready))
        elif action == 6:
            spec: Any = {"allow": {"or": [{"groups": {"has": f"g{n}"}}]}}
            if rng.random() < 0.2:
                spec = {"allow": {"or": [{"nonsense": 1}]}}
            self.put("policies", k8s.policy("p", spec, namespace=ns))
        elif action == 7:
            pem = {"tls.crt": f"crt{n}", "tls.key": f"key{n}"}
            self.put("secrets", k8s.secret("mtls", pem, namespace=ns))
        else:
            kind = rng.choice(["services", "endpoint_slices", "policies", "secrets"])
            keys = sorted(self.kinds[kind])
            if keys:
                self.drop(kind, rng.choice(keys))


def same(a: translate.Result, b: translate.Result) -> None:
    assert a.table is not None and b.table is not None
    assert a.table.checksum == b.table.checksum
    assert a.table.settings == b.table.settings
    assert dict(a.ingresses) == dict(b.ingresses)
    assert dict(a.policies) == dict(b.policies)
    assert a.secrets_used == b.secrets_used
    assert a.warnings == b.warnings
    for host in {route.host for route in a.table.settings.routes}:
        assert routing.host_routes(a.table, host) == routing.host_routes(b.table, host)


@pytest.mark.parametrize("seed", range(12))
def test_incremental_translation_equals_a_fresh_one_after_any_changes(seed: int) -> None:
    world = World(random.Random(seed))
    translator = translate.Translator(translate.Options())
    for step in range(60):
        for _ in range(world.rng.choice([1, 1, 1, 3])):  # sometimes a burst
            world.change()
        result = translator.translate(world.snapshot())
        if step % 5 == 4:
            same(result, translate.translate(world.fresh()))
    same(translator.translate(world.snapshot()), translate.translate(world.fresh()))


def test_route_numbers_are_unique_in_every_table() -> None:
    world = World(random.Random(7))
    translator = translate.Translator(translate.Options())
    for _ in range(40):
        world.change()
        table = translator.translate(world.snapshot()).table
        assert table is not None
        index = table.index
        numbers = [
            entry.route_index
            for vhost in [*index.exact.values(), *index.wildcard.values()]
            for entry in vhost.ordered()
        ]
        assert len(numbers) == len(set(numbers))


def test_one_change_compiles_only_what_read_it() -> None:
    objs: list[dict[str, Any]] = []
    for i in range(30):
        objs += [
            k8s.ingress(f"i{i}", host=f"h{i}.example.com", paths=[k8s.path(service=f"s{i}")]),
            k8s.service(f"s{i}"),
            k8s.endpoint_slice(f"s{i}"),
        ]
    world = World(random.Random(0))
    for obj in objs:
        world.put(
            {"Ingress": "ingresses", "Service": "services"}.get(obj["kind"], "endpoint_slices"), obj
        )
    translator = translate.Translator(translate.Options())
    translator.translate(world.snapshot())
    assert len(translator.last_compiled) == 30
    world.put("endpoint_slices", k8s.endpoint_slice("s7", ready=["10.9.9.9"]))
    result = translator.translate(world.snapshot())
    assert translator.last_compiled == (("default", "i7"),)
    route = routing.match(result.table, "h7.example.com", "/")  # type: ignore[arg-type]
    assert route is not None and route.route.to[0].host == "10.9.9.9"


# --- who owns a host -------------------------------------------------------------------------


def backed(*objs: dict[str, Any]) -> snap.Snapshot:
    extra = []
    for ns in ("payroll", "aaa", "zzz"):
        extra += [k8s.service("app", ns), k8s.endpoint_slice("app", ns)]
    return k8s.snapshot(*extra, *objs)


def served(result: translate.Result, host: str, path: str) -> config.Route | None:
    assert result.table is not None
    found = routing.match(result.table, host, path)
    return None if found is None else found.route


PAYROLL = ("payroll", "web")
ATTACKER = ("aaa", "grab")


def payroll(*paths: str, when: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    obj = k8s.ingress(
        "web", "payroll", host="payroll.example.com", paths=[k8s.path(p) for p in paths or ("/",)]
    )
    return created(obj, when)


def attacker(*paths: str, when: str = "2026-02-01T00:00:00Z") -> dict[str, Any]:
    obj = k8s.ingress(
        "grab", "aaa", host="payroll.example.com", paths=[k8s.path(p) for p in paths or ("/",)]
    )
    return created(obj, when)


def test_a_namespace_sorted_first_cannot_take_an_older_ingress_s_host_and_path() -> None:
    result = translate.translate(backed(payroll("/"), attacker("/")))
    route = served(result, "payroll.example.com", "/")
    assert route is not None and route.source.startswith("Ingress payroll/web ")
    assert result.ingresses[PAYROLL] == translate.IngressOutcome((), 1, ())
    lost = result.ingresses[ATTACKER]
    assert lost.routes == 0 and lost.problems == ()
    (warning,) = lost.warnings
    assert warning.startswith(
        "Ingress aaa/grab is refused host payroll.example.com: it belongs to namespace payroll "
    )
    assert "Ingress payroll/web" in warning
    assert warning in result.warnings


def test_a_longer_path_in_another_namespace_is_refused_too() -> None:
    # Longest prefix first would send payroll.example.com/admin/... to the attacker.
    result = translate.translate(backed(payroll("/"), attacker("/admin")))
    route = served(result, "payroll.example.com", "/admin/users")
    assert route is not None and route.source.startswith("Ingress payroll/web ")
    assert result.ingresses[ATTACKER].routes == 0
    assert any(w.startswith("Ingress aaa/grab is refused host payroll") for w in result.warnings)


def test_the_oldest_claim_owns_the_host_whatever_the_names() -> None:
    # zzz's Ingress is the older one: it owns the host, payroll's newer one is refused.
    early = created(
        k8s.ingress("site", "zzz", host="payroll.example.com", paths=[k8s.path("/")]),
        "2025-06-01T00:00:00Z",
    )
    result = translate.translate(backed(payroll("/", "/x"), early))
    route = served(result, "payroll.example.com", "/x")
    assert route is not None and route.source.startswith("Ingress zzz/site ")
    assert result.ingresses[PAYROLL].routes == 0


def test_same_age_the_namespace_and_name_decide() -> None:
    same_time = "2026-01-01T00:00:00Z"
    result = translate.translate(
        backed(payroll("/", when=same_time), attacker("/x", when=same_time))
    )
    route = served(result, "payroll.example.com", "/x")
    assert route is not None and route.source.startswith("Ingress aaa/grab ")


def test_ingresses_of_the_owning_namespace_share_the_host_oldest_first_on_one_path() -> None:
    newer = created(
        k8s.ingress(
            "api", "payroll", host="payroll.example.com", paths=[k8s.path("/api"), k8s.path("/")]
        ),
        "2026-03-01T00:00:00Z",
    )
    result = translate.translate(backed(payroll("/"), newer))
    api = served(result, "payroll.example.com", "/api/v1")
    assert api is not None and api.source.startswith("Ingress payroll/api ")
    root = served(result, "payroll.example.com", "/")
    assert root is not None and root.source.startswith("Ingress payroll/web ")
    (warning,) = result.ingresses[("payroll", "api")].warnings
    assert warning == (
        "Ingress payroll/api spec.rules[0].http.paths[1]: payroll.example.com / is taken by "
        "Ingress payroll/web spec.rules[0].http.paths[0]"
    )
    assert result.ingresses[("payroll", "api")].routes == 1


def test_when_the_owner_goes_the_next_oldest_namespace_gets_the_host() -> None:
    translator = translate.Translator(translate.Options())
    both = backed(payroll("/"), attacker("/"))
    first = translator.translate(both)
    assert first.ingresses[ATTACKER].routes == 0
    alone = k8s.snapshot(
        *[o for o in both.services.values()],
        *[o for o in both.endpoint_slices.values()],
        attacker("/"),
    )
    result = translator.translate(alone)
    route = served(result, "payroll.example.com", "/")
    assert route is not None and route.source.startswith("Ingress aaa/grab ")
    assert result.ingresses[ATTACKER] == translate.IngressOutcome((), 1, ())


def test_a_broken_owner_keeps_its_host() -> None:
    broken = payroll("/")
    broken["metadata"]["annotations"] = {"ingress.pomerium.io/timeout": "fast"}
    result = translate.translate(backed(broken, attacker("/")))
    route = served(result, "payroll.example.com", "/")
    assert route is not None and route.source.startswith("Ingress payroll/web ")
    assert route.unavailable is not None  # denies with its reason; the attacker gets nothing
    assert result.ingresses[ATTACKER].routes == 0


def test_a_refused_ingress_s_certificates_are_left_out(test_ca: TestCA) -> None:
    leaf = test_ca.issue("payroll.example.com", ["payroll.example.com"])
    pem = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}
    secret = k8s.secret("tls", pem, namespace="aaa")
    grab = attacker("/")
    grab["spec"]["tls"] = [{"hosts": ["payroll.example.com"], "secretName": "tls"}]
    result = translate.translate(backed(payroll("/"), grab, secret))
    assert result.table is not None and result.table.settings.certificates == ()
    alone = translate.translate(backed(grab, secret))
    assert alone.table is not None and len(alone.table.settings.certificates) == 1


def test_a_certificate_for_another_namespace_s_host_is_left_out(test_ca: TestCA) -> None:
    # aaa's Ingress owns its own host but brings a certificate naming payroll's: served, it
    # would be chosen for payroll.example.com (exact names first) -- and be the default one.
    leaf = test_ca.issue("payroll.example.com", ["payroll.example.com", "own.example.com"])
    secret = k8s.secret("tls", {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}, "aaa")
    own = created(
        k8s.ingress("own", "aaa", host="own.example.com", paths=[k8s.path("/")]),
        "2026-03-01T00:00:00Z",
    )
    own["spec"]["tls"] = [{"hosts": ["own.example.com"], "secretName": "tls"}]
    result = translate.translate(backed(payroll("/"), own, secret))
    assert result.table is not None and result.table.settings.certificates == ()
    assert result.ingresses[("aaa", "own")].routes == 1
    assert (
        "Ingress aaa/own spec.tls: a certificate for payroll.example.com is not served: that "
        "host belongs to namespace payroll"
    ) in result.warnings


def wildcard(namespace: str, when: str) -> dict[str, Any]:
    obj = k8s.ingress("all", namespace, host="*.example.com", paths=[k8s.path("/")])
    return created(obj, when)


def test_an_exact_host_under_an_older_wildcard_of_another_namespace_is_refused() -> None:
    # payroll serves *.example.com; a newer exact host of aaa would be chosen before it.
    late = created(
        k8s.ingress("grab", "aaa", host="login.example.com", paths=[k8s.path("/")]),
        "2026-02-01T00:00:00Z",
    )
    result = translate.translate(backed(wildcard("payroll", "2026-01-01T00:00:00Z"), late))
    route = served(result, "login.example.com", "/")
    assert route is not None and route.source.startswith("Ingress payroll/all ")
    (warning,) = result.ingresses[ATTACKER].warnings
    assert warning.startswith(
        "Ingress aaa/grab is refused host login.example.com: "
        "*.example.com belongs to namespace payroll "
    )
    # The wildcard's own namespace may add exact hosts below it.
    mine = created(
        k8s.ingress("login", "payroll", host="login.example.com", paths=[k8s.path("/x")]),
        "2026-03-01T00:00:00Z",
    )
    result = translate.translate(backed(wildcard("payroll", "2026-01-01T00:00:00Z"), mine))
    route = served(result, "login.example.com", "/x")
    assert route is not None and route.source.startswith("Ingress payroll/login ")
    # An exact host older than another namespace's wildcard stays its own.
    result = translate.translate(backed(wildcard("zzz", "2026-03-01T00:00:00Z"), late))
    route = served(result, "login.example.com", "/")
    assert route is not None and route.source.startswith("Ingress aaa/grab ")
