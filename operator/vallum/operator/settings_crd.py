"""A vallum.dev/v1alpha1 Settings object + its Secrets -> routes-file settings values.

Why: the controller must build its table with the same loader as ``vallum serve``. This module
turns the cluster-scoped Settings object, whose fields carry the names of the Pomerium ingress
controller's ``Pomerium`` CRD, into the plain settings keys of a routes file, resolving the
Secrets it names. It then runs those values through the loader itself, so every problem the
loader would find is reported here, named by the Settings field it came from
(``spec.cookie.expire: ...``) rather than by a routes-file key the user never wrote.

Pure: plain dicts in, a value out; never raises. A field Vallum cannot honour is a problem (a
Settings that asks for something Vallum does not do is not used, as ``vallum serve`` refuses
an unknown key), never silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from vallum.core import configfile, errors

ObjectKey = tuple[str, str]
"""``(namespace, name)``, as in :mod:`vallum.operator.snapshot`."""


@dataclasses.dataclass(frozen=True)
class SettingsResult:
    """Routes-file settings values, problems naming their field, every Secret referenced."""

    values: Mapping[str, Any]
    """Routes-file settings keys (``authenticate_service_url``, ``cookie_secret``,
    ``certificates: [{cert, key}]`` ...), only keys :data:`configfile.SETTINGS_KEYS` knows."""
    problems: tuple[str, ...]
    """Each names its field: ``spec.identityProvider.secret: Secret vallum/idp has no key
    client_secret``. Any problem makes the whole Settings unusable."""
    secrets_used: frozenset[ObjectKey]
    """Every Secret the object names, found or not (the store keeps only these)."""


# ---- field tables ------------------------------------------------------------------------
# Plain fields: CRD path (below spec) -> routes-file key. Their values pass as they are; the
# loader checks them (and its problems are mapped back to these paths).
PLAIN: dict[tuple[str, ...], str] = {
    ("authenticate", "url"): "authenticate_service_url",
    ("identityProvider", "provider"): "idp_provider",
    ("identityProvider", "url"): "idp_provider_url",
    ("identityProvider", "scopes"): "idp_scopes",
    ("identityProvider", "groupsClaim"): "idp_groups_claim",
    ("identityProvider", "allowUnverifiedEmail"): "idp_allow_unverified_email",
    ("idpAccessTokenAllowedAudiences",): "idp_access_token_allowed_audiences",
    ("cookie", "name"): "cookie_name",
    ("cookie", "domain"): "cookie_domain",
    ("cookie", "httpOnly"): "cookie_http_only",
    ("cookie", "secure"): "cookie_secure",
    ("cookie", "expire"): "cookie_expire",
    ("cookie", "sameSite"): "cookie_same_site",
    ("jwtClaimHeaders",): "jwt_claims_headers",
    ("jwtGroupsFilter",): "jwt_groups_filter",
    ("jwtIssuerFormat",): "jwt_issuer_format",
    ("passIdentityHeaders",): "pass_identity_headers",
    ("pomeriumCompatibility",): "pomerium_compatibility",
    ("timeouts", "idle"): "timeout_idle",
    ("defaultUpstreamTimeout",): "default_upstream_timeout",
    ("headersWithUnderscoresAction",): "headers_with_underscores_action",
    ("xffNumTrustedHops",): "xff_num_trusted_hops",
    ("logLevel",): "log_level",
}

MTLS: dict[str, str] = {
    "ca": "ca",
    "crl": "crl",
    "enforcement": "enforcement",
    "maxVerifyDepth": "max_verify_depth",
}
"""``spec.downstreamMtls`` fields -> keys of the routes file's ``downstream_mtls``."""

UNSUPPORTED: dict[tuple[str, ...], str] = {
    ("identityProvider", "requestParams"): "Vallum sends no extra sign-in request parameters",
    ("identityProvider", "requestParamsSecret"): (
        "Vallum sends no extra sign-in request parameters"
    ),
    ("setResponseHeaders",): (
        "Vallum has no global response headers; set set_response_headers on the Ingresses"
    ),
    ("timeouts", "read"): "Vallum has no downstream read timeout",
    ("timeouts", "write"): "Vallum has no downstream write timeout",
}
"""Pomerium fields the schema lists so ``kubectl explain`` can say why they are refused."""

