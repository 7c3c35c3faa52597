"""Real HTTP requests to the proxy: one-off, polling until live, and a steady probe load.

Why plain ``http.client`` and not wrk: these measurements are about *when* a route answers and
how long single requests take while the controller works, not about throughput. Each
:class:`Client` keeps one keep-alive connection (reconnecting after an error), so a request
costs one round trip on an open socket; every request gets a ``Host`` header and the answer is
judged by status and body (the upstream's body is distinctive, so Vallum's own 404 or 503 page
never counts as the upstream).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Answer = tuple[int, bytes, dict[str, str]]
"""(status, body, headers with lower-case names); status 0 when no answer came (the error text
is the body)."""


_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
"""Errors of a keep-alive connection the server closed while it was idle: worth one retry."""


class Client:
    """One keep-alive HTTP/1.1 connection to ``host:port``."""

    def __init__(self, address: str, port: int, timeout_s: float = 5.0) -> None:
        self.address = address
        self.port = port
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self.reconnects = 0
        """Requests sent again on a new connection after the server closed an idle one."""

    def get(self, host: str, path: str = "/") -> Answer:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.address, self.port,
                                                        timeout=self.timeout_s)
            try:
                self._conn.request("GET", path, headers={"Host": host})
                response = self._conn.getresponse()
                body = response.read()
                headers = {k.lower(): v for k, v in response.getheaders()}
                if response.will_close:
                    self.close()
                return response.status, body, headers
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or not isinstance(exc, _STALE):
                    return 0, f"{type(exc).__name__}: {exc}".encode(), {}
                self.reconnects += 1
        return 0, b"unreachable", {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def get_once(address: str, port: int, host: str, path: str = "/") -> Answer:
    client = Client(address, port, timeout_s=2.0)
    try:
        return client.get(host, path)
    finally:
        client.close()


def from_upstream(body: bytes) -> Callable[[Answer], bool]:
    """The test of an answer that came through from the upstream."""
    return lambda answer: answer[0] == 200 and answer[1] == body


def routed(answer: Answer) -> bool:
    """Any answer of a route Vallum has (its 404 says no route matched the host)."""
    return answer[0] not in (0, 404)


def wait_for(client: Client, host: str, want: Callable[[Answer], bool], *,
             timeout_s: float, interval_s: float = 0.005,
             alive: Callable[[], None] | None = None, path: str = "/") -> tuple[float, Answer]:
    """Ask ``host`` every ``interval_s`` until ``want(answer)``; returns the monotonic time the
    wanted answer was *received*, and the answer. Raises ``TimeoutError`` with the last one."""
    deadline = time.monotonic() + timeout_s
    answer: Answer = (0, b"not asked", {})
    while time.monotonic() < deadline:
        answer = client.get(host, path)
        if want(answer):
            return time.monotonic(), answer
        if alive is not None:
            alive()
        time.sleep(interval_s)
    raise TimeoutError(f"{host}{path}: still {answer[0]} {answer[1][:200]!r} after "
                       f"{timeout_s:g} s")


@dataclass
class Sample:
    sent: float
    """Monotonic time the request was sent."""
    ms: float
    ok: bool
    detail: str = ""


@dataclass
class Load:
    """``connections`` threads asking ``host`` every ``interval_s`` (each its own keep-alive
    connection), recording every request, until :meth:`stop`."""

    address: str
    port: int
    host: str
    want: Callable[[Answer], bool]
    connections: int = 2
    interval_s: float = 0.005
    samples: list[Sample] = field(default_factory=list)
    reconnects: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for n in range(self.connections):
            thread = threading.Thread(target=self._run, name=f"bench-load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        client = Client(self.address, self.port)
        mine: list[Sample] = []
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                answer = client.get(self.host)
                took = (time.monotonic() - sent) * 1000.0
                ok = self.want(answer)
                detail = "" if ok else f"{answer[0]} {answer[1][:120]!r}"
                mine.append(Sample(sent, took, ok, detail))
                pause = self.interval_s - (time.monotonic() - sent)
                if pause > 0:
                    self._stop.wait(pause)
        finally:
            client.close()
            with self._lock:
                self.samples.extend(mine)
                self.reconnects += client.reconnects

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return sorted(self.samples, key=lambda s: s.sent)
