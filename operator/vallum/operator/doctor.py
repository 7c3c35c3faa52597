"""``vallum doctor``'s checks: what is wrong with a cluster's Vallum, and the command that fixes it.

Why a module of its own: a newcomer's first install fails in a handful of ways (CRDs missing or
from another version, no IngressClass for the controller, a Settings object that does not
read, a Secret or a key not there, an identity provider that cannot be reached, a certificate
about to expire, no replica holding the Lease), and each deserves one line saying what is wrong
and one saying what to run. The checks are pure: they take the objects as the API server
returns them (plain dicts, gathered by :mod:`vallum.operator.doctor_gather`) in a
:class:`Facts`, and the clock as a value, so each is tested without a cluster. Reading a
Settings object is :func:`vallum.operator.settings_crd.read`, the controller's own reader, so
doctor and the controller never disagree on what is valid.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from cryptography import x509

from vallum.operator import annotations as annotations_mod
from vallum.operator import settings_crd, translate

ObjectKey = tuple[str, str]
Status = Literal["ok", "warn", "fail"]

CRD_VERSION = "v1alpha1"
EXPIRY_WARNING = dt.timedelta(days=14)
"""A certificate expiring within this long is a warning."""
APP_LABEL = "app.kubernetes.io/name=vallum"
"""The label of the controller's Deployment (manifests/ and the Helm chart)."""
DEFAULT_LEASE_SECONDS = 10

SECRET_KEYS: Mapping[str, tuple[str, ...]] = {
    "spec.secrets": ("cookie_secret", "signing_key"),
    "spec.identityProvider.secret": ("client_id", "client_secret"),
    "spec.certificates": ("tls.crt", "tls.key"),
    "spec.caSecrets": ("ca.crt",),
    "spec.tls": ("tls.crt", "tls.key"),
    "tls_client_secret": ("tls.crt", "tls.key"),
    "tls_custom_ca_secret": ("ca.crt",),
    "set_request_headers_secret": (),
    "set_response_headers_secret": (),
}
"""The keys each kind of reference needs in its Secret."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome: ``details`` are the individual problems (one line each); ``fix``
    is the command (or step) that repairs the first of them."""

    name: str
    status: Status
    message: str
    fix: str = ""
    details: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"details": list(self.details)}


@dataclasses.dataclass(frozen=True)
class Options:
    """What the command line names (the controller's own defaults)."""

    controller_name: str = "vallum.dev/ingress-controller"
    settings_name: str = "global"
    namespace: str = "vallum"
    lease_namespace: str = "vallum"
    lease_name: str = ""


@dataclasses.dataclass(frozen=True)
class Ref:
    """A Secret some object names: where (``Ingress ns/app annotation tls_client_secret``),
    what kind of reference (a key of :data:`SECRET_KEYS`), and whether its absence is only a
    warning (a certificate cert-manager has not issued yet)."""

    where: str
    kind: str
    key: ObjectKey
    missing_ok: bool = False


@dataclasses.dataclass(frozen=True)
class Discovery:
    """The identity provider's discovery document as fetched: ``document`` or ``error``."""

    url: str
    document: Mapping[str, Any] | None = None
    error: str = ""


@dataclasses.dataclass
class Facts:
    """Everything the checks look at, as the API server returned it (None: not found)."""

    options: Options
    now: dt.datetime
    expected_crds: Mapping[str, Mapping[str, Any]]
    """CRD name -> the CRD shipped with this version (crds/*.yaml)."""
    crd_files: Mapping[str, str]
    """CRD name -> the file it came from (for the fix command)."""
    crds: Mapping[str, Mapping[str, Any] | None]
    ingress_classes: Sequence[Mapping[str, Any]] = ()
    settings: Mapping[str, Any] | None = None
    settings_served: bool = True
    """False when the API server does not serve Settings at all (the CRD is missing)."""
    ingresses: Sequence[Mapping[str, Any]] = ()
    secrets: Mapping[ObjectKey, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    policies: frozenset[ObjectKey] = frozenset()
    discovery: Discovery | None = None
    lease: Mapping[str, Any] | None = None
    deployments: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)
    """Check name -> why what it looks at could not be read (a 403, say): that check fails
    saying so, instead of the whole run stopping."""


