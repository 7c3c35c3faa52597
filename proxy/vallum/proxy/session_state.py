"""What the processes of one Vallum share about sessions: sign-outs and refreshes.

Sessions are sealed cookies (:mod:`vallum.proxy.sessions`), so nothing needs a store to *read*
one. Two things still have to be shared wherever this Vallum serves (every host, every worker
process of ``vallum serve --workers N``):

* **Revocation.** Sign-out revokes the session id: every process refuses a cookie carrying it,
  on every host, until the session would have ended anyway. A copy of the cookie is then
  worthless.
* **Refresh.** A session is refreshed once, by one process, with the newest refresh token;
  the others (other workers, other hosts' cookie copies) take the result. Providers that rotate
  refresh tokens treat a second use of one as theft and revoke the whole grant.

:class:`SessionState` is the small interface the identity gate uses. Implementations:

* :class:`LocalState`: one process (``vallum serve`` with one worker, tests).
* :class:`DirectoryState`: the workers of one ``vallum serve``, through a private directory that
  :func:`enable_shared_directory` makes before the workers are forked: an append-only file of
  revocations that each worker reads from where it left off (at most every
  :data:`POLL_SECONDS`, piggybacked on a request: no timer, no read per request), an
  ``flock`` per session (bucket) for refreshes, and the newest sealed session per id.

A cross-replica implementation (the Kubernetes operator, through the API server) plugs in behind
the same :class:`SessionState`. Everything it stores is either a session id or a value sealed
with ``cookie_secret``: it needs no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

log = logging.getLogger("vallum.identity")

ENV = "VALLUM_SESSION_STATE_DIR"
"""Set by ``vallum serve --workers N`` for its workers: the shared directory."""
POLL_SECONDS = 0.5
"""A worker reads other workers' revocations at most this long after they were written."""
HOLD_SECONDS = 20.0
"""How long a refresh waits for another process's refresh of the same session (the provider
client times out after 15 s); after that it goes ahead on its own."""
LOCK_BUCKETS = 4096
PRUNE_SECONDS = 300.0
LOCAL_LATEST = 10_000
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def valid_session_id(session_id: str) -> bool:
    """A session id Vallum minted (``secrets.token_urlsafe``): what may be stored and shared."""
    return _SESSION_ID.fullmatch(session_id) is not None