SECRET_REFS = ("secrets", "certificates", "caSecrets")
"""Fields read here, besides :data:`PLAIN`, :data:`UNSUPPORTED` and the sections."""
SECTIONS: dict[str, tuple[str, ...]] = {
    "authenticate": ("url",),
    "identityProvider": (
        "provider",
        "url",
        "secret",
        "scopes",
        "groupsClaim",
        "allowUnverifiedEmail",
        "requestParams",
        "requestParamsSecret",
    ),
    "cookie": ("name", "domain", "httpOnly", "secure", "expire", "sameSite"),
    "timeouts": ("read", "write", "idle"),
    "downstreamMtls": tuple(MTLS),
}

_REF = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$")

FIELD_OF: dict[str, str] = {key: "spec." + ".".join(path) for path, key in PLAIN.items()}
FIELD_OF.update(
    {
        "cookie_secret": "spec.secrets",
        "signing_key": "spec.secrets",
        "idp_client_id": "spec.identityProvider.secret",
        "idp_client_secret": "spec.identityProvider.secret",
        "certificates": "spec.certificates",
        "certificate_authority": "spec.caSecrets",
        "downstream_mtls": "spec.downstreamMtls",
    }
)
"""Routes-file key -> the Settings field it comes from (to name the loader's problems)."""

SECRET_KEY_OF = {
    "cookie_secret": "cookie_secret",
    "signing_key": "signing_key",
    "idp_client_id": "client_id",
    "idp_client_secret": "client_secret",
    "certificate_authority": "ca.crt",
    ".cert": "tls.crt",
    ".key": "tls.key",
}
"""Values that come from a Secret: the Secret key their problems name."""


