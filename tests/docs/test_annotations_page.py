"""docs/annotations.md names every annotation the controller accepts, refuses as unsupported
and refuses as never an annotation -- and no other -- so the page cannot drift from
``vallum.operator.annotations``; its value forms are the code's (text options as written), every
example is accepted under both prefixes, and every problem it quotes is the code's message."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.docs import pages
from tests.operator import objects as k8s
from vallum.operator import annotations as ingress_annotations
from vallum.operator import ingress_routes, translate

PAGE = pages.read("annotations.md")
SECTIONS = pages.sections(PAGE)
PREFIXES = (ingress_annotations.VALLUM_PREFIX, ingress_annotations.POMERIUM_PREFIX)


def rows(section: str) -> dict[str, list[str]]:
    """First-column name -> the row, of the tables in ``section``."""
    out: dict[str, list[str]] = {}
    for row in pages.table_rows(SECTIONS[section]):
        (name,) = pages.code_names(row[0])
        assert name not in out, f"{name} twice in {section}"
        out[name] = row
    return out


OPTIONS = rows("Route options")
SWITCHES = rows("Ingress switches")
SECRETS = rows("Secrets")
OWN = rows("Vallum's own")
UNSUPPORTED = rows("Pomerium annotations Vallum does not support")
NEVER = rows("Never annotations")


def test_the_route_options_are_the_ones_annotations_accept() -> None:
    assert set(OPTIONS) == set(ingress_annotations.OPTION_READERS)


def test_the_switches_secrets_and_own_annotations_are_the_codes() -> None:
    assert set(SWITCHES) == {*ingress_annotations.FLAGS, ingress_routes.EMPTY_HOST}
    assert set(SECRETS) == set(ingress_annotations.SECRET_REFS)
    assert set(OWN) == {ingress_annotations.POLICY_REF}


def test_the_unsupported_pomerium_annotations_are_the_codes() -> None:
    assert set(UNSUPPORTED) == set(ingress_annotations.POMERIUM_UNSUPPORTED)
    for name in UNSUPPORTED:
        got = ingress_annotations.read({ingress_annotations.POMERIUM_PREFIX + name: "true"})
        assert got.problems == (
            f"{ingress_annotations.POMERIUM_PREFIX}{name}: a Pomerium option Vallum does not "
            "support",
        )
        assert UNSUPPORTED[name][1], f"{name}: say why"


def test_the_never_annotations_are_the_codes() -> None:
    assert set(NEVER) == ingress_annotations.RULE_KEYS | ingress_annotations.FILE_KEYS
    for name in NEVER:
        for prefix in PREFIXES:
            assert ingress_annotations.read({prefix + name: "x"}).problems, prefix + name


def test_no_annotation_is_listed_twice_across_the_sections() -> None:
    listed = [*OPTIONS, *SWITCHES, *SECRETS, *OWN, *UNSUPPORTED, *NEVER]
    assert len(listed) == len(set(listed))


def test_text_options_are_the_ones_the_page_says_are_taken_as_written() -> None:
    as_written = {name for name, row in OPTIONS.items() if row[1] == "text, as written"}
    assert as_written == ingress_annotations.TEXT_OPTIONS
    listed = SECTIONS["Value forms"].split("**Text options are taken as written.**")[1]
    listed = listed.split("are not")[0]
    assert set(pages.code_names(listed)) == ingress_annotations.TEXT_OPTIONS


PAIRS = {
    "regex_rewrite_pattern": "regex_rewrite_substitution",
    "regex_rewrite_substitution": "regex_rewrite_pattern",
}


def example(row: list[str]) -> str | None:
    names = pages.code_names(row[2])
    return names[0] if names else None


EXAMPLES = [(name, row) for table in (OPTIONS, SWITCHES, SECRETS) for name, row in table.items()]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("name", "row"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_every_example_is_accepted(prefix: str, name: str, row: list[str]) -> None:
    value = example(row)
    if value is None:
        assert "PEM" in row[3], f"{name}: only PEM options may go without an example"
        return
    given = {prefix + name: value}
    if name in PAIRS:
        pair = PAIRS[name]
        given[prefix + pair] = example(OPTIONS[pair]) or ""
    if name == ingress_routes.EMPTY_HOST:
        ingress = k8s.ingress(host=None, annotations=given)
        result = translate.translate(k8s.snapshot(k8s.service(), k8s.endpoint_slice(), ingress))
        assert result.ingresses[("default", "app")].problems == ()
        assert result.table is not None
        assert [r.host for r in result.table.settings.routes] == ["*"]
        return
    got = ingress_annotations.read(given)
    assert got.problems == ()
    if name in ingress_annotations.FLAGS:
        assert getattr(got, name) is True
    elif name in ingress_annotations.SECRET_REFS:
        assert getattr(got.secrets, name.removesuffix("_secret")) == value
    else:
        assert name in got.options


def test_the_policy_ref_example_names_policies() -> None:
    value = example(OWN[ingress_annotations.POLICY_REF])
    assert value is not None
    got = ingress_annotations.read({ingress_annotations.VALLUM_PREFIX + "policy-ref": value})
    assert got.problems == () and got.policy_refs == tuple(value.split(","))
    refused = ingress_annotations.read({ingress_annotations.POMERIUM_PREFIX + "policy-ref": value})
    assert refused.problems


def test_the_block_policy_example_is_accepted() -> None:
    text = SECTIONS["Route options"].split("```yaml\n")[1].split("```")[0]
    annotations: dict[str, Any] = yaml.safe_load(text)["metadata"]["annotations"]
    got = ingress_annotations.read(annotations)
    assert got.problems == () and "policy" in got.options


def test_the_quoted_problems_are_the_codes_messages() -> None:
    quoted = pages.table_rows(SECTIONS["Problems"])
    assert len(quoted) >= 8
    for given, problem in quoted:
        annotations: dict[str, str] = {}
        for written in pages.code_names(given):
            key, colon, value = written.partition(": ")
            if colon:
                annotations[key] = value.strip('"')
        if "with `allowed_users`" in given:
            (key,) = annotations
            annotations[key.replace("allow_public_unauthenticated_access", "allowed_users")] = (
                "a@example.com"
            )
        (expected,) = pages.code_names(problem)
        assert ingress_annotations.read(annotations).problems == (expected,)


def test_the_value_form_deviations_the_page_states() -> None:
    pomerium = ingress_annotations.POMERIUM_PREFIX
    timeout = ingress_annotations.read({pomerium + "timeout": "30"})
    assert timeout.problems == () and timeout.options["timeout"] == 30
    for on in ("true", "True", "yes", "on"):
        assert ingress_annotations.read({pomerium + "secure_upstream": on}).secure_upstream
    for off in ("false", "no", "off"):
        got = ingress_annotations.read({pomerium + "secure_upstream": off})
        assert got.problems == () and not got.secure_upstream
    for bad in ("1", "enabled"):
        assert ingress_annotations.read({pomerium + "secure_upstream": bad}).problems
    written = "[a-z]+/(.*)"  # the page's example: not YAML (a value starting with "[")
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(written)
    regex = ingress_annotations.read(
        {
            pomerium + "regex_rewrite_pattern": written,
            pomerium + "regex_rewrite_substitution": "/x",
        }
    )
    assert regex.problems == () and regex.options["regex_rewrite_pattern"] == written
    assert written in SECTIONS["Value forms"]
    for value, problems in (("TRUE", False), ("yes", True)):
        ingress = k8s.ingress(host=None, annotations={pomerium + ingress_routes.EMPTY_HOST: value})
        result = translate.translate(k8s.snapshot(k8s.service(), k8s.endpoint_slice(), ingress))
        assert bool(result.ingresses[("default", "app")].problems) is problems


def _routes(annotations: dict[str, str], *objs: dict[str, Any], regex: str = "/v1") -> list[Any]:
    ingress = k8s.ingress(
        annotations=annotations,
        paths=[
            k8s.path("/exact", "Exact"),
            k8s.path("/prefix", "Prefix"),
            k8s.path(regex, "ImplementationSpecific"),
        ],
    )
    objects = objs or (k8s.service(), k8s.endpoint_slice())
    result = translate.translate(k8s.snapshot(*objects, ingress))
    assert result.table is not None and result.ingresses[("default", "app")].problems == ()
    return list(result.table.settings.routes)


def test_path_regex_changes_only_implementation_specific_paths() -> None:
    routes = _routes({"ingress.pomerium.io/path_regex": "true"}, regex="^/v[0-9]+$")
    assert [(r.path_match, r.path_value) for r in routes] == [
        ("exact", "/exact"),
        ("prefix", "/prefix"),
        ("regex", "^/v[0-9]+$"),
    ]
    plain = _routes({})
    assert [r.path_match for r in plain] == ["exact", "prefix", "prefix"]


def test_secure_upstream_checks_the_service_name_on_pod_addresses_only() -> None:
    secure = {"ingress.pomerium.io/secure_upstream": "true"}
    (pods, *_) = _routes(secure)
    assert pods.to[0].url.startswith("https://10.0.0.1:")
    assert pods.tls_server_name == "app.default.svc.cluster.local"
    named = _routes({**secure, "ingress.pomerium.io/tls_server_name": "app.internal"})[0]
    assert named.tls_server_name == "app.internal"
    proxied = _routes({**secure, "ingress.pomerium.io/service_proxy_upstream": "true"})[0]
    assert proxied.to[0].url == "https://app.default.svc.cluster.local:80"
    assert proxied.tls_server_name is None
    external = k8s.service(type="ExternalName", externalName="wiki.example.org")
    (ext, *_) = _routes(secure, external)
    assert ext.to[0].url == "https://wiki.example.org:80" and ext.tls_server_name is None


def test_the_quoted_secret_problem_is_the_codes() -> None:
    text = SECTIONS["Secrets"].split("named with the annotation, the Secret and the key, e.g.")[1]
    (quoted, *_) = pages.code_names(text)
    ingress = k8s.ingress(
        "wiki", "docs", annotations={"ingress.pomerium.io/tls_client_secret": "wiki-client-cert"}
    )
    secret = k8s.secret("wiki-client-cert", {"tls.crt": "nope", "tls.key": "nope"}, "docs")
    backend = (k8s.service(namespace="docs"), k8s.endpoint_slice(namespace="docs"))
    result = translate.translate(k8s.snapshot(*backend, ingress, secret))
    assert quoted in result.ingresses[("docs", "wiki")].problems
