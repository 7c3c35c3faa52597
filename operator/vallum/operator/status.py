"""What the controller tells users on their objects: conditions, Events, load-balancer status.

Users look at the objects they applied, not at the controller's log, so every outcome of a
translation is written back where ``kubectl describe`` and ``kubectl get`` show it (issue 12,
item 8):

* **Ingress**: an Event when its outcome changes -- ``Normal``/``Updated`` once its routes are
  live, ``Warning``/``UpdateError`` with the reasons when it is broken (the reasons Pomerium's
  controller uses) -- and ``status.loadBalancer`` from ``--publish-service`` or
  ``--publish-status-address``.
* **Policy** and **Settings**: a ``Ready`` condition (``True``, or ``False`` with the parser's
  message) and ``observedGeneration``, in their status subresource.

Only what changed is written: with 3,000 Ingresses a translation that changes one route must
not cost 3,000 API calls. The builders here are pure (same objects in, same body out; tested
from plain dicts); :class:`Reporter` sends what they return, with the ``kubernetes`` client (its
calls block: the controller runs :meth:`Reporter.report` in a thread), and only on the replica
that holds the Lease (:mod:`vallum.operator.lease`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vallum.operator import snapshot as snap
from vallum.operator import translate

log = logging.getLogger("vallum.operator.status")

GROUP, VERSION = "vallum.dev", "v1alpha1"
POLICY_PLURAL, SETTINGS_PLURAL = "policies", "settings"
COMPONENT = "vallum-controller"
MAX_MESSAGE = 1024
"""Condition and Event messages are cut here (the API server refuses very long ones)."""

Ingress = Mapping[str, Any]
Planned = tuple[Ingress, translate.IngressOutcome, tuple[str, ...]]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def ready_condition(
    problems: Iterable[str], generation: int, previous: Iterable[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """The ``Ready`` condition (metav1.Condition) for an object with these ``problems``;
    ``lastTransitionTime`` moves only when the status flips (as the API conventions ask)."""
    problems = list(problems)
    status = "False" if problems else "True"
    before = next((c for c in previous if c.get("type") == "Ready"), None)
    since = (
        before["lastTransitionTime"]
        if before is not None and before.get("status") == status and before.get(
            "lastTransitionTime")
        else now
    )
    return {
        "type": "Ready",
        "status": status,
        "reason": "Invalid" if problems else "Accepted",
        "message": _cut("; ".join(problems) if problems else "The object is valid and in use."),
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def status_patch(
    obj: Mapping[str, Any], problems: Iterable[str], now: str
) -> dict[str, Any] | None:
    """The status of a Policy or Settings with these ``problems``, or ``None`` when its
    current status already says exactly that (nothing to write)."""
    meta = obj.get("metadata", {})
    generation = int(meta.get("generation") or 0)
    current = obj.get("status") or {}
    conditions = current.get("conditions") or []
    ready = ready_condition(problems, generation, conditions, now)
    others = [c for c in conditions if c.get("type") != "Ready"]
    wanted = {"observedGeneration": generation, "conditions": [*others, ready]}
    if current.get("observedGeneration") == generation and conditions == wanted["conditions"]:
        return None
    return _for_this_object(obj, {"status": wanted})


def _for_this_object(obj: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` with the object's uid: the API server refuses it (422, the uid is immutable)
    when the name now belongs to another object -- deleted and created again since the
    snapshot -- instead of writing about the old one on the new one."""
    uid = (obj.get("metadata") or {}).get("uid")
    return {"metadata": {"uid": uid}, **patch} if uid else patch


def _event_prefix(ingress: Ingress) -> str:
    """The Ingress's name, cut so that ``<prefix>.<12 hex digits>`` is a valid object name."""
    return str(ingress.get("metadata", {}).get("name", ""))[:200]


def ingress_event(
    ingress: Ingress, outcome: translate.IngressOutcome, now: str, component: str = COMPONENT,
    instance: str = COMPONENT,
) -> dict[str, Any]:
    """A core/v1 Event on ``ingress`` for its outcome (Pomerium's reasons); ``instance`` names
    the replica that wrote it (``reportingInstance``)."""
    meta = ingress.get("metadata", {})
    ok = not outcome.problems
    message = (
        f"{outcome.routes} route(s) live" if ok
        else "routes deny until fixed: " + "; ".join(outcome.problems)
    )
    digest = hashlib.sha256(
        f"{meta.get('uid')}{meta.get('generation')}{now}{message}".encode()
    ).hexdigest()[:12]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{_event_prefix(ingress)}.{digest}",
                     "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Normal" if ok else "Warning",
        "reason": "Updated" if ok else "UpdateError",
        "message": _cut(message),
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def conflict_event(
    ingress: Ingress, warnings: Iterable[str], now: str, component: str = COMPONENT,
    instance: str = COMPONENT,
) -> dict[str, Any]:
    """A ``Warning``/``Conflict`` Event on a live ``ingress`` whose route another Ingress takes
    first (the translation's warnings naming it): it serves, but part of it is never reached."""
    event = ingress_event(
        ingress, translate.IngressOutcome(problems=(), routes=0), now, component, instance
    )
    message = _cut("; ".join(warnings))
    digest = hashlib.sha256(f"{event['metadata']['name']}{message}".encode()).hexdigest()[:12]
    event["metadata"]["name"] = f"{_event_prefix(ingress)}.{digest}"
    event.update(type="Warning", reason="Conflict", message=message)
    return event


