"""Conditions, Events and load-balancer status: the pure builders, then a real API server.

The last test runs when ``KUBECONFIG`` names a cluster (``eval "$(e2e/control-plane up)"``).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from vallum.operator import snapshot as snap
from vallum.operator import status, translate

NOW, LATER = "2026-12-06T01:00:00Z", "2026-12-06T02:00:00Z"


def ingress(name: str = "app", version: str = "1", lb: list[Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}",
                     "resourceVersion": version, "generation": int(version)},
        "spec": {},
    }
    if lb is not None:
        obj["status"] = {"loadBalancer": {"ingress": lb}}
    return obj


def policy(generation: int = 1, status_: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "admins", "namespace": "team",
                                        "generation": generation}, "spec": {}}
    if status_ is not None:
        obj["status"] = status_
    return obj


def snapshot(**kw: Any) -> snap.Snapshot:
    fields: dict[str, Any] = {
        "ingresses": {}, "services": {}, "endpoint_slices": {}, "secrets": {}, "policies": {},
        "ingress_classes": {}, "settings": None,
    }
    fields.update(kw)
    return snap.Snapshot(**fields)


def result(**kw: Any) -> translate.Result:
    fields: dict[str, Any] = {"table": None, "settings_problems": (), "ingresses": {},
                              "policies": {}, "secrets_used": frozenset()}
    fields.update(kw)
    return translate.Result(**fields)


def test_ready_condition_true_false_and_transition_time_moves_only_on_a_flip() -> None:
    ok = status.ready_condition([], 3, [], NOW)
    assert ok == {"type": "Ready", "status": "True", "reason": "Accepted",
                  "message": "The object is valid and in use.", "observedGeneration": 3,
                  "lastTransitionTime": NOW}
    same = status.ready_condition([], 4, [ok], LATER)
    assert same["lastTransitionTime"] == NOW and same["observedGeneration"] == 4
    bad = status.ready_condition(["allow.or[0]: unknown criterion 'grups'"], 5, [same], LATER)
    assert bad["status"] == "False" and bad["reason"] == "Invalid"
    assert bad["message"] == "allow.or[0]: unknown criterion 'grups'"
    assert bad["lastTransitionTime"] == LATER
    assert len(status.ready_condition(["x" * 5000], 1, [], NOW)["message"]) == status.MAX_MESSAGE


def test_a_status_already_saying_the_same_is_not_written_again() -> None:
    first = status.status_patch(policy(), [], NOW)
    assert first is not None
    written = policy(status_=first["status"])
    assert status.status_patch(written, [], LATER) is None
    assert status.status_patch(policy(generation=2, status_=first["status"]), [], LATER)
    other = {"type": "Synced", "status": "True"}
    kept = status.status_patch(
        policy(status_={"conditions": [other], "observedGeneration": 1}), ["bad"], NOW)
    assert kept is not None and kept["status"]["conditions"][0] == other


def test_events_say_updated_or_update_error_with_the_reasons() -> None:
    live = status.ingress_event(ingress(), translate.IngressOutcome((), 2), NOW)
    assert (live["type"], live["reason"]) == ("Normal", "Updated")
    assert live["message"] == "2 route(s) live"
    assert live["involvedObject"]["kind"] == "Ingress"
    assert live["involvedObject"]["uid"] == "uid-app"
    broken = status.ingress_event(
        ingress(), translate.IngressOutcome(("Policy team/admins not found",), 1), NOW)
    assert (broken["type"], broken["reason"]) == ("Warning", "UpdateError")
    assert "Policy team/admins not found" in broken["message"]
    assert broken["metadata"]["name"] != live["metadata"]["name"]


def test_published_addresses_from_a_flag_or_a_service() -> None:
    assert status.published_addresses(address="10.0.0.7, vallum.example.com") == [
        {"ip": "10.0.0.7"}, {"hostname": "vallum.example.com"}]
    assert status.published_addresses(address="2001:db8::1") == [{"ip": "2001:db8::1"}]
    lb = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9", "ipMode": "VIP"}]}},
          "spec": {"clusterIP": "10.96.0.10"}}
    assert status.published_addresses(lb) == [{"ip": "203.0.113.9"}]
    assert status.published_addresses({"spec": {"externalIPs": ["198.51.100.1"],
                                                "clusterIP": "10.96.0.10"}}) == [
        {"ip": "198.51.100.1"}]
    assert status.published_addresses({"spec": {"clusterIP": "10.96.0.10"}}) == [
        {"ip": "10.96.0.10"}]
    assert status.published_addresses({"spec": {"clusterIP": "None"}}) == []
    assert status.published_addresses() == []


def test_the_plan_writes_an_event_once_per_outcome_and_only_changed_statuses() -> None:
    key = ("team", "app")
    snaps = snapshot(ingresses={key: ingress()}, policies={("team", "admins"): policy()})
    res = result(ingresses={key: translate.IngressOutcome((), 1)},
                 policies={("team", "admins"): ()})
    reported: dict[Any, Any] = {}
    addresses = [{"ip": "10.0.0.7"}]
    first = status.plan(snaps, res, reported, addresses, NOW)
    assert [e["reason"] for e in first.events] == ["Updated"]
    assert first.ingress_status == ((key, {"metadata": {"uid": "uid-app"},
                                           "status": {"loadBalancer": {"ingress": addresses}}}),)
    assert [k for k, _ in first.policy_status] == [("team", "admins")]
    again = status.plan(snaps, res, reported, addresses, LATER)
    assert again.events == ()  # same generation, same outcome: no second Event
    restatused = ingress(lb=addresses)
    restatused["metadata"]["resourceVersion"] = "99"  # our status write moved it, not the spec
    assert status.plan(snapshot(ingresses={key: restatused}), res, reported, addresses,
                       LATER).events == ()
    # Broken now: a Warning, and no load-balancer status for routes that deny.
    broken = result(ingresses={key: translate.IngressOutcome(("bad annotation",), 1)})
    third = status.plan(snapshot(ingresses={key: ingress(version="2")}), broken, reported,
                        addresses, LATER)
    assert [e["reason"] for e in third.events] == ["UpdateError"]
    assert third.ingress_status == ()
    # A deleted Ingress is forgotten, so a new one of the same name is reported again.
    status.plan(snapshot(), result(), reported, addresses, LATER)
    assert reported == {}


def test_settings_status_is_planned_with_the_settings_problems() -> None:
    settings = {"metadata": {"name": "global", "generation": 7}, "spec": {}}
    todo = status.plan(snapshot(settings=settings),
                       result(settings_problems=("spec.secrets: Secret vallum/keys not found",)),
                       {}, None, NOW)
    assert todo.settings_status is not None
    name, body = todo.settings_status
    ready = body["status"]["conditions"][0]
    assert name == "global" and ready["status"] == "False"
    assert body["status"]["observedGeneration"] == 7 and "vallum/keys" in ready["message"]


@pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                    reason="no KUBECONFIG: start one with eval \"$(e2e/control-plane up)\"")
def test_events_and_load_balancer_status_reach_a_real_ingress() -> None:
    from kubernetes import client, config

    config.load_kube_config()
    api = client.ApiClient()
    networking, core = client.NetworkingV1Api(api), client.CoreV1Api(api)
    name = f"status-{uuid.uuid4().hex[:8]}"
    created = networking.create_namespaced_ingress("default", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"defaultBackend": {"service": {"name": "app", "port": {"number": 80}}}},
    })
    try:
        obj = api.sanitize_for_serialization(created)
        key = ("default", name)
        reporter = status.Reporter(api)
        res = result(ingresses={key: translate.IngressOutcome((), 1)})
        todo = reporter.report(snapshot(ingresses={key: obj}), res, [{"ip": "10.0.0.7"}])
        assert len(todo.events) == 1 and len(todo.ingress_status) == 1
        read = networking.read_namespaced_ingress_status(name, "default")
        assert [i.ip for i in read.status.load_balancer.ingress] == ["10.0.0.7"]
        events = core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}").items
        assert [(e.type, e.reason, e.message) for e in events] == [
            ("Normal", "Updated", "1 route(s) live")]
        # Read back, the status is what was planned: nothing more to write.
        fresh = api.sanitize_for_serialization(networking.read_namespaced_ingress(name, "default"))
        again = reporter.report(snapshot(ingresses={key: fresh}), res, [{"ip": "10.0.0.7"}])
        assert again.ingress_status == () and again.events == ()
    finally:
        networking.delete_namespaced_ingress(name, "default")
