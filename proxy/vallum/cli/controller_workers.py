"""``vallum controller --workers N``: one process watches and translates, N processes serve.

The parent process keeps everything that talks to the API server (kopf's watches, the store,
the translation, status and events); it never listens on ``--address``. N worker processes
listen there together (``SO_REUSEPORT``, as ``vallum serve --workers N`` does) and serve the
tables the parent sends them over a socket pair each (:mod:`vallum.proxy.table_feed`: the first
table whole, then deltas). A worker never sees a credential: it gets route tables, nothing else.

Forking: a process with threads must not fork (a lock held by another thread at that moment
stays locked forever in the child: the kubernetes client's connection pool, OpenSSL, logging).
The controller runs kopf in a thread, and a crashed worker must be replaced while it runs. So
before any thread starts, the parent forks a *zygote* (:class:`Zygote`): a small
single-threaded process whose only job is to fork workers when the parent asks, and hand the
parent its end of the new worker's socket pair (``SCM_RIGHTS``). Every worker, the first ones
and replacements, is forked from that clean process.

Lifetimes: a worker ends when its socket reaches end-of-file (the parent is gone) and on
``SIGTERM`` from the zygote's death (``PR_SET_PDEATHSIG``); the zygote is killed when the parent
dies (``PR_SET_PDEATHSIG``) and otherwise ends when the parent closes its control socket.

Readiness (``/readyz`` on ``--metrics-address``, served by the parent): ready once *every*
worker has served a first table, and from then on while at least one worker serves (a crashed
worker is replaced with the current table; meanwhile the others take its connections). A worker
that ends before it served its first table (its port is taken, say) stops the controller with
its reason, as ``vallum serve --workers N`` stops when a worker dies at start.

Each table goes to every worker, and :meth:`Workers.publish` answers ``True`` when every worker
that answered serves it. A worker that refuses a table (its certificates do not load there, say)
keeps its last good one; the refusal is logged, counted and shown on ``/readyz`` as the last
error, and the controller tries again with its next table.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import select
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import values

from vallum.core import config, errors, routing
from vallum.proxy import errors as pages
from vallum.proxy import identity, metrics, server, session_state, state, table_feed

log = logging.getLogger("vallum.controller.workers")

ANSWER_SECONDS = 60.0
"""How long a publish waits for a worker's answer; a worker silent that long is taken for hung:
it is killed and replaced (and counted as refusing the table)."""
STOP_SECONDS = server.DRAIN_SECONDS + 5.0
RESTART_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1
STOPPING = "stopping"
"""A worker's last word when a signal stops it (result of table 0)."""