_NAMED = re.compile(r"Ingress ([^/\s]+)/(\S+) ")


def warnings_by_ingress(warnings: Iterable[str]) -> dict[snap.ObjectKey, tuple[str, ...]]:
    """The translation's warnings that concern one Ingress (they start ``Ingress ns/name ``),
    by that Ingress."""
    out: dict[snap.ObjectKey, list[str]] = {}
    for text in warnings:
        found = _NAMED.match(text)
        if found is not None:
            out.setdefault((found[1], found[2]), []).append(text)
    return {key: tuple(sorted(texts)) for key, texts in out.items()}


def published_addresses(
    service: Mapping[str, Any] | None = None, address: str | None = None
) -> list[dict[str, str]]:
    """``status.loadBalancer.ingress`` entries: ``--publish-status-address`` (an IP or a host
    name, several comma-separated), else the ``--publish-service``'s load-balancer addresses,
    else its external IPs, else its cluster IP (what the Pomerium and nginx controllers do)."""
    if address:
        return parse_addresses(address)
    if service is None:
        return []
    found = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if found:
        entries = [
            {k: str(v) for k, v in e.items() if k in ("ip", "hostname") and v} for e in found
        ]
        return [e for e in entries if e]
    spec = service.get("spec") or {}
    if spec.get("externalIPs"):
        return [{"ip": str(ip)} for ip in spec["externalIPs"]]
    if spec.get("type") == "ExternalName" and spec.get("externalName"):
        return [{"hostname": str(spec["externalName"])}]
    ip = spec.get("clusterIP")
    return [{"ip": str(ip)}] if ip and ip != "None" else []


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*",
    re.IGNORECASE,
)


def status_address(value: str) -> dict[str, str]:
    """One ``status.loadBalancer.ingress`` entry: ``{"ip": ...}`` for an IP address,
    ``{"hostname": ...}`` for a DNS name; ValueError for anything else."""
    try:
        return {"ip": str(ipaddress.ip_address(value))}
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(value) and not value.replace(".", "").isdigit():
        return {"hostname": value.lower()}
    raise ValueError(f"{value!r} is neither an IP address nor a host name")


def parse_addresses(text: str) -> list[dict[str, str]]:
    """``--publish-status-address``: comma-separated IPs and host names (ValueError: which one
    is neither)."""
    out = [status_address(item.strip()) for item in text.split(",") if item.strip()]
    if not out:
        raise ValueError("expected IP addresses or host names separated by commas")
    return out


