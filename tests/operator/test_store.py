"""The controller's object store: slimming, snapshots, Secrets, start-up bookkeeping."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.operator import objects as o
from vallum.operator import store as store_mod

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _bulky(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server sends it after a ``kubectl apply``: managedFields and the
    last-applied copy in its metadata."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    meta.setdefault("annotations", {})[LAST_APPLIED] = "{" + "x" * 1000 + "}"
    obj["status"] = {"loadBalancer": {}}
    return obj


def _listed(store: store_mod.Store, *skip: str) -> None:
    for kind in store_mod.KINDS:
        if kind not in skip:
            store.load_listed(kind, ())


def test_apply_keeps_what_the_translator_reads_and_drops_the_bulk() -> None:
    store = store_mod.Store()
    sent = _bulky(o.ingress(annotations={"ingress.vallum.dev/pass_identity_headers": "true"}))
    before = copy.deepcopy(sent)
    store.apply(store_mod.INGRESSES, sent)
    kept = store.snapshot().ingresses[("default", "app")]
    assert sent == before  # the caller's object is not touched
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"ingress.vallum.dev/pass_identity_headers": "true"}
    assert kept["spec"] == sent["spec"]
    assert kept["metadata"]["resourceVersion"] == "1"

    store.apply(store_mod.SERVICES, _bulky(o.service()))
    assert "status" not in store.snapshot().services[("default", "app")]


def test_delete_forgets_and_unknown_keys_are_no_change() -> None:
    store = store_mod.Store()
    store.apply(store_mod.SERVICES, o.service())
    version = store.version
    store.delete(store_mod.SERVICES, ("default", "other"))
    assert store.version == version
    store.delete(store_mod.SERVICES, ("default", "app"))
    assert store.snapshot().services == {}
    assert store.version == version + 1


def test_a_snapshot_does_not_change_after_it_is_taken() -> None:
    store = store_mod.Store()
    store.apply(store_mod.INGRESSES, o.ingress("a"))
    first = store.snapshot()
    store.apply(store_mod.INGRESSES, o.ingress("b"))
    store.apply(store_mod.INGRESSES, o.ingress("a", rv="2"))
    assert set(first.ingresses) == {("default", "a")}
    assert first.ingresses[("default", "a")]["metadata"]["resourceVersion"] == "1"
    with pytest.raises(TypeError):
        first.ingresses[("default", "c")] = {}  # type: ignore[index]
    second = store.snapshot()
    assert set(second.ingresses) == {("default", "a"), ("default", "b")}


def test_unchanged_kinds_share_their_mapping_between_snapshots() -> None:
    store = store_mod.Store()
    store.apply(store_mod.SERVICES, o.service())
    store.apply(store_mod.INGRESSES, o.ingress())
    first = store.snapshot()
    store.apply(store_mod.INGRESSES, o.ingress(rv="2"))
    second = store.snapshot()
    assert second.services is first.services  # not copied again
    assert second.ingresses is not first.ingresses


def test_ingress_classes_by_name_and_only_the_named_settings() -> None:
    store = store_mod.Store(settings_name="main")
    store.apply(store_mod.INGRESS_CLASSES, o.ingress_class("vallum"))
    other = {"kind": "Settings", "metadata": {"name": "other"}, "spec": {}}
    main = {"kind": "Settings", "metadata": {"name": "main"}, "spec": {"cookie": {"name": "c"}}}
    store.apply(store_mod.SETTINGS, other)
    assert store.snapshot().settings is None
    store.apply(store_mod.SETTINGS, main)
    shot = store.snapshot()
    assert shot.settings is not None and shot.settings["spec"] == main["spec"]
    assert set(shot.ingress_classes) == {"vallum"}
    store.delete(store_mod.SETTINGS, ("", "main"))
    assert store.snapshot().settings is None


def test_secrets_keep_their_data_only_while_referenced() -> None:
    store = store_mod.Store()
    store.apply(store_mod.SECRETS, o.secret("tls", {"tls.crt": "c", "tls.key": "k"}))
    assert store.snapshot().secrets == {}  # nothing references it: identity only
    stub = store.get(store_mod.SECRETS, ("default", "tls"))
    assert stub is not None and "data" not in stub
    assert stub["metadata"]["resourceVersion"] == "1"
    assert store.count(store_mod.SECRETS) == 1

    # A new reference to a Secret held without data: the caller must re-read it.
    assert store.use_secrets({("default", "tls"), ("default", "absent")}) == {("default", "tls")}
    store.apply(store_mod.SECRETS, o.secret("tls", {"tls.crt": "c", "tls.key": "k"}, rv="2"))
    assert store.use_secrets({("default", "tls"), ("default", "absent")}) == frozenset()
    assert "data" in store.snapshot().secrets[("default", "tls")]

    # A referenced Secret created later keeps its data from its first event.
    store.apply(store_mod.SECRETS, o.secret("absent", {"k": "v"}))
    assert ("default", "absent") in store.snapshot().secrets

    # No longer referenced: the data goes, the identity stays.
    store.use_secrets({("default", "absent")})
    assert set(store.snapshot().secrets) == {("default", "absent")}
    assert store.get(store_mod.SECRETS, ("default", "tls")) is not None
    store.delete(store_mod.SECRETS, ("default", "tls"))
    assert store.get(store_mod.SECRETS, ("default", "tls")) is None


def test_complete_only_when_every_kind_is_listed() -> None:
    store = store_mod.Store()
    _listed(store, store_mod.POLICIES)
    assert not store.complete
    store.load_listed(store_mod.POLICIES, ())
    assert _complete(store)
    assert store.listed == frozenset(store_mod.KINDS)


def _complete(store: store_mod.Store) -> bool:
    return store.complete  # (a call: mypy would take the earlier assert as still holding)


def test_a_list_never_overrides_what_the_watch_said() -> None:
    store = store_mod.Store()
    store.apply(store_mod.SERVICES, o.service("a", rv="5"))
    store.delete(store_mod.SERVICES, ("default", "b"))
    store.load_listed(store_mod.SERVICES, [o.service("a", rv="3"), o.service("b"), o.service("c")])
    services = store.snapshot().services
    assert services[("default", "a")]["metadata"]["resourceVersion"] == "5"
    assert ("default", "b") not in services  # deleted by the watch: not brought back
    assert ("default", "c") in services
    assert store.provisional(store_mod.SERVICES) == {("default", "c")}


def test_provisional_objects_are_confirmed_by_the_watch_or_pruned_by_a_later_list() -> None:
    store = store_mod.Store()
    store.load_listed(
        store_mod.INGRESSES, [o.ingress("kept"), o.ingress("gone"), o.ingress("seen")]
    )
    store.apply(store_mod.INGRESSES, o.ingress("seen", rv="2"))
    assert store.provisional(store_mod.INGRESSES) == {("default", "kept"), ("default", "gone")}
    present = [("default", "kept"), ("default", "seen")]
    assert store.prune_provisional(store_mod.INGRESSES, present) == 1
    assert set(store.snapshot().ingresses) == {("default", "kept"), ("default", "seen")}
    assert store.provisional(store_mod.INGRESSES) == {("default", "kept")}
    store.settle()
    assert store.provisional(store_mod.INGRESSES) == frozenset()
    store.load_listed(store_mod.INGRESSES, [o.ingress("late")])  # after settling: plain adds
    assert ("default", "late") in store.snapshot().ingresses


def test_every_change_bumps_the_version_and_sets_the_signal() -> None:
    store = store_mod.Store()
    assert not store.changed.is_set()
    store.apply(store_mod.ENDPOINT_SLICES, o.endpoint_slice())
    assert store.changed.is_set() and store.version == 1
    store.changed.clear()
    store.load_listed(store_mod.ENDPOINT_SLICES, ())  # first LIST of a kind is a change
    assert store.changed.is_set() and store.version == 2
    store.changed.clear()
    store.apply(store_mod.SETTINGS, {"metadata": {"name": "not-ours"}})
    assert not store.changed.is_set()


def test_the_same_version_again_is_no_change() -> None:
    store = store_mod.Store()
    store.load_listed(store_mod.INGRESSES, [o.ingress(rv="7")])
    store.use_secrets({("default", "used")})
    store.apply(store_mod.SECRETS, o.secret("used", {"k": "v"}, rv="3"))
    store.apply(store_mod.SECRETS, o.secret("other", {"k": "v"}, rv="4"))
    version = store.version
    store.apply(store_mod.INGRESSES, o.ingress(rv="7"))  # kopf's list repeating ours
    store.apply(store_mod.SECRETS, o.secret("used", {"k": "v"}, rv="3"))
    store.apply(store_mod.SECRETS, o.secret("other", {"k": "v"}, rv="4"))
    assert store.version == version
    assert store.provisional(store_mod.INGRESSES) == frozenset()  # but kopf has spoken
    store.apply(store_mod.INGRESSES, o.ingress(rv="8"))
    assert store.version == version + 1
    # A stub does not count as holding a referenced Secret's version: its data is needed.
    assert store.use_secrets({("default", "other")}) == {("default", "other")}
    store.apply(store_mod.SECRETS, o.secret("other", {"k": "v"}, rv="4"))
    assert ("default", "other") in store.snapshot().secrets


def test_a_bulk_list_with_its_resource_version_is_not_provisional() -> None:
    from vallum.operator import handlers

    store = store_mod.Store()
    for kind in (store_mod.SERVICES, store_mod.POLICIES):
        listed = handlers.Listed()
        listed.append({"metadata": {"name": "x", "namespace": "ns", "resourceVersion": "7"}})
        listed.versions["ns"] = "42"
        store.load_listed(kind, listed)
    # Our own watch goes on from the Service LIST's resourceVersion: nothing to confirm.
    assert store.list_versions == {store_mod.SERVICES: {"ns": "42"}}
    assert not store.provisional(store_mod.SERVICES)
    # kopf watches Policies and lists them again: one deleted in between must still go.
    assert store.provisional(store_mod.POLICIES) == {("ns", "x")}


def test_a_relist_replaces_its_scope_only() -> None:
    store = store_mod.Store()
    for ns, name in (("a", "kept"), ("a", "gone"), ("b", "other")):
        store.apply(store_mod.SERVICES, {"metadata": {"name": name, "namespace": ns,
                                                      "resourceVersion": "1"}})
    fresh = {"metadata": {"name": "kept", "namespace": "a", "resourceVersion": "2"}}
    store.relisted(store_mod.SERVICES, "a", [fresh])
    services = store.snapshot().services
    assert set(services) == {("a", "kept"), ("b", "other")}
    assert services[("a", "kept")]["metadata"]["resourceVersion"] == "2"
    store.relisted(store_mod.SERVICES, None, [])
    assert not store.snapshot().services
