"""The worked example of docs/migration-from-pomerium.md, verified: the "before" and "after"
blocks are read from the page, the Settings is the Pomerium object with apiVersion and kind
changed (and the one field the page says to add), and the objects after the migration, with
the unchanged Ingress and the cluster's Secrets, Services and EndpointSlices, go through the
controller's translation to the routes, certificates, settings and decisions the page
describes."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.docs import pages
from tests.operator import objects as k8s
from tests.support.certs import TestCA
from vallum.core import config, policy, routing
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo
from vallum.operator import snapshot as snap
from vallum.operator import translate

PAGE = pages.read("migration-from-pomerium.md")


def documents(label: str) -> list[dict[str, Any]]:
    (block,) = pages.blocks(PAGE, label)
    return [doc for doc in yaml.safe_load_all(block) if doc is not None]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


BEFORE = documents("before")
AFTER = documents("after")
AFTER_POLICY = documents("after-policy")


def test_the_settings_are_the_pomerium_object_with_apiversion_and_kind_changed() -> None:
    pomerium = by_kind(BEFORE, "Pomerium")
    settings = by_kind(AFTER, "Settings")
    assert pomerium["apiVersion"] == "ingress.pomerium.io/v1"
    assert settings["apiVersion"] == "vallum.dev/v1alpha1"
    assert settings["metadata"] == pomerium["metadata"]
    added = dict(settings["spec"]["identityProvider"])
    assert added.pop("url") == "https://accounts.google.com"  # the one field the page adds
    assert {**settings["spec"], "identityProvider": added} == pomerium["spec"]


def test_the_ingress_class_keeps_its_name_and_names_vallum() -> None:
    before, after = by_kind(BEFORE, "IngressClass"), by_kind(AFTER, "IngressClass")
    assert before["metadata"] == after["metadata"]
    assert before["spec"]["controller"] == "pomerium.io/ingress-controller"
    assert after["spec"]["controller"] == k8s.CONTROLLER


def tls_secret(namespace: str, name: str, leaf: Any) -> dict[str, Any]:
    return k8s.secret(name, {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}, namespace)


def cluster(test_ca: TestCA) -> list[dict[str, Any]]:
    """What the example's cluster already holds: Pomerium's Secrets (the bootstrap one as
    Pomerium's job writes it: 32 random bytes, a PEM signing key, a shared secret), the
    certificates cert-manager wrote, and the two Services with their EndpointSlices."""
    bootstrap = k8s.secret(
        "bootstrap",
        {"shared_secret": "s" * 32, "signing_key": test_ca.issue("signing").key_pem},
        "pomerium",
    )
    bootstrap["data"]["cookie_secret"] = base64.b64encode(secrets.token_bytes(32)).decode()
    idp = k8s.secret("idp", {"client_id": "wiki-client\n", "client_secret": "s3cr3t"}, "pomerium")
    wildcard = tls_secret("pomerium", "wildcard-example-com", test_ca.issue("*.example.com"))
    wiki_tls = tls_secret("docs", "wiki-tls", test_ca.issue("wiki.example.com"))
    wiki = k8s.service("wiki", "docs", ports=[{"name": "http", "port": 80, "targetPort": "web"}])
    wiki_slice = k8s.endpoint_slice(
        "wiki", "docs", ready=["10.1.0.5"], not_ready=["10.1.0.6"], port_name="http", port=8080
    )
    api = k8s.service("wiki-api", "docs", ports=[{"port": 8080, "targetPort": 9090}])
    api_slice = k8s.endpoint_slice(
        "wiki-api", "docs", ready=["10.1.0.7"], port_name=None, port=9090
    )
    return [bootstrap, idp, wildcard, wiki_tls, wiki, wiki_slice, api, api_slice]


def snapshot(objects: list[dict[str, Any]], settings: Mapping[str, Any]) -> snap.Snapshot:
    kinds: dict[str, dict[Any, Any]] = {
        "ingresses": {},
        "services": {},
        "endpoint_slices": {},
        "secrets": {},
        "policies": {},
    }
    fields = {
        "Ingress": "ingresses",
        "Service": "services",
        "EndpointSlice": "endpoint_slices",
        "Secret": "secrets",
        "Policy": "policies",
    }
    classes = {}
    for obj in objects:
        if obj["kind"] == "IngressClass":
            classes[obj["metadata"]["name"]] = obj
        else:
            kinds[fields[obj["kind"]]][snap.key_of(obj)] = obj
    return snap.Snapshot(ingress_classes=classes, settings=settings, **kinds)


def served(
    cluster_objects: list[dict[str, Any]], ingress: dict[str, Any], *more: dict[str, Any]
) -> translate.Result:
    objects = [*cluster_objects, by_kind(AFTER, "IngressClass"), ingress, *more]
    result = translate.translate(snapshot(objects, by_kind(AFTER, "Settings")))
    assert result.settings_problems == () and result.warnings == ()
    assert result.ingresses == {("docs", "wiki"): translate.IngressOutcome(problems=(), routes=2)}
    return result


def request(method: str = "GET", path: str = "/") -> RequestInfo:
    return RequestInfo(
        method=method, host="wiki.example.com", path=path, time=dt.datetime.now(dt.UTC)
    )


def allowed(route: config.Route, identity: Identity, method: str = "GET") -> bool:
    compiled = policy.compile_route_policy(route)
    assert compiled.error is None
    return policy.evaluate(compiled, request(method), identity).allowed


ALICE = Identity("1", email="alice@example.com")
EVE = Identity("2", email="eve@contractor.org", groups=("wiki-editors",))
MALLORY = Identity("3", email="mallory@elsewhere.org")


def test_the_unchanged_ingress_serves_what_the_page_says(test_ca: TestCA) -> None:
    ingress = by_kind(BEFORE, "Ingress")
    cluster_objects = cluster(test_ca)
    result = served(cluster_objects, ingress)
    assert result.table is not None
    table = result.table

    def route_for(path: str) -> config.Route:
        found = routing.match(table, "wiki.example.com", path)
        assert found is not None
        return found.route

    api, root = route_for("/api/pages"), route_for("/pages/home")
    assert [u.url for u in api.to] == ["http://10.1.0.7:9090"]
    assert [u.url for u in root.to] == ["http://10.1.0.5:8080"]  # the ready pod only
    assert route_for("/apix") is root  # Prefix is element-wise
    for route in (api, root):
        assert dict(route.set_request_headers) == {"X-Team": "docs"}
        assert route.timeout == 60
        assert allowed(route, ALICE) and not allowed(route, ALICE, "DELETE")
        assert not allowed(route, EVE) and not allowed(route, MALLORY)
    settings = table.settings
    assert settings.authenticate_service_url == "https://authenticate.example.com"
    assert settings.idp_provider_url == "https://accounts.google.com"
    assert settings.idp_client_id == "wiki-client"
    assert settings.cookie_expire == 8 * 3600
    assert settings.pass_identity_headers is True
    assert dict(settings.jwt_claims_headers) == {"X-Email": "email"}
    tls = [o for o in cluster_objects if o["kind"] == "Secret" and "tls.crt" in o["data"]]
    wanted = {base64.b64decode(o["data"]["tls.crt"]).decode() for o in tls}
    assert {cert.cert_pem for cert in settings.certificates} == wanted  # wildcard + wiki-tls
    assert result.secrets_used >= {
        ("pomerium", "bootstrap"),
        ("pomerium", "idp"),
        ("docs", "wiki-tls"),
    }


def test_the_policy_object_lets_the_editors_in_too(test_ca: TestCA) -> None:
    ingress, wiki_editors = by_kind(AFTER_POLICY, "Ingress"), by_kind(AFTER_POLICY, "Policy")
    before = by_kind(BEFORE, "Ingress")
    annotations = dict(ingress["metadata"]["annotations"])
    assert annotations.pop("ingress.vallum.dev/policy-ref") == "wiki-editors"
    assert {**ingress, "metadata": {**ingress["metadata"], "annotations": annotations}} == before
    result = served(cluster(test_ca), ingress, wiki_editors)
    assert result.policies == {("docs", "wiki-editors"): ()}
    assert result.table is not None
    for route in result.table.settings.routes:
        assert allowed(route, ALICE) and allowed(route, EVE)
        assert not allowed(route, EVE, "DELETE") and not allowed(route, MALLORY)


def test_without_the_policy_object_the_ingress_denies_and_says_why(test_ca: TestCA) -> None:
    ingress = by_kind(AFTER_POLICY, "Ingress")
    objects = [*cluster(test_ca), by_kind(AFTER, "IngressClass"), ingress]
    result = translate.translate(snapshot(objects, by_kind(AFTER, "Settings")))
    (problem,) = result.ingresses[("docs", "wiki")].problems
    assert "Policy docs/wiki-editors not found" in problem


@pytest.mark.parametrize("label", ["before", "after", "after-policy"])
def test_every_example_block_is_found(label: str) -> None:
    assert documents(label)


# --- "A host belongs to one namespace", as the page says ------------------------------------


def claimant(
    name: str, namespace: str, created: str, path: str, *, broken: bool = False, tls: bool = False
) -> dict[str, Any]:
    annotations = {"ingress.pomerium.io/timout": "1m"} if broken else None
    extra: dict[str, Any] = {}
    if tls:
        extra["tls"] = [{"hosts": ["app.example.com"], "secretName": "own-cert"}]
    ingress = k8s.ingress(name, namespace, paths=[k8s.path(path)], annotations=annotations, **extra)
    ingress["metadata"]["creationTimestamp"] = created
    return ingress


def backends(*namespaces: str) -> list[dict[str, Any]]:
    return [
        obj
        for ns in namespaces
        for obj in (k8s.service(namespace=ns), k8s.endpoint_slice(namespace=ns))
    ]


def served_by(result: translate.Result) -> list[tuple[str, str]]:
    assert result.table is not None
    return [
        (r.path_value, (r.source or "").split(" spec.")[0]) for r in result.table.settings.routes
    ]


def test_a_host_belongs_to_the_namespace_of_its_oldest_ingress(test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.example.com")
    cert = k8s.secret("own-cert", {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}, "team-b")
    owner = claimant("site", "team-a", "2026-01-01T00:00:00Z", "/")
    intruder = claimant("admin", "team-b", "2026-02-01T00:00:00Z", "/admin", tls=True)
    result = translate.translate(k8s.snapshot(*backends("team-a", "team-b"), owner, intruder, cert))
    assert served_by(result) == [("/", "Ingress team-a/site")]  # not even a longer path
    assert result.table is not None and result.table.settings.certificates == ()
    (warning,) = result.ingresses[("team-b", "admin")].warnings
    assert "belongs to namespace team-a" in warning and "Ingress team-a/site" in warning
    # Created in the other order, the other namespace owns the host.
    owner["metadata"]["creationTimestamp"] = "2026-03-01T00:00:00Z"
    again = translate.translate(k8s.snapshot(*backends("team-a", "team-b"), owner, intruder, cert))
    assert served_by(again) == [("/admin", "Ingress team-b/admin")]


def test_within_the_namespace_the_live_then_the_older_ingress_wins_a_path() -> None:
    older = claimant("older", "team-a", "2026-01-01T00:00:00Z", "/")
    newer = claimant("newer", "team-a", "2026-02-01T00:00:00Z", "/")
    shared = claimant("api", "team-a", "2026-03-01T00:00:00Z", "/api")
    result = translate.translate(k8s.snapshot(*backends("team-a"), newer, older, shared))
    assert sorted(served_by(result)) == [
        ("/", "Ingress team-a/older"),
        ("/api", "Ingress team-a/api"),
    ]
    (warning,) = result.ingresses[("team-a", "newer")].warnings
    assert "is taken by Ingress team-a/older" in warning
    broken_older = claimant("older", "team-a", "2026-01-01T00:00:00Z", "/", broken=True)
    result = translate.translate(k8s.snapshot(*backends("team-a"), newer, broken_older))
    assert served_by(result)[0] == ("/", "Ingress team-a/newer")


def test_a_broken_ingress_keeps_the_host_it_owns() -> None:
    owner = claimant("site", "team-a", "2026-01-01T00:00:00Z", "/", broken=True)
    other = claimant("site", "team-b", "2026-02-01T00:00:00Z", "/")
    result = translate.translate(k8s.snapshot(*backends("team-a", "team-b"), owner, other))
    assert result.table is not None
    (route,) = result.table.settings.routes
    assert route.source and route.source.startswith("Ingress team-a/site")
    assert route.unavailable and "timout" in route.unavailable


def test_http01_solver_ingresses_are_public_keep_the_host_and_ignore_annotations() -> None:
    solver = k8s.ingress(
        "cm-acme-http-solver-abcde",
        labels={"acme.cert-manager.io/http01-solver": "true"},
        annotations={"ingress.pomerium.io/timout": "not even an option"},
        paths=[k8s.path("/.well-known/acme-challenge/token", "Exact")],
    )
    result = translate.translate(k8s.snapshot(k8s.service(), k8s.endpoint_slice(), solver))
    assert result.ingresses[("default", "cm-acme-http-solver-abcde")].problems == ()
    assert result.table is not None
    (route,) = result.table.settings.routes
    assert route.allow_public_unauthenticated_access and route.preserve_host_header
    assert route.acme_http01_solver  # also served on the plain-HTTP listener


def test_no_certificate_naming_another_namespaces_host_is_served(test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.example.com", ["app.example.com", "b.example.com"])
    data = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}
    owner = claimant("site", "team-a", "2026-01-01T00:00:00Z", "/")
    other = k8s.ingress(
        "b",
        "team-b",
        host="b.example.com",
        tls=[{"hosts": ["b.example.com"], "secretName": "both"}],
    )
    other["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z"
    objects = [*backends("team-a", "team-b"), owner, other, k8s.secret("both", data, "team-b")]
    result = translate.translate(k8s.snapshot(*objects))
    assert result.table is not None
    assert result.table.settings.certificates == ()  # it names app.example.com, team-a's host
    assert ("/", "Ingress team-b/b") in served_by(result)  # its own host still serves
    alone = translate.translate(k8s.snapshot(*objects[:4], *objects[5:]))  # no team-a Ingress
    assert alone.table is not None and len(alone.table.settings.certificates) == 1


def test_a_wildcard_host_claims_the_exact_hosts_it_covers() -> None:
    wildcard = k8s.ingress("all", "team-a", host="*.example.com")
    wildcard["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    exact = claimant("app", "team-b", "2026-02-01T00:00:00Z", "/")  # app.example.com
    result = translate.translate(k8s.snapshot(*backends("team-a", "team-b"), wildcard, exact))
    assert served_by(result) == [("/", "Ingress team-a/all")]
    assert result.ingresses[("team-b", "app")].warnings
