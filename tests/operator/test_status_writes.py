"""A status write (the controller's own: load-balancer addresses on Ingresses, Ready conditions
on Policies) moves an object's resourceVersion but not its meaning: it must not make the
translator compile the Ingress again, nor every Ingress that names the Policy. A change of spec
(generation), labels or annotations, or a new object under the same name (uid), must; so must
a Secret the store re-reads with its data at the same resourceVersion."""

from __future__ import annotations

import copy
from typing import Any

from tests.operator import objects as k8s
from vallum.operator import snapshot as snap
from vallum.operator import translate

APP = ("default", "app")
ADMINS = {"allow": {"or": [{"groups": {"has": "admins"}}]}}


def _as_served(obj: dict[str, Any], uid: str, generation: int = 1) -> dict[str, Any]:
    """``obj`` as the API server returns it: with a uid and a generation."""
    out = copy.deepcopy(obj)
    out["metadata"].update(uid=uid, generation=generation)
    return out


def _written(
    obj: dict[str, Any], rv: str, *, status: Any = None, generation: int | None = None
) -> dict[str, Any]:
    """``obj`` after a write: a new resourceVersion; a status and/or a new generation."""
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = rv
    if status is not None:
        out["status"] = status
    if generation is not None:
        out["metadata"]["generation"] = generation
    return out


def _ingress(**kwargs: Any) -> dict[str, Any]:
    refs = {"ingress.vallum.dev/policy-ref": "admins"}
    return _as_served(k8s.ingress(annotations=refs, **kwargs), uid="ingress-1")


def _snapshot(ingress: dict[str, Any], policy: dict[str, Any]) -> snap.Snapshot:
    return k8s.snapshot(ingress, policy, k8s.service(), k8s.endpoint_slice())


LB_STATUS = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
READY = {"conditions": [{"type": "Ready", "status": "True", "reason": "Valid"}]}


def test_an_ingress_status_write_does_not_compile_it_again() -> None:
    ingress = _ingress()
    policy = _as_served(k8s.policy("admins", ADMINS), uid="policy-1")
    translator = translate.Translator(translate.Options())
    first = translator.translate(_snapshot(ingress, policy))
    assert translator.last_compiled == (APP,)
    after_status = _written(ingress, "2", status=LB_STATUS)
    again = translator.translate(_snapshot(after_status, policy))
    assert translator.last_compiled == ()
    assert again.table is not None and first.table is not None
    assert again.table.checksum == first.table.checksum


def test_a_policy_status_write_neither_rechecks_it_nor_compiles_its_ingresses() -> None:
    ingress = _ingress()
    policy = _as_served(k8s.policy("admins", ADMINS), uid="policy-1")
    translator = translate.Translator(translate.Options())
    translator.translate(_snapshot(ingress, policy))
    ready = _written(policy, "2", status=READY)
    result = translator.translate(_snapshot(ingress, ready))
    assert translator.last_compiled == ()
    assert result.policies == {("default", "admins"): ()}
    assert result.ingresses[APP].problems == ()


def test_a_spec_change_compiles_again() -> None:
    ingress = _ingress()
    policy = _as_served(k8s.policy("admins", ADMINS), uid="policy-1")
    translator = translate.Translator(translate.Options())
    translator.translate(_snapshot(ingress, policy))
    moved = _written(ingress, "2", generation=2)
    moved["spec"]["rules"][0]["host"] = "moved.example.com"
    result = translator.translate(_snapshot(moved, policy))
    assert translator.last_compiled == (APP,)
    assert result.table is not None
    assert [r.host for r in result.table.settings.routes] == ["moved.example.com"]
    # A Policy spec change (generation 2) that breaks it: rechecked, and its Ingress too.
    broken = _written(policy, "3", generation=2)
    broken["spec"] = {"allow": {"or": [{"groups": {"hass": "admins"}}]}}
    result = translator.translate(_snapshot(moved, broken))
    assert translator.last_compiled == (APP,)
    (problem,) = result.policies[("default", "admins")]
    assert "hass" in problem
    assert any("is invalid" in p for p in result.ingresses[APP].problems)


def test_annotation_and_label_changes_compile_again_without_a_new_generation() -> None:
    ingress = _ingress()
    policy = _as_served(k8s.policy("admins", ADMINS), uid="policy-1")
    translator = translate.Translator(translate.Options())
    translator.translate(_snapshot(ingress, policy))
    annotated = _written(ingress, "2")  # annotations do not bump the generation
    annotated["metadata"]["annotations"]["ingress.vallum.dev/timeout"] = "fast"
    result = translator.translate(_snapshot(annotated, policy))
    assert translator.last_compiled == (APP,)
    assert any("timeout" in p for p in result.ingresses[APP].problems)
    solver = _written(ingress, "3")  # nor do labels: the HTTP-01 solver label makes it public
    solver["metadata"]["labels"] = {"acme.cert-manager.io/http01-solver": "true"}
    result = translator.translate(_snapshot(solver, policy))
    assert translator.last_compiled == (APP,)
    assert result.table is not None
    (route,) = result.table.settings.routes
    assert route.allow_public_unauthenticated_access


def test_an_object_made_again_under_the_same_name_compiles_again() -> None:
    ingress = _ingress()
    policy = _as_served(k8s.policy("admins", ADMINS), uid="policy-1")
    translator = translate.Translator(translate.Options())
    translator.translate(_snapshot(ingress, policy))
    remade = _as_served(k8s.ingress(host="remade.example.com", rv="9"), uid="ingress-2")
    result = translator.translate(_snapshot(remade, policy))
    assert translator.last_compiled == (APP,)
    assert result.table is not None
    assert [r.host for r in result.table.settings.routes] == ["remade.example.com"]


def test_spec_version_falls_back_to_the_version_without_uid_and_generation() -> None:
    plain = k8s.policy("admins", ADMINS, rv="7")
    assert snap.spec_version(plain) == snap.version(plain) == "7"
    assert snap.spec_version(None) is None
    served = _as_served(plain, uid="u", generation=3)
    assert snap.spec_version(served) == snap.spec_version(_written(served, "8", status=READY))
    assert snap.spec_version(served) != snap.spec_version(_written(served, "9", generation=4))


def test_a_secret_read_again_with_its_data_at_the_same_version_compiles_again() -> None:
    """The store holds an unreferenced Secret as a stub (no ``data``) and GETs it once an
    Ingress names it: the same resourceVersion, now with data. The memo must see the data."""
    full = k8s.secret("headers", {"X-Team": "blue"}, rv="5")
    stub = {"kind": "Secret", "metadata": dict(full["metadata"])}
    ingress = k8s.ingress(annotations={"ingress.pomerium.io/set_request_headers_secret": "headers"})
    translator = translate.Translator(translate.Options())
    translator.translate(k8s.snapshot(ingress, stub, k8s.service(), k8s.endpoint_slice()))
    result = translator.translate(k8s.snapshot(ingress, full, k8s.service(), k8s.endpoint_slice()))
    assert translator.last_compiled == (APP,)
    assert result.table is not None
    (route,) = result.table.settings.routes
    assert route.set_request_headers == (("X-Team", "blue"),)
