"""A ``vallum.dev/v1alpha1`` Settings object and the Secrets it names -> routes-file settings.

Why a module of its own: the controller must build its table with the very loader of ``vallum
serve`` (:mod:`vallum.core.configfile`), so the Settings object is turned into the plain values
a routes file holds (``authenticate_service_url``, ``idp_client_secret``, ``certificates:
[{cert, key}]``, ...) and nothing more. Every value is checked by that loader's own reader for
its key, and the loader's checks across keys run on the whole, so a value means here exactly
what it means in a routes file; only the problems are worded for the object
(``spec.cookie.expire: expected a duration ...``, ``spec.identityProvider.secret: Secret
vallum/idp has no key client_secret``).

The fields are those of the Pomerium ingress controller's ``Pomerium`` resource (its bootstrap
Secret's ``cookie_secret`` and ``signing_key``, TLS Secrets, ``ca.crt`` Secrets), plus Vallum's
own settings under their routes-file names in camelCase (``crds/vallum.dev_settings.yaml``
documents each). Pomerium fields Vallum does not implement (``setResponseHeaders``,
``timeouts.read``/``write``, ``identityProvider.requestParams``,
``downstreamMtls.matchSubjectAltNames``) and unknown fields are problems, never dropped: the
CRD's schema refuses them too, this is the check for objects that did not pass through it.

Pure: plain dicts in, values out; no I/O, no Kubernetes client; never raises on bad input.
A Secret named in ``certificates`` that does not exist (yet) is a *warning*, not a problem, so
that cert-manager can issue it through Vallum itself (the Pomerium controller skips it too).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

from vallum.core.configfile import nodes, settings
from vallum.operator import snapshot

ObjectKey = snapshot.ObjectKey


@dataclasses.dataclass(frozen=True)
class SettingsResult:
    """What a Settings object asks for.

    ``values``: routes-file settings keys (plain data, as a routes file holds them), only
    values that read well; serve them only when ``problems`` is empty. ``problems``: each
    names the field (``spec.secrets: Secret vallum/bootstrap not found``). ``secrets_used``:
    every Secret the object names, found or not (so the store keeps them when they appear).
    ``warnings``: what is served around (a certificate Secret that does not exist yet)."""

    values: Mapping[str, Any]
    problems: tuple[str, ...]
    secrets_used: frozenset[ObjectKey]
    warnings: tuple[str, ...] = ()


NAMESPACED_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
"""``namespace/name`` of a Secret (a DNS label, then a DNS subdomain), as the CRD's pattern."""

SAME = {
    "xffNumTrustedHops": "xff_num_trusted_hops",
    "defaultUpstreamTimeout": "default_upstream_timeout",
    "headersWithUnderscoresAction": "headers_with_underscores_action",
    "idpAccessTokenAllowedAudiences": "idp_access_token_allowed_audiences",
    "idpGroupsClaim": "idp_groups_claim",
    "idpAllowUnverifiedEmail": "idp_allow_unverified_email",
    "jwtClaimHeaders": "jwt_claims_headers",
    "jwtIssuerFormat": "jwt_issuer_format",
    "jwtGroupsFilter": "jwt_groups_filter",
    "passIdentityHeaders": "pass_identity_headers",
    "pomeriumCompatibility": "pomerium_compatibility",
}
"""Top-level fields whose value is the routes-file key's value as it stands."""

COOKIE = {
    "name": "cookie_name",
    "domain": "cookie_domain",
    "httpOnly": "cookie_http_only",
    "secure": "cookie_secure",
    "expire": "cookie_expire",
    "sameSite": "cookie_same_site",
}
TIMEOUTS = {"idle": "timeout_idle"}
IDENTITY_PROVIDER = {"provider": "idp_provider", "url": "idp_provider_url", "scopes": "idp_scopes"}
DOWNSTREAM_MTLS = {
    "ca": "ca",
    "crl": "crl",
    "enforcement": "enforcement",
    "maxVerifyDepth": "max_verify_depth",
}

