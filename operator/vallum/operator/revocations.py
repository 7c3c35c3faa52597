"""Sign-out across replicas, through the API server: revocations as ConfigMaps.

A sign-out must revoke the session wherever Vallum serves (issue 11, finding 12): within one
``vallum serve`` the workers share a directory (``vallum.proxy.session_state``); the replicas of
``vallum controller`` share only the API server -- no database, no Redis (issue 12, item 9).

So a sign-out on one replica writes a ConfigMap in the controller's namespace (name
``vallum-revoked-<sha256 of the id>``, label :data:`LABEL`, ``data.session`` the session id and
``data.until`` when the session ends anyway), and every replica watches those ConfigMaps and adds
each to the set it checks on every signed-in request (a dict look-up, no I/O). A watch event
arrives in milliseconds; the issue's bound is 2 s. The replica holding the Lease deletes the
ConfigMaps whose session has ended (:meth:`ClusterState.prune_expired`), so their number stays
bounded by the sessions signed out in one ``cookie_expire``.

What is stored is a session id, never a cookie: an id alone opens nothing (a session is a cookie
sealed with ``cookie_secret``), and a revoked id is refused anyway. Whoever may write ConfigMaps
in the controller's namespace can sign sessions out (never in).

Refresh coordination (one refresh per session) stays per process, in the ``local`` state this
wraps: replicas that refresh the same session at the same moment each redeem the refresh token,
which a provider detecting reuse may answer by revoking the grant (then the user signs in again).
The object this module builds is a ``vallum.proxy.session_state.SessionState`` by shape (the
operator does not import the proxy; the CLI plugs it into the gate).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from vallum.operator import retrying

log = logging.getLogger("vallum.operator.revocations")

LABEL = "vallum.dev/revocation"
PREFIX = "vallum-revoked-"
RESYNC_SECONDS = 300
"""A watch is restarted (list + watch) at least this often."""


class Local(Protocol):
    """The per-process state this wraps (``vallum.proxy.session_state.LocalState``)."""

    def is_revoked(self, session_id: str, now: float) -> bool: ...

    async def revoke(self, session_id: str, until: float) -> None: ...

    def hold(self, session_id: str) -> AbstractAsyncContextManager[None]: ...

    async def latest(self, session_id: str) -> str | None: ...

    async def publish(self, session_id: str, sealed: str, until: float) -> None: ...

    def close(self) -> None: ...


def object_name(session_id: str) -> str:
    return PREFIX + hashlib.sha256(session_id.encode()).hexdigest()[:40]


def revocation(session_id: str, until: float, namespace: str) -> dict[str, Any]:
    """The ConfigMap that revokes ``session_id`` until ``until`` (epoch seconds)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(session_id),
            "namespace": namespace,
            "labels": {LABEL: "true", "app.kubernetes.io/managed-by": "vallum"},
        },
        "data": {"session": session_id, "until": str(int(until) + 1)},
    }


def read(configmap: Any) -> tuple[str, float] | None:
    """(session id, until) of a revocation ConfigMap (a client object or a dict), or ``None``
    for one that is not well formed (ignored: it revokes nothing)."""
    data = configmap.get("data") if isinstance(configmap, dict) else configmap.data
    if not data:
        return None
    try:
        return str(data["session"]), float(data["until"])
    except (KeyError, ValueError):
        return None


class ClusterState:
    """Revocations shared by every replica (see the module doc); the rest is ``local``'s.

    ``core`` is a ``kubernetes.client.CoreV1Api``. :meth:`start` runs the watch in a thread of
    its own (the client blocks); :meth:`close` stops it.
    """

    def __init__(self, local: Local, core: Any, namespace: str) -> None:
        self.local = local
        self.core = core
        self.namespace = namespace
        self._revoked: dict[str, float] = {}
        self._next_prune = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self.synced = threading.Event()
        """Set once the first list of revocations is in."""
        self.on_revoked: Callable[[str, float], None] | None = None
        """Called with (session id, until) for each live revocation the watch reads, on the
        watch's thread (``vallum controller --workers N`` passes them on to its workers); the
        same one may come again."""

    @classmethod
    def connect(cls, local: Local, api_client: Any, namespace: str) -> ClusterState:
        """A state that talks to the API server through ``api_client`` (a ``kubernetes``
        ``ApiClient``)."""
        from kubernetes import client

        return cls(local, client.CoreV1Api(api_client), namespace)

    # -- SessionState ------------------------------------------------------------------------
    def is_revoked(self, session_id: str, now: float) -> bool:
        return session_id in self._revoked or self.local.is_revoked(session_id, now)

    async def revoke(self, session_id: str, until: float) -> None:
        self._revoked[session_id] = until
        await self.local.revoke(session_id, until)
        body = revocation(session_id, until, self.namespace)
        try:
            await asyncio.to_thread(self._create, body)
        except Exception as exc:  # this replica still refuses it; say the others may not
            log.error(
                "sign-out: could not share the revocation of a session with the other replicas "
                "(%s); it is refused here only", exc,
            )

    def hold(self, session_id: str) -> AbstractAsyncContextManager[None]:
        return self.local.hold(session_id)

    async def latest(self, session_id: str) -> str | None:
        return await self.local.latest(session_id)

    async def publish(self, session_id: str, sealed: str, until: float) -> None:
        await self.local.publish(session_id, sealed, until)

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self.local.close()

    # -- the watch ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="vallum-revocations", daemon=True
            )
            self._thread.start()

    def _create(self, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespaced_config_map(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # already there: revoked by another sign-out of the same id
                raise

    def _run(self) -> None:
        from kubernetes import watch

        pause = 1.0
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_config_map(
                    self.namespace, label_selector=LABEL
                )
                pause = 1.0
                now = time.time()
                for item in listed.items:
                    self._add(item, now)
                self.synced.set()
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(
                    self.core.list_namespaced_config_map, self.namespace,
                    label_selector=LABEL, resource_version=listed.metadata.resource_version,
                    timeout_seconds=RESYNC_SECONDS,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._add(event["object"], time.time())
                    if self._stop.is_set():
                        break
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "revocations watch (ConfigMaps labelled %s in namespace %s): %s; retrying "
                    "in %.0f s", LABEL, self.namespace, retrying.brief(exc), pause,
                )
                self._stop.wait(pause)
                pause = min(pause * 2, retrying.MAX)  # e.g. no RBAC yet: not a warning every second

    def _add(self, item: Any, now: float) -> None:
        got = read(item)
        if got is not None and got[1] > now:
            self._revoked[got[0]] = got[1]
            if self.on_revoked is not None:
                self.on_revoked(*got)
        self._prune(now)

    def _prune(self, now: float) -> None:
        if now >= self._next_prune:  # now and then, not per event
            self._next_prune = now + 60.0
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}

    def prune_expired(self, now: float | None = None) -> int:
        """Delete the revocation ConfigMaps whose session has ended, and ours that are not
        well formed (blocking; the Lease holder calls this now and then). Only names this
        module gives (:data:`PREFIX`) are deleted. Returns how many were deleted."""
        from kubernetes.client.exceptions import ApiException

        now = time.time() if now is None else now
        deleted = 0
        for item in self.core.list_namespaced_config_map(
            self.namespace, label_selector=LABEL
        ).items:
            got = read(item)
            if not str(item.metadata.name).startswith(PREFIX):
                continue  # labelled by someone else: read (revoking is fail-safe), never deleted
            if got is None or got[1] <= now:
                with contextlib.suppress(ApiException):
                    self.core.delete_namespaced_config_map(item.metadata.name, self.namespace)
                    deleted += 1
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        return deleted
