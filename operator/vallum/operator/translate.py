"""Snapshot -> route table: the pure, deterministic translation of the controller.

Why a module of its own: the controller must serve exactly the table ``vallum serve`` would
build from the same routes-file document, and must report what is wrong on the objects. So the
Settings object (through :mod:`vallum.operator.settings_crd`) and the CLI's settings become a
routes-file settings document read by :func:`vallum.core.configfile.settings.read_settings`;
each Ingress becomes routes read by the routes file's route reader
(:mod:`vallum.operator.ingress_routes`) and checked as the index checks them
(:func:`vallum.core.routing.prepare`). Nothing here reads a value form of its own.

Which Ingresses: those whose ``spec.ingressClassName`` (or legacy annotation
``kubernetes.io/ingress.class``) names an IngressClass whose ``spec.controller`` is ours, and
those with neither when one of our IngressClasses is marked default
(``ingressclass.kubernetes.io/is-default-class: "true"``). Others are left alone.

Who owns a host (a security rule: an Ingress must not take another team's traffic): a host
belongs to the namespace of its **oldest** Ingress (``metadata.creationTimestamp``, then
namespace and name, so the answer is still a function of the snapshot). Ingresses of other
namespaces get none of that host: not the same path, and not another one either (longest prefix
first would give them ``/admin`` under the owner's ``/``); each is told so in a warning naming
the owner. Within the owning namespace Ingresses share the host, and where two have the same
path the live one wins over a broken one, then the older one; the loser's warning names both
routes (a broken Ingress, which has its problems to report, gets none). An Ingress refused a
host also has its ``spec.tls`` certificates left out, and no Ingress's certificate naming a host
another namespace owns is served (the proxy picks a certificate by exact name first), so no one
can put their own certificate in front of another namespace's host. Ingress certificates come
oldest Ingress first (the first certificate is the default one). Hosts are compared as the
index keys them, with one addition: a wildcard host (``*.example.com``) counts as a claim on the
exact hosts it covers (``a.example.com``, one label), since an exact host is chosen before the
wildcard and would take its requests; so an exact host under another namespace's older wildcard
is refused too (and its requests keep going to the wildcard). A broken Ingress keeps
the hosts it owns (its routes deny with the reason), so breaking one's own Ingress hands nothing
to anyone.

Order and determinism: the table's routes come host by host (sorted), within a host in the
order above, an Ingress's routes in rule and path order (``spec.defaultBackend`` last);
certificates after the Settings' ones, oldest Ingress first; so the same snapshot gives the
same table and checksum, whatever the order of the changes that led to it (tested against
fresh translations). The checksum is a digest of per-host digests
(:mod:`vallum.operator.checksum`; not :meth:`vallum.core.config.Settings.checksum`, which
encodes everything on every call): equal tables, equal checksums.

Incremental, so a change costs in proportion to what it touches (issue 12, item 7):
:class:`Translator` remembers each Ingress's routes with the versions of the Ingress and of
every object its translation read (Services, EndpointSlices, Secrets, Policies, found or not)
and of the settings it used, with the reverse map (object -> Ingresses that read it). The next
snapshot is compared with the last one by identity (the store replaces an object on every change
and shares the rest), and only the changed Ingresses and the readers of changed objects are
checked again. Each host's share of the table (its settled routes, their index entries and
digest) is kept too, and only the hosts of Ingresses that changed are settled again; the index
is assembled from the hosts' parts (:func:`vallum.core.routing.assemble`), its routes numbered
from a counter so every number is unique in its table. Policy objects are checked once per
version.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import os
import types
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from vallum.core import config, routing
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
    """One handled Ingress: its problems (empty: live; else its routes deny), how many of its
    routes the table serves, and why some are not (another namespace owns the host, or an
    older Ingress takes the same path first): each warning also in ``Result.warnings``."""

    problems: tuple[str, ...]
    routes: int
    warnings: tuple[str, ...] = ()


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


Claim = tuple[str, str, str]
"""``(creationTimestamp, namespace, name)`` of an Ingress: the smaller, the older claim."""

_Rule = tuple[str, str]  # (path kind, normalised value): what two routes of one host share


@dataclasses.dataclass(frozen=True)
class _Memo:
    key: ObjectKey
    version: object
    settings_key: object
    compiled: ingress_routes.Compiled
    claim: Claim
    by_host: Mapping[str, tuple[tuple[routing.Prepared, str], ...]]
    """Its routes by host key, each with its digest for the checksum, in rule order."""
    certificate_digests: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _HostPart:
    """What one host gives the table once its claims are settled (see the module docstring)."""

    owner: str  # the namespace the host belongs to
    prepared: tuple[routing.Prepared, ...]
    routes: routing.HostRoutes
    digest: str
    warnings: Mapping[ObjectKey, tuple[str, ...]]
    served: Mapping[ObjectKey, int]  # routes of each Ingress served on this host


class Translator:
    """Translates snapshots, memoising each Ingress's routes by the versions it used, and each
    host's share of the table; see the module docstring."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._ingresses: dict[ObjectKey, _Memo] = {}
        self._policies: dict[ObjectKey, tuple[object, tuple[str, ...]]] = {}
        self._dependents: dict[snap.Dependency, set[ObjectKey]] = {}
        self._claims: dict[str, set[ObjectKey]] = {}  # host -> Ingresses with routes for it
        self._under: dict[str, set[str]] = {}  # parent domain -> its claimed exact hosts
        self._parts: dict[str, _HostPart] = {}
        self._hosts: list[str] = []  # sorted keys of _parts
        self._host_routes: dict[str, routing.HostRoutes] = {}
        self._warned: set[str] = set()  # hosts with warnings
        self._secret_users: dict[ObjectKey, int] = {}  # Secrets read, by how many Ingresses
        self._cert_holders: set[ObjectKey] = set()  # Ingresses with SNI certificates
        self._outcomes: dict[ObjectKey, IngressOutcome] = {}
        self._last: snap.Snapshot | None = None
        self._route_ids = itertools.count()  # route_index: unique in every table, never reused
        self._last_settings_key: object = None
        self.last_compiled: tuple[ObjectKey, ...] = ()
        """The Ingresses the last :meth:`translate` compiled (the others came from memory)."""

    def translate(self, snapshot: snap.Snapshot) -> Result:
        """The table for ``snapshot``: same snapshot, same table, same checksum."""
        try:
            return self._translate(snapshot)
        except BaseException:
            self._last = None  # the memory may be half updated: check everything next time
            raise

    def _translate(self, snapshot: snap.Snapshot) -> Result:
        read = settings_crd.read(snapshot.settings, snapshot.secrets)
        settings_problems = list(read.problems)
        warnings = [NO_SETTINGS] if snapshot.settings is None else list(read.warnings)
        base = None if settings_problems else self._settings(read.values, settings_problems)
        timeout = base.default_upstream_timeout if base is not None else 30.0
        mtls = base.downstream_mtls if base is not None else None
        settings_key = (timeout, mtls)
        compiled_now: list[ObjectKey] = []
        touched_hosts: set[str] = set()
        touched: set[ObjectKey] = set()
        for key in sorted(self._candidates(snapshot, settings_key)):
            ingress = snapshot.ingresses.get(key)
            old = self._ingresses.get(key)
            new = None
            if ingress is not None and handles(
                ingress, snapshot.ingress_classes, self.options.controller_name
            ):
                new = self._ingress(snapshot, key, ingress, settings_key, mtls, compiled_now)
            if new is not old:
                self._replace(key, old, new, touched_hosts)
                touched.add(key)
        self._last, self._last_settings_key = snapshot, settings_key
        self.last_compiled = tuple(compiled_now)
        for host in list(touched_hosts):  # a wildcard's owner counts for the hosts below it
            if host.startswith("*."):
                touched_hosts.update(self._under.get(host[2:], ()))
        for host in sorted(touched_hosts):
            touched |= self._settle(host)
        for key in touched:
            self._outcome(key)
        policies = self._check_policies(snapshot)
        secrets_used = set(read.secrets_used)
        secrets_used.update(self._secret_users)
        for host in sorted(self._warned):
            for texts in self._parts[host].warnings.values():
                warnings.extend(texts)
        table = None
        if base is not None:
            table = self._table(base, settings_problems, warnings)
        return Result(
            table=table,
            settings_problems=tuple(settings_problems),
            ingresses=types.MappingProxyType(dict(self._outcomes)),
            policies=types.MappingProxyType(policies),
            secrets_used=frozenset(secrets_used),
            warnings=tuple(warnings),
        )

    # -- which Ingresses to look at ----------------------------------------------------------

    def _candidates(self, snapshot: snap.Snapshot, settings_key: object) -> set[ObjectKey]:
        """The Ingresses whose memo may no longer hold: every one on the first round or when
        the IngressClasses or the settings the routes read changed; else the changed Ingresses
        and those that read a changed object. The others were checked against the last
        snapshot, and nothing they read differs from it (objects are compared by identity:
        the store replaces an object on every change and shares the unchanged ones)."""
        last = self._last
        if (
            last is None
            or settings_key != self._last_settings_key
            or not _same(last.ingress_classes, snapshot.ingress_classes)
        ):
            return set(snapshot.ingresses) | set(self._ingresses)
        out = _changed(last.ingresses, snapshot.ingresses)
        deps: set[snap.Dependency] = set()
        for kind, old, new in (
            ("Service", last.services, snapshot.services),
            ("Secret", last.secrets, snapshot.secrets),
            ("Policy", last.policies, snapshot.policies),
        ):
            deps.update((kind, key) for key in _changed(old, new))
        for key in _changed(last.endpoint_slices, snapshot.endpoint_slices):
            for objects in (last.endpoint_slices, snapshot.endpoint_slices):
                service = _service_of(objects.get(key))
                if service is not None:
                    deps.add(("EndpointSlices", (key[0], service)))
        for dep in deps:
            out.update(self._dependents.get(dep, ()))
        return out

    def _ingress(
        self,
        snapshot: snap.Snapshot,
        key: ObjectKey,
        ingress: Mapping[str, Any],
        settings_key: tuple[float, config.DownstreamMTLS | None],
        mtls: config.DownstreamMTLS | None,
        compiled_now: list[ObjectKey],
    ) -> _Memo:
        version = snap.spec_version(ingress)
        memo = self._ingresses.get(key)
        if (
            memo is not None
            and memo.version == version
            and memo.settings_key == settings_key
            and all(snap.fingerprint(snapshot, dep) == fp for dep, fp in memo.compiled.used.items())
        ):
            return memo
        compiled = ingress_routes.compile_ingress(
            snap.Lookups(snapshot), key, ingress, default_timeout=settings_key[0], mtls=mtls
        )
        by_host: dict[str, list[tuple[routing.Prepared, str]]] = {}
        for prepared, text in zip(
            compiled.prepared, checksum.texts(compiled.routes), strict=True
        ):
            by_host.setdefault(prepared.host, []).append((prepared, checksum.digest(text)))
        compiled_now.append(key)
        return _Memo(
            key,
            version,
            settings_key,
            compiled,
            _claim(key, ingress),
            types.MappingProxyType({h: tuple(v) for h, v in by_host.items()}),
            tuple(checksum.digest(t) for t in checksum.texts(compiled.certificates)),
        )

    def _replace(
        self, key: ObjectKey, old: _Memo | None, new: _Memo | None, hosts: set[str]
    ) -> None:
        """Put ``new`` in place of ``old`` (either may be None) in the memory and its indexes,
        adding the hosts either claims to ``hosts``."""
        if old is not None:
            self._cert_holders.discard(key)
            for dep in old.compiled.used:
                if dep[0] == "Secret":
                    self._count_secret(dep[1], -1)
                users = self._dependents.get(dep)
                if users is not None:
                    users.discard(key)
                    if not users:
                        del self._dependents[dep]
            for host in old.by_host:
                self._claims[host].discard(key)
                hosts.add(host)
                if not self._claims[host] and "." in host and not host.startswith("*."):
                    under = self._under.get(_parent(host))
                    if under is not None:
                        under.discard(host)
                        if not under:
                            del self._under[_parent(host)]
        if new is None:
            self._ingresses.pop(key, None)
            self._outcomes.pop(key, None)
            return
        self._ingresses[key] = new
        if new.certificate_digests:
            self._cert_holders.add(key)
        for dep in new.compiled.used:
            if dep[0] == "Secret":
                self._count_secret(dep[1], 1)
            self._dependents.setdefault(dep, set()).add(key)
        for host in new.by_host:
            self._claims.setdefault(host, set()).add(key)
            hosts.add(host)
            if "." in host and not host.startswith("*."):
                self._under.setdefault(_parent(host), set()).add(host)

    def _count_secret(self, key: ObjectKey, step: int) -> None:
        count = self._secret_users.get(key, 0) + step
        if count > 0:
            self._secret_users[key] = count
        else:
            self._secret_users.pop(key, None)

    # -- hosts: who owns one, which routes it serves ------------------------------------------

    def _settle(self, host: str) -> set[ObjectKey]:
        """Settle ``host``'s claims again (see the module docstring); returns its claimants,
        whose outcomes may have changed."""
        claimants = self._claims.get(host) or set()
        memos = [self._ingresses[key] for key in claimants]
        if not memos:
            self._claims.pop(host, None)
            if self._parts.pop(host, None) is not None:
                del self._hosts[bisect.bisect_left(self._hosts, host)]
                self._host_routes.pop(host, None)
                self._warned.discard(host)
            return set()
        covering = () if host.startswith("*.") or "." not in host else self._claims.get(
            "*." + _parent(host), ()
        )
        owner = min([*memos, *(self._ingresses[key] for key in covering)], key=lambda m: m.claim)
        namespace = owner.key[0]
        order = sorted(memos, key=lambda m: (bool(m.compiled.problems), m.claim))
        taken: dict[_Rule, tuple[_Memo, config.Route]] = {}
        prepared: list[routing.Prepared] = []
        digests: list[str] = []
        warnings: dict[ObjectKey, tuple[str, ...]] = {}
        served: dict[ObjectKey, int] = {}
        for memo in order:
            name = _name(memo.key)
            if memo.key[0] != namespace and owner.key in covering:
                warnings[memo.key] = (
                    f"{name} is refused host {host}: *.{_parent(host)} belongs to namespace "
                    f"{namespace} (its oldest Ingress is {_name(owner.key)}); this Ingress's "
                    "routes for it are not served",
                )
                continue
            if memo.key[0] != namespace:
                warnings[memo.key] = (
                    f"{name} is refused host {host}: it belongs to namespace {namespace} (its "
                    f"oldest Ingress is {_name(owner.key)}); this Ingress's routes for it are "
                    "not served",
                )
                continue
            count = 0
            mine: list[str] = []
            for item, digest in memo.by_host[host]:
                rule = (item.kind, item.value)
                first = taken.get(rule)
                if first is None:
                    taken[rule] = (memo, item.route)
                    prepared.append(item)
                    digests.append(digest)
                    count += 1
                elif first[0] is not memo and not memo.compiled.problems:
                    # An older Ingress (a live one before a broken one) has this path; the
                    # same path twice in one Ingress is its first rule's, without a word.
                    mine.append(
                        f"{item.route.source}: {host} {item.route.path_value} is taken by "
                        f"{first[1].source}"
                    )
            if mine:
                warnings[memo.key] = tuple(mine)
            served[memo.key] = count
        part = _HostPart(
            namespace,
            tuple(prepared),
            routing.index_host(zip(self._route_ids, prepared, strict=False)),
            checksum.digest("\n".join([host, *digests])),
            types.MappingProxyType(warnings),
            types.MappingProxyType(served),
        )
        if host not in self._parts:
            bisect.insort(self._hosts, host)
        self._parts[host] = part
        if prepared:
            self._host_routes[host] = part.routes
        else:  # refused whole: its requests go to the wildcard, as if it were not there
            self._host_routes.pop(host, None)
        if warnings:
            self._warned.add(host)
        else:
            self._warned.discard(host)
        return set(claimants)

    def _outcome(self, key: ObjectKey) -> None:
        memo = self._ingresses.get(key)
        if memo is None:
            self._outcomes.pop(key, None)
            return
        routes = 0
        warnings: list[str] = []
        for host in sorted(memo.by_host):
            part = self._parts[host]
            routes += part.served.get(key, 0)
            warnings.extend(part.warnings.get(key, ()))
        self._outcomes[key] = IngressOutcome(memo.compiled.problems, routes, tuple(warnings))

    # -- the table -----------------------------------------------------------------------------

    def _table(
        self, base: config.Settings, problems: list[str], warnings: list[str]
    ) -> config.RouteTable | None:
        """The table: routes host by host (sorted), certificates (the Settings' own, then each
        Ingress's, oldest Ingress first: the first certificate is the default one, and the first
        for a name is served for it), one checksum. Left out: the certificates of an Ingress
        refused a host, and any certificate naming a host another namespace owns (it would be
        served for that host: exact names are chosen first)."""
        own = base.certificates
        certificates: dict[config.Certificate, str] = dict(
            zip(own, map(checksum.digest, checksum.texts(own)), strict=True)
        )
        for key in sorted(self._cert_holders, key=lambda k: self._ingresses[k].claim):
            if self._refused_a_host(key):
                continue
            memo = self._ingresses[key]
            for cert, digest in zip(
                memo.compiled.certificates, memo.certificate_digests, strict=True
            ):
                foreign = self._foreign_name(key[0], cert)
                if foreign is not None:
                    warnings.append(
                        f"{_name(key)} spec.tls: a certificate for {foreign[0]} is not served: "
                        f"that host belongs to namespace {foreign[1]}"
                    )
                    continue
                certificates.setdefault(cert, digest)
        parts = [self._parts[host] for host in self._hosts]
        full = dataclasses.replace(
            base,
            routes=tuple(item.route for part in parts for item in part.prepared),
            certificates=tuple(certificates),
        )
        index = routing.assemble(self._host_routes)
        total = checksum.table_checksum(
            base, (part.digest for part in parts), certificates.values()
        )
        return config.RouteTable(settings=full, checksum=total, index=index)

    def _foreign_name(
        self, namespace: str, cert: config.Certificate
    ) -> tuple[str, str] | None:
        """A name of ``cert`` that is a host another namespace owns (an exact host, else the
        wildcard covering it), with that namespace. (A wildcard certificate over another
        namespace's exact host is not one: that host's own exact certificate is chosen first.)"""
        for name in _certificate_names(cert.cert_pem):
            part = self._parts.get(name)
            if part is None and "." in name and not name.startswith("*."):
                part = self._parts.get("*." + _parent(name))
            if part is not None and part.owner != namespace:
                return name, part.owner
        return None

    def _refused_a_host(self, key: ObjectKey) -> bool:
        memo = self._ingresses[key]
        return any(
            key in self._parts[host].warnings and self._parts[host].served.get(key) is None
            for host in memo.by_host
        )

    # -- settings and policies ------------------------------------------------------------------

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


