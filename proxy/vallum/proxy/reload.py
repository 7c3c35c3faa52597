"""Live reload: watch the config file (and every file it read), rebuild, swap on success.

``vallum serve`` polls the config file and every path in ``Settings.watched_files`` (certificates,
keys, CA bundles referenced by ``*_file`` options) for a change of modification time, size or
inode — the last catches the rename-into-place that editors and Kubernetes ConfigMap mounts do —
and also reloads on ``SIGHUP``. The new table is compiled *beside* the old one (in a worker
thread, so the event loop keeps serving) and swapped into the :class:`TableHolder` in one
assignment. A file that does not compile leaves the old table in place; every problem is logged
as a structured line and kept in ``holder.last_error``. An unchanged checksum is not a swap.

What must change *with* the table (a new listening socket for a new ``downstream_mtls`` CA) is
done by the ``before_swap`` step, on the loop, after the compile and before the swap; if it
fails the reload is rejected exactly like a file that does not compile, so the table and the
listeners never disagree. No method of :class:`Reloader` raises: a reload failure must never
take the proxy down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from vallum.core import config, errors
from vallum.proxy import state

log = logging.getLogger("vallum.proxy.reload")

T = TypeVar("T")
Signature = tuple[tuple[str, int, int, int] | tuple[str], ...]


def file_signature(paths: Iterable[str]) -> Signature:
    """(path, mtime_ns, size, inode) for each path; just (path,) for one that is missing."""
    out: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path,))
        else:
            out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class Reloader:
    """Keeps ``holder`` in step with the config file at ``config_path``.

    ``compile`` turns the file into a :class:`RouteTable` (``vallum.core.configfile.load`` then
    ``routing.build_table``) and raises :class:`ConfigError` for a bad file. ``before_swap`` is
    awaited on the event loop with a new table just before it is swapped in; raising
    :class:`ConfigError` or ``OSError`` rejects the reload. ``on_swap`` callbacks run on the
    event loop right after each swap, in the same loop step (dropping stale upstream TLS
    contexts, metrics, closing a replaced listener).
    """

    def __init__(
        self,
        config_path: str,
        holder: state.TableHolder,
        compile: Callable[[str], config.RouteTable],
        interval: float = 1.0,
        *,
        on_swap: Iterable[Callable[[config.RouteTable], None]] = (),
        on_failure: Iterable[Callable[[str], None]] = (),
        before_swap: Callable[[config.RouteTable], Awaitable[None]] | None = None,
    ) -> None:
        self.config_path = config_path
        self.holder = holder
        self.compile = compile
        self.interval = interval
        self.on_swap = list(on_swap)
        self.on_failure = list(on_failure)
        self.before_swap = before_swap
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._signal_installed = False
        self._seen = file_signature(self._paths(holder.current))

    def _paths(self, table: config.RouteTable) -> list[str]:
        paths = [self.config_path]
        paths.extend(p for p in table.settings.watched_files if p != self.config_path)
        return paths

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling and handle SIGHUP (when running in the main thread on Unix)."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._poll(), name="vallum-reload")
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._signal_installed = True
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            extra = {"event": "sighup_unavailable", "error": str(exc)}
            log.warning("SIGHUP reload unavailable", extra=extra)

    async def stop(self) -> None:
        """Stop polling and remove the SIGHUP handler."""
        if self._signal_installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._signal_installed = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading", extra={"event": "sighup"})
        asyncio.get_running_loop().create_task(self.reload(), name="vallum-reload-sighup")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if file_signature(self._watched()) != self._seen:
                    await self.reload()
            except Exception:  # never let the watcher die
                log.exception("reload watcher error", extra={"event": "reload_watcher_error"})

    def _watched(self) -> list[str]:
        return [entry[0] for entry in self._seen]

    # --- reloading ---------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Compile in a worker thread, then swap on the loop. See :meth:`reload_now`."""
        async with self._lock:
            seen = file_signature(self._watched())
            outcome = await asyncio.to_thread(self._compile)
            if (
                self.before_swap is not None
                and not isinstance(outcome, list)
                and outcome.checksum != self.holder.current.checksum
            ):
                outcome = await self._prepare(self.before_swap, outcome)
            return self._apply(outcome, seen)

    def reload_now(self) -> bool:
        """Compile and swap synchronously (for a reloader without a ``before_swap`` step, which
        needs the loop: with one, use :meth:`reload`).

        Returns ``True`` when the file on disk is what is being served now (swapped in, or
        unchanged), ``False`` when it was rejected and the old table kept.
        """
        if self.before_swap is not None:
            raise RuntimeError("reload_now() cannot run before_swap; await reload()")
        seen = file_signature(self._watched())
        return self._apply(self._compile(), seen)

    async def _prepare(
        self,
        step: Callable[[config.RouteTable], Awaitable[None]],
        table: config.RouteTable,
    ) -> config.RouteTable | list[str]:
        try:
            await step(table)
        except errors.ConfigError as exc:
            return list(exc.problems)
        except OSError as exc:
            return [f"{self.config_path}: {exc}"]
        except Exception as exc:  # a bug in the step must not take the proxy down
            log.exception("reload: unexpected error", extra={"event": "reload_crashed"})
            return [f"{self.config_path}: unexpected {type(exc).__name__}: {exc}"]
        return table

    def _compile(self) -> config.RouteTable | list[str]:
        try:
            return self.compile(self.config_path)
        except errors.ConfigError as exc:
            return list(exc.problems)
        except errors.VallumError as exc:
            return [str(exc) or type(exc).__name__]
        except Exception as exc:  # a bug in a compiler must not take the proxy down
            log.exception("reload: unexpected error", extra={"event": "reload_crashed"})
            return [f"{self.config_path}: unexpected {type(exc).__name__}: {exc}"]

    def _apply(self, outcome: config.RouteTable | list[str], seen: Signature) -> bool:
        if isinstance(outcome, list):
            # Keep watching what we watched, so fixing the file (or a cert) reloads again.
            self._seen = seen
            message = "\n".join(outcome)
            for problem in outcome:
                log.error(
                    "config rejected, keeping the current table",
                    extra={"event": "reload_failed", "file": self.config_path, "problem": problem},
                )
            self.holder.reject(message)
            self._notify(self.on_failure, message)
            return False
        table = outcome
        self._seen = seen if list(self._watched()) == self._paths(table) else file_signature(
            self._paths(table)
        )
        if table.checksum == self.holder.current.checksum:
            self.holder.last_error = None
            log.info(
                "config unchanged", extra={"event": "reload_unchanged", "checksum": table.checksum}
            )
            return True
        self.holder.swap(table)
        log.info(
            "config reloaded",
            extra={
                "event": "reload_swapped",
                "checksum": table.checksum,
                "generation": self.holder.generation,
                "routes": len(table.settings.routes),
            },
        )
        self._notify(self.on_swap, table)
        return True

    @staticmethod
    def _notify(callbacks: Iterable[Callable[[T], None]], value: T) -> None:
        for callback in callbacks:
            try:
                callback(value)
            except Exception:
                log.exception("reload callback failed", extra={"event": "reload_callback_error"})