# --- CRDs ----------------------------------------------------------------------------------------


def served_schema(crd: Mapping[str, Any], version: str = CRD_VERSION) -> Mapping[str, Any] | None:
    """The openAPIV3Schema of ``version`` if the CRD serves it, else None."""
    for entry in (crd.get("spec") or {}).get("versions") or ():
        if entry.get("name") == version and entry.get("served"):
            schema = (entry.get("schema") or {}).get("openAPIV3Schema")
            return schema if isinstance(schema, Mapping) else {}
    return None


def digest(schema: Any) -> str:
    """A short digest of a schema (canonical JSON), to show which one a cluster has."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def differences(want: Any, have: Any, path: str = "", limit: int = 5) -> list[str]:
    """Where ``have`` differs from ``want`` (JSON paths, at most ``limit``)."""
    out: list[str] = []
    _diff(want, have, path or "openAPIV3Schema", out, limit)
    return out


def _diff(want: Any, have: Any, path: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        for key in sorted(set(want) | set(have)):
            if len(out) >= limit:
                return
            if key not in have:
                out.append(f"{path}.{key}: missing in the cluster")
            elif key not in want:
                out.append(f"{path}.{key}: in the cluster only")
            else:
                _diff(want[key], have[key], f"{path}.{key}", out, limit)
    elif isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        for i, (a, b) in enumerate(zip(want, have, strict=True)):
            _diff(a, b, f"{path}[{i}]", out, limit)
    elif want != have:
        out.append(f"{path}: differs")


def check_crds(facts: Facts) -> Check:
    problems: list[str] = []
    fixes: list[str] = []
    for name, want in sorted(facts.expected_crds.items()):
        path = facts.crd_files.get(name, name)
        apply = f"kubectl apply --server-side --force-conflicts -f {path}"
        have = facts.crds.get(name)
        if have is None:
            problems.append(f"CRD {name} is not installed")
            fixes.append(apply)
            continue
        established = _condition(have, "Established")
        if established is not None and established.get("status") != "True":
            problems.append(f"CRD {name} is not Established: {established.get('reason', '')} "
                            f"{established.get('message', '')}".strip())
            fixes.append(f"kubectl describe crd {name}")
            continue
        schema = served_schema(have)
        if schema is None:
            problems.append(f"CRD {name} does not serve {CRD_VERSION}")
            fixes.append(apply)
            continue
        expected = served_schema(want) or {}
        if schema != expected:
            where = "; ".join(differences(expected, schema, limit=3))
            problems.append(
                f"CRD {name} is not this version's (schema {digest(schema)}, expected "
                f"{digest(expected)}): {where}"
            )
            fixes.append(apply)
    if problems:
        return Check("crds", "fail", f"{len(problems)} CRD problem(s)", fixes[0], tuple(problems))
    names = ", ".join(sorted(facts.expected_crds))
    return Check("crds", "ok", f"{names} installed, serving {CRD_VERSION}, schemas current")


# --- IngressClass --------------------------------------------------------------------------------


def our_classes(facts: Facts) -> dict[str, Mapping[str, Any]]:
    """IngressClasses by name whose spec.controller is ours."""
    return {
        str((cls.get("metadata") or {}).get("name")): cls
        for cls in facts.ingress_classes
        if (cls.get("spec") or {}).get("controller") == facts.options.controller_name
    }


def check_ingress_class(facts: Facts) -> Check:
    ours = our_classes(facts)
    controller = facts.options.controller_name
    if not ours:
        others = sorted(
            f"{(c.get('metadata') or {}).get('name')} ({(c.get('spec') or {}).get('controller')})"
            for c in facts.ingress_classes
        )
        seen = f"; the cluster has {', '.join(others)}" if others else ""
        return Check(
            "ingress-class", "fail",
            f"no IngressClass has spec.controller {controller}{seen}",
            "kubectl apply -f - <<EOF\napiVersion: networking.k8s.io/v1\nkind: IngressClass\n"
            f"metadata: {{name: vallum}}\nspec: {{controller: {controller}}}\nEOF",
        )
    default = [
        name for name, cls in ours.items()
        if ((cls.get("metadata") or {}).get("annotations") or {}).get(translate.IS_DEFAULT_CLASS)
        == "true"
    ]
    names = ", ".join(sorted(ours))
    if default:
        return Check("ingress-class", "ok", f"IngressClass {names} (default: {default[0]})")
    return Check(
        "ingress-class", "ok",
        f"IngressClass {names}; not the default class: Ingresses must name it in "
        "spec.ingressClassName",
    )


# --- Settings ------------------------------------------------------------------------------------

_SECRET_PRESENCE = re.compile(r": Secret \S+ (not found|has no key \S+)$")
"""Problems of ``settings_crd.read`` that the references check reports (not the spec's)."""


def check_settings(facts: Facts) -> Check:
    name = facts.options.settings_name
    if not facts.settings_served:
        return Check(
            "settings", "fail", "the API server does not serve Settings (vallum.dev CRDs missing)",
            "install the CRDs (see the crds check)",
        )
    if facts.settings is None:
        return Check(
            "settings", "fail",
            f"Settings {name} not found: the controller serves without sign-in",
            f"kubectl apply -f {_example(facts)}  (edit it first: metadata.name {name}, your "
            "identity provider and Secrets)",
        )
    read = settings_crd.read(facts.settings, facts.secrets)
    problems = tuple(p for p in read.problems if not _SECRET_PRESENCE.search(p))
    if problems:
        return Check(
            "settings", "fail", f"Settings {name} does not read: {len(problems)} problem(s)",
            f"kubectl edit settings {name}", problems,
        )
    ready = _condition(facts.settings, "Ready")
    if ready is None:
        return Check(
            "settings", "warn",
            f"Settings {name} reads well, but no controller has reported on it (no Ready "
            "condition): is vallum controller running with --settings " + name + "?",
            f"kubectl -n {facts.options.namespace} get pods -l {APP_LABEL}",
        )
    said = f"{ready.get('reason', '')}: {ready.get('message', '')}".strip(": ")
    if ready.get("status") != "True":
        return Check(
            "settings", "warn",
            f"Settings {name} reads well here, but the controller reported Ready "
            f"{ready.get('status')} ({said})",
            f"kubectl describe settings {name}",
        )
    return Check("settings", "ok", f"Settings {name} reads well; Ready True ({said})")


def _example(facts: Facts) -> str:
    """The example Settings shipped beside the CRDs."""
    for path in sorted(facts.crd_files.values()):
        return posixpath.join(posixpath.dirname(path), "examples", "settings.yaml")
    return "crds/examples/settings.yaml"


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


# --- references ----------------------------------------------------------------------------------


def ours(facts: Facts) -> list[Mapping[str, Any]]:
    """The Ingresses this controller handles (its IngressClass)."""
    classes = {
        str((c.get("metadata") or {}).get("name")): c for c in facts.ingress_classes
    }
    return [
        ing for ing in facts.ingresses
        if translate.handles(ing, classes, facts.options.controller_name)
    ]


def _ref_key(ref: Any) -> ObjectKey | None:
    if not isinstance(ref, str) or not settings_crd.NAMESPACED_NAME.match(ref):
        return None
    namespace, _, name = ref.partition("/")
    return namespace, name


def secret_refs(
    settings: Mapping[str, Any] | None, ingresses: Iterable[Mapping[str, Any]]
) -> list[Ref]:
    """Every Secret the Settings object and the Ingresses name."""
    refs: list[Ref] = []
    spec = (settings or {}).get("spec") or {}
    if isinstance(spec, Mapping):
        single = {
            "spec.secrets": spec.get("secrets"),
            "spec.identityProvider.secret": (spec.get("identityProvider") or {}).get("secret"),
        }
        for kind, ref in single.items():
            key = _ref_key(ref)
            if key is not None:
                refs.append(Ref(f"Settings {kind}", kind, key))
        for kind in ("spec.certificates", "spec.caSecrets"):
            items = spec.get(kind.removeprefix("spec."))
            for i, ref in enumerate(items if isinstance(items, list) else ()):
                key = _ref_key(ref)
                if key is not None:
                    refs.append(Ref(f"Settings {kind}[{i}]", kind, key,
                                    missing_ok=kind == "spec.certificates"))
    for ing in ingresses:
        meta = ing.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        for i, tls in enumerate((ing.get("spec") or {}).get("tls") or ()):
            if isinstance(tls, Mapping) and tls.get("secretName"):
                refs.append(Ref(f"Ingress {namespace}/{name} spec.tls[{i}].secretName",
                                "spec.tls", (namespace, str(tls["secretName"]))))
        read = annotations_mod.read(meta.get("annotations") or {})
        for field in dataclasses.fields(read.secrets):
            secret = getattr(read.secrets, field.name)
            if secret:
                kind = f"{field.name}_secret"
                refs.append(Ref(f"Ingress {namespace}/{name} annotation {kind}", kind,
                                (namespace, secret)))
    return refs


def policy_refs(ingresses: Iterable[Mapping[str, Any]]) -> list[tuple[str, ObjectKey]]:
    """(where, Policy key) for every ``ingress.vallum.dev/policy-ref``."""
    out: list[tuple[str, ObjectKey]] = []
    for ing in ingresses:
        meta = ing.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        for policy in annotations_mod.read(meta.get("annotations") or {}).policy_refs:
            out.append((f"Ingress {namespace}/{name} policy-ref", (namespace, policy)))
    return out


def check_references(facts: Facts) -> Check:
    problems: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    ingresses = ours(facts)
    refs = secret_refs(facts.settings, ingresses)
    for ref in refs:
        ns, name = ref.key
        secret = facts.secrets.get(ref.key)
        needed = SECRET_KEYS[ref.kind]
        if secret is None:
            line = f"{ref.where}: Secret {ns}/{name} not found"
            if ref.missing_ok:
                warnings.append(line + " (skipped until it exists)")
            else:
                problems.append(line)
                fixes.append(_create_secret(ns, name, needed))
            continue
        data = secret.get("data") or {}
        missing = [key for key in needed if key not in data]
        if missing:
            problems.append(
                f"{ref.where}: Secret {ns}/{name} has no key {', '.join(missing)} "
                f"(it has: {', '.join(sorted(data)) or 'nothing'})"
            )
            fixes.append(_create_secret(ns, name, needed) + " --dry-run=client -o yaml | "
                         "kubectl apply -f -")
    for where, (ns, policy) in policy_refs(ingresses):
        if (ns, policy) not in facts.policies:
            problems.append(f"{where}: Policy {ns}/{policy} not found")
            fixes.append(f"kubectl -n {ns} apply -f <a Policy named {policy}> (docs/operator.md)")
    counted = f"{len(refs)} Secret reference(s)"
    if problems:
        return Check("references", "fail", f"{len(problems)} missing reference(s) of {counted}",
                     fixes[0], tuple(problems + warnings))
    if warnings:
        return Check("references", "warn", f"{len(warnings)} Secret(s) not there yet",
                     "check that cert-manager issues them: kubectl get certificates -A",
                     tuple(warnings))
    return Check("references", "ok", f"{counted} and their keys present")


def _create_secret(namespace: str, name: str, keys: Sequence[str]) -> str:
    if keys == ("tls.crt", "tls.key"):
        return f"kubectl -n {namespace} create secret tls {name} --cert=FILE --key=FILE"
    if keys == ("cookie_secret", "signing_key"):
        return (f"kubectl -n {namespace} create secret generic {name} "
                "--from-file=cookie_secret=<(head -c32 /dev/urandom) "
                "--from-file=signing_key=<(vallum keys generate)")
    values = " ".join(
        f"--from-file={key}=FILE" if key.endswith((".crt", ".key")) else f"--from-literal={key}=..."
        for key in keys
    ) or "--from-literal=NAME=VALUE"
    return f"kubectl -n {namespace} create secret generic {name} {values}"


# --- identity provider ---------------------------------------------------------------------------


def idp_url(settings: Mapping[str, Any] | None) -> str | None:
    """The Settings' identity provider URL, if any."""
    spec = (settings or {}).get("spec") or {}
    url = (spec.get("identityProvider") or {}).get("url") if isinstance(spec, Mapping) else None
    return url if isinstance(url, str) and url else None


def check_identity_provider(facts: Facts) -> Check:
    found = facts.discovery
    if found is None:
        return Check("identity-provider", "ok", "no identityProvider in the Settings: sign-in off")
    url = found.url.rstrip("/") + "/.well-known/openid-configuration"
    fix = f"curl -sS {url}  (and spec.identityProvider.url: the issuer, no trailing path)"
    if found.document is None:
        return Check("identity-provider", "fail", f"discovery document {url}: {found.error}", fix)
    issuer = found.document.get("issuer")
    if str(issuer or "").rstrip("/") != found.url.rstrip("/"):
        return Check(
            "identity-provider", "fail",
            f"discovery document {url} names issuer {issuer!r}, not {found.url!r}",
            f"kubectl edit settings {facts.options.settings_name}  "
            f"(spec.identityProvider.url: {issuer})",
        )
    missing = [
        key for key in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        if not found.document.get(key)
    ]
    if missing:
        return Check("identity-provider", "fail",
                     f"discovery document {url} lacks {', '.join(missing)}", fix)
    return Check("identity-provider", "ok", f"discovery document {url} names issuer {issuer}")


# --- certificates --------------------------------------------------------------------------------


def certificate_refs(facts: Facts) -> list[Ref]:
    """The references whose Secrets hold a served or presented certificate (``tls.crt``)."""
    kinds = ("spec.certificates", "spec.tls", "tls_client_secret")
    return [ref for ref in secret_refs(facts.settings, ours(facts)) if ref.kind in kinds]


def check_certificates(facts: Facts) -> Check:
    problems: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    shown: list[str] = []
    for ref in certificate_refs(facts):
        secret = facts.secrets.get(ref.key)
        encoded = ((secret or {}).get("data") or {}).get("tls.crt")
        if not isinstance(encoded, str):
            continue  # the references check reports it
        ns, name = ref.key
        place = f"{ref.where}: Secret {ns}/{name} tls.crt"
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError) as exc:
            problems.append(f"{place}: not a PEM certificate ({exc})")
            fixes.append(f"kubectl -n {ns} create secret tls {name} --cert=FILE --key=FILE "
                         "--dry-run=client -o yaml | kubectl apply -f -")
            continue
        left = cert.not_valid_after_utc - facts.now
        subject = cert.subject.rfc4514_string() or "(no subject)"
        renew = (f"renew it (cert-manager: cmctl renew -n {ns} <certificate>), or replace "
                 f"Secret {ns}/{name}")
        if left <= dt.timedelta(0):
            problems.append(f"{place}: {subject} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
                            f"UTC ({_ago(-left)} ago)")
            fixes.append(renew)
        elif left < EXPIRY_WARNING:
            warnings.append(f"{place}: {subject} expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
                            f"UTC (in {_ago(left)})")
            fixes.append(renew)
        else:
            shown.append(f"{place}: {subject} valid for {left.days} days")
    if problems:
        return Check("certificates", "fail",
                     f"{len(problems)} certificate(s) expired or unreadable",
                     fixes[0], tuple(problems + warnings))
    if warnings:
        return Check("certificates", "warn",
                     f"{len(warnings)} certificate(s) expire within {EXPIRY_WARNING.days} days",
                     fixes[0], tuple(warnings))
    if not shown:
        return Check("certificates", "ok", "no certificates in Secrets to check")
    return Check("certificates", "ok", f"{len(shown)} certificate(s) valid for "
                 f"{EXPIRY_WARNING.days} days or more", details=tuple(shown))


