"""The guides docs/quickstart-kind.md and docs/cert-manager.md, kept honest: every YAML block
parses; their Settings, Policies and Ingresses (with the Services and Secrets they need stubbed
as plain objects) go through the controller's own Settings reader, translation and policy
evaluation to what the pages say; every ``vallum …`` command parses with the real argument
parser; every ``--set`` of the chart names a key of charts/vallum/values.yaml. So the guides
cannot drift from the code."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import re
import secrets
import shlex
from typing import Any

import pytest
import yaml

from tests.docs import pages
from tests.operator import objects as k8s
from tests.support.certs import TestCA
from vallum.cli import main as cli
from vallum.core import config, policy
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo
from vallum.operator import settings_crd, translate
from vallum.proxy.identity import context

GUIDES = ["quickstart-kind.md", "cert-manager.md"]
QUICKSTART = pages.read("quickstart-kind.md")
CERT_MANAGER = pages.read("cert-manager.md")
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def fenced(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def documents(text: str) -> list[dict[str, Any]]:
    return [d for block in fenced(text, "yaml") for d in yaml.safe_load_all(block) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def commands(text: str) -> list[str]:
    """The shell blocks' lines, continuation lines joined."""
    return [
        line.strip()
        for block in fenced(text, "sh")
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]


def subcommands() -> set[str]:
    (action,) = [
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    return set(action.choices)


def vallum_invocations(text: str) -> list[list[str]]:
    """The arguments of every ``vallum <subcommand> …`` in the shell blocks, also run as
    ``docker run --entrypoint vallum IMAGE <subcommand> …``; up to a redirection, pipe or
    closing parenthesis."""
    names = subcommands()
    found = []
    for line in commands(text):
        for match in re.finditer(r"(--entrypoint\s+)?(?<![\w/-])vallum\s+([^>|;)]*)", line):
            rest = match.group(2).split(None, 1)[1:] if match.group(1) else [match.group(2)]
            if rest and rest[0].split() and rest[0].split()[0] in names:
                found.append(shlex.split(rest[0]))
    return found


@pytest.mark.parametrize("name", GUIDES)
def test_every_yaml_block_parses_into_objects_with_a_kind(name: str) -> None:
    blocks = fenced(pages.read(name), "yaml")
    assert blocks
    for block in blocks:
        docs = [d for d in yaml.safe_load_all(block) if d is not None]
        assert docs, block
        assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs), block


@pytest.mark.parametrize("name", GUIDES)
def test_every_vallum_command_parses_with_the_real_parser(name: str) -> None:
    parser = cli.build_parser()
    for words in vallum_invocations(pages.read(name)):
        try:
            parser.parse_args(words)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"{name}: vallum {shlex.join(words)} does not parse ({exc})")


def test_the_quickstart_runs_the_vallum_commands_it_describes() -> None:
    assert [w[:2] for w in vallum_invocations(QUICKSTART)] == [
        ["keys", "generate"],
        ["doctor", "--kubeconfig"],
    ]


def test_the_quickstart_sets_only_chart_values_that_exist() -> None:
    values = yaml.safe_load((pages.ROOT / "charts/vallum/values.yaml").read_text())
    sets = [s for line in commands(QUICKSTART) for s in re.findall(r"--set (\S+)=", line)]
    assert "image.pullPolicy" in sets
    for key in sets:
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: no such value"
            node = node[part]


def test_the_files_and_names_the_quickstart_uses_exist() -> None:
    assert (pages.ROOT / "e2e/kind/cluster.yaml").is_file()
    ingress_class = yaml.safe_load((pages.ROOT / "manifests/ingressclass.yaml").read_text())
    assert ingress_class["metadata"]["name"] == "vallum"
    services = list(yaml.safe_load_all((pages.ROOT / "manifests/services.yaml").read_text()))
    assert "vallum-proxy" in {s["metadata"]["name"] for s in services if s}
    assert "service/vallum-proxy 8443:443" in QUICKSTART


# --- the objects, through the controller's code ---------------------------------------------


def bootstrap_secrets(test_ca: TestCA) -> list[dict[str, Any]]:
    """The two Secrets the guides create: ``vallum keys generate``'s kind of key, 32 bytes."""
    bootstrap = k8s.secret("bootstrap", {"signing_key": test_ca.issue("s").key_pem}, "vallum")
    bootstrap["data"]["cookie_secret"] = base64.b64encode(secrets.token_bytes(32)).decode()
    idp = k8s.secret("idp", {"client_id": "client", "client_secret": "secret"}, "vallum")
    return [bootstrap, idp]


