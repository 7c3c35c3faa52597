"""Snapshot -> route table: the pure, deterministic translation of the controller.

Why a module of its own: the controller must serve exactly the table ``vallum serve`` would
build from the same routes-file document, and must report what is wrong on the objects. So the
Settings object (through :mod:`vallum.operator.settings_crd`) and the CLI's settings become a
routes-file settings document read by :func:`vallum.core.configfile.settings.read_settings`;
each Ingress becomes routes read by the routes file's route reader
(:mod:`vallum.operator.ingress_routes`); the table is built by
:func:`vallum.core.routing.build_table`. Nothing here reads a value form of its own.

Which Ingresses: those whose ``spec.ingressClassName`` (or legacy annotation
``kubernetes.io/ingress.class``) names an IngressClass whose ``spec.controller`` is ours, and
those with neither when one of our IngressClasses is marked default
(``ingressclass.kubernetes.io/is-default-class: "true"``). Others are left alone.

Order and determinism: Ingresses are taken in ``(namespace, name)`` order, their routes in rule
and path order (``spec.defaultBackend`` last), the denying routes of broken Ingresses after all
others, certificates after the Settings' ones in the same order; so the same snapshot gives the
same table and checksum. Where two Ingresses claim the same host and path, the first in that
order wins (the core's rule: the first route wins), so a broken Ingress never shadows a live one.

Incremental: :class:`Translator` remembers each Ingress's routes with the versions of the
Ingress and of every object its translation read (Services, EndpointSlices, Secrets, Policies,
found or not) and of the settings it used; the next snapshot recompiles only the Ingresses for
which one of these changed. Policy objects are checked once per version.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any

from vallum.core import config, errors, routing
from vallum.core.configfile import nodes, settings
from vallum.operator import checksum, ingress_routes, settings_crd
from vallum.operator import snapshot as snap

ObjectKey = snap.ObjectKey

IS_DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS = "kubernetes.io/ingress.class"
NO_SETTINGS = "no Settings object: default settings and no sign-in (only public routes serve)"


@dataclasses.dataclass(frozen=True)
class Options:
    """How the controller translates: its IngressClass controller name and the CLI's settings."""

    controller_name: str = "vallum.dev/ingress-controller"
    base: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    """Routes-file settings from the CLI (``address``, ...); they win over the Settings object."""


@dataclasses.dataclass(frozen=True)
class IngressOutcome:
    """One handled Ingress: its problems (empty: live; else its routes deny) and route count."""

    problems: tuple[str, ...]
    routes: int


@dataclasses.dataclass(frozen=True)
class Result:
    """The table (None only when the Settings do not load) and what to report on objects."""

    table: config.RouteTable | None
    settings_problems: tuple[str, ...]
    ingresses: Mapping[ObjectKey, IngressOutcome]
    policies: Mapping[ObjectKey, tuple[str, ...]]
    secrets_used: frozenset[ObjectKey]
    warnings: tuple[str, ...] = ()
    """What works but deserves a word (no Settings object, a certificate Secret not there
    yet)."""


