"""The sidecar example in ``manifests/examples/sidecar/`` hangs together: the sidecar's flags
parse as ``vallum verify`` reads them, the Service reaches the sidecar (never the app), the
sidecar forwards to the port the app listens on (loopback only), the audience and JWKS host are
the Ingress's host, and Vallum's controller accepts the Ingress's annotations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from vallum.cli import main as cli_main
from vallum.cli import verify as verify_cli
from vallum.operator import annotations

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "sidecar"


def objects() -> dict[str, dict[str, Any]]:
    listed = yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())["resources"]
    found: dict[str, dict[str, Any]] = {}
    for name in listed:
        for document in yaml.safe_load_all((EXAMPLE / name).read_text()):
            found[document["kind"]] = document
    return found


def test_the_sidecar_example_is_consistent() -> None:
    found = objects()
    assert set(found) == {"Namespace", "Deployment", "Service", "Ingress", "NetworkPolicy"}
    pod = found["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    sidecar, app = containers["vallum-verify"], containers["app"]

    assert sidecar["command"] == ["vallum", "verify"]
    args = cli_main.build_parser().parse_args(["verify", *sidecar["args"]])
    host, port = verify_cli.parse_listen(args.listen)
    assert host == "0.0.0.0"

    # The Service's target is the sidecar's port, by name and number.
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    target = found["Service"]["spec"]["ports"][0]["targetPort"]
    assert ports[target] == port
    assert "ports" not in app  # the app exposes nothing

    # The app listens on loopback, on the port the sidecar forwards to.
    listen = next(a for a in app["args"] if a.startswith("-listen="))
    upstream = URL(args.upstream)
    assert listen == f"-listen=127.0.0.1:{upstream.port}" and upstream.host == "127.0.0.1"

    ingress = found["Ingress"]
    [rule] = ingress["spec"]["rules"]
    assert ingress["spec"]["ingressClassName"] == "vallum"
    assert args.audience == rule["host"] == URL(args.jwks_url).host
    assert URL(args.jwks_url).path == "/.well-known/vallum/jwks.json"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == found["Service"]["metadata"]["name"]
    read = annotations.read(ingress["metadata"]["annotations"])
    assert read.problems == ()

    policy = found["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["ports"][0]["port"] == target
