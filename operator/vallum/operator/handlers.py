"""kopf event handlers that feed the store, and the few raw API calls kopf cannot make for us.

Why event handlers and not ``@kopf.index``: kopf 1.45's indexes fill in quadratic time (5,000
Ingresses took over 4 minutes, measured here with a real API server), while ``@kopf.on.event``
handlers see 5,000 in 8.7 s. Each handler only puts the raw object into
:class:`vallum.operator.store.Store` (or removes it): no translation, no API call.

Which kinds kopf watches: with credentials (the controller), only the small ones (IngressClass,
Policy, Settings); the :data:`BULK` kinds (Ingress, Service, EndpointSlice, Secret) are watched by
:mod:`vallum.operator.watches` from the resourceVersion of our own initial LIST, started and
stopped by a startup and a cleanup handler registered here. kopf would list them all again
and keep each raw body while its per-object worker runs (measured with 5,000 Ingresses +
Services + EndpointSlices: peak RSS 348 MB, 204 MB without). Without credentials (tests) every
kind gets a kopf event handler.

:func:`build_registry` registers them on a fresh :class:`kopf.OperatorRegistry` (nothing is
registered at import, so tests and the CLI each make their own). Only ``on.event`` handlers,
the login handler and the two activities above are registered, so kopf has nothing to persist:
it adds no finalizer and writes no progress or diff-base annotation to any object;
:func:`operator_settings` also turns off kopf's posting of its log lines as Kubernetes Events
(ours are written by :mod:`vallum.operator.status`) and peering (the operator runs standalone;
which replica writes status is decided by our Lease, :mod:`vallum.operator.lease`). The
namespace filter (``--namespaces``) is kopf's own ``namespaces=`` argument to ``kopf.operator``
(cluster-scoped kinds are watched cluster-wide either way) and the ``namespaces`` of
:func:`list_objects` (whose :class:`Listed` result carries each namespace's resourceVersion, so
our watches follow the same filter).

kopf tells its handlers nothing about when the initial list of a kind is complete, and its
per-object workers see 5,000 objects only after seconds; so the controller LISTs every kind
itself first (:func:`list_objects`, paginated; see :mod:`vallum.operator.controller`). The
``kubernetes`` client used for that (and for :func:`get_secret`, re-reading a Secret whose data
the store dropped) blocks: call these in a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf
import kubernetes

from vallum.operator import snapshot as snap
from vallum.operator import store as store_mod
from vallum.operator import watches


@dataclasses.dataclass(frozen=True)
class Resource:
    """Where the API server serves one kind the controller reads."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None) -> str:
        """The collection's URL path (in ``namespace`` when given and the kind is namespaced)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


RESOURCES: Mapping[str, Resource] = {
    store_mod.INGRESSES: Resource("networking.k8s.io", "v1", "ingresses", True),
    store_mod.INGRESS_CLASSES: Resource("networking.k8s.io", "v1", "ingressclasses", False),
    store_mod.SERVICES: Resource("", "v1", "services", True),
    store_mod.ENDPOINT_SLICES: Resource("discovery.k8s.io", "v1", "endpointslices", True),
    store_mod.SECRETS: Resource("", "v1", "secrets", True),
    store_mod.POLICIES: Resource("vallum.dev", "v1alpha1", "policies", True),
    store_mod.SETTINGS: Resource("vallum.dev", "v1alpha1", "settings", False),
}
"""Every kind of :data:`vallum.operator.store.KINDS` and its API resource."""


log = logging.getLogger("vallum.operator.handlers")

BULK = store_mod.BULK
"""The kinds of thousands of objects: with credentials, watched by :mod:`vallum.operator.watches`
from our LIST's resourceVersion, not by kopf (no second list, no raw bodies held per object)."""


def build_registry(
    store: store_mod.Store, client_config: Any | None = None
) -> kopf.OperatorRegistry:
    """A registry with one event handler per kind feeding ``store``. With ``client_config``
    (a ``kubernetes.client.Configuration``, :func:`load_client_config`): the login handler
    that gives kopf the same credentials as our own LISTs, and the :data:`BULK` kinds watched
    by our own watches instead (started by a startup handler, from the resourceVersions the
    store's initial LIST recorded; stopped by a cleanup handler)."""
    registry = kopf.OperatorRegistry()
    own = BULK if client_config is not None else frozenset()
    for kind, resource in RESOURCES.items():
        if kind in own:
            continue
        kopf.on.event(
            group=resource.group,
            version=resource.version,
            plural=resource.plural,
            id=f"vallum-store-{kind}",
            registry=registry,
        )(feeder(store, kind))
    if client_config is not None:
        kopf.on.login(id="vallum-login", registry=registry)(_login(client_config))
        _own_watches(registry, store, client_config)
    return registry


def _own_watches(registry: kopf.OperatorRegistry, store: store_mod.Store, config: Any) -> None:
    held: list[watches.Watches] = []

    async def start_watches(**_: Any) -> None:
        api = api_client(config)

        def lister(kind: str, scope: str | None) -> tuple[list[dict[str, Any]], str] | None:
            listed = list_objects(api, kind, None if scope is None else [scope])
            if listed is None:
                return None
            return list(listed), listed.versions.get(scope, "")

        own = watches.Watches(
            store,
            asyncio.get_running_loop(),
            watches.client_get(api),
            lister,
            lambda kind, scope: RESOURCES[kind].path(scope),
        )
        held.append(own)
        for kind in sorted(BULK):
            versions = store.list_versions.get(kind)
            if not versions:  # not listed by us (not served?): nothing to go on from
                log.warning("%s: no LIST resourceVersion, not watched", kind)
                continue
            for scope, version in sorted(versions.items(), key=lambda item: item[0] or ""):
                own.start(kind, scope, version)

    async def stop_watches(**_: Any) -> None:
        for own in held:
            own.stop()

    kopf.on.startup(id="vallum-watches", registry=registry)(start_watches)
    kopf.on.cleanup(id="vallum-watches-stop", registry=registry)(stop_watches)


