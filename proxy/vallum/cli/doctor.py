"""``vallum doctor``: check a cluster's Vallum the way a newcomer needs it checked.

Why: an install that does nothing (no IngressClass for the controller, a Secret without its
key, CRDs of another version) otherwise shows only as routes that never appear. This command
reads the cluster (:mod:`vallum.operator.doctor_gather`), runs the pure checks
(:mod:`vallum.operator.doctor`) and prints, for each, ok/warn/fail, what is wrong and the
command that fixes it.

Exit statuses: 0 every check passed (warnings included), 1 a check failed or the cluster could
not be read, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vallum.operator import doctor, doctor_gather, leadership

DEFAULT_CONTROLLER_NAME = "vallum.dev/ingress-controller"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check a cluster's Vallum install and say how to fix what is wrong",
        description=(
            "Check the CRDs, the IngressClass, the Settings object, the Secrets and Policies "
            "named, the identity provider's discovery document, certificate expiry, the Lease "
            "and the controller's pods. Prints each check with a fix; exits 1 when one fails."
        ),
    )
    parser.add_argument("--kubeconfig", metavar="FILE",
                        help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    parser.add_argument("--namespace", default="vallum", metavar="NS",
                        help="namespace of the controller's Deployment (default vallum)")
    parser.add_argument("--settings", default="global", metavar="NAME",
                        help="the Settings object the controller reads (default global)")
    parser.add_argument("--controller-name", default=DEFAULT_CONTROLLER_NAME, metavar="NAME",
                        help="the IngressClass spec.controller "
                             f"(default {DEFAULT_CONTROLLER_NAME})")
    parser.add_argument("--lease-namespace", metavar="NS",
                        help="namespace of the controller's Lease (default: --namespace)")
    parser.add_argument("--lease-name", metavar="NAME",
                        help="the Lease's name (default: derived from --controller-name)")
    parser.add_argument("--crds", metavar="DIR",
                        help="the CRDs to compare with (default: those shipped with this vallum)")
    parser.add_argument("--idp-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="timeout of the discovery document's fetch (default 5)")
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text (default) or json")
    parser.set_defaults(func=run)


def options(args: argparse.Namespace) -> doctor.Options:
    return doctor.Options(
        controller_name=args.controller_name,
        settings_name=args.settings,
        namespace=args.namespace,
        lease_namespace=args.lease_namespace or args.namespace,
        lease_name=args.lease_name or leadership.lease_name(args.controller_name),
    )


def run(args: argparse.Namespace) -> int:
    try:
        crds = doctor_gather.load_crds(doctor_gather.crd_directory(args.crds))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"vallum doctor: cannot read the CRDs to compare with: {exc}", file=sys.stderr)
        return 1
    from vallum.operator import handlers  # the kubernetes client: loaded by this command only

    try:
        api = handlers.api_client(handlers.load_client_config(args.kubeconfig))
    except Exception as exc:  # the client's ConfigException, a missing or unreadable file
        print(f"vallum doctor: no Kubernetes credentials: {exc}", file=sys.stderr)
        return 1
    try:
        facts = doctor_gather.gather(api, options(args), crds, idp_timeout=args.idp_timeout)
    except Exception as exc:  # unreachable API server, 403: one line, never a traceback
        print(f"vallum doctor: cannot read the cluster: {exc}", file=sys.stderr)
        return 1
    checks = doctor.run(facts)
    render = doctor.render_json if args.output == "json" else doctor.render_text
    sys.stdout.write(render(checks))
    return doctor.exit_status(checks)
