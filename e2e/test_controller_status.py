"""What ``vallum controller`` writes back to the objects, read with kubectl as users read it.

An Ingress gets a ``Normal``/``Updated`` Event once live and a ``Warning``/``UpdateError`` Event
with the reason when broken (issue 12, item 8), its ``status.loadBalancer`` from
``--publish-status-address`` or ``--publish-service``; a Policy and the Settings get a ``Ready``
condition with the parser's message, while the table keeps serving.

The controller of this module has an IngressClass and a Settings object of its own, so nothing
else in the run writes about its objects.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import conftest, test_controller

ADDRESSES = [{"ip": "192.0.2.10"}, {"hostname": "lb.e2e.test"}]


@pytest.fixture(scope="module")
def own(cluster: conftest.Cluster) -> Iterator[tuple[str, str]]:
    with conftest.own_ingress_class(cluster) as found:
        yield found


@pytest.fixture(scope="module")
def settings_name(cluster: conftest.Cluster) -> Iterator[str]:
    name = f"e2e-status-{secrets.token_hex(4)}"
    cluster.apply(f"""
        apiVersion: vallum.dev/v1alpha1
        kind: Settings
        metadata: {{name: {name}}}
        spec: {{passIdentityHeaders: false}}
    """)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "settings", name, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def writer(cluster: conftest.Cluster, own: tuple[str, str], settings_name: str,
           upstream: conftest.Upstream, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[conftest.Controller]:
    """A controller (alone on its Lease: it writes) publishing two status addresses."""
    running = conftest.Controller(
        cluster, own[1], tmp_path_factory.mktemp("status") / "controller.log",
        extra=("--settings", settings_name,
               "--publish-status-address", "192.0.2.10, lb.e2e.test"),
    )
    running.start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def events(cluster: conftest.Cluster, namespace: str, name: str, reason: str
           ) -> list[dict[str, Any]]:
    return [e for e in conftest.events_about(cluster, namespace, "Ingress", name)
            if e.get("reason") == reason]


def ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def test_a_live_ingress_gets_one_updated_event_and_the_published_addresses(
    cluster: conftest.Cluster, writer: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, own: tuple[str, str],
) -> None:
    host = f"live.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, "someone-else", f"theirs.{namespace}.e2e.test",
                            name="theirs")
    test_controller.ingress(cluster, namespace, own[0], host)
    writer.wait_for(host, test_controller.reached)
    updated = conftest.wait_until(lambda: events(cluster, namespace, "web", "Updated"),
                                  what="a Normal/Updated Event")
    assert updated[0]["type"] == "Normal"
    assert "1 route(s) live" in updated[0]["message"]
    assert updated[0]["involvedObject"]["namespace"] == namespace
    lb = conftest.wait_until(
        lambda: (cluster.get("ingress", "web", namespace).get("status") or {})
        .get("loadBalancer", {}).get("ingress"),
        what="status.loadBalancer",
    )
    assert lb == ADDRESSES
    time.sleep(1.5)  # more translations happen meanwhile (our own status write among them)
    again = events(cluster, namespace, "web", "Updated")
    assert len(again) == 1 and again[0].get("count", 1) == 1, again
    assert not events(cluster, namespace, "web", "UpdateError")
    # An Ingress of another class is not ours to write about.
    assert conftest.events_about(cluster, namespace, "Ingress", "theirs") == []
    assert not cluster.get("ingress", "theirs", namespace).get("status", {}).get(
        "loadBalancer", {}).get("ingress")


def test_a_missing_policy_is_a_warning_event_with_the_reason_then_updated_once_fixed(
    cluster: conftest.Cluster, writer: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, own: tuple[str, str],
) -> None:
    host = f"nopolicy.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, own[0], host,
                            annotations={"ingress.vallum.dev/policy-ref": "admins"})
    warning = conftest.wait_until(lambda: events(cluster, namespace, "web", "UpdateError"),
                                  what="a Warning/UpdateError Event")[0]
    assert warning["type"] == "Warning"
    assert "admins" in warning["message"], warning["message"]
    assert writer.request(host)[0] == 503
    status = (cluster.get("ingress", "web", namespace).get("status") or {})
    assert not status.get("loadBalancer", {}).get("ingress")  # not published while broken
    cluster.apply("""
        apiVersion: vallum.dev/v1alpha1
        kind: Policy
        metadata: {name: admins}
        spec: {allow: {or: [{groups: {has: admins}}]}}
    """, namespace)
    conftest.wait_until(lambda: events(cluster, namespace, "web", "Updated"),
                        what="Normal/Updated once the Policy exists")
    assert len(events(cluster, namespace, "web", "UpdateError")) == 1


def test_a_policy_is_ready_then_not_with_the_parsers_message_and_the_table_still_serves(
    cluster: conftest.Cluster, writer: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, own: tuple[str, str],
) -> None:
    public = f"public.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    cluster.apply("""
        apiVersion: vallum.dev/v1alpha1
        kind: Policy
        metadata: {name: staff}
        spec: {allow: {or: [{groups: {has: staff}}]}}
    """, namespace)
    test_controller.ingress(cluster, namespace, own[0], public, name="public")
    test_controller.ingress(cluster, namespace, own[0], f"staff.{namespace}.e2e.test",
                            name="staff", annotations={"ingress.vallum.dev/policy-ref": "staff"})
    condition = conftest.wait_until(
        lambda: ready(cluster.get("policy", "staff", namespace)), what="Policy Ready")
    assert condition["status"] == "True", condition
    policy = cluster.get("policy", "staff", namespace)
    assert policy["status"]["observedGeneration"] == policy["metadata"]["generation"]
    cluster.apply("""
        apiVersion: vallum.dev/v1alpha1
        kind: Policy
        metadata: {name: staff}
        spec: {allow: {or: [{no_such_criterion: {is: 1}}]}}
    """, namespace)
    condition = conftest.wait_until(
        lambda: (c := ready(cluster.get("policy", "staff", namespace)))
        and c["status"] == "False" and c,
        what="Policy Ready False",
    )
    assert condition["reason"] == "Invalid"
    assert "no_such_criterion" in condition["message"], condition
    policy = cluster.get("policy", "staff", namespace)
    assert policy["status"]["observedGeneration"] == policy["metadata"]["generation"]
    assert test_controller.reached(*writer.request(public))  # the rest keeps serving


def test_the_settings_are_ready_then_not_with_the_reason_and_the_last_table_serves(
    cluster: conftest.Cluster, writer: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, own: tuple[str, str], settings_name: str,
) -> None:
    host = f"settings.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, own[0], host)
    writer.wait_for(host, test_controller.reached)
    condition = conftest.wait_until(
        lambda: ready(cluster.get("settings", settings_name)), what="Settings Ready")
    assert condition["status"] == "True", condition
    patch = {"spec": {"secrets": f"{namespace}/absent"}}
    cluster.kubectl("patch", "settings", settings_name, "--type=merge", "-p", json.dumps(patch))
    try:
        condition = conftest.wait_until(
            lambda: (c := ready(cluster.get("settings", settings_name)))
            and c["status"] == "False" and c,
            what="Settings Ready False",
        )
        assert f"{namespace}/absent" in condition["message"], condition
        assert test_controller.reached(*writer.request(host))  # the last good table serves
    finally:
        cluster.kubectl("patch", "settings", settings_name, "--type=json",
                        "-p", '[{"op": "remove", "path": "/spec/secrets"}]')
    conftest.wait_until(
        lambda: (c := ready(cluster.get("settings", settings_name))) and c["status"] == "True",
        what="Settings Ready True again",
    )


def test_a_route_another_ingress_takes_first_is_a_conflict_warning_on_it(
    cluster: conftest.Cluster, writer: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, own: tuple[str, str],
) -> None:
    host = f"twice.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, own[0], host, name="a")
    test_controller.ingress(cluster, namespace, own[0], host, name="b")
    conflict = conftest.wait_until(lambda: events(cluster, namespace, "b", "Conflict"),
                                   what="a Warning/Conflict Event on the Ingress never reached")
    assert conflict[0]["type"] == "Warning"
    assert f"Ingress {namespace}/a" in conflict[0]["message"], conflict[0]["message"]
    assert not events(cluster, namespace, "a", "Conflict")


def test_publish_service_addresses_follow_the_service(
    cluster: conftest.Cluster, upstream: conftest.Upstream, namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """--publish-service: the Service's clusterIP while it has no load balancer, then the
    load-balancer address once its status has one (re-read when the Service changes)."""
    with conftest.own_ingress_class(cluster) as (class_name, controller_name):
        running = conftest.Controller(
            cluster, controller_name, tmp_path_factory.mktemp("publish") / "controller.log",
            extra=("--publish-service", f"{namespace}/front"),
        )
        running.start()
        try:
            running.wait_ready()
            host = f"published.{namespace}.e2e.test"
            test_controller.backend(cluster, namespace, upstream)
            cluster.apply("""
                apiVersion: v1
                kind: Service
                metadata: {name: front}
                spec:
                  type: LoadBalancer
                  ports: [{name: https, port: 443}]
            """, namespace)
            test_controller.ingress(cluster, namespace, class_name, host)
            cluster_ip = conftest.wait_until(
                lambda: cluster.get("service", "front", namespace)["spec"].get("clusterIP"),
                what="the Service's clusterIP")

            def published() -> Any:
                status = cluster.get("ingress", "web", namespace).get("status") or {}
                return status.get("loadBalancer", {}).get("ingress")

            assert conftest.wait_until(published, what="the clusterIP published") == [
                {"ip": cluster_ip}]
            cluster.kubectl(
                "patch", "service", "front", "-n", namespace, "--subresource=status",
                "--type=merge",
                "-p", json.dumps({"status": {"loadBalancer": {"ingress": [
                    {"ip": "198.51.100.7"}, {"hostname": "front.e2e.test"}]}}}),
            )
            conftest.wait_until(
                lambda: published() == [{"ip": "198.51.100.7"}, {"hostname": "front.e2e.test"}],
                what="the load balancer's addresses published",
            )
        finally:
            running.stop()
