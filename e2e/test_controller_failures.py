"""``vallum controller``: Pomerium annotations, broken Ingresses that deny alone, and readiness.

A broken Ingress (missing Policy, no ready endpoint) must make only its own routes answer 503
with the reason while the rest of the table keeps serving; a controller whose Settings object
does not load serves nothing and stays not ready until the Settings are fixed.
"""

from __future__ import annotations

import time

import pytest

from e2e import conftest, test_controller

PUBLIC = test_controller.PUBLIC


def test_pomerium_annotations_reach_the_upstream(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    host = f"headers.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    annotations = PUBLIC | {"ingress.pomerium.io/set_request_headers": '{"X-Team": "blue"}'}
    test_controller.ingress(cluster, namespace, ingress_class, host, annotations=annotations)
    _, body = controller.wait_for(host, test_controller.reached)
    assert body["headers"].get("X-Team") == "blue"
    annotations = PUBLIC | {"ingress.pomerium.io/set_request_headers": '{"X-Team": "green"}'}
    test_controller.ingress(cluster, namespace, ingress_class, host, annotations=annotations)
    _, body = controller.wait_for(
        host, lambda status, body: body.get("headers", {}).get("X-Team") == "green"
    )


def test_missing_policy_denies_only_its_ingress(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    good, broken = f"good.{namespace}.e2e.test", f"nopolicy.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, ingress_class, good, name="good")
    annotations = PUBLIC | {"ingress.vallum.dev/policy-ref": "absent"}
    test_controller.ingress(
        cluster, namespace, ingress_class, broken, name="broken", annotations=annotations
    )
    status, body = controller.wait_for(broken, lambda status, _body: status != 404)
    assert status == 503, body
    assert "absent" in str(body)
    assert controller.request(good)[0] == 200


def test_no_ready_endpoint_is_a_503_that_says_so(
    cluster: conftest.Cluster, controller: conftest.Controller, upstream: conftest.Upstream,
    namespace: str, ingress_class: str,
) -> None:
    host = f"down.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, ingress_class, host)
    controller.wait_for(host, test_controller.reached)
    conftest.endpoint_slice(cluster, namespace, "app-1", "app", "http", upstream.port,
                            upstream.ip, ready=False)
    _, body = controller.wait_for(host, lambda status, _body: status == 503)
    assert "endpoint" in str(body).lower(), body


def test_not_ready_until_the_settings_load(
    cluster: conftest.Cluster, ingress_class: str, upstream: conftest.Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with conftest.waiting_for_settings(
        cluster, ingress_class, tmp_path_factory.mktemp("settings")
    ) as (running, name):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # stays alive and not ready
            assert running.admin("/healthz")[0] in (0, 200)
            status, body = running.admin("/readyz")
            assert status in (0, 503), (status, body)
            time.sleep(0.2)
        assert running.admin("/healthz") == (200, {"status": "ok"}), running.log()
        assert running.admin("/readyz")[0] == 503
        cluster.delete("settings", name)  # no Settings object: defaults, public routes serve
        running.wait_ready()
