"""The controller's own raw API calls against a real API server: paginated LISTs (whole objects
or keys), a kind that is not served, and the Secret re-read."""

from __future__ import annotations

from typing import Any

import pytest

from e2e import conftest
from vallum.operator import handlers
from vallum.operator import store as store_mod


def test_list_pages_through_every_object(
    cluster: conftest.Cluster, namespace: str, api: Any
) -> None:
    for i in range(5):
        cluster.apply(f"""
            apiVersion: v1
            kind: Service
            metadata: {{name: s{i}}}
            spec: {{ports: [{{port: 80}}]}}
        """, namespace)
    whole = handlers.list_objects(api, store_mod.SERVICES, [namespace], page=2)
    assert whole is not None
    assert sorted(o["metadata"]["name"] for o in whole) == [f"s{i}" for i in range(5)]
    assert all(o["spec"]["ports"][0]["port"] == 80 for o in whole)
    assert handlers.list_keys(api, store_mod.SERVICES, [namespace], page=2) == {
        (namespace, f"s{i}") for i in range(5)
    }


def test_a_kind_not_served_is_none(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = handlers.Resource("nothing.vallum.dev", "v1", "things", True)
    resources = dict(handlers.RESOURCES) | {"things": missing}
    monkeypatch.setattr(handlers, "RESOURCES", resources)
    assert handlers.list_objects(api, "things") is None


def test_get_secret_reads_its_data(cluster: conftest.Cluster, namespace: str, api: Any) -> None:
    cluster.apply("""
        apiVersion: v1
        kind: Secret
        metadata: {name: creds}
        stringData: {token: abc}
    """, namespace)
    secret = handlers.get_secret(api, (namespace, "creds"))
    assert secret is not None
    assert secret["data"] == {"token": "YWJj"}
    assert handlers.get_secret(api, (namespace, "absent")) is None