UNSUPPORTED = {
    "spec.setResponseHeaders": "set response headers per route "
    "(annotation ingress.vallum.dev/set_response_headers)",
    "spec.timeouts.read": "",
    "spec.timeouts.write": "a route's timeout limits each upstream exchange "
    "(see defaultUpstreamTimeout)",
    "spec.identityProvider.requestParams": "",
    "spec.downstreamMtls.matchSubjectAltNames": "put the constraint in a policy "
    "(client_certificate)",
}
"""Pomerium fields Vallum does not implement, with what to do instead."""

SPEC_FIELDS = (
    "secrets",
    "authenticate",
    "identityProvider",
    "certificates",
    "caSecrets",
    "cookie",
    "timeouts",
    "downstreamMtls",
    "setResponseHeaders",
    *SAME,
)


def read(
    obj: Mapping[str, Any] | None, secrets: Mapping[ObjectKey, Mapping[str, Any]]
) -> SettingsResult:
    """Read a Settings object (a plain dict as the API returns it) with the Secrets it may name
    (plain dicts by ``(namespace, name)``, ``data`` base64 as the API returns it).

    No object (None): no values and no problems; the controller then serves Vallum's defaults
    without sign-in, and says so itself."""
    if obj is None:
        return SettingsResult(values={}, problems=(), secrets_used=frozenset())
    reader = _Reader(secrets)
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        reader.ctx.add(f"spec: expected a mapping, got {nodes.shown(spec)}")
        spec = {}
    reader.read_spec(spec)
    reader.check_whole()
    return SettingsResult(
        values=dict(sorted(reader.values.items())),
        problems=tuple(reader.ctx.report(reader.ctx.problems)),
        secrets_used=frozenset(reader.used),
        warnings=tuple(reader.warnings),
    )


class _Problems(nodes.Context):
    """A :class:`nodes.Context` whose problems name the Settings field a routes-file key came
    from (``places``: key path -> field, longest match wins), not a file and line."""

    def __init__(self) -> None:
        super().__init__("Settings", "")
        self.places: dict[str, str] = {}

    def problem(self, line: int, path: str, message: str) -> Any:
        path = path.lstrip(".")
        place, rest = path, ""
        for key in sorted(self.places, key=len, reverse=True):
            if path == key or path.startswith((key + ".", key + "[")):
                place, rest = self.places[key], path[len(key) :]
                break
        where = nodes.shorten(place + rest, nodes.MAX_PATH)
        return self.add(f"{where}: {nodes.shorten(message, nodes.MAX_MESSAGE)}")

    def read_file(self, node: nodes.Node, path: str, file_kind: Any) -> str | None:
        self.problem(node.line, path, "a Settings object cannot name files")
        return None