@functools.lru_cache(maxsize=4096)
def _certificate_names(cert_pem: str) -> tuple[str, ...]:
    """The lower-case SAN DNS names of the first certificate (its CN without SAN), as the
    proxy's SNI selection reads them; () when it does not load (the proxy reports that)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(name.lower().rstrip(".") for name in names)


def _parent(host: str) -> str:
    """``example.com`` for ``a.example.com`` (what ``*.example.com`` covers: one label)."""
    return host.split(".", 1)[1]


def _claim(key: ObjectKey, ingress: Mapping[str, Any]) -> Claim:
    created = (ingress.get("metadata") or {}).get("creationTimestamp")
    return (created if isinstance(created, str) else "", key[0], key[1])


def _name(key: ObjectKey) -> str:
    return f"Ingress {key[0]}/{key[1]}"


def _same(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    """Whether two mappings hold the very same objects under the same keys."""
    return a is b or (len(a) == len(b) and all(b.get(k, _MISSING) is v for k, v in a.items()))


_MISSING = object()


def _changed(old: snap.Objects, new: snap.Objects) -> set[ObjectKey]:
    """Keys whose object differs (by identity) between ``old`` and ``new``, or is in one only."""
    if old is new:
        return set()
    out = {key for key, obj in new.items() if old.get(key) is not obj}
    out.update(key for key in old if key not in new)
    return out


def _service_of(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = labels.get(snap.SERVICE_NAME_LABEL)
    return service if isinstance(service, str) and service else None


def translate(snapshot: snap.Snapshot, options: Options | None = None) -> Result:
    """One-shot translation (no memory kept between calls)."""
    return Translator(options or Options()).translate(snapshot)