def handles(
    ingress: Mapping[str, Any],
    ingress_classes: Mapping[str, Mapping[str, Any]],
    controller_name: str,
) -> bool:
    """Whether this controller handles ``ingress`` (IngressClass selection)."""
    ours = {
        name
        for name, cls in ingress_classes.items()
        if (cls.get("spec") or {}).get("controller") == controller_name
    }
    class_name = (ingress.get("spec") or {}).get("ingressClassName")
    if class_name:
        return class_name in ours
    legacy = ((ingress.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS)
    if legacy:
        return legacy in ours
    return any(
        ((ingress_classes[name].get("metadata") or {}).get("annotations") or {}).get(
            IS_DEFAULT_CLASS
        )
        == "true"
        for name in ours
    )


class _SettingsProblems(nodes.Context):
    """Settings problems named by their key, without the line of a file there is not."""

    def problem(self, line: int, path: str, message: str) -> Any:
        path = nodes.shorten(path, nodes.MAX_PATH)
        message = nodes.shorten(message, nodes.MAX_MESSAGE)
        where = f"{self.source}: {path}" if path else self.source
        return self.add(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class _Memo:
    version: object
    settings_key: object
    compiled: ingress_routes.Compiled
    route_texts: tuple[str, ...]  # its routes and certificates encoded for the checksum
    certificate_texts: tuple[str, ...]


class Translator:
    """Translates snapshots, memoising each Ingress's routes by the versions it used."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._ingresses: dict[ObjectKey, _Memo] = {}
        self._policies: dict[ObjectKey, tuple[object, tuple[str, ...]]] = {}
        self.last_compiled: tuple[ObjectKey, ...] = ()
        """The Ingresses the last :meth:`translate` compiled (the others came from memory)."""

    def translate(self, snapshot: snap.Snapshot) -> Result:
        """The table for ``snapshot``: same snapshot, same table, same checksum."""
        read = settings_crd.read(snapshot.settings, snapshot.secrets)
        secrets_used = set(read.secrets_used)
        settings_problems = list(read.problems)
        warnings = [NO_SETTINGS] if snapshot.settings is None else list(read.warnings)
        base = None if settings_problems else self._settings(read.values, settings_problems)
        timeout = base.default_upstream_timeout if base is not None else 30.0
        mtls = base.downstream_mtls if base is not None else None
        live: list[_Memo] = []
        broken: list[_Memo] = []
        certificates: dict[config.Certificate, str] = {}
        if base is not None:
            own = base.certificates
            certificates.update(zip(own, checksum.texts(own), strict=True))
        outcomes: dict[ObjectKey, IngressOutcome] = {}
        compiled_now: list[ObjectKey] = []
        for key in sorted(snapshot.ingresses):
            ingress = snapshot.ingresses[key]
            if not handles(ingress, snapshot.ingress_classes, self.options.controller_name):
                continue
            memo = self._ingress(snapshot, key, ingress, timeout, mtls, compiled_now)
            compiled = memo.compiled
            (broken if compiled.problems else live).append(memo)
            for cert, text in zip(compiled.certificates, memo.certificate_texts, strict=True):
                certificates.setdefault(cert, text)
            secrets_used |= compiled.secrets_used
            outcomes[key] = IngressOutcome(compiled.problems, len(compiled.routes))
        # A broken Ingress's denying routes come last: where a live Ingress has the same host
        # and path, the live route wins, so a broken Ingress cannot take another's requests.
        routes = [route for memo in live + broken for route in memo.compiled.routes]
        route_texts = [text for memo in live + broken for text in memo.route_texts]
        warnings.extend(_shadowed(live))
        for gone in set(self._ingresses) - set(outcomes):
            del self._ingresses[gone]
        self.last_compiled = tuple(compiled_now)
        policies = self._check_policies(snapshot)
        table = None
        if base is not None:
            full = dataclasses.replace(base, routes=tuple(routes), certificates=tuple(certificates))
            lists: dict[str, Iterable[str]] = {
                "routes": route_texts,
                "certificates": certificates.values(),
            }
            try:  # routing.build_table, with the checksum from the routes encoded once
                index = routing.build_index(full)
            except errors.ConfigError as exc:  # each Ingress's routes were checked: a bug
                settings_problems.extend(exc.problems)
            else:
                total = checksum.table_checksum(full, lists)
                table = config.RouteTable(settings=full, checksum=total, index=index)
        return Result(
            table=table,
            settings_problems=tuple(settings_problems),
            ingresses=types.MappingProxyType(outcomes),
            policies=types.MappingProxyType(policies),
            secrets_used=frozenset(secrets_used),
            warnings=tuple(warnings),
        )

    def _settings(self, values: Mapping[str, Any], problems: list[str]) -> config.Settings | None:
        """The Settings object's values under the CLI's, read as a routes file's settings."""
        document = {**values, **self.options.base}
        for key in ("routes", "policy"):
            if key in document:
                problems.append(f"Settings: {key}: routes come from Ingresses, not from settings")
                document.pop(key)
        ctx = _SettingsProblems("Settings", os.getcwd())
        result = settings.read_settings(ctx, ingress_routes.node(document))
        if ctx.problems or result is None:
            problems.extend(ctx.report(ctx.problems) or ["Settings: not readable"])
            return None
        return result if not problems else None

    def _ingress(
        self,
        snapshot: snap.Snapshot,
        key: ObjectKey,
        ingress: Mapping[str, Any],
        timeout: float,
        mtls: config.DownstreamMTLS | None,
        compiled_now: list[ObjectKey],
    ) -> _Memo:
        version = snap.spec_version(ingress)
        settings_key = (timeout, mtls)
        memo = self._ingresses.get(key)
        if (
            memo is not None
            and memo.version == version
            and memo.settings_key == settings_key
            and all(snap.fingerprint(snapshot, dep) == fp for dep, fp in memo.compiled.used.items())
        ):
            return memo
        compiled = ingress_routes.compile_ingress(
            snap.Lookups(snapshot), key, ingress, default_timeout=timeout, mtls=mtls
        )
        memo = self._ingresses[key] = _Memo(
            version,
            settings_key,
            compiled,
            checksum.texts(compiled.routes),
            checksum.texts(compiled.certificates),
        )
        compiled_now.append(key)
        return memo

    def _check_policies(self, snapshot: snap.Snapshot) -> dict[ObjectKey, tuple[str, ...]]:
        out: dict[ObjectKey, tuple[str, ...]] = {}
        for key in sorted(snapshot.policies):
            obj = snapshot.policies[key]
            version = snap.spec_version(obj)
            known = self._policies.get(key)
            if known is None or known[0] != version:
                problem = ingress_routes.policy_problem(obj)
                known = self._policies[key] = (version, (problem,) if problem else ())
            out[key] = known[1]
        for gone in set(self._policies) - set(out):
            del self._policies[gone]
        return out


def _shadowed(live: list[_Memo]) -> list[str]:
    """Routes of live Ingresses that another Ingress's route with the same host and path rule
    takes first (the first in order wins): worth a word, as one of them is never reached."""
    first: dict[tuple[str, str, str], str] = {}
    out: list[str] = []
    for memo in live:
        for route in memo.compiled.routes:
            rule = (route.host, route.path_match, route.path_value)
            owner = first.setdefault(rule, route.source)
            ingress = route.source.split(" spec.", 1)[0]
            if owner != route.source and not owner.startswith(ingress + " "):
                out.append(f"{route.source}: {rule[0]} {rule[2]} is taken by {owner}")
    return out


def translate(snapshot: snap.Snapshot, options: Options | None = None) -> Result:
    """One-shot translation (no memory kept between calls)."""
    return Translator(options or Options()).translate(snapshot)