def feeder(store: store_mod.Store, kind: str) -> Callable[..., Awaitable[None]]:
    """The event handler of ``kind``: DELETED removes the object, anything else applies it.

    A coroutine function on purpose: kopf runs a plain function in a thread pool, and the store
    (and its ``asyncio.Event``) must only be touched from kopf's event loop."""

    async def on_event(event: Mapping[str, Any], **_: Any) -> None:
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            return
        if event.get("type") == "DELETED":
            store.delete(kind, snap.key_of(obj))
        else:
            store.apply(kind, obj)

    on_event.__name__ = f"on_{kind}_event"
    return on_event


def operator_settings() -> kopf.OperatorSettings:
    """kopf's settings for the controller (see the module docstring)."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.standalone = True
    # kopf runs in a thread of ours: its last-resort SIGKILL would take the whole process.
    settings.process.ultimate_exiting_timeout = None
    settings.watching.server_timeout = 300  # the API server ends each watch after this
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    return settings


# -- the kubernetes client: credentials, raw LIST, Secret re-read ------------------------------


def load_client_config(kubeconfig: str | None) -> Any:
    """A ``kubernetes.client.Configuration`` from ``kubeconfig``, or, without one, the
    in-cluster service account (falling back to ``$KUBECONFIG``/``~/.kube/config`` outside a
    pod). Raises ``kubernetes.config.ConfigException`` with the client's reason."""
    loaders: Any = kubernetes.config  # (untyped)
    config = kubernetes.client.Configuration()
    if kubeconfig:
        loaders.load_kube_config(config_file=kubeconfig, client_configuration=config)
        return config
    try:
        loaders.load_incluster_config(client_configuration=config)
    except loaders.ConfigException:
        loaders.load_kube_config(client_configuration=config)
    return config


def api_client(config: Any) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``config`` (:func:`list_objects`, ...)."""
    return kubernetes.client.ApiClient(config)


def _login(config: Any) -> Callable[..., kopf.ConnectionInfo]:
    def login(**_: Any) -> kopf.ConnectionInfo:
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
            "authorization"
        )
        parts = header.split(" ", 1) if header else []
        scheme = parts[0] if len(parts) == 2 else None
        token = parts[-1] if parts else None
        return kopf.ConnectionInfo(
            server=config.host,
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            username=config.username or None,
            password=config.password or None,
            scheme=scheme,
            token=token,
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
        )

    return login


_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class Listed(list[dict[str, Any]]):
    """The objects of a LIST, with the resourceVersion of each namespace scope listed (None:
    all namespaces): where a watch of that scope starts without missing or repeating a change."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str | None, str] = {}


def list_objects(
    api: Any, kind: str, namespaces: Iterable[str] | None = None, page: int = 500
) -> Listed | None:
    """Every ``kind`` object now (in pages of ``page``), in ``namespaces`` (None: all); None
    when the API server does not serve the kind (a CRD not installed). ``api`` is a
    ``kubernetes.client.ApiClient``. Blocks."""
    return _list(api, kind, namespaces, page, None)


def list_keys(
    api: Any, kind: str, namespaces: Iterable[str] | None = None, page: int = 500
) -> frozenset[snap.ObjectKey] | None:
    """The keys of every ``kind`` object now (metadata only); None as for
    :func:`list_objects`. Blocks."""
    items = _list(api, kind, namespaces, page, _METADATA_ONLY)
    return None if items is None else frozenset(snap.key_of(item) for item in items)


def _list(
    api: Any, kind: str, namespaces: Iterable[str] | None, page: int, accept: str | None
) -> Listed | None:
    resource = RESOURCES[kind]
    scopes: list[str | None] = (
        list(namespaces) if namespaces is not None and resource.namespaced else [None]
    )
    out = Listed()
    for namespace in scopes:
        cont: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", page)]
            if cont:
                query.append(("continue", cont))
            try:
                body = _get_json(api, resource.path(namespace), query, accept)
            except NotFound:
                return None
            out.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            out.versions.setdefault(namespace, str(meta.get("resourceVersion") or ""))
            cont = meta.get("continue")
            if not cont:
                break
    return out


def get_secret(api: Any, key: snap.ObjectKey) -> dict[str, Any] | None:
    """The Secret at ``key`` with its data, or None when it is gone. Blocks."""
    try:
        body = _get_json(api, f"/api/v1/namespaces/{key[0]}/secrets/{key[1]}", [], None)
    except NotFound:
        return None
    return dict(body)


def _get_json(api: Any, path: str, query: list[tuple[str, Any]], accept: str | None) -> Any:
    """GET ``path`` as JSON; ``NotFound`` for a 404, ``ApiError`` for any other failure."""
    method, url, headers, body, _ = api.param_serialize(
        "GET",
        path,
        query_params=query,
        header_params={"Accept": accept or "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
    data = response.read()
    if response.status == 404:
        raise NotFound(path)
    if response.status >= 400:
        text = data.decode("utf-8", "replace")[:300] if data else ""
        raise ApiError(f"GET {path}: {response.status} {response.reason} {text}".strip())
    return json.loads(data)


class ApiError(Exception):
    """The API server refused a request of ours."""


class NotFound(ApiError):
    """The API server does not have it (an object, or a resource not served)."""
