"""The feedback added for replicas and users: status addresses checked as the flag is read,
Conflict Events for routes another Ingress takes first (once per change), the writing replica
named on its Events, and every write confined to the namespace of the object it concerns."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from tests.operator.test_status import NOW, ingress, result, snapshot
from vallum.operator import status, translate

SHADOWED = ("Ingress team/b spec.rules[0].http.paths[0]: app.example.com / is taken by "
            "Ingress team/a spec.rules[0].http.paths[0]")
LIVE = translate.IngressOutcome((), 1)


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("192.0.2.1", [{"ip": "192.0.2.1"}]),
        (" 2001:DB8::1 ,lb.Example.com", [{"ip": "2001:db8::1"}, {"hostname": "lb.example.com"}]),
        ("localhost", [{"hostname": "localhost"}]),
    ],
)
def test_status_addresses_are_ips_or_host_names(text: str, entries: list[dict[str, str]]) -> None:
    assert status.parse_addresses(text) == entries


@pytest.mark.parametrize("text", ["1.2.3", "999.1.1.1", "lb_example.com", "-lb.example",
                                  "a..b", "http://lb.example.com", " , "])
def test_anything_else_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"neither an IP address nor a host name|expected"):
        status.parse_addresses(text)


def test_warnings_are_grouped_by_the_ingress_they_start_with() -> None:
    got = status.warnings_by_ingress([SHADOWED, "Settings global not found; defaults apply"])
    assert got == {("team", "b"): (SHADOWED,)}


def test_a_shadowed_ingress_gets_one_conflict_event_per_change() -> None:
    a, b = ("team", "a"), ("team", "b")
    snaps = snapshot(ingresses={a: ingress("a"), b: ingress("b")})
    res = result(ingresses={a: LIVE, b: LIVE}, warnings=(SHADOWED,))
    reported: dict[Any, Any] = {}
    warned: dict[Any, Any] = {}
    first = status.plan(snaps, res, reported, None, NOW, warned, instance="replica-a")
    conflicts = [e for e in first.events if e["reason"] == "Conflict"]
    assert [(e["involvedObject"]["name"], e["type"]) for e in conflicts] == [("b", "Warning")]
    assert conflicts[0]["message"] == SHADOWED
    assert {e["reportingInstance"] for e in first.events} == {"replica-a"}
    assert status.plan(snaps, res, reported, None, NOW, warned).events == ()  # unchanged
    resolved = result(ingresses={a: LIVE, b: LIVE})
    assert status.plan(snaps, resolved, reported, None, NOW, warned).events == ()
    again = status.plan(snaps, res, reported, None, NOW, warned)  # back: said again
    assert [e["reason"] for e in again.events] == ["Conflict"]
    assert status.plan(snapshot(), result(), reported, None, NOW, warned).events == ()
    assert warned == {} and reported == {}


def test_no_conflict_event_without_the_memory_or_on_a_broken_ingress() -> None:
    b = ("team", "b")
    snaps = snapshot(ingresses={b: ingress("b")})
    live = result(ingresses={b: LIVE}, warnings=(SHADOWED,))
    assert [e["reason"] for e in status.plan(snaps, live, {}, None, NOW).events] == ["Updated"]
    broken = result(ingresses={b: translate.IngressOutcome(("bad",), 1)}, warnings=(SHADOWED,))
    events = status.plan(snaps, broken, {}, None, NOW, {}).events
    assert [e["reason"] for e in events] == ["UpdateError"]


def test_writes_stay_in_the_namespace_of_the_object_they_concern() -> None:
    """A warning text naming another namespace's Ingress (say, an Ingress whose path tells a
    story) writes nothing there: Events go only to Ingresses of the result, in their own
    namespace."""
    ours = ("team", "b")
    forged = ("Ingress kube-system/victim spec.rules[0]: x / is taken by Ingress team/b "
              "spec.rules[0]")
    snaps = snapshot(ingresses={ours: ingress("b")})
    res = result(ingresses={ours: LIVE}, warnings=(forged,))
    todo = status.plan(snaps, res, {}, [{"ip": "192.0.2.1"}], NOW, {})
    assert {e["metadata"]["namespace"] for e in todo.events} == {"team"}
    assert {e["involvedObject"]["namespace"] for e in todo.events} == {"team"}
    assert [key for key, _ in todo.ingress_status] == [ours]


def test_event_names_stay_valid_for_the_longest_ingress_names() -> None:
    long = ingress("x" * 253)
    event = status.ingress_event(long, LIVE, NOW)
    assert len(event["metadata"]["name"]) <= 253
    conflict = status.conflict_event(long, [SHADOWED], NOW, instance="i" * 300)
    assert len(conflict["metadata"]["name"]) <= 253
    assert len(conflict["reportingInstance"]) == 128


def test_a_round_plans_only_the_ingresses_whose_object_or_outcome_changed() -> None:
    keys = [("team", f"app{i}") for i in range(3)]
    addresses = [{"ip": "192.0.2.1"}]
    objects = {key: ingress(key[1], lb=addresses) for key in keys}
    res = result(ingresses={key: LIVE for key in keys})
    reported: dict[Any, Any] = {}
    planned: dict[Any, Any] = {}
    first = status.plan(snapshot(ingresses=objects), res, reported, addresses, NOW,
                        planned=planned)
    assert len(first.events) == 3 and set(planned) == set(keys)
    # The same objects again: nothing is even looked at (an emptied memory would re-plan).
    reported.clear()
    assert status.plan(snapshot(ingresses=objects), res, reported, addresses, NOW,
                       planned=planned) == status.Plan()
    # One Ingress replaced (its status was reset by someone): only it is planned, and fixed.
    objects[keys[1]] = ingress(keys[1][1], lb=[])
    again = status.plan(snapshot(ingresses=objects), res, reported, addresses, NOW,
                        planned=planned)
    assert [key for key, _ in again.ingress_status] == [keys[1]]
    assert [e["involvedObject"]["name"] for e in again.events] == ["app1"]
    # Its outcome changes while the object stays: planned again.
    broken = result(ingresses={**res.ingresses, keys[2]: translate.IngressOutcome(("x",), 1)})
    third = status.plan(snapshot(ingresses=objects), broken, reported, addresses, NOW,
                        planned=planned)
    assert [(e["involvedObject"]["name"], e["reason"]) for e in third.events] == [
        ("app2", "UpdateError")]
    status.plan(snapshot(), result(), reported, addresses, NOW, planned=planned)
    assert planned == {} and reported == {}


def test_status_patches_carry_the_uid_so_a_recreated_object_is_not_written_about() -> None:
    patch = status.load_balancer_patch(ingress("web"), [{"ip": "192.0.2.1"}])
    assert patch is not None and patch["metadata"] == {"uid": "uid-web"}
    policy = {"metadata": {"name": "p", "uid": "uid-p", "generation": 2}}
    body = status.status_patch(policy, (), NOW)
    assert body is not None and body["metadata"] == {"uid": "uid-p"}
    assert "metadata" not in (status.status_patch({"metadata": {"generation": 1}}, (), NOW) or {})


@pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                    reason="no KUBECONFIG: start one with eval \"$(e2e/control-plane up)\"")
def test_a_recreated_ingress_does_not_get_the_old_ones_status() -> None:
    from kubernetes import client, config

    config.load_kube_config()
    api = client.ApiClient()
    networking = client.NetworkingV1Api(api)
    name = f"recreated-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": {"defaultBackend": {"service": {"name": "app", "port": {"number": 80}}}}}
    old = api.sanitize_for_serialization(networking.create_namespaced_ingress("default", body))
    networking.delete_namespaced_ingress(name, "default")
    networking.create_namespaced_ingress("default", body)
    try:
        key = ("default", name)
        reporter = status.Reporter(api)
        todo = reporter.report(snapshot(ingresses={key: old}), result(ingresses={key: LIVE}),
                               [{"ip": "192.0.2.1"}])
        assert len(todo.ingress_status) == 1  # planned from the old snapshot ...
        now = networking.read_namespaced_ingress_status(name, "default")
        assert not (now.status and now.status.load_balancer
                    and now.status.load_balancer.ingress)  # ... refused for the new object
        assert key not in reporter.planned  # and planned again with the next snapshot
    finally:
        networking.delete_namespaced_ingress(name, "default")
