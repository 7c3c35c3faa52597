"""Snapshot versions and fingerprints: what tells the translator that nothing changed."""

from __future__ import annotations

import types

from tests.operator import objects as k8s
from vallum.operator import snapshot as snap


def test_version_is_the_resource_version_else_a_digest_of_the_content() -> None:
    assert snap.version(None) is None
    assert snap.version(k8s.service(rv="42")) == "42"
    plain = k8s.service()
    del plain["metadata"]["resourceVersion"]
    same = k8s.service()
    del same["metadata"]["resourceVersion"]
    assert snap.version(plain) == snap.version(same) != snap.version(k8s.service("other", rv=""))
    assert str(snap.version(plain)).startswith("sha256:")


def test_fingerprints_follow_the_objects() -> None:
    first = k8s.snapshot(k8s.service(rv="1"), k8s.endpoint_slice(rv="1"))
    dep_slices = ("EndpointSlices", ("default", "app"))
    dep_service = ("Service", ("default", "app"))
    more = k8s.snapshot(
        k8s.service(rv="1"), k8s.endpoint_slice(rv="1"), k8s.endpoint_slice(name="app-2")
    )
    assert snap.fingerprint(first, dep_service) == snap.fingerprint(more, dep_service)
    assert snap.fingerprint(first, dep_slices) != snap.fingerprint(more, dep_slices)
    gone = k8s.snapshot()
    assert snap.fingerprint(gone, dep_service) is None
    assert snap.fingerprint(gone, dep_slices) == ()


def test_slices_are_indexed_by_their_service_label_in_their_namespace() -> None:
    objs = (
        k8s.endpoint_slice(name="b"),
        k8s.endpoint_slice(name="a"),
        k8s.endpoint_slice(namespace="other", name="c"),
    )
    unlabelled = k8s.endpoint_slice(name="d")
    del unlabelled["metadata"]["labels"]
    snapshot = k8s.snapshot(*objs, unlabelled)
    assert snapshot.slices_by_service == {
        ("default", "app"): (("default", "a"), ("default", "b")),
        ("other", "app"): (("other", "c"),),
    }
    slices = types.MappingProxyType(dict(snapshot.endpoint_slices))
    assert snap.slices_index(slices) is snap.slices_index(slices)  # kept for the same mapping
    assert snap.slices_index(types.MappingProxyType({})) == {}
