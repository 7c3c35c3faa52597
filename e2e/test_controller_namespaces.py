"""``vallum controller --namespaces``: Ingresses elsewhere are not seen, not even listed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e import conftest, test_controller


@pytest.fixture
def other_namespace(cluster: conftest.Cluster) -> Iterator[str]:
    with cluster.temporary_namespace() as name:
        yield name


def test_only_the_named_namespaces_are_served(
    cluster: conftest.Cluster, upstream: conftest.Upstream, namespace: str,
    other_namespace: str, ingress_class: str, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    inside, outside = f"in.{namespace}.e2e.test", f"out.{other_namespace}.e2e.test"
    for ns, host in ((namespace, inside), (other_namespace, outside)):
        test_controller.backend(cluster, ns, upstream)
        test_controller.ingress(cluster, ns, ingress_class, host)
    controller_name = cluster.get("ingressclass", ingress_class)["spec"]["controller"]
    running = conftest.Controller(
        cluster, controller_name, tmp_path_factory.mktemp("namespaces") / "controller.log",
        extra=("--namespaces", namespace),
    )
    running.start()
    try:
        running.wait_ready()
        # Ready means the first table holds everything that existed: no wait here.
        assert test_controller.reached(*running.request(inside)), running.log()
        assert running.request(outside)[0] == 404
        # ... and a change there later is not watched either.
        test_controller.ingress(cluster, other_namespace, ingress_class, outside, name="late")
        fresh = f"fresh.{namespace}.e2e.test"
        test_controller.ingress(cluster, namespace, ingress_class, fresh, name="fresh")
        running.wait_for(fresh, test_controller.reached)
        assert running.request(outside)[0] == 404
    finally:
        running.stop()
