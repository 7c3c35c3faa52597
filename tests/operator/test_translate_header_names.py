"""A malformed header name, from an annotation or a ``set_request_headers_secret`` Secret, is a
problem of its Ingress (its routes deny with the reason), never a header line upstream and
never the whole table's failure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operator import objects as k8s
from tests.operator.test_translate import APP, assert_denies, broken_result

BAD_NAMES = ["X Team", "X-Team:", "X-A\r\nHost", "", "X-(old)"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    ("annotation", "form"),
    [
        ("ingress.pomerium.io/set_request_headers", "map"),
        ("ingress.vallum.dev/set_response_headers", "map"),
        ("ingress.pomerium.io/remove_request_headers", "list"),
    ],
)
def test_a_malformed_header_name_in_an_annotation(name: str, annotation: str, form: str) -> None:
    value = json.dumps({name: "v"} if form == "map" else [name])
    result = broken_result(annotations={annotation: value})
    assert_denies(result, "is not a header name", repr(name)[1:-1])
    for problem in result.ingresses[APP].problems:
        assert "\r" not in problem and "\n" not in problem  # Events and logs stay one line


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("field", ["set_request_headers", "set_response_headers"])
def test_a_malformed_header_name_in_a_secret(name: str, field: str) -> None:
    """(The API server refuses such Secret keys today; the translation does not rely on it.)"""
    secret = k8s.secret("hdrs", {"X-Ok": "fine", name: "v"})
    annotations = {f"ingress.pomerium.io/{field}_secret": "hdrs"}
    assert_denies(broken_result(secret, annotations=annotations), "is not a header name")


def test_well_formed_names_from_a_secret_are_kept() -> None:
    secret = k8s.secret("hdrs", {"X-Api.Key_v2": "s3cr3t"})
    annotations: dict[str, Any] = {"ingress.pomerium.io/set_request_headers_secret": "hdrs"}
    result = broken_result(secret, annotations=annotations)
    assert result.ingresses[APP].problems == ()
    assert result.table is not None
    route = next(r for r in result.table.settings.routes if r.host == "app.example.com")
    assert route.set_request_headers == (("X-Api.Key_v2", "s3cr3t"),)
