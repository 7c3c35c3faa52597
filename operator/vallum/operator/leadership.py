"""The replica that holds the Lease writes status and Events; every replica serves.

``vallum controller`` runs as several replicas that all watch the cluster and serve the same
routes (issue 12, item 9). Writing back to the objects (:mod:`vallum.operator.status`) is done by
one of them only, the holder of a ``coordination.k8s.io`` Lease (:mod:`vallum.operator.lease`):
otherwise every Event would be written once per replica and the status writes would race.

:class:`Leadership` is the controller's ``report`` hook and the background work that goes with
the Lease:

* The hook only remembers the latest translation and wakes a reporting task; the controller's
  round never waits for the API writes (with thousands of Ingresses, a first report is thousands
  of calls: seconds that must not delay the next table). Reports are coalesced: while one is
  being written, newer results replace each other and the latest is written next.
* On gaining the Lease, the new leader starts with a fresh memory of what was reported and
  reports the latest result in full, so nothing the previous leader missed (it may have died
  between a translation and its writes) stays unreported. An Ingress may then get its Event a
  second time; never none.
* The leader deletes ended revocations (:meth:`vallum.operator.revocations.ClusterState
  .prune_expired`) every :data:`PRUNE_SECONDS`.
* Warnings of the translation (a route another Ingress takes first, no Settings object) are logged
  on every replica, once when they appear, not once per table.

The pure helpers (:func:`lease_name`, :func:`pod_namespace`, :func:`identity`) are what the CLI
uses for its defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from vallum.operator import lease, retrying, status, translate
from vallum.operator import snapshot as snap

log = logging.getLogger("vallum.operator.leadership")

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
PRUNE_SECONDS = 60.0
"""How often the leader deletes the revocation ConfigMaps whose sessions have ended."""
SERVICE_RESYNC_SECONDS = 300
"""The ``--publish-service`` watch is restarted (get + watch) at least this often."""

Addresses = list[dict[str, str]]


def pod_namespace(
    env: Mapping[str, str] = os.environ, path: str = SERVICE_ACCOUNT_NAMESPACE
) -> str:
    """The namespace this pod runs in (the service account's, else ``$POD_NAMESPACE``), else
    ``default`` (outside a cluster)."""
    try:
        with open(path, encoding="utf-8") as file:
            found = file.read().strip()
    except OSError:
        found = ""
    return found or env.get("POD_NAMESPACE", "").strip() or "default"


def lease_name(controller_name: str) -> str:
    """The Lease name for a controller name: readable, a valid object name, and different for
    two controller names (two controllers of different classes never share a leader)."""
    slug = re.sub(r"[^a-z0-9]+", "-", controller_name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(controller_name.encode()).hexdigest()[:8]
    return f"{slug or 'vallum'}-{digest}"


def identity(env: Mapping[str, str] = os.environ) -> str:
    """Who this replica is in the Lease: ``$POD_NAME``, else ``<hostname>-<pid>``."""
    return env.get("POD_NAME", "").strip() or f"{socket.gethostname()}-{os.getpid()}"


class ServiceAddresses:
    """The ``--publish-service``'s addresses (:func:`vallum.operator.status.published_addresses`),
    kept current by a watch on that one Service in a thread of its own (the client blocks).
    ``on_change()`` is called from that thread whenever the addresses change. ``api_client``
    is a ``kubernetes`` ``ApiClient``."""

    def __init__(
        self, api_client: Any, namespace: str, name: str, on_change: Callable[[], None]
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.on_change = on_change
        self.addresses: Addresses | None = None
        """None until the Service was read; [] when it is absent or has no address."""
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="vallum-publish-service", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _set(self, service: Any) -> None:
        found = status.published_addresses(service=service) if service is not None else []
        if found != self.addresses:
            if not found:
                log.warning(
                    "--publish-service %s/%s has no address (yet); Ingress status stays as it is",
                    self.namespace, self.name,
                )
            self.addresses = found
            self.on_change()

    def _run(self) -> None:
        from kubernetes import watch

        selector = f"metadata.name={self.name}"
        pause = 1.0
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_service(
                    self.namespace, field_selector=selector
                )
                items = [self._plain(item) for item in listed.items]
                version = listed.metadata.resource_version if listed.metadata else None
                self._set(items[0] if items else None)
                pause = 1.0
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(
                    self.core.list_namespaced_service, self.namespace,
                    field_selector=selector, resource_version=version,
                    timeout_seconds=SERVICE_RESYNC_SECONDS,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._set(self._plain(event["object"]))
                    elif event["type"] == "DELETED":
                        self._set(None)
                    if self._stop.is_set():
                        break
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("--publish-service %s/%s: %s; retrying in %.0f s", self.namespace,
                            self.name, retrying.brief(exc), pause)
                self._stop.wait(pause)
                pause = min(pause * 2, retrying.MAX)

    def _plain(self, obj: Any) -> Mapping[str, Any]:
        if isinstance(obj, Mapping):
            return obj
        plain: Mapping[str, Any] = self.core.api_client.sanitize_for_serialization(obj)
        return plain


class Leadership:
    """The controller's ``report`` hook and the Lease holder's duties (see the module doc).

    The Lease ``namespace``/``name`` is held as ``identity``. ``status_addresses``
    (``--publish-status-address``) or ``publish_service`` (``--publish-service``, watched while
    :meth:`run` runs) give the ``status.loadBalancer`` to publish; neither: none is written.
    ``prune()`` deletes ended revocations (blocking; None: nothing to prune). The elector and
    each reporter are made from ``api_client`` unless given (tests give their own).
    """

    def __init__(
        self,
        api_client: Any,
        *,
        namespace: str,
        name: str,
        identity: str,
        status_addresses: Addresses | None = None,
        publish_service: snap.ObjectKey | None = None,
        prune: Callable[[], int] | None = None,
        reporter: Callable[[], Any] | None = None,
        elector: lease.Elector | None = None,
        prune_seconds: float = PRUNE_SECONDS,
    ) -> None:
        self.api_client = api_client
        self.status_addresses = status_addresses
        self.publish_service = publish_service
        self.service: ServiceAddresses | None = None
        self.prune = prune
        self.prune_seconds = prune_seconds
        self.make_reporter = reporter or (lambda: status.Reporter(api_client, identity))
        if elector is None:
            from kubernetes import client

            elector = lease.Elector(
                client.CoordinationV1Api(api_client), namespace, name, identity,
            )
        self.elector = elector
        self.elector.on_change = self._on_change
        self.reporter: Any = None
        self.latest: tuple[snap.Snapshot, translate.Result] | None = None
        self.reports = 0
        """How many reports this replica wrote (as the leader)."""
        self._fresh = True
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warnings: frozenset[str] = frozenset()

    @property
    def leader(self) -> bool:
        return self.elector.leader

    def addresses(self) -> Addresses | None:
        """The ``status.loadBalancer.ingress`` entries to publish now (None: none)."""
        if self.status_addresses is not None:
            return self.status_addresses
        if self.service is not None:
            return self.service.addresses or None  # not read yet, or no address: leave as is
        return None

    async def report(self, snapshot: snap.Snapshot, result: translate.Result) -> None:
        """The controller's hook: remember the result, report it (later, if the leader)."""
        self._log_warnings(result)
        self.latest = (snapshot, result)
        self._wake.set()

    def wake(self) -> None:
        """Report the latest result again (e.g. the published addresses changed); any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    def _on_change(self, leader: bool) -> None:
        if leader:
            self._fresh = True  # report everything again: the previous leader may have missed some
            self._wake.set()

    def _log_warnings(self, result: translate.Result) -> None:
        now = frozenset(result.warnings)
        for text in sorted(now - self._warnings):
            log.warning(text, extra={"event": "translation_warning"})
        self._warnings = now

    async def run(self) -> None:
        """Take part in the election, report as the leader, prune; until cancelled."""
        self._loop = asyncio.get_running_loop()
        if self.publish_service is not None and self.service is None:
            self.service = ServiceAddresses(self.api_client, *self.publish_service, self.wake)
            self.service.start()
        tasks = [
            asyncio.create_task(self.elector.run(), name="vallum-lease"),
            asyncio.create_task(self._reporting(), name="vallum-status"),
        ]
        if self.prune is not None:
            tasks.append(asyncio.create_task(self._pruning(), name="vallum-prune"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failure of one is the failure of all
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:  # the elector hands the Lease back when cancelled
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.service is not None:
                self.service.close()

    async def _reporting(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.elector.leader or self.latest is None:
                continue
            if self._fresh or self.reporter is None:
                self.reporter = self.make_reporter()
                self._fresh = False
            snapshot, result = self.latest
            try:
                await asyncio.to_thread(
                    self.reporter.report, snapshot, result, self.addresses()
                )
            except Exception:  # Reporter logs failed writes itself; this is a bug: go on
                log.exception("status report failed", extra={"event": "report_failed"})
            self.reports += 1

    async def _pruning(self) -> None:
        assert self.prune is not None
        while True:
            await asyncio.sleep(self.prune_seconds)
            if not self.elector.leader:
                continue
            try:
                deleted = await asyncio.to_thread(self.prune)
            except Exception as exc:
                log.warning("pruning ended revocations failed: %s", exc)
                continue
            if deleted:
                log.info("deleted %d ended revocation(s)", deleted,
                         extra={"event": "revocations_pruned"})