def die_with_parent(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent ends (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


WorkerMain = Callable[[int, socket.socket], int]


class Zygote:
    """The parent's handle on the process that forks the workers (see the module doc)."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.control = control

    @classmethod
    def fork(cls, target: WorkerMain) -> Zygote:
        """Fork the zygote; ``target(index, sock)`` is what each worker runs (its exit code).
        Call it before any thread starts."""
        if threading.active_count() > 1:
            log.warning("forking the worker zygote with %d threads running",
                        threading.active_count())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                ours.close()
                code = _zygote(theirs, target, parent)
            except BaseException:
                log.exception("the worker zygote failed")
            finally:
                os._exit(code)
        theirs.close()
        ours.settimeout(10.0)
        return cls(pid, ours)

    def spawn(self, index: int) -> tuple[int, socket.socket]:
        """A new worker ``index``: its pid and the parent's end of its socket pair."""
        self.control.send(str(index).encode())
        message, fds, _, _ = socket.recv_fds(self.control, 64, 1)
        if not message or not fds:
            raise OSError("the worker zygote is gone")
        return int(message), socket.socket(fileno=fds[0])

    def close(self) -> None:
        """End the zygote (it waits for its workers first) and reap it; again: nothing."""
        if self.control.fileno() < 0:
            return
        self.control.close()
        deadline = time.monotonic() + STOP_SECONDS + 2.0
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:  # reaped already
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _zygote(control: socket.socket, target: WorkerMain, parent: int) -> int:
    """The zygote's loop: fork a worker per request, reap the ones that end."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # it ends with the parent's control socket
    signal.set_wakeup_fd(-1)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([control], [], [], 1.0)
        _reap(children)
        if not readable:
            continue
        message = control.recv(64)
        if not message:
            break
        index = int(message)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                control.close()
                ours.close()
                die_with_parent(signal.SIGTERM)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                code = target(index, theirs)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        theirs.close()
        children.add(pid)
        socket.send_fds(control, [str(pid).encode()], [ours.fileno()])
        ours.close()
    deadline = time.monotonic() + STOP_SECONDS
    while children and time.monotonic() < deadline:
        _reap(children)
        time.sleep(0.05)
    return 0


def _reap(children: set[int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code:
                log.warning("worker process %d ended (%d)", pid, code,
                            extra={"event": "worker_exited", "pid": pid, "code": code})
        children.discard(pid)


# -- a worker ------------------------------------------------------------------------------------


def worker_main(index: int, sock: socket.socket) -> int:
    """What each worker process runs: serve the tables arriving on ``sock`` until it ends."""
    pages.reset_after_fork()
    return server._run_loop(lambda: _worker(index, sock))  # type: ignore[no-any-return]


async def _worker(index: int, sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    feed = _WorkerFeed(index, writer)
    reading = asyncio.create_task(feed.run(reader))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if reading.done():
        code = reading.result()
    else:  # a signal: say so, so the parent does not take this for a crash
        with contextlib.suppress(ConnectionError):
            writer.write(table_feed.pack_result(table_feed.Result(0, False, STOPPING)))
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    stopping.cancel()
    if feed.server is not None:
        log.info("draining", extra={"event": "draining", "worker": index})
        await feed.server.close()
    writer.close()
    return code


class _WorkerFeed:
    """A worker's end of the feed: decode each table, serve it, answer."""

    def __init__(self, index: int, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.writer = writer
        self.decoder = table_feed.Decoder()
        self.server: server.Server | None = None

    async def run(self, reader: asyncio.StreamReader) -> int:
        frames = table_feed.FrameReader()
        while chunk := await reader.read(1 << 16):
            try:
                received = list(frames.feed(chunk))
            except table_feed.FeedError as exc:
                log.error("worker %d: the table feed is broken (%s); ending so that a new "
                          "worker takes over", self.index, exc,
                          extra={"event": "feed_broken", "worker": self.index})
                return 1
            for frame in received:
                result, fatal = await self.handle(frame)
                self.writer.write(table_feed.pack_result(result))
                await self.writer.drain()
                if fatal:
                    return 1
        return 0  # the parent is gone

    async def handle(self, frame: table_feed.Frame) -> tuple[table_feed.Result, bool]:
        pid = os.getpid()
        try:
            table = await asyncio.to_thread(self.decoder.decode, frame)
        except table_feed.FeedError as exc:
            log.error("worker %d: table %d unusable: %s", self.index, frame.seq, exc,
                      extra={"event": "feed_frame_unusable", "worker": self.index})
            return table_feed.Result(frame.seq, False, str(exc), need_full=True, pid=pid), False
        except errors.ConfigError as exc:
            message = "\n".join(exc.problems)
            return table_feed.Result(frame.seq, False, message, pid=pid), False
        if self.server is None:
            candidate = server.Server(
                table, gate=identity.build_gate(table.settings), worker=self.index, admin=False
            )
            try:
                await candidate.start()
            except (errors.ConfigError, OSError) as exc:
                problems = exc.problems if isinstance(exc, errors.ConfigError) else [str(exc)]
                await candidate.close(drain=0)
                return table_feed.Result(frame.seq, False, "\n".join(problems), pid=pid), True
            self.server = candidate
            gc.freeze()
            log.info("serving", extra={"event": "serving", "address": table.settings.address,
                                       "worker": self.index, "pid": pid,
                                       "routes": len(table.settings.routes)})
            return table_feed.Result(frame.seq, True, pid=pid), False
        published = await self.server.publish(table)
        if published:
            gc.freeze()
        message = "" if published else (self.server.holder.last_error or "refused")
        return table_feed.Result(frame.seq, published, message, pid=pid), False


# -- the parent's side ---------------------------------------------------------------------------


def _log_fatal(reason: str) -> None:
    log.error("the workers cannot go on: %s", reason, extra={"event": "workers_failed"})


@dataclass(eq=False)
class _Worker:
    index: int
    pid: int
    writer: asyncio.StreamWriter
    started: float
    holds: int = 0  # the table this worker decoded last, as far as the parent knows
    served: bool = False
    signalled: bool = False  # it said it stops on a signal
    answers: dict[int, asyncio.Future[table_feed.Result]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class Workers:
    """The parent's side: the zygote, the workers, the tables sent to them, readiness."""

    def __init__(self, count: int, on_fatal: Callable[[str], None] | None = None,
                 target: WorkerMain = worker_main) -> None:
        """Prepare the shared directories (metrics, sign-outs) and fork the zygote: call before
        any thread starts and before credentials are read -- a forked process holds a copy of
        its parent's memory, and the workers face the network (see the module doc).
        ``on_fatal(reason)`` is called when the workers cannot go on (a worker ended before it
        served its first table); the caller stops."""
        self.count = count
        self.on_fatal: Callable[[str], None] = on_fatal or _log_fatal
        self._metrics_before = (os.environ.get(metrics.MULTIPROC_ENV), values.ValueClass)
        self._metrics_dir = metrics.enable_multiprocess()
        self._sessions_dir = session_state.enable_shared_directory()
        self.zygote = Zygote.fork(target)
        self.encoder = table_feed.Encoder()
        self.current: table_feed.Encoded | None = None
        """The newest table, unless a worker refused it: then the last one every worker took."""
        self.workers: dict[int, _Worker] = {}
        self.all_served = False
        self.stopping = False
        self.holder = state.TableHolder(routing.build_table(config.Settings()))
        self._have_table = False
        self.metrics = metrics.Metrics()
        self.admin: Any = None
        self._deaths: dict[int, list[float]] = {}

    @property
    def sessions_directory(self) -> str:
        """The directory the workers share sign-outs through (``DirectoryState``)."""
        return self._sessions_dir

    def ready(self) -> bool:
        return self.all_served and any(w.served for w in self.workers.values())

    async def start(self, metrics_address: str | None) -> None:
        """Fork the workers (they wait for their first table) and open the admin listener."""
        if metrics_address:
            from vallum.proxy import admin

            host, port = server.parse_address(metrics_address, "--metrics-address")
            self.admin = await admin.start_admin(
                host or "0.0.0.0",  # noqa: S104 (the admin address is the operator's choice)
                port, self.holder, self.metrics, ready=self.ready,
            )
        for index in range(self.count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        pid, sock = self.zygote.spawn(index)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        worker = _Worker(index, pid, writer, time.monotonic())
        self.workers[index] = worker
        worker.task = asyncio.create_task(self._read(worker, reader), name=f"worker-{index}")
        if self.current is not None:
            self._send(worker, self.current)

    def _send(self, worker: _Worker, encoded: table_feed.Encoded) -> asyncio.Future[
            table_feed.Result]:
        frame = encoded.frame_for(worker.holds)
        worker.holds = encoded.seq
        answer = worker.answers.get(encoded.seq)
        if answer is None or answer.done():
            answer = worker.answers[encoded.seq] = asyncio.get_running_loop().create_future()
        worker.writer.write(frame)
        return answer

    async def publish(self, table: config.RouteTable) -> bool:
        """Send ``table`` to every worker; ``True`` when every worker that answered serves it
        (none answering -- all of them being replaced -- refuses nothing: the replacements get
        it)."""
        encoded = self.encoder.encode(table)
        previous, self.current = self.current, encoded
        waiting = {w: self._send(w, encoded) for w in list(self.workers.values())}
        results = await self._answers(waiting)
        again = {w: self._send(w, encoded) for w, r in results.items() if r.need_full}
        results |= await self._answers(again)
        refused = [f"worker {w.index}: {r.message}" for w, r in results.items() if not r.ok]
        if refused:
            if previous is not None:
                self.current = previous  # what a replaced worker starts with
            message = "\n".join(refused)
            log.error("table refused by a worker, which keeps its current one: %s", message,
                      extra={"event": "publish_failed", "problem": message})
            self.holder.reject(message)  # (each worker counted its refusal in the metrics)
            return False
        if self._have_table:
            self.holder.swap(table)
        else:
            self.holder.current, self._have_table = table, True
            self.holder.loaded_at = time.time()
        self.metrics.set_table(self.holder.generation, len(table.settings.routes))
        return True

    async def _answers(
        self, waiting: dict[_Worker, asyncio.Future[table_feed.Result]]
    ) -> dict[_Worker, table_feed.Result]:
        """Each worker's answer; a worker that ended meanwhile is left out, a silent one is
        counted as refusing."""
        out: dict[_Worker, table_feed.Result] = {}
        for worker in waiting:
            with contextlib.suppress(ConnectionError):
                await worker.writer.drain()
        if not waiting:
            return out
        done, _ = await asyncio.wait(waiting.values(), timeout=ANSWER_SECONDS)
        for worker, answer in waiting.items():
            if answer in done:
                result = answer.result()
                if result.seq:  # seq 0: the worker ended before it answered
                    out[worker] = result
            else:
                message = f"no answer after {ANSWER_SECONDS:.0f} s (pid {worker.pid}): killed"
                log.error("worker %d: %s", worker.index, message,
                          extra={"event": "worker_hung", "worker": worker.index})
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                out[worker] = table_feed.Result(0, False, message)
        return out

    async def _read(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        frames = table_feed.FrameReader()
        why = "its socket closed"
        try:
            while chunk := await reader.read(1 << 16):
                for frame in frames.feed(chunk):
                    result = table_feed.read_result(frame)
                    if result.seq == 0:
                        worker.signalled = result.message == STOPPING
                        continue
                    if result.need_full:
                        worker.holds = 0
                    if result.ok:
                        worker.served = True
                        self._check_all_served()
                    answer = worker.answers.pop(result.seq, None)
                    if answer is not None and not answer.done():
                        answer.set_result(result)
                    if not result.ok and not worker.served and not result.need_full:
                        why = result.message
        except table_feed.FeedError as exc:  # a worker writing garbage is replaced
            why = f"it wrote something else than results ({exc})"
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        except ConnectionError as exc:
            why = str(exc)
        finally:
            worker.writer.close()
            for answer in worker.answers.values():
                if not answer.done():
                    answer.set_result(table_feed.Result(0, False))
            worker.answers.clear()
        self._ended(worker, why)

    def _check_all_served(self) -> None:
        if not self.all_served and len(self.workers) == self.count:
            self.all_served = all(w.served for w in self.workers.values())

    def _ended(self, worker: _Worker, why: str) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        metrics.worker_exited(worker.pid)
        if self.stopping:
            return
        if not self.all_served and not worker.served:
            self.stopping = True
            self.on_fatal(f"worker {worker.index} (pid {worker.pid}) ended before it served "
                          f"its first table: {why}")
            return
        now = time.monotonic()
        recent = [t for t in self._deaths.get(worker.index, []) if now - t < 60.0] + [now]
        self._deaths[worker.index] = recent
        delay = min(RESTART_SECONDS * 2 ** (len(recent) - 1), RESTART_MAX_SECONDS)
        if worker.signalled:
            why, level = "stopped by a signal", logging.INFO
        else:
            level = logging.ERROR
        log.log(level, "worker %d (pid %d) ended (%s); starting a new one in %.0f s unless "
                "stopping", worker.index, worker.pid, why, delay,
                extra={"event": "worker_restart", "worker": worker.index, "pid": worker.pid})
        asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._respawn(worker.index))
        )

    async def _respawn(self, index: int) -> None:
        if self.stopping or index in self.workers:
            return
        try:
            await self._spawn(index)
        except OSError as exc:
            self.stopping = True
            self.on_fatal(f"worker {index} cannot be started again: {exc}")

    async def close(self) -> None:
        """Stop the workers (they drain), the zygote and the admin listener."""
        self.stopping = True
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SECONDS)
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        await asyncio.to_thread(self.zygote.close)
        if self.admin is not None:
            await self.admin.cleanup()
            self.admin = None

    def cleanup(self) -> None:
        """End the zygote if :meth:`close` did not run, and remove the shared directories (at
        exit)."""
        self.zygote.close()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        # This process's metrics as they were (prometheus_client picks its value class from
        # the environment; a directory that is gone must not be inherited or written to).
        env, values.ValueClass = self._metrics_before
        if env is None:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
        else:
            os.environ[metrics.MULTIPROC_ENV] = env
        session_state.disable_shared_directory(self._sessions_dir)
