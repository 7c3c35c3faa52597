"""Which replica writes: the defaults the CLI takes (pure), then a real API server.

The cluster tests run when ``KUBECONFIG`` names one (``eval "$(e2e/control-plane up)"``): two
:class:`Leadership` objects with real Electors and Reporters share one Lease; only the holder
writes, and a new holder reports the latest result again in full.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.test_status import result, snapshot
from vallum.operator import leadership, lease, translate

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def test_the_pod_namespace_comes_from_the_service_account_then_the_environment(
    tmp_path: Path,
) -> None:
    mounted = tmp_path / "namespace"
    mounted.write_text("vallum-system\n")
    assert leadership.pod_namespace({"POD_NAMESPACE": "other"}, str(mounted)) == "vallum-system"
    absent = str(tmp_path / "absent")
    assert leadership.pod_namespace({"POD_NAMESPACE": " ingress "}, absent) == "ingress"
    assert leadership.pod_namespace({}, absent) == "default"
    mounted.write_text("")
    assert leadership.pod_namespace({}, str(mounted)) == "default"


@pytest.mark.parametrize(
    "name",
    ["vallum.dev/ingress-controller", "example.com/Ingress_Controller", "///", "x" * 300],
)
def test_lease_names_are_valid_and_differ_by_controller_name(name: str) -> None:
    got = leadership.lease_name(name)
    assert DNS_SUBDOMAIN.fullmatch(got) and len(got) <= 63, got
    assert got == leadership.lease_name(name)  # every replica derives the same
    assert got != leadership.lease_name(name + "-2")


def test_the_default_lease_name_reads_as_the_controller() -> None:
    assert leadership.lease_name("vallum.dev/ingress-controller").startswith(
        "vallum-dev-ingress-controller-")


def test_identity_is_the_pod_name_else_host_and_pid() -> None:
    assert leadership.identity({"POD_NAME": "vallum-7d9f-abcde"}) == "vallum-7d9f-abcde"
    assert leadership.identity({}) == f"{socket.gethostname()}-{os.getpid()}"


# -- against a real API server ----------------------------------------------------------------

needs_cluster = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="no KUBECONFIG: start one with eval \"$(e2e/control-plane up)\"",
)


@pytest.fixture
def api() -> Any:
    from kubernetes import client, config

    config.load_kube_config()
    return client.ApiClient()


@pytest.fixture
def namespace(api: Any) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"lead-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


async def _until(check: Any, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.05)


def _updated_by(api: Any, namespace: str, name: str) -> list[str]:
    from kubernetes import client

    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return sorted(e.reporting_instance for e in events if e.reason == "Updated")


@needs_cluster
async def test_only_the_holder_writes_and_a_new_holder_reports_everything_again(
    api: Any, namespace: str,
) -> None:
    from kubernetes import client

    networking = client.NetworkingV1Api(api)
    created = networking.create_namespaced_ingress(namespace, {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
        "spec": {"defaultBackend": {"service": {"name": "app", "port": {"number": 80}}}},
    })
    key = (namespace, "web")
    snaps = snapshot(ingresses={key: api.sanitize_for_serialization(created)})
    res = result(ingresses={key: translate.IngressOutcome((), 1)})
    coordination = client.CoordinationV1Api(api)
    replicas = {
        who: leadership.Leadership(
            api, namespace=namespace, name="vallum", identity=who,
            status_addresses=[{"ip": "192.0.2.40"}],
            elector=lease.Elector(coordination, namespace, "vallum", who,
                                  duration=30, renew=0.3, retry=0.2),
        )
        for who in ("replica-a", "replica-b")
    }
    tasks = {who: asyncio.create_task(r.run()) for who, r in replicas.items()}
    try:
        for r in replicas.values():
            await r.report(snaps, res)  # every replica's controller calls the hook
        await _until(lambda: sum(r.leader for r in replicas.values()) == 1, 10)
        first = next(who for who, r in replicas.items() if r.leader)
        second = next(who for who in replicas if who != first)
        await _until(lambda: _updated_by(api, namespace, "web") == [first], 10)
        for _ in range(3):  # later translations, nothing changed: nothing more written
            for r in replicas.values():
                await r.report(snaps, res)
        await asyncio.sleep(1.0)
        assert _updated_by(api, namespace, "web") == [first]
        assert replicas[second].reports == 0
        lb = networking.read_namespaced_ingress_status("web", namespace).status.load_balancer
        assert [i.ip for i in lb.ingress] == ["192.0.2.40"]
        # The holder stops cleanly (hands the Lease back); the other takes it at its next read
        # and, with no memory of what was reported, reports the latest result in full.
        tasks[first].cancel()
        await asyncio.gather(tasks[first], return_exceptions=True)
        await _until(lambda: replicas[second].leader, 5)
        await _until(lambda: _updated_by(api, namespace, "web") == sorted([first, second]), 10)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


@needs_cluster
async def test_publish_service_addresses_follow_the_service(api: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    changes: list[Any] = []
    watched = leadership.ServiceAddresses(api, namespace, "front", lambda: changes.append(1))
    watched.start()
    try:
        await _until(lambda: watched.addresses == [], 10)  # read: no such Service yet
        core.create_namespaced_service(namespace, {
            "metadata": {"name": "front"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}],
                     "externalIPs": ["198.51.100.9"]},
        })
        await _until(lambda: watched.addresses == [{"ip": "198.51.100.9"}], 10)
        core.patch_namespaced_service_status("front", namespace, {"status": {"loadBalancer": {
            "ingress": [{"hostname": "lb.example.test"}]}}})
        await _until(lambda: watched.addresses == [{"hostname": "lb.example.test"}], 10)
        core.create_namespaced_service(namespace, {  # another Service: not ours
            "metadata": {"name": "front-2"}, "spec": {"ports": [{"port": 80}]}})
        core.delete_namespaced_service("front", namespace)
        await _until(lambda: watched.addresses == [], 10)
        assert len(changes) == 4
    finally:
        watched.close()
