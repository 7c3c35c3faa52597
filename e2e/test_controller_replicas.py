"""Several replicas of ``vallum controller`` (issue 12, item 9), each a real process.

All replicas serve the same routes; exactly one -- the holder of the Lease -- writes Events and
status; when it is killed (SIGKILL: no hand-over) another takes over within 15 s; a sign-out on
one replica makes the same cookie refused on the other within 2 s, through the API server only.

The session cookie is minted here with the Settings' ``cookie_secret`` by Vallum's own sealing
code (:mod:`vallum.proxy.sessions`, through :mod:`e2e.signed_in`), as a sign-in would have made
it: the provider plays no part in signed-in requests nor in the revocation.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import conftest, signed_in, test_controller

SIGNED_IN = {"ingress.pomerium.io/allow_any_authenticated_user": "true"}
ADDRESS = [{"ip": "192.0.2.30"}]


class Replicas:
    def __init__(self, cluster: conftest.Cluster, namespace: str, class_name: str,
                 controller_name: str, cookie_secret: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.class_name = class_name
        self.controller_name = controller_name
        self.cookie_secret = cookie_secret
        self.running: dict[str, conftest.Controller] = {}

    def holder(self) -> str | None:
        leases = json.loads(self.cluster.kubectl("get", "leases", "-n", self.namespace,
                                                 "-o", "json"))["items"]
        assert len(leases) == 1, leases  # one Lease for one controller name
        holder: str | None = leases[0]["spec"].get("holderIdentity")
        return holder

    def updated_by(self, namespace: str, name: str) -> list[str]:
        """reportingInstance of each Normal/Updated Event on Ingress ``name``."""
        return [e.get("reportingInstance", "")
                for e in conftest.events_about(self.cluster, namespace, "Ingress", name)
                if e.get("reason") == "Updated"]


@pytest.fixture(scope="module")
def replicas(cluster: conftest.Cluster, upstream: conftest.Upstream,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two replicas (POD_NAME replica-a and replica-b) sharing a Lease and the revocations in a
    namespace of their own, with a Settings object that signs users in."""
    with cluster.temporary_namespace() as home, conftest.own_ingress_class(cluster) as (
        class_name, controller_name
    ), signed_in.settings(cluster, home, "e2e-replicas", pomerium_compatibility=True) as (
        settings_name, cookie_secret
    ):
        found = Replicas(cluster, home, class_name, controller_name, cookie_secret)
        logs = tmp_path_factory.mktemp("replicas")
        flags = ("--publish-status-address", ADDRESS[0]["ip"])
        with conftest.replicas(cluster, controller_name, logs, settings_name, home,
                               {"replica-a": flags, "replica-b": flags}) as running:
            found.running.update(running)
            yield found


def test_both_serve_the_same_routes_and_exactly_one_writes_events(
    replicas: Replicas, upstream: conftest.Upstream, namespace: str,
) -> None:
    host = f"both.{namespace}.e2e.test"
    test_controller.backend(replicas.cluster, namespace, upstream)
    test_controller.ingress(replicas.cluster, namespace, replicas.class_name, host)
    for running in replicas.running.values():
        running.wait_for(host, test_controller.reached)
    conftest.wait_until(lambda: replicas.updated_by(namespace, "web"), what="an Event")
    time.sleep(3)  # a second writer, if any, would have written by now
    holder = replicas.holder()
    assert holder in replicas.running
    assert replicas.updated_by(namespace, "web") == [holder]
    status = replicas.cluster.get("ingress", "web", namespace).get("status") or {}
    assert status.get("loadBalancer", {}).get("ingress") == ADDRESS


def test_a_sign_out_on_one_replica_is_refused_on_the_other_within_two_seconds(
    replicas: Replicas, upstream: conftest.Upstream, namespace: str,
) -> None:
    host = f"signed.{namespace}.e2e.test"
    test_controller.backend(replicas.cluster, namespace, upstream)
    test_controller.ingress(replicas.cluster, namespace, replicas.class_name, host,
                            annotations=SIGNED_IN)
    one, two = replicas.running["replica-a"], replicas.running["replica-b"]
    cookie = signed_in.cookie(replicas.cookie_secret)
    headers = {"Cookie": cookie, "Accept": "application/json"}

    def serves(running: conftest.Controller) -> bool:
        return running.send("GET", host, "/", headers)[0] == 200

    for running in (one, two):
        conftest.wait_until(functools.partial(serves, running),
                            what="the signed-in request served")
    assert one.send("GET", host, "/", {"Accept": "application/json"})[0] == 401  # no cookie
    status, answer = one.send("POST", host, "/.pomerium/sign_out",
                              {"Cookie": cookie, "Origin": f"http://{host}"})
    signed_out = time.monotonic()
    assert status == 302, (status, answer, one.log())
    assert one.send("GET", host, "/", headers)[0] == 401  # at once where it was signed out
    conftest.wait_until(lambda: two.send("GET", host, "/", headers)[0] == 401, timeout=2.0,
                        interval=0.02, what="the cookie refused by the other replica")
    assert time.monotonic() - signed_out < 2.0
    another = signed_in.cookie(replicas.cookie_secret)
    assert two.send("GET", host, "/", {**headers, "Cookie": another})[0] == 200  # only that one


def test_when_the_leader_is_killed_the_other_writes_within_15_seconds(
    replicas: Replicas, upstream: conftest.Upstream, namespace: str,
) -> None:
    leader = conftest.wait_until(replicas.holder, what="a Lease holder")
    other = next(name for name in replicas.running if name != leader)
    test_controller.backend(replicas.cluster, namespace, upstream)
    replicas.running[leader].kill()
    killed = time.monotonic()
    host = f"after.{namespace}.e2e.test"
    test_controller.ingress(replicas.cluster, namespace, replicas.class_name, host,
                            name="after")
    replicas.running[other].wait_for(host, test_controller.reached)  # served meanwhile

    def written() -> Any:
        status = replicas.cluster.get("ingress", "after", namespace).get("status") or {}
        return (replicas.updated_by(namespace, "after") == [other]
                and status.get("loadBalancer", {}).get("ingress") == ADDRESS)

    conftest.wait_until(written, timeout=15.0 - (time.monotonic() - killed),
                        what=f"{other} writing the Event and status after {leader} died")
    took = time.monotonic() - killed
    assert took < 15.0, f"{took:.1f} s"  # measured here: 9.1 s (Lease duration 10 s)
    assert replicas.holder() == other