class _Reader:
    """One read: the values so far, where each came from, the Secrets named."""

    def __init__(self, secrets: Mapping[ObjectKey, Mapping[str, Any]]) -> None:
        self.secrets = secrets
        self.ctx = _Problems()
        self.values: dict[str, Any] = {}
        self.used: set[ObjectKey] = set()
        self.warnings: list[str] = []

    # --- the fields ---------------------------------------------------------------------------

    def read_spec(self, spec: Mapping[str, Any]) -> None:
        for field in spec:
            if field not in SPEC_FIELDS:
                self._unknown("spec", field, SPEC_FIELDS)
        for field, key in SAME.items():
            if field in spec:
                self.put(key, spec[field], f"spec.{field}")
        if "secrets" in spec:
            self._bootstrap(spec["secrets"])
        authenticate = self._section(spec, "authenticate", ("url",))
        if "url" in authenticate:
            self.put("authenticate_service_url", authenticate["url"], "spec.authenticate.url")
        idp_fields = (*IDENTITY_PROVIDER, "secret", "requestParams")
        self._identity_provider(self._section(spec, "identityProvider", idp_fields))
        self._certificates(spec.get("certificates"))
        self._ca_secrets(spec.get("caSecrets"))
        cookie = self._section(spec, "cookie", tuple(COOKIE))
        for field, key in COOKIE.items():
            if field in cookie:
                self.put(key, cookie[field], f"spec.cookie.{field}")
        timeouts = self._section(spec, "timeouts", ("read", "write", "idle"))
        for field, key in TIMEOUTS.items():
            if field in timeouts:
                self.put(key, timeouts[field], f"spec.timeouts.{field}")
        self._downstream_mtls(spec)
        for place, instead in UNSUPPORTED.items():
            parent, _, field = place.rpartition(".")
            section = spec if parent == "spec" else spec.get(parent.split(".")[1])
            if isinstance(section, Mapping) and field in section:
                hint = f"; {instead}" if instead else ""
                self.ctx.add(f"{place}: a Pomerium setting Vallum does not support{hint}")

    def _section(
        self, spec: Mapping[str, Any], field: str, known: tuple[str, ...]
    ) -> Mapping[str, Any]:
        value = spec.get(field)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.ctx.add(f"spec.{field}: expected a mapping, got {nodes.shown(value)}")
            return {}
        for key in value:
            if key not in known:
                self._unknown(f"spec.{field}", key, known)
        return value

    def _unknown(self, where: str, field: Any, known: tuple[str, ...]) -> None:
        near = difflib.get_close_matches(str(field), list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        self.ctx.add(f"{nodes.key_path(where, str(field))}: unknown field{hint}")

    def _bootstrap(self, ref: Any) -> None:
        """``secrets``: the Pomerium bootstrap Secret's ``cookie_secret`` and ``signing_key``."""
        data = self.secret(ref, "spec.secrets")
        if data is None:
            return
        where = f"spec.secrets: Secret {_show_ref(ref)}"
        cookie = self.key(data, where, "cookie_secret")
        if cookie is not None:
            if len(cookie) < 32:
                self.ctx.add(
                    f"{where} key cookie_secret: must hold at least 32 random bytes "
                    f"(head -c32 /dev/urandom), got {len(cookie)}"
                )
            else:
                self.put("cookie_secret", base64.b64encode(cookie).decode(), where)
        signing = self.text(data, where, "signing_key")
        if signing is not None:
            self.put("signing_key", signing, f"{where} key signing_key")

    def _identity_provider(self, idp: Mapping[str, Any]) -> None:
        for field, key in IDENTITY_PROVIDER.items():
            if field in idp:
                self.put(key, idp[field], f"spec.identityProvider.{field}")
        if "secret" not in idp:
            if idp:
                self.ctx.add(
                    "spec.identityProvider.secret: required (a Secret with client_id and "
                    "client_secret)"
                )
            return
        data = self.secret(idp["secret"], "spec.identityProvider.secret")
        if data is None:
            return
        where = f"spec.identityProvider.secret: Secret {_show_ref(idp['secret'])}"
        for name in ("client_id", "client_secret"):
            text = self.text(data, where, name)
            if text is not None:
                self.put(f"idp_{name}", text.strip(), f"{where} key {name}")

    def _certificates(self, refs: Any) -> None:
        if refs is None:
            return
        if not isinstance(refs, list):
            self.ctx.add(f"spec.certificates: expected a list, got {nodes.shown(refs)}")
            return
        entries: list[dict[str, str]] = []
        for i, ref in enumerate(refs):
            place = f"spec.certificates[{i}]"
            data = self.secret(ref, place, missing_ok=True)
            if data is None:
                continue
            where = f"{place}: Secret {_show_ref(ref)}"
            cert, key = self.text(data, where, "tls.crt"), self.text(data, where, "tls.key")
            if cert is None or key is None:
                continue
            index = f"certificates[{len(entries)}]"
            self.ctx.places[f"{index}.cert"] = f"{where} key tls.crt"
            self.ctx.places[f"{index}.key"] = f"{where} key tls.key"
            self.ctx.places[index] = where
            entry = {"cert": cert, "key": key}
            if settings.r_certificate(self.ctx, _node(entry), index) is not nodes.MISSING:
                entries.append(entry)
        if entries:
            self.values["certificates"] = entries

    def _ca_secrets(self, refs: Any) -> None:
        if refs is None:
            return
        if not isinstance(refs, list):
            self.ctx.add(f"spec.caSecrets: expected a list, got {nodes.shown(refs)}")
            return
        bundle: list[str] = []
        for i, ref in enumerate(refs):
            place = f"spec.caSecrets[{i}]"
            data = self.secret(ref, place)
            if data is None:
                continue
            where = f"{place}: Secret {_show_ref(ref)}"
            text = self.text(data, where, "ca.crt")
            if text is not None and self.check(
                "certificate_authority", text, f"{where} key ca.crt"
            ):
                bundle.append(text.strip() + "\n")
        if bundle:
            self.put("certificate_authority", "".join(bundle), "spec.caSecrets")

    def _downstream_mtls(self, spec: Mapping[str, Any]) -> None:
        mtls = self._section(spec, "downstreamMtls", (*DOWNSTREAM_MTLS, "matchSubjectAltNames"))
        if not mtls:
            return
        for field, key in DOWNSTREAM_MTLS.items():
            self.ctx.places[f"downstream_mtls.{key}"] = f"spec.downstreamMtls.{field}"
        value = {key: mtls[field] for field, key in DOWNSTREAM_MTLS.items() if field in mtls}
        self.put("downstream_mtls", value, "spec.downstreamMtls")

    # --- values and Secrets ---------------------------------------------------------------------

    def check(self, key: str, value: Any, place: str) -> bool:
        """Whether ``value`` reads well as routes-file key ``key`` (problems name ``place``)."""
        self.ctx.places[key] = place
        return settings.SETTINGS_KEYS[key](self.ctx, _node(value), key) is not nodes.MISSING

    def put(self, key: str, value: Any, place: str) -> None:
        """``values[key] = value`` if it reads well as routes-file key ``key``."""
        if self.check(key, value, place):
            self.values[key] = value

    def secret(self, ref: Any, place: str, *, missing_ok: bool = False) -> Mapping[str, Any] | None:
        """The ``data`` of the Secret ``ref`` (``namespace/name``) names, or None after a
        problem (or, with ``missing_ok``, a warning when it does not exist)."""
        if not isinstance(ref, str) or len(ref) > 317 or not NAMESPACED_NAME.match(ref):
            self.ctx.add(f"{place}: expected namespace/name of a Secret, got {nodes.shown(ref)}")
            return None
        namespace, _, name = ref.partition("/")
        self.used.add((namespace, name))
        secret = self.secrets.get((namespace, name))
        if secret is None:
            if missing_ok:
                self.warnings.append(f"{place}: Secret {ref} not found; skipped until it exists")
            else:
                self.ctx.add(f"{place}: Secret {ref} not found")
            return None
        data = secret.get("data")
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.ctx.add(f"{place}: Secret {ref} has no readable data")
            return None
        return data

    def key(self, data: Mapping[str, Any], where: str, key: str) -> bytes | None:
        """The bytes of ``data[key]`` (base64 in a Secret), or None after a problem."""
        encoded = data.get(key)
        if encoded is None:
            self.ctx.add(f"{where} has no key {key}")
            return None
        try:
            if not isinstance(encoded, str):
                raise ValueError
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self.ctx.add(f"{where} key {key}: not valid base64")
            return None

    def text(self, data: Mapping[str, Any], where: str, key: str) -> str | None:
        """``data[key]`` as text (UTF-8), or None after a problem."""
        raw = self.key(data, where, key)
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            self.ctx.add(f"{where} key {key}: not text (UTF-8)")
            return None

    # --- checks across fields -----------------------------------------------------------------

    def check_whole(self) -> None:
        """The loader's checks across keys (as ``vallum serve`` makes them), on the values that
        read well one by one; the problems they find name the fields too."""
        if self.ctx.problems:
            return  # values are left out; checks across them would only repeat the problems
        settings.read_settings(self.ctx, _node(self.values))


def _show_ref(ref: Any) -> str:
    return ref if isinstance(ref, str) else nodes.shown(ref)


def _node(value: Any) -> nodes.Node:
    """Plain data -> the loader's node tree (line 1 throughout: the places name fields)."""
    if isinstance(value, Mapping):
        return nodes.Node({str(k): _node(v) for k, v in value.items()}, 1)
    if isinstance(value, (list, tuple)):
        return nodes.Node([_node(v) for v in value], 1)
    return nodes.Node(value, 1)
