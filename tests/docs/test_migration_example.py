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