def _ago(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400} d"
    if seconds >= 3600:
        return f"{seconds // 3600} h"
    return f"{seconds} s"


# --- controller ----------------------------------------------------------------------------------


def parse_time(text: Any) -> dt.datetime | None:
    """An API server timestamp (``2026-12-06T04:00:00.123456Z``), or None."""
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def check_leader(facts: Facts) -> Check:
    opts = facts.options
    where = f"Lease {opts.lease_namespace}/{opts.lease_name}"
    logs = f"kubectl -n {opts.namespace} logs -l {APP_LABEL} --tail=50"
    if facts.lease is None:
        return Check(
            "leader", "fail",
            f"{where} not found: no vallum controller (--controller-name "
            f"{opts.controller_name}) has run with --lease-namespace {opts.lease_namespace}",
            f"kubectl -n {opts.namespace} get pods -l {APP_LABEL}; {logs}",
        )
    spec = facts.lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    duration = spec.get("leaseDurationSeconds") or DEFAULT_LEASE_SECONDS
    renewed = parse_time(spec.get("renewTime"))
    if not holder:
        return Check("leader", "fail", f"{where} has no holder: no replica writes status and "
                     "events (the last one stopped)", logs)
    if renewed is None:
        return Check("leader", "fail", f"{where} held by {holder} has no renewTime", logs)
    age = (facts.now - renewed).total_seconds()
    if age > duration:
        return Check(
            "leader", "fail",
            f"{where}: {holder} last renewed it {age:.0f} s ago (duration {duration} s): the "
            "leader stopped renewing (or this machine's clock is off)",
            logs,
        )
    return Check("leader", "ok", f"{where} held by {holder}, renewed {max(age, 0):.0f} s ago")


