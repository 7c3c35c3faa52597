"""Snapshot -> table, from plain dicts: IngressClass selection, each annotation family, every
failure mode (a broken Ingress denies only its own routes, with the reason), Secrets, Policies,
Settings, determinism and the per-Ingress memo."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import random
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.operator import objects as k8s
from tests.support.certs import TestCA
from vallum.core import config, configfile, policy, routing
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo
from vallum.operator import snapshot as snap
from vallum.operator import translate

APP = ("default", "app")


def backed(*objs: dict[str, Any], settings: Mapping[str, Any] | None = None) -> snap.Snapshot:
    """``objs`` plus the Service ``app`` (port 80 -> 8080) with one ready endpoint."""
    return k8s.snapshot(k8s.service(), k8s.endpoint_slice(), *objs, settings=settings)


def table(result: translate.Result) -> config.RouteTable:
    assert result.table is not None, result.settings_problems
    served = result.table
    # The index the translator assembled host by host routes as vallum serve's loader would
    # with the same settings (route_index aside: the translator numbers routes its own way).
    loaded = routing.build_table(served.settings)
    for host in {route.host for route in served.settings.routes}:
        assert routing.host_routes(served, host) == routing.host_routes(loaded, host)
    return served


def matched(result: translate.Result, url: str) -> config.Route | None:
    host, _, path = url.partition("/")
    found = routing.match(table(result), host, "/" + path)
    return None if found is None else found.route


def only_route(result: translate.Result) -> config.Route:
    (route,) = table(result).settings.routes
    return route


# --- which Ingresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "ingress", "handled"),
    [
        ([k8s.ingress_class()], k8s.ingress(), True),
        ([k8s.ingress_class(controller="k8s.io/ingress-nginx")], k8s.ingress(), False),
        ([k8s.ingress_class()], k8s.ingress(class_name="nginx"), False),
        ([k8s.ingress_class(default=True)], k8s.ingress(class_name=None), True),
        ([k8s.ingress_class()], k8s.ingress(class_name=None), False),
        (
            [k8s.ingress_class(), k8s.ingress_class("nginx", "k8s.io/ingress-nginx", default=True)],
            k8s.ingress(class_name=None),
            False,
        ),
        (
            [k8s.ingress_class(default=True)],
            k8s.ingress(class_name=None, annotations={"kubernetes.io/ingress.class": "nginx"}),
            False,
        ),
        (
            [k8s.ingress_class()],
            k8s.ingress(class_name=None, annotations={"kubernetes.io/ingress.class": "vallum"}),
            True,
        ),
    ],
)
def test_ingress_class_selection(
    classes: list[dict[str, Any]], ingress: dict[str, Any], handled: bool
) -> None:
    by_name = {c["metadata"]["name"]: c for c in classes}
    assert translate.handles(ingress, by_name, k8s.CONTROLLER) is handled
    result = translate.translate(backed(ingress, *classes))
    assert (APP in result.ingresses) is handled
    assert len(table(result).settings.routes) == (1 if handled else 0)


def test_another_controller_name() -> None:
    mine = k8s.ingress_class("mine", "example.com/mine")
    snapshot = backed(k8s.ingress(class_name="mine"), mine)
    assert translate.translate(snapshot).ingresses == {}
    options = translate.Options(controller_name="example.com/mine")
    assert translate.translate(snapshot, options).ingresses == {
        APP: translate.IngressOutcome((), 1)
    }


# --- rules and paths ----------------------------------------------------------------------


def test_rule_paths_become_routes_to_the_ready_endpoints() -> None:
    ingress = k8s.ingress(
        paths=[k8s.path("/api", "Prefix"), k8s.path("/login", "Exact"), k8s.path("/", "Prefix")]
    )
    result = translate.translate(backed(ingress))
    assert result.ingresses == {APP: translate.IngressOutcome((), 3)}
    routes = table(result).settings.routes
    assert [(r.from_url, r.path_match, r.path_value) for r in routes] == [
        ("https://app.example.com", "prefix", "/api"),
        ("https://app.example.com", "exact", "/login"),
        ("https://app.example.com", "prefix", "/"),
    ]
    assert {r.to[0].url for r in routes} == {"http://10.0.0.1:8080"}
    assert routes[0].source == "Ingress default/app spec.rules[0].http.paths[0]"


def test_prefix_is_element_wise_as_in_ingress() -> None:
    result = translate.translate(backed(k8s.ingress(paths=[k8s.path("/foo", "Prefix")])))
    assert matched(result, "app.example.com/foo") is not None
    assert matched(result, "app.example.com/foo/x") is not None
    assert matched(result, "app.example.com/foobar") is None


def test_exact_implementation_specific_and_path_regex() -> None:
    plain = k8s.ingress(paths=[k8s.path("/a", "ImplementationSpecific"), k8s.path("/b", "Exact")])
    routes = table(translate.translate(backed(plain))).settings.routes
    assert [(r.path_match, r.path_value) for r in routes] == [("prefix", "/a"), ("exact", "/b")]
    regex = k8s.ingress(
        paths=[k8s.path("/v[0-9]+/.*", "ImplementationSpecific"), k8s.path("/c", "Prefix")],
        annotations={"ingress.pomerium.io/path_regex": "true"},
    )
    result = translate.translate(backed(regex))
    assert [(r.path_match, r.path_value) for r in table(result).settings.routes] == [
        ("regex", "/v[0-9]+/.*"),
        ("prefix", "/c"),
    ]
    assert matched(result, "app.example.com/v2/x") is not None


def test_a_rule_without_host_is_a_problem_unless_allowed_as_pomerium() -> None:
    refused = translate.translate(backed(k8s.ingress(host=None)))
    (problem,) = refused.ingresses[APP].problems
    assert "spec.rules[0].host" in problem and "subtle_allow_empty_host" in problem
    assert table(refused).settings.routes == ()
    allowed = k8s.ingress(
        host=None, annotations={"ingress.pomerium.io/subtle_allow_empty_host": "true"}
    )
    result = translate.translate(backed(allowed))
    assert result.ingresses[APP].problems == ()
    route = matched(result, "anything.example.org/x")
    assert route is not None and route.host == "*"
    bad = k8s.ingress(host=None, annotations={"ingress.vallum.dev/subtle_allow_empty_host": "yes"})
    problems = translate.translate(backed(bad)).ingresses[APP].problems
    assert any(
        p.startswith("ingress.vallum.dev/subtle_allow_empty_host: expected true") for p in problems
    )


def test_default_backend_takes_the_one_tls_host_as_pomerium() -> None:
    ingress = k8s.ingress(
        paths=[k8s.path("/api", service="api")],
        defaultBackend=k8s.backend(),
        tls=[{"hosts": ["app.example.com"]}],
    )
    api = (k8s.service("api"), k8s.endpoint_slice("api", ready=["10.0.0.2"]))
    result = translate.translate(backed(ingress, *api))
    assert result.ingresses[APP] == translate.IngressOutcome((), 2)
    fallback = matched(result, "app.example.com/other")
    assert fallback is not None and fallback.to[0].host == "10.0.0.1"
    assert fallback.source == "Ingress default/app spec.defaultBackend"
    api_route = matched(result, "app.example.com/api/x")
    assert api_route is not None and api_route.to[0].host == "10.0.0.2"
    rule_too = k8s.ingress(
        paths=[k8s.path("/", service="api")],
        defaultBackend=k8s.backend(),
        tls=[{"hosts": ["app.example.com"]}],
    )
    root = matched(translate.translate(backed(rule_too, *api)), "app.example.com/")
    assert root is not None and root.to[0].host == "10.0.0.2"  # the rule wins over the default
    no_tls = translate.translate(backed(k8s.ingress(defaultBackend=k8s.backend())))
    (problem,) = no_tls.ingresses[APP].problems
    assert problem.startswith("spec.defaultBackend: ") and "spec.tls" in problem


def test_http01_solver_ingresses_are_public_whatever_their_annotations() -> None:
    solver = k8s.ingress(
        "cm-acme-http-solver-x",
        paths=[k8s.path("/.well-known/acme-challenge/tok", "ImplementationSpecific")],
        labels={"acme.cert-manager.io/http01-solver": "true"},
        annotations={"ingress.vallum.dev/allowed_users": '["a@example.com"]'},
    )
    result = translate.translate(backed(solver))
    route = only_route(result)
    assert route.allow_public_unauthenticated_access and route.preserve_host_header
    assert route.allowed_users == ()
    assert route.acme_http01_solver  # served on the plain-HTTP listener too


def test_only_solver_ingresses_are_served_on_plain_http() -> None:
    plain = translate.translate(backed(k8s.ingress()))
    assert not only_route(plain).acme_http01_solver
    # The flag is no route option: an annotation cannot ask for it.
    asking = translate.translate(
        backed(k8s.ingress(annotations={"ingress.vallum.dev/acme_http01_solver": "true"}))
    )
    (problem,) = asking.ingresses[APP].problems
    assert "acme_http01_solver" in problem
    assert not only_route(asking).acme_http01_solver
    wrong_label = translate.translate(
        backed(k8s.ingress(labels={"acme.cert-manager.io/http01-solver": "false"}))
    )
    assert not only_route(wrong_label).acme_http01_solver


def test_a_broken_solver_ingress_answers_its_reason_on_plain_http_too() -> None:
    solver = k8s.ingress(
        "cm-acme-http-solver-y",
        paths=[k8s.path("/.well-known/acme-challenge/tok", "ImplementationSpecific", "missing")],
        labels={"acme.cert-manager.io/http01-solver": "true"},
    )
    route = only_route(translate.translate(backed(solver)))
    assert route.unavailable is not None and "missing" in route.unavailable
    assert route.acme_http01_solver


# --- annotations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "value", "field", "expected"),
    [
        ("ingress.vallum.dev/set_request_headers", '{"X-Team": "blue"}', "set_request_headers",
         (("X-Team", "blue"),)),
        ("ingress.pomerium.io/remove_request_headers", '["X-Debug"]', "remove_request_headers",
         ("X-Debug",)),
        ("ingress.pomerium.io/timeout", "45s", "timeout", 45.0),
        ("ingress.vallum.dev/idle_timeout", "1m", "idle_timeout", 60.0),
        ("ingress.pomerium.io/allow_websockets", "true", "allow_websockets", True),
        ("ingress.pomerium.io/prefix_rewrite", "/v2", "prefix_rewrite", "/v2"),
        ("ingress.pomerium.io/preserve_host_header", "true", "preserve_host_header", True),
        ("ingress.pomerium.io/tls_skip_verify", "true", "tls_skip_verify", True),
        ("ingress.pomerium.io/pass_identity_headers", "true", "pass_identity_headers", True),
        ("ingress.pomerium.io/allowed_users", '["a@example.com"]', "allowed_users",
         ("a@example.com",)),
        ("ingress.pomerium.io/allowed_domains", "[example.com]", "allowed_domains",
         ("example.com",)),
        ("ingress.vallum.dev/allow_any_authenticated_user", "true",
         "allow_any_authenticated_user", True),
        ("ingress.pomerium.io/policy", "allow:\n  or:\n    - email:\n        is: a@example.com\n",
         "policy", {"allow": {"or": [{"email": {"is": "a@example.com"}}]}}),
    ],
)  # fmt: skip
def test_one_annotation_of_each_family_reaches_the_route(
    annotation: str, value: str, field: str, expected: object
) -> None:
    result = translate.translate(backed(k8s.ingress(annotations={annotation: value})))
    assert result.ingresses[APP].problems == ()
    assert getattr(only_route(result), field) == expected


def test_secure_upstream_and_service_proxy_upstream() -> None:
    secure = k8s.ingress(annotations={"ingress.pomerium.io/secure_upstream": "true"})
    route = only_route(translate.translate(backed(secure)))
    assert route.to[0].url == "https://10.0.0.1:8080"
    assert route.tls_server_name == "app.default.svc.cluster.local"
    named = k8s.ingress(
        annotations={
            "ingress.pomerium.io/secure_upstream": "true",
            "ingress.pomerium.io/tls_server_name": "app.internal",
        }
    )
    assert only_route(translate.translate(backed(named))).tls_server_name == "app.internal"
    proxied = k8s.ingress(annotations={"ingress.pomerium.io/service_proxy_upstream": "true"})
    route = only_route(translate.translate(backed(proxied)))
    assert route.to[0].url == "http://app.default.svc.cluster.local:80"


def test_the_table_is_the_one_vallum_serve_builds_from_the_same_document() -> None:
    annotations = {
        "ingress.pomerium.io/set_request_headers": '{"X-Team": "blue"}',
        "ingress.pomerium.io/allowed_domains": "[example.com]",
        "ingress.vallum.dev/timeout": "10s",
    }
    ingress = k8s.ingress(
        annotations=annotations, paths=[k8s.path("/api"), k8s.path("/x", "Exact")]
    )
    got = table(translate.translate(backed(ingress)))
    document = {
        "routes": [
            {
                "from": "https://app.example.com",
                "to": ["http://10.0.0.1:8080"],
                rule: path,
                "set_request_headers": {"X-Team": "blue"},
                "allowed_domains": ["example.com"],
                "timeout": "10s",
            }
            for rule, path in (("prefix", "/api"), ("path", "/x"))
        ]
    }
    served = configfile.loads(yaml.safe_dump(document), "routes.yaml")
    assert len(got.settings.routes) == 2
    assert [_without_source(r) for r in got.settings.routes] == [
        _without_source(r) for r in served.routes
    ]


def _without_source(route: config.Route) -> config.Route:
    return dataclasses.replace(route, source="")


# --- a broken Ingress denies only its own routes --------------------------------------------


def broken_result(*objs: dict[str, Any], **ingress: Any) -> translate.Result:
    """``ingress`` (broken, say) beside a healthy Ingress ``other`` on another host."""
    other = k8s.ingress("other", host="other.example.com")
    return translate.translate(backed(k8s.ingress(**ingress), other, *objs))


def assert_denies(result: translate.Result, *needles: str) -> None:
    problems = result.ingresses[APP].problems
    assert problems, "expected the Ingress to be broken"
    for needle in needles:
        assert any(needle in p for p in problems), (needle, problems)
    route = matched(result, "app.example.com/x")
    assert route is not None, "a broken Ingress keeps its host and path, and refuses"
    assert route.unavailable is not None and route.unavailable.startswith("Ingress default/app: ")
    for needle in needles:
        assert needle in route.unavailable
    healthy = matched(result, "other.example.com/x")
    assert healthy is not None and healthy.unavailable is None
    assert result.ingresses[("default", "other")].problems == ()


def test_a_broken_ingress_never_shadows_a_live_one_on_the_same_host_and_path() -> None:
    broken = k8s.ingress(  # sorted first, and broken: its routes come after every live one
        "a-broken",
        paths=[k8s.path("/"), k8s.path("/only-mine")],
        annotations={"ingress.pomerium.io/timeout": "fast"},
    )
    live = k8s.ingress("b-live", paths=[k8s.path("/")])
    result = translate.translate(backed(broken, live))
    shared = matched(result, "app.example.com/x")
    assert shared is not None and shared.unavailable is None
    assert shared.source.startswith("Ingress default/b-live ")
    own = matched(result, "app.example.com/only-mine")
    assert own is not None and own.unavailable is not None and "timeout" in own.unavailable
    assert not any("b-live" in w for w in result.warnings)


def test_two_live_ingresses_on_one_host_and_path_the_first_wins_with_a_warning() -> None:
    first = k8s.ingress("a", paths=[k8s.path("/"), k8s.path("/a")])
    second = k8s.ingress("b", paths=[k8s.path("/", service="api"), k8s.path("/b")])
    api = (k8s.service("api"), k8s.endpoint_slice("api", ready=["10.0.0.2"]))
    result = translate.translate(backed(second, first, *api))
    root = matched(result, "app.example.com/")
    assert root is not None and root.to[0].host == "10.0.0.1"
    assert [w for w in result.warnings if w != translate.NO_SETTINGS] == [
        "Ingress default/b spec.rules[0].http.paths[0]: app.example.com / is taken by "
        "Ingress default/a spec.rules[0].http.paths[0]"
    ]


def test_bad_annotation() -> None:
    result = broken_result(annotations={"ingress.pomerium.io/timeout": "fast"})
    assert_denies(result, "ingress.pomerium.io/timeout")
    unknown = broken_result(annotations={"ingress.vallum.dev/tiemout": "5s"})
    assert_denies(unknown, "ingress.vallum.dev/tiemout", "unknown option")
    not_text = broken_result(annotations={"ingress.vallum.dev/timeout": 5})
    assert_denies(not_text, "ingress.vallum.dev/timeout: expected a string value")


def test_missing_service() -> None:
    result = broken_result(paths=[k8s.path(service="nope")])
    assert_denies(result, "spec.rules[0].http.paths[0].backend: Service default/nope not found")


def test_unknown_port() -> None:
    result = broken_result(paths=[k8s.path(port=81)])
    assert_denies(result, "Service default/app has no port 81")
    by_name = broken_result(paths=[k8s.path(port="grpc")])
    assert_denies(by_name, "Service default/app has no port grpc")


def test_port_and_target_port_by_name() -> None:
    svc = k8s.service("web", ports=[{"name": "http", "port": 80, "targetPort": "http-pod"}])
    slices = k8s.endpoint_slice("web", ready=["10.1.0.1"], port=3000)
    ingress = k8s.ingress(paths=[k8s.path(service="web", port="http")])
    route = only_route(translate.translate(k8s.snapshot(ingress, svc, slices)))
    assert [u.url for u in route.to] == ["http://10.1.0.1:3000"]


def test_no_ready_endpoints_answers_503_saying_so_and_is_no_problem() -> None:
    ingress = k8s.ingress()
    snapshot = k8s.snapshot(ingress, k8s.service(), k8s.endpoint_slice(ready=[], not_ready=["x"]))
    result = translate.translate(snapshot)
    assert result.ingresses[APP] == translate.IngressOutcome((), 1)
    route = matched(result, "app.example.com/")
    assert route is not None
    assert route.unavailable == "no ready endpoints for Service default/app port 80"


def test_external_name_and_selector_less_services() -> None:
    external = k8s.service("ext", type="ExternalName", externalName="api.partner.example", ports=[])
    manual = k8s.service("manual", ports=[{"name": "http", "port": 80}])
    manual_slice = k8s.endpoint_slice("manual", name="manual-1", ready=["192.0.2.7"], port=9000)
    ingress = k8s.ingress(
        paths=[k8s.path("/ext", service="ext", port=443), k8s.path("/m", service="manual")]
    )
    result = translate.translate(k8s.snapshot(ingress, external, manual, manual_slice))
    ext, man = table(result).settings.routes
    assert [u.url for u in ext.to] == ["http://api.partner.example:443"]
    assert [u.url for u in man.to] == ["http://192.0.2.7:9000"]


def test_missing_secret_and_secret_without_key() -> None:
    annotation = {"ingress.pomerium.io/tls_client_secret": "client"}
    missing = broken_result(annotations=annotation)
    assert_denies(missing, "ingress.pomerium.io/tls_client_secret: Secret default/client not found")
    assert ("default", "client") in missing.secrets_used
    partial = k8s.secret("client", {"tls.crt": "x"})
    assert_denies(broken_result(partial, annotations=annotation), "has no key tls.key")


def test_missing_and_invalid_policy() -> None:
    ref = {"ingress.vallum.dev/policy-ref": "admins"}
    assert_denies(broken_result(annotations=ref), "Policy default/admins not found")
    bad = k8s.policy("admins", {"allow": {"or": [{"groups": {"hass": "admins"}}]}})
    result = broken_result(bad, annotations=ref)
    assert_denies(result, "Policy default/admins is invalid", "hass")
    (problem,) = result.policies[("default", "admins")]
    assert problem.startswith("spec.allow.or[0]") and "hass" in problem


def test_a_policy_in_another_namespace_is_not_found() -> None:
    elsewhere = k8s.policy("admins", {"allow": {"and": [{"accept": True}]}}, namespace="other")
    result = broken_result(elsewhere, annotations={"ingress.vallum.dev/policy-ref": "admins"})
    assert_denies(result, "Policy default/admins not found")
    assert result.policies == {("other", "admins"): ()}


def test_every_problem_is_reported_at_once() -> None:
    result = broken_result(
        annotations={
            "ingress.pomerium.io/timeout": "fast",
            "ingress.vallum.dev/policy-ref": "gone",
            "ingress.pomerium.io/tls_custom_ca_secret": "ca",
        }
    )
    assert_denies(result, "timeout", "Policy default/gone not found", "Secret default/ca not found")


def test_backend_problems_are_reported_beside_the_others() -> None:
    result = broken_result(
        annotations={"ingress.pomerium.io/timeout": "fast"},
        paths=[k8s.path("/", service="nope"), k8s.path("/b", port=81)],
    )
    assert_denies(
        result,
        "timeout",
        "spec.rules[0].http.paths[0].backend: Service default/nope not found",
        "spec.rules[0].http.paths[1].backend: Service default/app has no port 81",
    )


# --- Secrets --------------------------------------------------------------------------------


def test_tls_secrets_give_sni_certificates(test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.example.com")
    tls = k8s.secret("app-tls", {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem})
    tls["data"]["keystore.p12"] = base64.b64encode(b"\xff\x00binary").decode()  # left alone
    ingress = k8s.ingress(tls=[{"hosts": ["app.example.com"], "secretName": "app-tls"}])
    result = translate.translate(backed(ingress, tls))
    assert result.ingresses[APP].problems == ()
    (cert,) = table(result).settings.certificates
    assert cert.cert_pem.strip() == leaf.cert_pem.strip()
    assert ("default", "app-tls") in result.secrets_used
    broken = broken_result(
        tls,
        tls=[{"hosts": ["app.example.com"], "secretName": "app-tls"}],
        paths=[k8s.path(port=81)],
    )
    assert_denies(broken, "no port 81")
    assert len(table(broken).settings.certificates) == 1  # the reason is served over its own TLS
    missing = broken_result(tls=[{"hosts": ["app.example.com"], "secretName": "gone"}])
    assert_denies(missing, "spec.tls[0].secretName: Secret default/gone not found")
    assert table(missing).settings.certificates == ()
    garbled = k8s.secret("bad", {"tls.crt": "not pem", "tls.key": leaf.key_pem})
    bad = broken_result(garbled, tls=[{"hosts": ["app.example.com"], "secretName": "bad"}])
    assert_denies(bad, "spec.tls[0].secretName (Secret default/bad).cert")


def test_upstream_mtls_from_cert_manager_secrets(test_ca: TestCA) -> None:
    client = test_ca.issue("vallum", client=True)
    secrets = (
        k8s.secret("client", {"tls.crt": client.cert_pem, "tls.key": client.key_pem}),
        k8s.secret("ca", {"ca.crt": test_ca.cert_pem}),
    )
    ingress = k8s.ingress(
        annotations={
            "ingress.pomerium.io/tls_client_secret": "client",
            "ingress.pomerium.io/tls_custom_ca_secret": "ca",
            "ingress.pomerium.io/secure_upstream": "true",
        }
    )
    result = translate.translate(backed(ingress, *secrets))
    route = only_route(result)
    assert (
        route.tls_client_cert_pem is not None and "BEGIN CERTIFICATE" in route.tls_client_cert_pem
    )
    assert route.tls_client_key_pem is not None and route.tls_custom_ca_pem is not None
    assert {("default", "client"), ("default", "ca")} <= result.secrets_used


def test_header_secrets_add_one_header_per_key() -> None:
    ingress = k8s.ingress(
        annotations={
            "ingress.pomerium.io/set_request_headers": '{"X-Team": "blue"}',
            "ingress.pomerium.io/set_request_headers_secret": "req",
            "ingress.pomerium.io/set_response_headers_secret": "resp",
        }
    )
    secrets = (
        k8s.secret("req", {"Authorization": "Bearer s3cr3t"}),
        k8s.secret("resp", {"X-Frame-Options": "DENY"}),
    )
    route = only_route(translate.translate(backed(ingress, *secrets)))
    assert dict(route.set_request_headers) == {"X-Team": "blue", "Authorization": "Bearer s3cr3t"}
    assert dict(route.set_response_headers) == {"X-Frame-Options": "DENY"}
    clash = k8s.secret("req", {"X-Team": "red"})
    assert_denies(broken_result(clash, annotations=ingress["metadata"]["annotations"]), "X-Team")
    binary = k8s.secret("req", {"A": "b"})
    binary["data"]["A"] = base64.b64encode(b"\xff").decode()
    assert_denies(
        broken_result(binary, *secrets[1:], annotations=ingress["metadata"]["annotations"]),
        "Secret default/req key A is not base64-encoded UTF-8 text",
    )


# --- Policies -------------------------------------------------------------------------------


def request() -> RequestInfo:
    return RequestInfo(method="GET", host="app.example.com", path="/", time=dt.datetime.now(dt.UTC))


def test_policy_refs_combine_as_pomerium_any_allow_admits_any_deny_refuses() -> None:
    admins = k8s.policy("admins", {"allow": {"or": [{"groups": {"has": "admins"}}]}})
    staff = k8s.policy("staff", {"allow": {"or": [{"domain": {"is": "example.com"}}]}})
    no_bob = k8s.policy("no-bob", {"deny": {"or": [{"email": {"is": "bob@example.com"}}]}})
    ingress = k8s.ingress(annotations={"ingress.vallum.dev/policy-ref": "admins,staff,no-bob"})
    result = translate.translate(backed(ingress, admins, staff, no_bob))
    route = only_route(result)
    assert route.policy == [admins["spec"], staff["spec"], no_bob["spec"]]
    compiled = policy.compile_route_policy(route)
    assert compiled.error is None

    def allowed(identity: Identity) -> bool:
        return policy.evaluate(compiled, request(), identity).allowed

    assert allowed(Identity("1", email="eve@elsewhere.org", groups=("admins",)))
    assert allowed(Identity("2", email="alice@example.com"))
    assert not allowed(Identity("3", email="bob@example.com", groups=("admins",)))
    assert not allowed(Identity("4", email="mallory@elsewhere.org"))
    assert result.policies == {
        ("default", "admins"): (),
        ("default", "staff"): (),
        ("default", "no-bob"): (),
    }


def test_policy_refs_join_the_policy_annotation() -> None:
    staff = k8s.policy("staff", {"allow": {"or": [{"domain": {"is": "example.com"}}]}})
    ingress = k8s.ingress(
        annotations={
            "ingress.vallum.dev/policy-ref": "staff",
            "ingress.vallum.dev/policy": '{"allow": {"or": [{"email": {"is": "a@b.org"}}]}}',
        }
    )
    route = only_route(translate.translate(backed(ingress, staff)))
    assert route.policy == [{"allow": {"or": [{"email": {"is": "a@b.org"}}]}}, staff["spec"]]


# --- Settings -------------------------------------------------------------------------------


def test_settings_values_under_the_cli_ones() -> None:
    settings = {"metadata": {"name": "global"}, "spec": {"defaultUpstreamTimeout": "5s",
                                                         "xffNumTrustedHops": 1}}  # fmt: skip
    options = translate.Options(base={"xff_num_trusted_hops": 2, "address": "127.0.0.1:8443"})
    result = translate.translate(backed(k8s.ingress(), settings=settings), options)
    served = table(result).settings
    assert (served.xff_num_trusted_hops, served.address) == (2, "127.0.0.1:8443")
    assert only_route(result).timeout == 5.0  # the Settings' default upstream timeout
    assert result.warnings == ()


def test_invalid_settings_give_no_table_and_say_why() -> None:
    settings = {"metadata": {"name": "global"}, "spec": {"xffNumTrustedHops": "many"}}
    result = translate.translate(backed(k8s.ingress(), settings=settings))
    assert result.table is None
    assert any("xffNumTrustedHops" in p for p in result.settings_problems)
    bad_base = translate.translate(backed(), translate.Options(base={"address": "nowhere:x"}))
    assert bad_base.table is None and bad_base.settings_problems


def test_no_settings_object_is_a_warning_not_a_problem() -> None:
    result = translate.translate(backed(k8s.ingress()))
    assert result.settings_problems == () and result.table is not None
    assert result.warnings == (translate.NO_SETTINGS,)


def test_secrets_used_include_the_settings_ones() -> None:
    settings = {"metadata": {"name": "global"}, "spec": {"certificates": ["vallum/wildcard"]}}
    ingress = k8s.ingress(annotations={"ingress.pomerium.io/tls_custom_ca_secret": "ca"})
    result = translate.translate(backed(ingress, settings=settings))
    assert result.secrets_used == {("vallum", "wildcard"), ("default", "ca")}


# --- determinism and memo -------------------------------------------------------------------


def many() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for i in range(12):
        objs += [
            k8s.ingress(f"app{i}", host=f"app{i}.example.com", paths=[k8s.path(service=f"s{i}")]),
            k8s.service(f"s{i}"),
            k8s.endpoint_slice(f"s{i}", ready=[f"10.0.{i}.2", f"10.0.{i}.1"]),
        ]
    objs.append(k8s.ingress("broken", host="b.example.com", paths=[k8s.path(service="none")]))
    return objs


def test_same_objects_same_table_and_checksum_whatever_their_order() -> None:
    objs = many()
    first = translate.translate(k8s.snapshot(*objs))
    random.Random(7).shuffle(objs)
    again = translate.Translator(translate.Options()).translate(k8s.snapshot(*objs))
    assert table(first).checksum == table(again).checksum
    assert table(first).settings == table(again).settings
    objs[0] = {**objs[0], "metadata": {**objs[0]["metadata"], "resourceVersion": "2"}}
    bumped = translate.translate(k8s.snapshot(*objs))
    assert table(bumped).checksum == table(first).checksum  # a new version alone changes nothing
    objs.append(k8s.endpoint_slice("s0", name="s0-more", ready=["10.0.0.99"]))
    assert table(translate.translate(k8s.snapshot(*objs))).checksum != table(first).checksum


def test_a_change_recompiles_only_the_ingresses_that_depend_on_it() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in many()}
    objs[("Policy", "p")] = k8s.policy("p", {"allow": {"or": [{"accept": True}]}})
    objs[("Ingress", "app3")] = k8s.ingress(
        "app3",
        host="app3.example.com",
        paths=[k8s.path(service="s3")],
        annotations={"ingress.vallum.dev/policy-ref": "p"},
    )
    translator = translate.Translator(translate.Options())

    def run() -> set[str]:
        translator.translate(k8s.snapshot(*objs.values()))
        return {name for _, name in translator.last_compiled}

    assert len(run()) == 13
    assert run() == set()  # nothing changed
    objs[("Service", "s1")] = k8s.service("s1", rv="2")
    assert run() == {"app1"}
    objs[("EndpointSlice", "s2-abcde")] = k8s.endpoint_slice("s2", ready=["10.9.9.9"], rv="2")
    assert run() == {"app2"}
    objs[("EndpointSlice", "s4-more")] = k8s.endpoint_slice("s4", name="s4-more")
    assert run() == {"app4"}  # a new slice of its Service
    objs[("Policy", "p")] = k8s.policy("p", {"allow": {"or": [{"reject": True}]}}, rv="2")
    assert run() == {"app3"}
    objs[("Service", "none")] = k8s.service("none")  # the missing Service appears
    assert run() == {"broken"}
    objs[("Secret", "unrelated")] = k8s.secret("unrelated", {"k": "v"})
    objs[("Service", "unused")] = k8s.service("unused")
    assert run() == set()
    objs[("Ingress", "app5")] = k8s.ingress(
        "app5", host="app5.example.com", paths=[k8s.path("/v2", service="s5")], rv="2"
    )
    assert run() == {"app5"}
    result = translator.translate(k8s.snapshot(*objs.values()))
    fresh = translate.translate(k8s.snapshot(*objs.values()))
    assert table(result).checksum == table(fresh).checksum  # memory never changes the answer
