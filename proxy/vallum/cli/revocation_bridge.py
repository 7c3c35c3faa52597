"""Sign-outs between the workers of one ``vallum controller --workers N`` and the other replicas.

The workers share sign-outs through a private directory (:class:`~vallum.proxy.session_state.
DirectoryState`, as ``vallum serve``'s workers do); the replicas share them through ConfigMaps
that the parent process watches (:class:`vallum.operator.revocations.ClusterState`). Workers never
talk to the API server, so the parent carries revocations across, both ways:

* one the parent's watch reads (a sign-out on another replica) is appended to the directory
  (:meth:`Bridge.from_cluster`), where every worker reads it within
  :data:`~vallum.proxy.session_state.POLL_SECONDS`;
* one a worker appends to the directory (a sign-out on this replica) is read by the parent
  within :data:`READ_SECONDS` (:meth:`Bridge.run`) and written as a ConfigMap
  (``ClusterState.revoke``).

Each session id goes across once (:attr:`Bridge.known`, forgotten when the session has ended):
a line the bridge appended is not sent back to the cluster, and the watch event of a ConfigMap
the bridge wrote is not appended again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from typing import Protocol

from vallum.proxy import session_state

log = logging.getLogger("vallum.controller.revocations")

READ_SECONDS = 0.2
PRUNE_SECONDS = 300.0
LOG_NAME = "revoked"
"""The directory's append-only revocation log (one ``<session id> <until>`` line each), as
:class:`~vallum.proxy.session_state.DirectoryState` writes it."""


class Cluster(Protocol):
    """What the bridge needs of ``revocations.ClusterState``."""

    def revoke(self, session_id: str, until: float) -> Awaitable[None]: ...


class Bridge:
    """Carries revocations between ``directory`` (the workers') and ``cluster`` (the replicas')."""

    def __init__(self, cluster: Cluster, directory: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.cluster = cluster
        self.loop = loop
        self.shared = session_state.DirectoryState(directory)  # appends as a worker would
        self._reader = os.open(os.path.join(directory, LOG_NAME), os.O_RDONLY | os.O_CREAT, 0o600)
        self._tail = b""
        self.known: dict[str, float] = {}
        self._next_prune = time.time() + PRUNE_SECONDS

    def from_cluster(self, session_id: str, until: float) -> None:
        """A revocation the cluster's watch read: append it for the workers (any thread)."""
        if session_id in self.known:
            return
        self.known[session_id] = until
        with contextlib.suppress(RuntimeError):  # the loop is closing: we are stopping
            asyncio.run_coroutine_threadsafe(self.shared.revoke(session_id, until), self.loop)

    async def run(self) -> None:
        """Send the workers' sign-outs to the cluster, until cancelled."""
        while True:
            try:
                await self.step()
            except Exception:  # the next round tries again; never stop carrying sign-outs
                log.exception("passing the workers' sign-outs on failed")
            await asyncio.sleep(READ_SECONDS)

    async def step(self) -> int:
        """One read of what the workers appended; returns how many went to the cluster."""
        sent = 0
        now = time.time()
        for session_id, until in self._read():
            if session_id in self.known or until <= now:
                continue
            self.known[session_id] = until
            await self.cluster.revoke(session_id, until)
            sent += 1
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_SECONDS
            self.known = {k: v for k, v in self.known.items() if v > now}
        return sent

    def _read(self) -> list[tuple[str, float]]:
        chunks = [self._tail]
        try:
            while chunk := os.read(self._reader, 1 << 16):
                chunks.append(chunk)
        except OSError as exc:
            log.error("sign-outs of the workers cannot be read: %s", exc)
        lines = b"".join(chunks).split(b"\n")
        self._tail = lines.pop()
        out = []
        for line in lines:
            session_id, _, until = line.decode("ascii", "replace").partition(" ")
            if not session_state.valid_session_id(session_id):
                continue
            try:
                out.append((session_id, float(until)))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        os.close(self._reader)
        self.shared.close()
