"""kopf event handlers feed the store; the registry holds nothing that makes kopf write objects.

The raw LIST/GET helpers talk to a real API server and are tested in ``e2e/test_handlers.py``.
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes
import pytest

from vallum.operator import handlers
from vallum.operator import store as store_mod


def _watching(registry: kopf.OperatorRegistry) -> list[Any]:
    # kopf keeps no public list of a registry's handlers; its own tests read these registries.
    return list(registry._watching.get_all_handlers())


def _handler_for(registry: kopf.OperatorRegistry, kind: str) -> Any:
    resource = handlers.RESOURCES[kind]
    target = kopf.Resource(resource.group, resource.version, resource.plural)
    found = [h for h in _watching(registry) if h.selector.check(target)]
    assert len(found) == 1, found
    return found[0]


def _ingress(name: str, version: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
        "spec": {"rules": [{"host": f"{name}.example.com"}]},
    }


def test_one_event_handler_per_kind_and_nothing_else() -> None:
    registry = handlers.build_registry(store_mod.Store())
    assert sorted(h.id for h in _watching(registry)) == sorted(
        f"vallum-store-{kind}" for kind in store_mod.KINDS
    )
    for kind in store_mod.KINDS:
        _handler_for(registry, kind)
    # No change/resume/delete handlers: kopf then adds no finalizer and stores no progress or
    # diff-base annotations; no login handler unless credentials are given.
    assert not list(registry._changing.get_all_handlers())
    assert not list(registry._indexing.get_all_handlers())
    assert not list(registry._activities.get_all_handlers())


def test_registries_are_independent() -> None:
    first = handlers.build_registry(store_mod.Store())
    second = handlers.build_registry(store_mod.Store())
    assert _watching(first) and _watching(second)
    assert {id(h.fn) for h in _watching(first)}.isdisjoint(id(h.fn) for h in _watching(second))


async def test_events_feed_the_store() -> None:
    store = store_mod.Store()
    registry = handlers.build_registry(store)
    on_ingress = _handler_for(registry, store_mod.INGRESSES).fn
    await on_ingress(event={"type": None, "object": _ingress("a", "1")})  # kopf's list
    await on_ingress(event={"type": "ADDED", "object": _ingress("b", "2")})
    await on_ingress(event={"type": "MODIFIED", "object": _ingress("a", "3")})
    snapshot = store.snapshot()
    assert set(snapshot.ingresses) == {("default", "a"), ("default", "b")}
    assert snapshot.ingresses[("default", "a")]["metadata"]["resourceVersion"] == "3"
    await on_ingress(event={"type": "DELETED", "object": _ingress("a", "4")})
    assert set(store.snapshot().ingresses) == {("default", "b")}


async def test_each_kind_lands_in_its_own_place() -> None:
    store = store_mod.Store(settings_name="global")
    registry = handlers.build_registry(store)
    obj = {"metadata": {"name": "x", "namespace": "ns", "resourceVersion": "1"}}
    for kind in (store_mod.SERVICES, store_mod.ENDPOINT_SLICES, store_mod.POLICIES):
        await _handler_for(registry, kind).fn(event={"type": "ADDED", "object": obj})
    cluster_obj = {"metadata": {"name": "global", "resourceVersion": "1"}, "spec": {}}
    for kind in (store_mod.INGRESS_CLASSES, store_mod.SETTINGS):
        await _handler_for(registry, kind).fn(event={"type": "ADDED", "object": cluster_obj})
    snapshot = store.snapshot()
    assert set(snapshot.services) == {("ns", "x")}
    assert set(snapshot.endpoint_slices) == {("ns", "x")}
    assert set(snapshot.policies) == {("ns", "x")}
    assert set(snapshot.ingress_classes) == {"global"}
    assert snapshot.settings is not None
    assert not snapshot.ingresses


async def test_an_event_without_an_object_is_ignored() -> None:
    store = store_mod.Store()
    on_ingress = _handler_for(handlers.build_registry(store), store_mod.INGRESSES).fn
    before = store.version
    await on_ingress(event={"type": "ADDED", "object": None})
    await on_ingress(event={"type": "BOOKMARK"})
    assert store.version == before


def test_operator_settings_write_nothing_of_kopfs_own() -> None:
    settings = handlers.operator_settings()
    assert settings.posting.enabled is False
    assert settings.peering.standalone is True
    assert settings.process.ultimate_exiting_timeout is None


def test_login_handler_hands_kopf_the_client_credentials(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://10.0.0.1:6443', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: sekrit}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    config = handlers.load_client_config(str(kubeconfig))
    registry = handlers.build_registry(store_mod.Store(), config)
    activities = {h.id: h for h in registry._activities.get_all_handlers()}
    assert set(activities) == {"vallum-login", "vallum-watches", "vallum-watches-stop"}
    # With credentials kopf watches only the small kinds; our own watches take the bulk ones.
    assert {h.id for h in _watching(registry)} == {
        f"vallum-store-{kind}" for kind in store_mod.KINDS if kind not in handlers.BULK
    }
    assert {"ingresses", "services", "endpoint_slices", "secrets"} == handlers.BULK
    login = activities["vallum-login"]
    info = login.fn()
    assert info.server == "https://10.0.0.1:6443"
    assert info.insecure is True
    assert (info.scheme, info.token) == ("Bearer", "sekrit")


def test_a_missing_kubeconfig_is_the_clients_error(tmp_path: Any) -> None:
    with pytest.raises(kubernetes.config.ConfigException):
        handlers.load_client_config(str(tmp_path / "absent"))


@pytest.mark.parametrize(
    ("kind", "namespace", "path"),
    [
        (store_mod.SERVICES, "ns", "/api/v1/namespaces/ns/services"),
        (store_mod.SERVICES, None, "/api/v1/services"),
        (store_mod.INGRESSES, "ns", "/apis/networking.k8s.io/v1/namespaces/ns/ingresses"),
        (store_mod.INGRESS_CLASSES, "ns", "/apis/networking.k8s.io/v1/ingressclasses"),
        (store_mod.SETTINGS, None, "/apis/vallum.dev/v1alpha1/settings"),
    ],
)
def test_resource_paths(kind: str, namespace: str | None, path: str) -> None:
    assert handlers.RESOURCES[kind].path(namespace) == path


def test_handlers_run_on_kopfs_loop() -> None:
    # kopf runs plain functions in a thread pool; the store is not thread-safe.
    import inspect

    registry = handlers.build_registry(store_mod.Store())
    assert all(inspect.iscoroutinefunction(h.fn) for h in _watching(registry))