def load_balancer_patch(ingress: Ingress, addresses: list[dict[str, str]]) -> dict[str, Any] | None:
    """The Ingress status to write, or ``None`` when it already says so."""
    current = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if current == addresses:
        return None
    return _for_this_object(ingress, {"status": {"loadBalancer": {"ingress": addresses}}})


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Every write one translation asks for (pure: :func:`plan`)."""

    events: tuple[dict[str, Any], ...] = ()
    ingress_status: tuple[tuple[snap.ObjectKey, dict[str, Any]], ...] = ()
    policy_status: tuple[tuple[snap.ObjectKey, dict[str, Any]], ...] = ()
    settings_status: tuple[str, dict[str, Any]] | None = None


def plan(
    snapshot: snap.Snapshot,
    result: translate.Result,
    reported: dict[snap.ObjectKey, tuple[str, tuple[str, ...]]],
    addresses: list[dict[str, str]] | None,
    now: str,
    warned: dict[snap.ObjectKey, tuple[str, tuple[str, ...]]] | None = None,
    instance: str = COMPONENT,
    planned: dict[snap.ObjectKey, Planned] | None = None,
) -> Plan:
    """What to write after ``result``; ``reported`` remembers the outcome each Ingress last got
    an Event for (by generation and problems) and is updated, so an unchanged Ingress gets
    no second Event. ``addresses`` ``None``: no load-balancer status is published. With
    ``warned`` (the same kind of memory), a live Ingress named by the result's warnings (a
    route another Ingress takes first) gets a ``Warning``/``Conflict`` Event, once per change.

    ``planned`` (optional) remembers the Ingress object, outcome and warnings each Ingress was
    last planned with; an Ingress with the very same ones is skipped (the store replaces an
    object on every change, never mutates it), so a round costs what changed, not the whole
    cluster. Whoever keeps it must forget an entry whose write failed, and all of them when
    ``addresses`` change.

    Every write goes to the namespace of the object it concerns, as the snapshot holds it:
    nothing an Ingress or Policy says can direct a write elsewhere."""
    events: list[dict[str, Any]] = []
    conflicts = warnings_by_ingress(result.warnings) if warned is not None else {}
    statuses: list[tuple[snap.ObjectKey, dict[str, Any]]] = []
    todo: list[tuple[snap.ObjectKey, Ingress, translate.IngressOutcome]] = []
    for key, outcome in result.ingresses.items():
        ingress = snapshot.ingresses.get(key)
        if ingress is None:
            continue
        if planned is not None:
            entry = (ingress, outcome, conflicts.get(key, ()))
            if planned.get(key) == entry:  # the same object first: an identity check
                continue
            planned[key] = entry
        todo.append((key, ingress, outcome))
    todo.sort(key=lambda item: item[0])
    for key, ingress, outcome in todo:
        # By generation, which only a spec change moves: our own status write bumps the
        # resourceVersion, and must not make the next translation report the Ingress again.
        seen = (str(ingress.get("metadata", {}).get("generation", "")), outcome.problems)
        if reported.get(key) != seen:
            reported[key] = seen
            events.append(ingress_event(ingress, outcome, now, instance=instance))
        if warned is not None:
            mark = (seen[0], conflicts.get(key, ()) if not outcome.problems else ())
            if warned.get(key) != mark:
                warned[key] = mark
                if mark[1]:
                    events.append(conflict_event(ingress, mark[1], now, instance=instance))
        if addresses is not None and not outcome.problems:
            patch = load_balancer_patch(ingress, addresses)
            if patch is not None:
                statuses.append((key, patch))
    for memory in (reported, warned, planned):
        if memory is not None:
            for gone in memory.keys() - result.ingresses.keys():
                del memory[gone]
    policies = []
    for key, problems in sorted(result.policies.items()):
        obj = snapshot.policies.get(key)
        if obj is not None and (patch := status_patch(obj, problems, now)) is not None:
            policies.append((key, patch))
    settings = None
    if snapshot.settings is not None:
        patch = status_patch(snapshot.settings, result.settings_problems, now)
        if patch is not None:
            settings = (str(snapshot.settings.get("metadata", {}).get("name", "")), patch)
    return Plan(tuple(events), tuple(statuses), tuple(policies), settings)


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reporter:
    """Writes a :class:`Plan` with the ``kubernetes`` client (blocking calls). A failed write is
    logged; the next translation plans it again (statuses are compared with the objects as
    read, and an Event that could not be written is forgotten as reported)."""

    def __init__(self, api_client: Any, instance: str = COMPONENT) -> None:
        from kubernetes import client

        self.instance = instance
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.reported: dict[snap.ObjectKey, tuple[str, tuple[str, ...]]] = {}
        self.warned: dict[snap.ObjectKey, tuple[str, tuple[str, ...]]] = {}
        self.planned: dict[snap.ObjectKey, Planned] = {}
        self._addresses: list[dict[str, str]] | None = None

    def report(
        self, snapshot: snap.Snapshot, result: translate.Result,
        addresses: list[dict[str, str]] | None,
    ) -> Plan:
        if addresses != self._addresses:  # every Ingress's status is to be checked again
            self.planned.clear()
            self._addresses = addresses
        todo = plan(
            snapshot, result, self.reported, addresses, now_text(), self.warned, self.instance,
            self.planned,
        )
        for event in todo.events:
            involved = event["involvedObject"]
            if not self._try(
                "event", f"{involved['namespace']}/{involved['name']}",
                lambda e=event: self.core.create_namespaced_event(e["metadata"]["namespace"], e),
            ):  # planned again after the next translation
                for memory in (self.reported, self.warned, self.planned):
                    memory.pop((involved["namespace"], involved["name"]), None)
        for (ns, name), body in todo.ingress_status:
            if not self._try(
                "ingress status", f"{ns}/{name}",
                lambda ns=ns, name=name, body=body:
                    self.networking.patch_namespaced_ingress_status(name, ns, body),
            ):
                self.planned.pop((ns, name), None)
        for (ns, name), body in todo.policy_status:
            self._try(
                "policy status", f"{ns}/{name}",
                lambda ns=ns, name=name, body=body:
                    self.custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, ns, POLICY_PLURAL, name, body),
            )
        if todo.settings_status is not None:
            name, body = todo.settings_status
            self._try(
                "settings status", name,
                lambda: self.custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, SETTINGS_PLURAL, name, body),
            )
        return todo

    def _try(self, what: str, name: str, call: Any) -> bool:
        try:
            call()
        except Exception as exc:
            log.warning("cannot write %s of %s: %s", what, name, exc)
            return False
        return True
