"""What ``vallum doctor`` reads from the cluster (and the identity provider) for its checks.

Why apart from :mod:`vallum.operator.doctor`: the checks are pure and tested without a
cluster; this is the I/O only -- GETs with the ``kubernetes`` client's ApiClient (plain JSON,
as the controller's own LISTs in :mod:`vallum.operator.handlers`), the discovery document over
HTTPS with a short timeout, and the CRDs shipped with this version.

Where the shipped CRDs are found: a wheel carries ``crds/`` as package data at
``vallum/operator/crds/`` (pyproject's ``force-include``); a source checkout (editable
install) has them at the repository's ``crds/``; ``--crds DIR`` overrides both.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import pathlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import yaml

from vallum.operator import doctor

HERE = pathlib.Path(__file__).resolve().parent
CRD_DIRECTORIES = (HERE / "crds", HERE.parents[2] / "crds")
"""Where the CRDs shipped with this version are: package data, else the source checkout."""


class NotFound(Exception):
    """404 from the API server."""


class ApiError(Exception):
    """Any other refusal from the API server (403 without permission, ...)."""


def crd_directory(override: str | None = None) -> pathlib.Path:
    """The directory of this version's CRDs; ``FileNotFoundError`` naming where it looked."""
    candidates = (pathlib.Path(override),) if override else CRD_DIRECTORIES
    for folder in candidates:
        if any(folder.glob("vallum.dev_*.yaml")):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no vallum.dev_*.yaml CRDs in {looked} (use --crds DIR)")


