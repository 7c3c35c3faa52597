"""Ingress annotations -> route options: the same route as the same options in a routes file,
through both prefixes and every Pomerium value form, and a problem (never an exception) for
every kind of bad annotation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.support.certs import TestCA
from vallum.core import config, configfile
from vallum.core.configfile import nodes, routes
from vallum.operator import annotations as ingress_annotations

V = ingress_annotations.VALLUM_PREFIX
P = ingress_annotations.POMERIUM_PREFIX
PREFIXES = pytest.mark.parametrize("prefix", [V, P], ids=["vallum", "pomerium"])

CA = TestCA.create("Annotations Test CA")
CLIENT = CA.issue("client", client=True)
FROM, TO = "https://app.example.test", "http://127.0.0.1:8080"

POLICY_YAML = (
    "allow:\n  or:\n    - email:\n        is: a@x.com\n    - groups:\n        has: admins\n"
)
POLICY = {"allow": {"or": [{"email": {"is": "a@x.com"}}, {"groups": {"has": "admins"}}]}}

# (id, {option: annotation value}, {option: the same option as a routes file holds it})
CASES: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("name", {"name": "app"}, {"name": "app"}),
    ("description", {"description": "Team: blue"}, {"description": "Team: blue"}),
    ("prefix_rewrite", {"prefix_rewrite": "/v2/"}, {"prefix_rewrite": "/v2/"}),
    (
        "regex_rewrite",
        {"regex_rewrite_pattern": "^/[a-z]+/(.*)$", "regex_rewrite_substitution": r"/\1"},
        {"regex_rewrite_pattern": "^/[a-z]+/(.*)$", "regex_rewrite_substitution": r"/\1"},
    ),
    ("host_rewrite", {"host_rewrite": "internal.test"}, {"host_rewrite": "internal.test"}),
    ("preserve_host_header", {"preserve_host_header": "true"}, {"preserve_host_header": True}),
    (
        "set_request_headers-json",
        {"set_request_headers": '{"X-Team": "blue", "X-N": 5}'},
        {"set_request_headers": {"X-Team": "blue", "X-N": 5}},
    ),
    (
        "set_request_headers-yaml",
        {"set_request_headers": "X-Team: blue\nX-Env: prod\n"},
        {"set_request_headers": {"X-Team": "blue", "X-Env": "prod"}},
    ),
    (
        "remove_request_headers-json",
        {"remove_request_headers": '["X-A", "X-B"]'},
        {"remove_request_headers": ["X-A", "X-B"]},
    ),
    (
        "remove_request_headers-commas",
        {"remove_request_headers": "X-A, X-B"},
        {"remove_request_headers": "X-A, X-B"},
    ),
    (
        "set_response_headers",
        {"set_response_headers": '{"X-Frame-Options": "DENY"}'},
        {"set_response_headers": {"X-Frame-Options": "DENY"}},
    ),
    ("timeout", {"timeout": "1m30s"}, {"timeout": "1m30s"}),
    ("timeout-seconds", {"timeout": "10"}, {"timeout": 10}),
    ("idle_timeout", {"idle_timeout": "0"}, {"idle_timeout": "0"}),
    ("allow_websockets", {"allow_websockets": "true"}, {"allow_websockets": True}),
    ("tls_skip_verify", {"tls_skip_verify": "true"}, {"tls_skip_verify": True}),
    ("tls_server_name", {"tls_server_name": "up.internal"}, {"tls_server_name": "up.internal"}),
    (
        "tls_upstream_server_name",
        {"tls_upstream_server_name": "up.internal"},
        {"tls_upstream_server_name": "up.internal"},
    ),
    ("tls_custom_ca", {"tls_custom_ca": CA.cert_pem}, {"tls_custom_ca": CA.cert_pem}),
    (
        "tls_client_cert",
        {"tls_client_cert": CLIENT.cert_pem, "tls_client_key": CLIENT.key_pem},
        {"tls_client_cert": CLIENT.cert_pem, "tls_client_key": CLIENT.key_pem},
    ),
    ("pass_identity_headers", {"pass_identity_headers": "false"}, {"pass_identity_headers": False}),
    (
        "allow_public_unauthenticated_access",
        {"allow_public_unauthenticated_access": "true"},
        {"allow_public_unauthenticated_access": True},
    ),
    (
        "allow_any_authenticated_user",
        {"allow_any_authenticated_user": "true"},
        {"allow_any_authenticated_user": True},
    ),
    ("allowed_users-json", {"allowed_users": '["a@x.com"]'}, {"allowed_users": ["a@x.com"]}),
    (
        "allowed_users-yaml",
        {"allowed_users": "- a@x.com\n- b@x.com\n"},
        {"allowed_users": ["a@x.com", "b@x.com"]},
    ),
    (
        "allowed_users-commas",
        {"allowed_users": "a@x.com,b@x.com"},
        {"allowed_users": "a@x.com,b@x.com"},
    ),
    ("allowed_domains", {"allowed_domains": '["x.com"]'}, {"allowed_domains": ["x.com"]}),
    (
        "allowed_idp_claims",
        {"allowed_idp_claims": '{"groups": ["admins", "ops"]}'},
        {"allowed_idp_claims": {"groups": ["admins", "ops"]}},
    ),
    ("policy-yaml", {"policy": POLICY_YAML}, {"policy": POLICY}),
    ("policy-json", {"policy": json.dumps(POLICY)}, {"policy": POLICY}),
]


def route_from_annotations(got: ingress_annotations.IngressAnnotations) -> config.Route:
    ctx = nodes.Context("Ingress default/app", "")
    node = ingress_annotations.route_node({"from": FROM, "to": TO}, got.options)
    route = routes.read_route(ctx, node, "", 30.0)
    assert ctx.problems == [] and isinstance(route, config.Route)
    return dataclasses.replace(route, source="")


def route_from_file(options: dict[str, Any]) -> config.Route:
    text = json.dumps({"routes": [{"from": FROM, "to": TO, **options}]})  # JSON is YAML
    return dataclasses.replace(configfile.loads(text).routes[0], source="")


def test_the_cases_cover_every_option_an_annotation_may_set() -> None:
    covered = {option for _, given, _ in CASES for option in given}
    assert covered == set(ingress_annotations.OPTION_READERS)
    assert set(ingress_annotations.OPTION_READERS) == (
        set(configfile.ROUTE_KEYS) - ingress_annotations.RULE_KEYS - ingress_annotations.FILE_KEYS
    )


@PREFIXES
@pytest.mark.parametrize(("given", "in_file"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_annotation_makes_the_route_the_same_option_in_a_routes_file_makes(
    prefix: str, given: dict[str, str], in_file: dict[str, Any]
) -> None:
    got = ingress_annotations.read({prefix + k: v for k, v in given.items()})
    assert got.problems == ()
    assert set(got.options) == set(given)
    assert dict(got.sources) == {k: prefix + k for k in given}
    route = route_from_annotations(got)
    assert route == route_from_file(in_file)
    if "description" not in given:  # a label only, not on the Route
        assert route != route_from_file({})  # the option changed something


def test_options_hold_the_values_as_a_routes_file_does() -> None:
    got = ingress_annotations.read(
        {
            P + "set_request_headers": '{"X-Team": "blue"}',
            P + "timeout": "30s",
            P + "allow_websockets": "true",
            P + "policy": POLICY_YAML,
            V + "regex_rewrite_pattern": "^/[a-z]+$",  # as written: not a YAML list
            V + "regex_rewrite_substitution": "/x",
        }
    )
    assert dict(got.options) == {
        "allow_websockets": True,
        "policy": POLICY,
        "regex_rewrite_pattern": "^/[a-z]+$",
        "regex_rewrite_substitution": "/x",
        "set_request_headers": {"X-Team": "blue"},
        "timeout": "30s",
    }
    assert list(got.options) == sorted(got.options)


def test_other_prefixes_are_ignored() -> None:
    got = ingress_annotations.read(
        {
            "nginx.ingress.kubernetes.io/rewrite-target": "/",
            "kubernetes.io/ingress.class": "vallum",
            "ingress.vallum.dev.example/timeout": "x",
            "cert-manager.io/cluster-issuer": "letsencrypt",
        }
    )
    assert got == ingress_annotations.IngressAnnotations()


@PREFIXES
@pytest.mark.parametrize("flag", ingress_annotations.FLAGS)
def test_pomerium_flags(prefix: str, flag: str) -> None:
    assert getattr(ingress_annotations.read({}), flag) is False
    got = ingress_annotations.read({prefix + flag: "true"})
    assert got.problems == () and getattr(got, flag) is True and got.options == {}
    assert getattr(ingress_annotations.read({prefix + flag: "false"}), flag) is False
    bad = ingress_annotations.read({prefix + flag: "sometimes"})
    assert getattr(bad, flag) is False
    assert bad.problems == (f"{prefix}{flag}: expected true or false, got 'sometimes'",)


@PREFIXES
def test_secret_references_are_returned_as_names_not_resolved(prefix: str) -> None:
    got = ingress_annotations.read(
        {
            prefix + "tls_client_secret": "upstream-client",
            prefix + "tls_custom_ca_secret": "upstream-ca",
            prefix + "set_request_headers_secret": "headers",
            prefix + "set_response_headers_secret": " more.headers ",
        }
    )
    assert got.problems == () and got.options == {}
    assert got.secrets == ingress_annotations.SecretRefs(
        tls_client="upstream-client",
        tls_custom_ca="upstream-ca",
        set_request_headers="headers",
        set_response_headers="more.headers",
    )


@pytest.mark.parametrize("value", ["", "Upper", "ns/name", "a_b", "x" * 254])
def test_a_secret_reference_must_be_a_secret_name(value: str) -> None:
    got = ingress_annotations.read({P + "tls_client_secret": value})
    assert got.secrets.tls_client is None
    assert got.problems == (
        f"{P}tls_client_secret: expected the name of a Secret, got {nodes.shown(value)}",
    )


def test_policy_refs() -> None:
    got = ingress_annotations.read({V + "policy-ref": "admins, ops,admins"})
    assert got.policy_refs == ("admins", "ops") and got.problems == ()
    assert ingress_annotations.read({V + "policy-ref": "one"}).policy_refs == ("one",)


@pytest.mark.parametrize("value", ["", "a,,b", "Admins", "ns/admins"])
def test_bad_policy_refs(value: str) -> None:
    got = ingress_annotations.read({V + "policy-ref": value})
    assert got.policy_refs == ()
    assert len(got.problems) == 1
    assert got.problems[0].startswith(f"{V}policy-ref: expected Policy names separated by commas")


def test_policy_ref_is_vallums_own() -> None:
    got = ingress_annotations.read({P + "policy-ref": "admins"})
    assert got.policy_refs == ()
    assert got.problems == (f"{P}policy-ref: Vallum's own annotation: use {V}policy-ref",)


@pytest.mark.parametrize(
    ("annotation", "value", "problem"),
    [
        (P + "timeout", "abc", 'expected a duration like "30s" or "1m30s", got \'abc\''),
        (V + "timeout", "-5s", "expected a duration"),
        (P + "idle_timeout", "", "expected a duration"),
        (P + "allow_websockets", "maybe", "expected true or false, got 'maybe'"),
        (V + "set_request_headers", '["X-Team"]', "expected a mapping of strings, got a list"),
        (P + "set_request_headers", '{"X-Team": {"a": 1}}', "X-Team: expected a string"),
        (P + "set_request_headers", '{"X-Team": "blue"', "not valid YAML"),
        (P + "allowed_users", '["a@x.com", ["b"]]', "[1]: expected a string, got a list"),
        (P + "allowed_idp_claims", '["groups"]', "expected a mapping of claim: values"),
        (P + "policy", "allow: [", "not valid YAML"),
        (P + "policy", '{"allow": {"or": [{"emial": {"is": "x"}}]}}', "allow.or[0].emial: unknown"),
        (V + "tls_custom_ca", "not a pem", "expected PEM"),
        (V + "regex_rewrite_pattern", "^/(.*)$", "needs regex_rewrite_substitution as well"),
        (V + "name", "x", None),
    ],
)
def test_a_bad_value_is_a_problem_naming_the_annotation(
    annotation: str, value: str, problem: str | None
) -> None:
    got = ingress_annotations.read({annotation: value})
    if problem is None:
        assert got.problems == ()
        return
    assert len(got.problems) == 1, got.problems
    assert got.problems[0].startswith(annotation + ": ")
    assert problem in got.problems[0]


def test_a_value_that_fails_its_reader_is_left_out() -> None:
    got = ingress_annotations.read({P + "timeout": "abc", P + "idle_timeout": "1m"})
    assert dict(got.options) == {"idle_timeout": "1m"}


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (
            {V + "allow_public_unauthenticated_access": "true", P + "allowed_users": "a@x.com"},
            f"{V}allow_public_unauthenticated_access: a public route cannot also restrict",
        ),
        (
            {
                V + "prefix_rewrite": "/a",
                V + "regex_rewrite_pattern": "^/(.*)$",
                V + "regex_rewrite_substitution": r"/\1",
            },
            f"{V}prefix_rewrite: set prefix_rewrite or regex_rewrite_pattern, not both",
        ),
        (
            {V + "tls_server_name": "a.internal", P + "tls_upstream_server_name": "b.internal"},
            f"{P}tls_upstream_server_name: differs from tls_server_name",
        ),
        (
            {V + "tls_client_cert": CLIENT.cert_pem},
            f"{V}tls_client_cert: tls_client_cert and tls_client_key go together",
        ),
        (
            {V + "regex_rewrite_pattern": "^/(.*)$", V + "regex_rewrite_substitution": r"/\2"},
            f"{V}regex_rewrite_substitution: ",
        ),
        (
            {V + "regex_rewrite_pattern": "(", V + "regex_rewrite_substitution": "/"},
            f"{V}regex_rewrite_pattern: invalid regular expression",
        ),
    ],
)
def test_checks_across_options_are_the_route_readers(given: dict[str, str], problem: str) -> None:
    got = ingress_annotations.read(given)
    assert len(got.problems) == 1, got.problems
    assert got.problems[0].startswith(problem)


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [
        (V + "timout", "unknown option (did you mean ingress.vallum.dev/timeout?)"),
        (P + "alowed_users", "unknown option (did you mean ingress.pomerium.io/allowed_users?)"),
        (P + "zzz", "unknown option"),
        (P + "allow_spdy", "a Pomerium option Vallum does not support"),
        (P + "tls_downstream_client_ca_secret", "a Pomerium option Vallum does not support"),
        (P + "allowed_groups", "a Pomerium option Vallum does not support"),
        (
            V + "tls_client_key_file",
            "annotations cannot name files; use tls_client_key or tls_client_secret",
        ),
        (
            P + "tls_custom_ca_file",
            "annotations cannot name files; use tls_custom_ca or tls_custom_ca_secret",
        ),
        (V + "prefix", "comes from the Ingress's rules, not from an annotation"),
        (P + "to", "comes from the Ingress's rules, not from an annotation"),
    ],
)
def test_unknown_and_refused_options(annotation: str, problem: str) -> None:
    got = ingress_annotations.read({annotation: "/etc/vallum/signing.key"})
    assert got.problems == (f"{annotation}: {problem}",)
    assert got.options == {}


@pytest.mark.parametrize("name", ["timeout", "allow_websockets", "path_regex", "tls_client_secret"])
def test_both_prefixes_setting_one_option_differently(name: str) -> None:
    values = {
        "timeout": ("30s", "1m"),
        "allow_websockets": ("true", "false"),
        "path_regex": ("true", "false"),
        "tls_client_secret": ("a", "b"),
    }[name]
    got = ingress_annotations.read({V + name: values[0], P + name: values[1]})
    assert got.problems == (f"{V}{name}: differs from {P}{name}; set one of them",)
    assert name not in got.options and name not in got.sources
    assert got.path_regex is False and got.secrets.tls_client is None


def test_both_prefixes_agreeing_is_no_problem() -> None:
    got = ingress_annotations.read(
        {
            V + "timeout": "60s",
            P + "timeout": "1m",
            V + "allow_websockets": "true",
            P + "allow_websockets": "True",
        }
    )
    assert got.problems == ()
    assert got.sources["timeout"] == P + "timeout"  # the first in sorted order names it
    assert route_from_annotations(got).timeout == 60.0


def test_both_prefixes_one_bad_drops_the_option() -> None:
    got = ingress_annotations.read({V + "timeout": "60s", P + "timeout": "soon"})
    assert "timeout" not in got.options
    assert got.problems == (f'{P}timeout: expected a duration like "30s" or "1m30s", got \'soon\'',)


def test_every_problem_at_once_never_an_exception() -> None:
    got = ingress_annotations.read(
        {
            P + "timeout": "abc",
            P + "allow_spdy": "true",
            V + "policy-ref": "Bad Name",
            V + "allow_websockets": "[",
            P + "secure_upstream": "yes please",
        }
    )
    assert [p.split(":")[0] for p in got.problems] == [
        f"{P}allow_spdy",
        f"{V}policy-ref",
        f"{V}allow_websockets",
        f"{P}secure_upstream",
        f"{P}timeout",
    ]


def test_hostile_values_are_bounded() -> None:
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    got = ingress_annotations.read({P + "policy": bomb, V + "name": "n" * 10_000})
    assert got.options.get("name") == "n" * 10_000
    assert len(got.problems) == 1 and got.problems[0].startswith(f"{P}policy: ")
    assert all(len(p) < 2000 for p in got.problems)


def test_deterministic() -> None:
    given = {
        P + "set_request_headers": '{"B": "2", "A": "1"}',
        V + "policy-ref": "z,a",
        P + "timeout": "abc",
        P + "zzz": "1",
        V + "allowed_users": "b@x.com,a@x.com",
    }
    first = ingress_annotations.read(given)
    again = ingress_annotations.read(dict(reversed(list(given.items()))))
    assert first == again
    assert list(first.options) == sorted(first.options)
    assert first.policy_refs == ("z", "a")  # the order written: the translator combines them


def test_a_value_that_is_not_a_string_is_a_problem() -> None:
    given: dict[str, Any] = {P + "timeout": 30, V + "name": None, "other/x": 1}
    got = ingress_annotations.read(given)
    assert got.problems == (
        f"{P}timeout: expected a string value, got 30",
        f"{V}name: expected a string value, got None",
    )
    assert got.options == {}


def test_problems_past_the_limit_are_counted() -> None:
    got = ingress_annotations.read({f"{V}unknown-{i:03}": "x" for i in range(150)})
    assert len(got.problems) == nodes.MAX_PROBLEMS + 1
    assert got.problems[-1] == "ingress annotations: … and 50 more problems"