class SessionState(Protocol):
    """Revocations and refresh coordination shared by every process of one Vallum.

    ``is_revoked`` runs on every signed-in request: a set lookup, no I/O (an implementation may
    catch up with other processes on a call now and then, as :class:`DirectoryState` does). The
    rest runs at sign-out and refresh only.
    """

    def is_revoked(self, session_id: str, now: float) -> bool:
        """Whether the session was signed out (in any process). ``now`` is ``time.time()``."""
        ...

    async def revoke(self, session_id: str, until: float) -> None:
        """Refuse ``session_id`` from now on: in this process before this returns, in every
        other within about a second. ``until`` is when the session ends anyway (the entry may be
        forgotten after it)."""
        ...

    def hold(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive use of this session's refresh among all processes (waits for another)."""
        ...

    async def latest(self, session_id: str) -> str | None:
        """The newest session value (sealed) published for ``session_id``, if not expired."""
        ...

    async def publish(self, session_id: str, sealed: str, until: float) -> None:
        """Make a refreshed session (sealed) the newest for its id, until ``until``."""
        ...

    def close(self) -> None:
        """Release files and other resources."""
        ...


class LocalState:
    """:class:`SessionState` for one process: dictionaries and asyncio locks."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}
        self._latest: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_prune = time.time() + PRUNE_SECONDS

    def is_revoked(self, session_id: str, now: float) -> bool:
        return session_id in self._revoked

    async def revoke(self, session_id: str, until: float) -> None:
        self._revoked[session_id] = until
        self._latest.pop(session_id, None)
        self._prune(time.time())

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(session_id) is lock:
                del self._locks[session_id]

    async def latest(self, session_id: str) -> str | None:
        item = self._latest.get(session_id)
        if item is None or item[0] <= time.time():
            return None
        return item[1]

    async def publish(self, session_id: str, sealed: str, until: float) -> None:
        self._latest.pop(session_id, None)
        self._latest[session_id] = (until, sealed)
        while len(self._latest) > LOCAL_LATEST:
            del self._latest[next(iter(self._latest))]
        self._prune(time.time())

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_SECONDS
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._latest = {k: v for k, v in self._latest.items() if v[0] > now}

    def close(self) -> None:
        return None


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class DirectoryState:
    """:class:`SessionState` shared by the worker processes of one ``vallum serve`` through
    ``directory`` (private to the user running it; see the module doc for the layout)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._sessions = os.path.join(directory, "sessions")
        self._locks = os.path.join(directory, "locks")
        os.makedirs(self._sessions, mode=0o700, exist_ok=True)
        os.makedirs(self._locks, mode=0o700, exist_ok=True)
        self._log = os.path.join(directory, "revoked")
        self._reader: int | None = os.open(self._log, os.O_RDONLY | os.O_CREAT, 0o600)
        self._tail = b""
        self._revoked: dict[str, float] = {}
        self._next_read = 0.0
        self._next_prune = time.time() + PRUNE_SECONDS
        self._read_failed = False
        self._catch_up(time.time())

    def is_revoked(self, session_id: str, now: float) -> bool:
        if now >= self._next_read:
            self._catch_up(now)
        return session_id in self._revoked

    def _catch_up(self, now: float) -> None:
        """Read what other workers appended since the last call (one ``read`` when nothing)."""
        self._next_read = now + POLL_SECONDS
        if self._reader is None:
            return
        chunks = [self._tail]
        try:
            while chunk := os.read(self._reader, 1 << 16):
                chunks.append(chunk)
        except OSError as exc:
            if not self._read_failed:
                log.error("session revocations cannot be read: %s", exc,
                          extra={"event": "revocations_unreadable"})
                self._read_failed = True
        lines = b"".join(chunks).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            session_id, _, until = line.decode("ascii", "replace").partition(" ")
            try:
                self._revoked[session_id] = float(until)
            except ValueError:
                continue
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_SECONDS
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}

    async def revoke(self, session_id: str, until: float) -> None:
        self._revoked[session_id] = until
        if not valid_session_id(session_id):
            log.error("not sharing the revocation of a malformed session id")
            return
        line = f"{session_id} {until:.0f}\n".encode()
        fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one short O_APPEND write: never interleaved with another's
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self._session_file(session_id))

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        bucket = _digest(session_id)[:3]  # LOCK_BUCKETS files at most, never removed
        fd = os.open(os.path.join(self._locks, bucket), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + HOLD_SECONDS
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        log.warning("session refresh: another process held the lock for %.0f s; "
                                    "going ahead", HOLD_SECONDS)
                        break
                    await asyncio.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _session_file(self, session_id: str) -> str:
        return os.path.join(self._sessions, _digest(session_id))

    async def latest(self, session_id: str) -> str | None:
        try:
            with open(self._session_file(session_id), encoding="ascii") as file:
                until_text, _, sealed = file.read().partition("\n")
            if float(until_text) <= time.time():
                return None
        except (OSError, ValueError):
            return None
        return sealed or None

    async def publish(self, session_id: str, sealed: str, until: float) -> None:
        now = time.time()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_SECONDS
            self._prune_sessions(now)
        fd, temporary = tempfile.mkstemp(dir=self._sessions, prefix=".new-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(f"{until:.3f}\n{sealed}")
            os.replace(temporary, self._session_file(session_id))  # readers see old or new
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _prune_sessions(self, now: float) -> None:
        """Remove published sessions that have ended (any worker may; races are harmless)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._sessions):
                try:
                    with open(entry.path, encoding="ascii") as file:
                        until = float(file.readline() or 0)
                except (OSError, ValueError):
                    until = 0.0
                if until <= now and not entry.name.startswith(".new-"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def close(self) -> None:
        if self._reader is not None:
            os.close(self._reader)
            self._reader = None


def from_environment() -> SessionState:
    """The state for this process: shared through :data:`ENV`'s directory when
    ``vallum serve`` set one (several workers), else this process's own."""
    directory = os.environ.get(ENV)
    if directory and os.path.isdir(directory):
        return DirectoryState(directory)
    return LocalState()


def enable_shared_directory() -> str:
    """Create the private directory the workers about to be forked share, and export it
    (:data:`ENV`). Returns it; :func:`disable_shared_directory` removes it at exit."""
    path = tempfile.mkdtemp(prefix="vallum-sessions-")
    os.environ[ENV] = path
    return path


def disable_shared_directory(path: str) -> None:
    if os.environ.get(ENV) == path:
        del os.environ[ENV]
    shutil.rmtree(path, ignore_errors=True)