def check_replicas(facts: Facts) -> Check:
    opts = facts.options
    if not facts.deployments:
        return Check(
            "replicas", "warn",
            f"no Deployment labelled {APP_LABEL} in namespace {opts.namespace}: only the Lease "
            "was checked (is --namespace right?)",
            "kubectl get deployments -A -l " + APP_LABEL,
        )
    problems: list[str] = []
    shown: list[str] = []
    for dep in facts.deployments:
        name = (dep.get("metadata") or {}).get("name")
        want = (dep.get("spec") or {}).get("replicas", 1)
        ready = (dep.get("status") or {}).get("readyReplicas") or 0
        line = f"Deployment {opts.namespace}/{name}: {ready}/{want} replicas ready"
        (problems if ready < want or want == 0 else shown).append(line)
    for pod in facts.pods:
        if not _pod_ready(pod):
            problems.append(f"Pod {(pod.get('metadata') or {}).get('name')}: {_pod_why(pod)}")
    if problems:
        return Check(
            "replicas", "fail", problems[0],
            f"kubectl -n {opts.namespace} describe pods -l {APP_LABEL}",
            tuple(problems),
        )
    return Check("replicas", "ok", "; ".join(shown))


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def _pod_why(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or ():
        for state in ("waiting", "terminated"):
            said = (container.get("state") or {}).get(state)
            if said:
                return f"container {container.get('name')} {state}: {said.get('reason', '')} " \
                       f"{said.get('message', '')}".strip()
    return f"not ready (phase {status.get('phase', 'unknown')})"


# --- all of them ---------------------------------------------------------------------------------

CHECKS = (
    check_crds,
    check_ingress_class,
    check_settings,
    check_references,
    check_identity_provider,
    check_certificates,
    check_leader,
    check_replicas,
)


def run(facts: Facts) -> list[Check]:
    """Every check, in the order a newcomer fixes things."""
    out: list[Check] = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", "-")
        if name in facts.unreadable:
            out.append(Check(
                name, "fail", f"cannot read what this check needs: {facts.unreadable[name]}",
                "run vallum doctor with credentials that may read it (kubectl auth can-i --list)",
            ))
        else:
            out.append(check(facts))
    return out


def exit_status(checks: Iterable[Check]) -> int:
    """1 when a check failed, else 0 (warnings do not fail)."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def render_text(checks: Sequence[Check]) -> str:
    lines: list[str] = []
    for c in checks:
        lines.append(f"{c.status.upper():<5} {c.name:<18} {c.message}")
        lines.extend(f"      - {d}" for d in c.details if c.status != "ok")
        if c.fix and c.status != "ok":
            fix = c.fix.splitlines()
            lines.append(f"      fix: {fix[0]}")
            lines.extend(f"           {more}" for more in fix[1:])
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines.append(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check]) -> str:
    return json.dumps(
        {"ok": exit_status(checks) == 0, "checks": [c.as_json() for c in checks]}, indent=2
    ) + "\n"
