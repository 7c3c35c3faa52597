"""docs/crd-reference.md is what scripts/crd_docs.py makes of crds/*.yaml (so it cannot drift
from the CRDs), the generator's hand-kept Pomerium table names every Settings field, every
field the controller serves has its routes-file setting, and every default a Settings field's
description states is the default the controller really serves."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.docs import pages
from tests.support.certs import TestCA
from vallum.core import config
from vallum.operator import snapshot as snap
from vallum.operator import translate

crd_docs = pages.load_script("crd_docs")
SETTINGS_CRD = yaml.safe_load(crd_docs.CRDS[0].read_text(encoding="utf-8"))
_, SCHEMA = crd_docs._schema(SETTINGS_CRD)


def spec_fields() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node, _required in crd_docs.fields(SCHEMA, ""):
        if path.startswith("spec."):
            yield path, node


def test_the_committed_page_is_the_generated_one() -> None:
    page = crd_docs.PAGE.read_text(encoding="utf-8")
    assert crd_docs.render(page) == page, "docs/crd-reference.md is stale: run scripts/crd_docs.py"
    assert crd_docs.main(["--check"]) == 0


def test_a_changed_crd_makes_the_page_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    page = crd_docs.PAGE.read_text(encoding="utf-8")
    before = crd_docs.generated()
    original = crd_docs.crd_section

    def renamed(crd: dict[str, Any]) -> list[str]:
        crd["spec"]["names"]["shortNames"] = ["changed"]
        return list(original(crd))

    monkeypatch.setattr(crd_docs, "crd_section", renamed)
    assert crd_docs.generated() != before
    assert crd_docs.render(page) != page


def test_the_page_keeps_its_hand_written_text() -> None:
    page = crd_docs.PAGE.read_text(encoding="utf-8")
    head = page.partition(crd_docs.BEGIN)[0]
    assert "# CRD reference" in head and "scripts/crd_docs.py" in head
    assert crd_docs.render("intro\n" + crd_docs.BEGIN + "old" + crd_docs.END + "\nend\n") == (
        "intro\n" + crd_docs.BEGIN + "\n\n" + crd_docs.generated() + "\n" + crd_docs.END + "\nend\n"
    )
    with pytest.raises(SystemExit):
        crd_docs.render("no markers")


def test_the_pomerium_table_names_every_settings_field_and_no_other() -> None:
    assert set(crd_docs.POMERIUM) == {path for path, _ in spec_fields()}


def test_every_leaf_field_has_its_routes_file_setting() -> None:
    for path, node in spec_fields():
        if node.get("type") == "object" and "properties" in node and path != "spec.downstreamMtls":
            continue  # a section: its fields carry the settings
        assert crd_docs.routes_file_setting(path), path


def test_every_pomerium_field_vallum_refuses_is_refused_by_the_controller_too() -> None:
    refused = {p for p, text in crd_docs.POMERIUM.items() if "refused" in text}
    for path in refused:
        assert crd_docs.routes_file_setting(path) == "— (refused)", path


def _typed(node: dict[str, Any], text: str) -> Any:
    text = text.split(" (")[0].strip("`")
    kind = node.get("type")
    if kind == "boolean":
        return {"true": True, "false": False}[text]
    if kind == "integer":
        return int(text)
    if kind == "array":
        return [part.strip() for part in text.split(",")]
    return text


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")[1:]
    for part in parents:
        spec = spec.setdefault(part, {})
    spec[leaf] = value


def _served(spec: dict[str, Any]) -> config.Settings:
    obj = {"apiVersion": "vallum.dev/v1alpha1", "kind": "Settings", "metadata": {"name": "g"}}
    result = translate.translate(snap.Snapshot(settings={**obj, "spec": spec}))
    assert result.table is not None, result.settings_problems
    return result.table.settings


STATED = [
    (path, node, crd_docs.default_of(node.get("description", "")))
    for path, node in spec_fields()
    if crd_docs.default_of(node.get("description", "")) not in ("—", "all")
    and not crd_docs.default_of(node.get("description", "")).startswith("none")
]


def test_the_stated_defaults_are_found() -> None:
    # Not vacuous: the descriptions state these, and the check below covers each.
    assert {path for path, _, _ in STATED} >= {
        "spec.cookie.expire",
        "spec.cookie.name",
        "spec.timeouts.idle",
        "spec.defaultUpstreamTimeout",
        "spec.downstreamMtls.enforcement",
        "spec.downstreamMtls.maxVerifyDepth",
        "spec.identityProvider.scopes",
    }


@pytest.mark.parametrize(("path", "node", "stated"), STATED, ids=[p for p, _, _ in STATED])
def test_a_stated_default_is_the_served_default(
    path: str, node: dict[str, Any], stated: str, test_ca: TestCA
) -> None:
    base: dict[str, Any] = {}
    if path.startswith("spec.downstreamMtls."):
        base["downstreamMtls"] = {"ca": base64.b64encode(test_ca.cert_pem.encode()).decode()}
    if path.startswith("spec.identityProvider."):
        pytest.skip("needs a whole identity provider; idp_scopes' default is checked below")
    explicit = yaml.safe_load(yaml.safe_dump(base))
    _set(explicit, path, _typed(node, stated))
    assert _served(explicit) == _served(base)


def test_the_stated_scopes_are_the_loaders_default() -> None:
    (stated,) = [s for p, _, s in STATED if p == "spec.identityProvider.scopes"]
    assert tuple(stated.split(", ")) == config.Settings().idp_scopes