def slices_for(service: dict[str, Any]) -> dict[str, Any]:
    port = service["spec"]["ports"][0]
    number = port["targetPort"] if isinstance(port["targetPort"], int) else 8080
    return k8s.endpoint_slice(
        service["metadata"]["name"],
        service["metadata"]["namespace"],
        port_name=port.get("name"),
        port=number,
    )


def request(host: str) -> RequestInfo:
    return RequestInfo(method="GET", host=host, path="/", time=dt.datetime.now(dt.UTC))


def decide(route: config.Route, identity: Identity) -> policy.Decision:
    compiled = policy.compile_route_policy(route)
    assert compiled.error is None
    return policy.evaluate(compiled, request("app.localtest.me"), identity)


def test_the_quickstart_settings_read_without_problems(test_ca: TestCA) -> None:
    settings = one(documents(QUICKSTART), "Settings")
    found = {k8s_key(s): s for s in bootstrap_secrets(test_ca)}
    read = settings_crd.read(settings, found)
    assert read.problems == () and read.warnings == ()
    assert read.values["authenticate_service_url"] == "https://authenticate.localtest.me:8443"
    callback = context.AuthenticateService.parse(read.values["authenticate_service_url"]).callback
    assert f"\n{callback}\n" in QUICKSTART  # the redirect URI to register, as Vallum sends it


def k8s_key(obj: dict[str, Any]) -> tuple[str, str]:
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])


def test_the_quickstart_ingress_is_served_and_its_policy_says_why_it_refuses(
    test_ca: TestCA,
) -> None:
    docs = documents(QUICKSTART)
    service, ingress = one(docs, "Service"), one(docs, "Ingress")
    demo_policy = one(docs, "Policy")
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    service = {**service, "kind": "Service"}
    service["spec"] = {
        **service["spec"],
        "ports": [{**service["spec"]["ports"][0], "targetPort": 80}],
    }
    result = translate.translate(
        k8s.snapshot(
            *bootstrap_secrets(test_ca),
            service,
            slices_for(service),
            ingress,
            demo_policy,
            settings=one(docs, "Settings"),
        )
    )
    assert result.settings_problems == ()
    assert result.ingresses[("demo", "whoami")] == translate.IngressOutcome(problems=(), routes=1)
    assert result.policies == {("demo", "demo-users"): ()}
    assert result.table is not None
    (route,) = result.table.settings.routes
    assert decide(route, Identity("1", email="alice@example.com")).allowed
    refused = decide(route, Identity("2", email="bob@example.com"))
    assert not refused.allowed
    codes = [reason.code for reason in refused.reasons]
    assert codes == ["email-unauthorized"] and f"`{codes[0]}`" in QUICKSTART


# --- cert-manager ---------------------------------------------------------------------------


def tls(name: str, namespace: str, leaf: Any, ca: str | None = None) -> dict[str, Any]:
    data = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}
    if ca is not None:
        data["ca.crt"] = ca
    return k8s.secret(name, data, namespace)


def test_the_acme_solver_uses_vallums_ingress_class() -> None:
    issuer = one(documents(CERT_MANAGER), "ClusterIssuer")
    (solver,) = issuer["spec"]["acme"]["solvers"]
    assert solver["http01"]["ingress"]["ingressClassName"] == "vallum"


def test_every_secret_vallum_reads_is_one_cert_manager_writes() -> None:
    docs = documents(CERT_MANAGER)
    written = {
        (d["metadata"]["namespace"], d["spec"]["secretName"])
        for d in docs
        if d["kind"] == "Certificate"
    }
    named: set[tuple[str, str]] = set()
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        ns, notes = ingress["metadata"]["namespace"], ingress["metadata"]["annotations"]
        if "cert-manager.io/cluster-issuer" in notes:  # ingress-shim writes spec.tls Secrets
            written |= {(ns, t["secretName"]) for t in ingress["spec"].get("tls", [])}
        for key in ("tls_client_secret", "tls_custom_ca_secret"):
            if f"ingress.pomerium.io/{key}" in notes:
                named.add((ns, notes[f"ingress.pomerium.io/{key}"]))
        named |= {(ns, t["secretName"]) for t in ingress["spec"].get("tls", [])}
    certificates = one(docs, "Settings")["spec"]["certificates"]
    named |= {tuple(ref.split("/")) for ref in certificates}  # type: ignore[misc]
    assert named and named <= written