def load_crds(folder: pathlib.Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(CRD name -> object, CRD name -> file) of the ``vallum.dev_*.yaml`` files in ``folder``."""
    crds: dict[str, Any] = {}
    files: dict[str, str] = {}
    for path in sorted(folder.glob("vallum.dev_*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = str(crd["metadata"]["name"])
        crds[name], files[name] = crd, str(path)
    return crds, files


def get(api: Any, path: str, query: list[tuple[str, Any]] | None = None) -> Any:
    """GET ``path`` as JSON (``api``: a ``kubernetes.client.ApiClient``). Blocks."""
    method, url, headers, body, _ = api.param_serialize(
        "GET", path, query_params=query or [], header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=15)
    data = response.read()
    if response.status == 404:
        raise NotFound(path)
    if response.status >= 400:
        raise ApiError(f"GET {path}: {response.status} {response.reason}{_said(data)}")
    return json.loads(data)


def _said(data: bytes | None) -> str:
    """The message of a ``Status`` body (``secrets "x" is forbidden: User ...``), if any."""
    try:
        message = json.loads(data or b"").get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {str(message)[:300]}" if message else ""


def get_or_none(api: Any, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = get(api, path)
    except NotFound:
        return None
    return found


def items(api: Any, path: str, query: list[tuple[str, Any]] | None = None) -> list[Any]:
    """The items of a LIST (empty when the resource is not served)."""
    try:
        return list(get(api, path, query).get("items") or ())
    except NotFound:
        return []


def gather(
    api: Any,
    options: doctor.Options,
    crds: tuple[Mapping[str, Any], Mapping[str, str]],
    *,
    idp_timeout: float = 5.0,
    now: dt.datetime | None = None,
) -> doctor.Facts:
    """Read everything the checks need. A read the API server refuses (403, ...) makes the
    checks that needed it fail saying so (``Facts.unreadable``); the others still run."""
    expected, files = crds
    facts = doctor.Facts(
        options=options, now=now or dt.datetime.now(dt.UTC), expected_crds=expected,
        crd_files=files, crds={},
    )

    def reading(*checks: str) -> _Reading:
        return _Reading(facts, checks)

    with reading("crds"):
        facts.crds = {
            name: get_or_none(
                api, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            for name in expected
        }
    with reading("ingress-class", "references", "certificates"):
        facts.ingress_classes = items(api, "/apis/networking.k8s.io/v1/ingressclasses")
    with reading("settings", "references", "identity-provider", "certificates"):
        try:
            facts.settings = get(api, f"/apis/vallum.dev/v1alpha1/settings/{options.settings_name}")
        except NotFound:
            facts.settings_served = _served(api, "/apis/vallum.dev/v1alpha1/settings")
    with reading("references", "certificates"):
        facts.ingresses = items(api, "/apis/networking.k8s.io/v1/ingresses")
    ours = doctor.ours(facts)
    keys = {ref.key for ref in doctor.secret_refs(facts.settings, ours)}
    with reading("references", "certificates", "settings"):
        facts.secrets = {
            key: secret for key in sorted(keys)
            if (secret := get_or_none(api, f"/api/v1/namespaces/{key[0]}/secrets/{key[1]}"))
        }
    with reading("references"):
        facts.policies = frozenset(
            key for _, key in doctor.policy_refs(ours)
            if get_or_none(
                api, f"/apis/vallum.dev/v1alpha1/namespaces/{key[0]}/policies/{key[1]}"
            )
        )
    url = doctor.idp_url(facts.settings)
    if url is not None:
        facts.discovery = fetch_discovery(url, idp_timeout, _ca_bundle(facts))
    with reading("leader"):
        facts.lease = get_or_none(
            api, f"/apis/coordination.k8s.io/v1/namespaces/{options.lease_namespace}/leases/"
            f"{options.lease_name}",
        )
    with reading("replicas"):
        label = [("labelSelector", doctor.APP_LABEL)]
        facts.deployments = items(
            api, f"/apis/apps/v1/namespaces/{options.namespace}/deployments", label
        )
        pods: list[Any] = []
        for dep in facts.deployments:
            match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if match:
                selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
                pods += items(api, f"/api/v1/namespaces/{options.namespace}/pods",
                              [("labelSelector", selector)])
        facts.pods = pods
    return facts


class _Reading:
    """``with _Reading(facts, checks):`` an :class:`ApiError` inside marks ``checks``
    unreadable (the first reason each) and is not raised."""

    def __init__(self, facts: doctor.Facts, checks: tuple[str, ...]) -> None:
        self.facts, self.checks = facts, checks

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, ApiError):
            for check in self.checks:
                self.facts.unreadable.setdefault(check, str(exc))
            return True
        return False


def _served(api: Any, path: str) -> bool:
    try:
        get(api, path, [("limit", 1)])
    except NotFound:
        return False
    return True


def _ca_bundle(facts: doctor.Facts) -> str:
    """The CA certificates of the Settings' caSecrets (trusted for the IdP, as by Vallum)."""
    pems: list[str] = []
    for ref in doctor.secret_refs(facts.settings, ()):
        if ref.kind != "spec.caSecrets":
            continue
        encoded = ((facts.secrets.get(ref.key) or {}).get("data") or {}).get("ca.crt")
        if isinstance(encoded, str):
            try:
                pems.append(base64.b64decode(encoded).decode())
            except ValueError:
                continue
    return "\n".join(pems)


def fetch_discovery(url: str, timeout: float, ca_pem: str = "") -> doctor.Discovery:
    """GET ``url/.well-known/openid-configuration`` (the system's CAs and ``ca_pem``)."""
    where = url.rstrip("/") + "/.well-known/openid-configuration"
    if not where.startswith(("https://", "http://")):
        return doctor.Discovery(url, error="not an http(s) URL")
    context = ssl.create_default_context()
    if ca_pem.strip():
        with contextlib.suppress(ssl.SSLError):  # the settings check reports a bad ca.crt
            context.load_verify_locations(cadata=ca_pem)
    request = urllib.request.Request(where, headers={"Accept": "application/json"})  # noqa: S310
    # Directly, as the controller reaches it (no proxy from the environment).
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return doctor.Discovery(url, error=f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return doctor.Discovery(url, error=f"unreachable ({reason}) within {timeout:g} s")
    try:
        document = json.loads(body)
    except ValueError:
        return doctor.Discovery(url, error="not JSON")
    if not isinstance(document, dict):
        return doctor.Discovery(url, error="not a JSON object")
    return doctor.Discovery(url, document=document)