class _Reader:
    """Collects values, problems and the Secrets named while one object is read."""

    def __init__(self, secrets: Mapping[ObjectKey, Mapping[str, Any]]) -> None:
        self.secrets = secrets
        self.values: dict[str, Any] = {}
        self.problems: list[str] = []
        self.used: set[ObjectKey] = set()
        self.certificate_fields: list[str] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{field}: {message}")

    def secret(self, field: str, ref: object, keys: tuple[str, ...]) -> dict[str, str] | None:
        """The text of ``keys`` in the Secret ``ref`` names (None, with a problem, if any fails)."""
        if not isinstance(ref, str) or not _REF.match(ref):
            self.problem(field, f"expected a Secret as namespace/name, got {_shown(ref)}")
            return None
        namespace, name = ref.split("/", 1)
        self.used.add((namespace, name))
        obj = self.secrets.get((namespace, name))
        if obj is None:
            self.problem(field, f"Secret {ref} not found")
            return None
        data = obj.get("data") or {}
        out: dict[str, str] = {}
        for key in keys:
            raw = data.get(key) if isinstance(data, Mapping) else None
            if raw is None:
                self.problem(field, f"Secret {ref} has no key {key}")
                continue
            try:
                out[key] = base64.b64decode(str(raw), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                self.problem(field, f"Secret {ref} key {key} is not base64 of UTF-8 text")
        return out if len(out) == len(keys) else None

    def ref_list(self, field: str, refs: object, keys: tuple[str, ...]) -> list[dict[str, str]]:
        if not isinstance(refs, list):
            self.problem(field, f"expected a list of namespace/name Secrets, got {_shown(refs)}")
            return []
        found = [self.secret(f"{field}[{i}]", ref, keys) for i, ref in enumerate(refs)]
        return [item for item in found if item is not None]


def read(
    obj: Mapping[str, Any] | None, secrets: Mapping[ObjectKey, Mapping[str, Any]]
) -> SettingsResult:
    """Read a Settings object (plain dict, or None: defaults) with the Secrets it may name."""
    if obj is None:
        return SettingsResult(values={}, problems=(), secrets_used=frozenset())
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    r = _Reader(secrets)
    if not isinstance(spec, Mapping):
        r.problem("spec", f"expected a mapping, got {_shown(spec)}")
    else:
        _read_spec(r, spec)
        if not r.problems:
            _check(r)
    return SettingsResult(
        values=r.values, problems=tuple(r.problems), secrets_used=frozenset(r.used)
    )


def _read_spec(r: _Reader, spec: Mapping[str, Any]) -> None:
    known = set(SECRET_REFS) | set(SECTIONS) | {path[0] for path in PLAIN}
    for key in spec:
        if key not in known and (key,) not in UNSUPPORTED:
            r.problem(f"spec.{key}", "unknown field (not a Vallum setting)")
    for section, fields in SECTIONS.items():
        value = spec.get(section)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            r.problem(f"spec.{section}", f"expected a mapping, got {_shown(value)}")
            continue
        for key in value:
            if key not in fields:
                r.problem(f"spec.{section}.{key}", "unknown field (not a Vallum setting)")
    for path, why in UNSUPPORTED.items():
        if _get(spec, path) is not None:
            r.problem("spec." + ".".join(path), f"not supported: {why}")
    for path, key in PLAIN.items():
        value = _get(spec, path)
        if value is not None:
            r.values[key] = value
    if _get(spec, ("authenticate",)) is not None and _get(spec, ("identityProvider",)) is None:
        r.problem("spec.authenticate", "needs spec.identityProvider (who signs users in)")
    if _get(spec, ("identityProvider",)) is not None and _get(spec, ("authenticate",)) is None:
        r.problem("spec.identityProvider", "needs spec.authenticate.url (where users sign in)")
    if _get(spec, ("identityProvider", "provider")) == "hosted":
        r.problem(
            "spec.identityProvider.provider",
            "'hosted' (Pomerium's hosted authenticate service) is not supported: "
            "name your own OIDC provider and its url",
        )
    _read_secrets(r, spec)


def _read_secrets(r: _Reader, spec: Mapping[str, Any]) -> None:
    if spec.get("secrets") is not None:
        got = r.secret("spec.secrets", spec["secrets"], ("cookie_secret", "signing_key"))
        if got is not None:
            r.values["cookie_secret"] = got["cookie_secret"].strip()
            r.values["signing_key"] = got["signing_key"].strip()
    idp_secret = _get(spec, ("identityProvider", "secret"))
    if idp_secret is not None:
        got = r.secret("spec.identityProvider.secret", idp_secret, ("client_id", "client_secret"))
        if got is not None:
            r.values["idp_client_id"] = got["client_id"].strip()
            r.values["idp_client_secret"] = got["client_secret"].strip()
    if spec.get("certificates") is not None:
        pairs = r.ref_list("spec.certificates", spec["certificates"], ("tls.crt", "tls.key"))
        r.values["certificates"] = [{"cert": p["tls.crt"], "key": p["tls.key"]} for p in pairs]
    if spec.get("caSecrets") is not None:
        cas = r.ref_list("spec.caSecrets", spec["caSecrets"], ("ca.crt",))
        if cas:
            r.values["certificate_authority"] = "\n".join(c["ca.crt"].strip() for c in cas) + "\n"
    mtls = spec.get("downstreamMtls")
    if isinstance(mtls, Mapping):
        r.values["downstream_mtls"] = {
            MTLS[k]: v for k, v in mtls.items() if k in MTLS and v is not None
        }


_PROBLEM = re.compile(r"^[^:]*:\d+: ([A-Za-z_]+)((?:\[\d+\])?(?:\.[A-Za-z_]+)?)(?:\[\d+\])?: (.*)$")


def _check(r: _Reader) -> None:
    """Run the values through ``vallum serve``'s loader; name its problems by their field."""
    text = json.dumps({**r.values, "routes": []})
    try:
        configfile.loads(text, "<Settings>", base_dir="/nonexistent")
    except errors.ConfigError as exc:
        for problem in exc.problems:
            r.problems.append(_field_problem(problem))


def _field_problem(problem: str) -> str:
    """``<Settings>:3: cookie_expire: expected ...`` -> ``spec.cookie.expire: expected ...``."""
    match = _PROBLEM.match(problem)
    if match is None or match.group(1) not in FIELD_OF:
        return f"spec: {problem.split(': ', 1)[-1]}"
    key, rest, message = match.groups()
    field = FIELD_OF[key]
    if key == "downstream_mtls" and rest.startswith("."):
        inverse = {v: k for k, v in MTLS.items()}
        field += "." + inverse.get(rest[1:], rest[1:])
    elif key == "certificates" and rest.startswith("["):
        field += rest.split(".")[0]
        key = rest[rest.index("]") + 1 :]
    if key in SECRET_KEY_OF:
        message = f"Secret key {SECRET_KEY_OF[key]}: {message}"
    return f"{field}: {message}"


def _get(spec: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = spec
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