def test_the_tls_ingress_and_the_settings_are_served_the_missing_secret_is_a_warning(
    test_ca: TestCA,
) -> None:
    docs = documents(CERT_MANAGER)
    settings, ingress = one(docs, "Settings"), one(docs, "Ingress", "wiki")
    wiki = k8s.service("wiki", "docs")
    objects = [
        *bootstrap_secrets(test_ca),
        wiki,
        slices_for(wiki),
        ingress,
        tls("wiki-tls", "docs", test_ca.issue("wiki.example.com")),
    ]
    result = translate.translate(k8s.snapshot(*objects, settings=settings))
    assert result.settings_problems == ()
    assert result.ingresses[("docs", "wiki")] == translate.IngressOutcome(problems=(), routes=1)
    (warning,) = result.warnings
    assert "vallum/authenticate-tls" in warning
    assert result.table is not None and len(result.table.settings.certificates) == 1
    issued = tls("authenticate-tls", "vallum", test_ca.issue("authenticate.example.com"))
    later = translate.translate(k8s.snapshot(*objects, issued, settings=settings))
    assert later.warnings == () and later.table is not None
    assert len(later.table.settings.certificates) == 2


def upstream_mtls(test_ca: TestCA, ingress: dict[str, Any]) -> tuple[config.Route, dict[str, Any]]:
    docs = documents(CERT_MANAGER)
    port = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]
    app = k8s.service(
        "app", "demo", ports=[{"name": "https", "port": port["number"], "targetPort": 8443}]
    )
    client = tls("vallum-client", "demo", test_ca.issue("vallum", client=True), test_ca.cert_pem)
    objects = [*bootstrap_secrets(test_ca), app, slices_for(app), ingress, client]
    result = translate.translate(k8s.snapshot(*objects, settings=one(docs, "Settings")))
    assert result.ingresses[("demo", "app")] == translate.IngressOutcome(problems=(), routes=1)
    assert result.table is not None
    (route,) = result.table.settings.routes
    return route, client


def test_the_upstream_mtls_annotations_do_what_the_page_says(test_ca: TestCA) -> None:
    ingress = one(documents(CERT_MANAGER), "Ingress", "app")
    route, client = upstream_mtls(test_ca, ingress)
    assert [u.url for u in route.to] == ["https://10.0.0.1:8443"]
    assert route.tls_client_cert_pem == base64.b64decode(client["data"]["tls.crt"]).decode()
    assert route.tls_client_key_pem == base64.b64decode(client["data"]["tls.key"]).decode()
    assert route.tls_custom_ca_pem == test_ca.cert_pem
    assert route.tls_server_name == "app.demo.svc"


def test_without_tls_server_name_the_service_dns_name_is_checked(test_ca: TestCA) -> None:
    ingress = one(documents(CERT_MANAGER), "Ingress", "app")
    notes = dict(ingress["metadata"]["annotations"])
    del notes["ingress.pomerium.io/tls_server_name"]
    route, _ = upstream_mtls(
        test_ca, {**ingress, "metadata": {**ingress["metadata"], "annotations": notes}}
    )
    assert route.tls_server_name == "app.demo.svc.cluster.local"
    assert f"`{route.tls_server_name}`" in CERT_MANAGER
    server = one(documents(CERT_MANAGER), "Certificate", "app-server")
    assert {"app.demo.svc.cluster.local", "app.demo.svc"} <= set(server["spec"]["dnsNames"])


def created_secrets(text: str) -> dict[tuple[str, str], set[str]]:
    """``kubectl -n NS create secret generic NAME --from-…=KEY=…`` -> the keys by Secret."""
    out = {}
    for line in commands(text):
        match = re.match(r"kubectl -n (\S+) create secret generic (\S+)", line)
        if match:
            keys = re.findall(r"--from-(?:literal|file)=([\w.]+)=", line)
            out[(match.group(1), match.group(2))] = set(keys)
    return out


def test_the_secrets_the_quickstart_creates_are_those_its_settings_need(test_ca: TestCA) -> None:
    created = created_secrets(QUICKSTART)
    stubs = {k8s_key(s): s for s in bootstrap_secrets(test_ca)}
    assert {key: set(s["data"]) for key, s in stubs.items()} == created
    settings = one(documents(QUICKSTART), "Settings")
    assert settings_crd.read(settings, stubs).secrets_used == set(created)
    for key in created:  # each one is needed: without it the Settings are refused
        fewer = {k: v for k, v in stubs.items() if k != key}
        assert settings_crd.read(settings, fewer).problems
