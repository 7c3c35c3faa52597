"""Our own watches of the bulk kinds (Ingress, Service, EndpointSlice, Secret), from the
resourceVersion of the controller's own LIST.

Why not kopf's watches for these: kopf lists every kind again when its watch starts (after our
LIST, which the first table needs), and its per-object machinery keeps each raw body while a
worker handles it. Measured against the local API server with 5,000 Ingresses, Services and
EndpointSlices: peak RSS 348 MB with kopf watching them, against ~200 MB at the first table.
A watch that starts at the LIST's resourceVersion has no second list, no gap and no duplicate:
the API server sends exactly the changes after what we listed (and ``DELETED`` for objects
gone since), one small JSON line at a time, parsed here and handed to the store on the
controller's loop. kopf still watches the small kinds (IngressClass, Policy, Settings) and does
what it is for: status, Events and the Lease's loop.

Each watch runs in a daemon thread with the blocking ``kubernetes`` client (one per kind and
namespace scope); it asks for bookmarks, so its resourceVersion stays fresh, and resumes from the
last one it saw when the API server ends the watch (``timeoutSeconds``) or the connection drops.
When the resourceVersion is too old (410 Gone, after a long outage and etcd compaction), it lists
the scope again and the store takes that list whole (:meth:`Store.relisted
<vallum.operator.store.Store.relisted>`: objects missing from it are removed), then watches on
from the new list's resourceVersion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from vallum.operator import retrying
from vallum.operator import snapshot as snap
from vallum.operator import store as store_mod

log = logging.getLogger("vallum.operator.watches")

SERVER_TIMEOUT = 300
"""``timeoutSeconds`` of each watch request: the API server ends it after this; we resume."""
READ_TIMEOUT = SERVER_TIMEOUT + 30.0
"""Seconds before a watch that failed is tried again."""

Get = Callable[[str, list[tuple[str, Any]]], Any]
"""Opens a streaming GET of a path with a query: a response with ``status``, ``stream()``
(byte chunks), ``read()``, ``close()`` and ``interrupt()`` (from another thread; see
:func:`client_get`)."""
Lister = Callable[[str, str | None], tuple[list[dict[str, Any]], str] | None]
"""LISTs ``kind`` in a namespace (None: all): the items and the list's resourceVersion."""


class Gone(Exception):
    """The resourceVersion is too old (410): list again."""


class Watches:
    """The watch threads of one controller; :meth:`start` one per kind and scope."""

    def __init__(
        self,
        store: store_mod.Store,
        loop: asyncio.AbstractEventLoop,
        get: Get,
        lister: Lister,
        paths: Callable[[str, str | None], str],
    ) -> None:
        self.store = store
        self.loop = loop
        self.get = get
        self.lister = lister
        self.paths = paths
        self.stopping = threading.Event()
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self, kind: str, scope: str | None, version: str) -> None:
        """Watch ``kind`` in namespace ``scope`` (None: all) from ``version`` on."""
        thread = threading.Thread(
            target=self._run,
            args=(kind, scope, version),
            name=f"vallum-watch-{kind}-{scope or 'all'}",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """End every watch: shutting down the sockets of the open responses wakes the threads
        reading them (closing a response another thread reads would wait for its next byte,
        up to a minute between bookmarks)."""
        self.stopping.set()
        with self._lock:
            responses = list(self._open)
        for response in responses:
            with contextlib.suppress(Exception):  # another thread reads it: it may complain
                response.interrupt()

    # -- in the watch thread --------------------------------------------------------------------

    def _run(self, kind: str, scope: str | None, version: str) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                version = self._watch(kind, scope, version)
                failures = 0
            except Gone:
                log.info(
                    "%s: resourceVersion %s too old, listing again",
                    kind,
                    version,
                    extra={"event": "watch_relist", "kind": kind},
                )
                try:
                    version = self._relist(kind, scope)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self._failed(kind, exc, failures)
            except Exception as exc:
                failures += 1
                self._failed(kind, exc, failures)

    def _failed(self, kind: str, exc: Exception, failures: int) -> None:
        """Log and wait before the next try (:func:`retrying.delay`: an API server that refuses
        us, e.g. 403 without RBAC, is not asked -- and the log not written -- every second)."""
        if self.stopping.is_set():
            return
        delay = retrying.delay(failures)
        log.warning(
            "watch of %s failed, trying again in %.0f s: %s",
            kind,
            delay,
            retrying.brief(exc),
            extra={"event": "watch_failed", "kind": kind},
        )
        self.stopping.wait(delay)

    def _watch(self, kind: str, scope: str | None, version: str) -> str:
        """One watch request; returns the last resourceVersion seen when it ends."""
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", SERVER_TIMEOUT),
        ]
        if version:
            query.append(("resourceVersion", version))
        response = self.get(self.paths(kind, scope), query)
        with self._lock:
            self._open.add(response)
        try:
            if response.status == 410:
                raise Gone()
            if response.status >= 400:
                text = response.read()[:300].decode("utf-8", "replace")
                raise RuntimeError(f"watch {kind}: {response.status} {text}")
            buffer = bytearray()
            for chunk in response.stream():
                if self.stopping.is_set():
                    break
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        version = self._event(kind, json.loads(line), version)
            return version
        finally:
            with self._lock:
                self._open.discard(response)
            with contextlib.suppress(Exception):  # already closed by stop()
                response.close()

    def _event(self, kind: str, event: Mapping[str, Any], version: str) -> str:
        """Hand one watch event to the store; returns the resourceVersion to resume from."""
        kind_of_event = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            return version
        if kind_of_event == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch {kind}: {obj.get('message') or obj}")
        seen = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind_of_event == "BOOKMARK":
            return seen
        if kind_of_event == "DELETED":
            self._call(self.store.delete, kind, snap.key_of(obj))
        else:
            self._call(self.store.apply, kind, obj)
        return seen

    def _relist(self, kind: str, scope: str | None) -> str:
        listed = self.lister(kind, scope)
        if listed is None:
            raise RuntimeError(f"{kind} is not served any more")
        items, version = listed
        self._call(self.store.relisted, kind, scope, items)
        return version

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the controller's loop (the store is not thread-safe)."""
        if not self.stopping.is_set():
            self.loop.call_soon_threadsafe(fn, *args)


def client_get(api: Any) -> Get:
    """:data:`Get` with a ``kubernetes.client.ApiClient`` (its urllib3 response, unread)."""

    def get(path: str, query: list[tuple[str, Any]]) -> Any:
        method, url, headers, body, _ = api.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=(10, READ_TIMEOUT)
        )
        return _Stream(response.response)

    return get


class _Stream:
    """A urllib3 response as :data:`Get` answers: ``status``, ``stream()``, ``read()``."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.status: int = raw.status

    def stream(self) -> Any:
        return self.raw.stream(65536, decode_content=True)

    def read(self) -> bytes:
        data: bytes = self.raw.read()
        return data

    def close(self) -> None:
        self.raw.close()  # not back to the pool: the stream may be cut mid-event
        self.raw.release_conn()

    def interrupt(self) -> None:
        """Wake the thread reading this response (from another thread)."""
        connection = getattr(self.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
