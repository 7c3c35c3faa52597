"""The processes of a controller benchmark: the upstream nginx and ``vallum controller``.

The upstream is Debian's nginx answering ``200 vallum-bench-upstream`` on ``10.200.0.1`` (on
``lo``: the API server refuses loopback addresses in EndpointSlices; added for the run when
missing, which needs root, and removed again), so a probe can tell the upstream's answer from
anything Vallum answers itself. ``vallum controller`` runs as the e2e suite runs it (plain HTTP,
an admin listener, its own IngressClass controller name), in a process group of its own, its
JSON log in the run's folder; its memory is read from ``/proc/<pid>/status`` (``VmRSS``, and
``VmHWM``, the peak resident set the kernel recorded).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port

from bench import servers
from bench.controller import probe

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_IP = "10.200.0.1"
UPSTREAM_BODY = b"vallum-bench-upstream\n"

_UPSTREAM_CONF = """\
# The controller benchmark's upstream (rendered by bench/controller/processes.py).
worker_processes 1;
pid {{prefix}}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{prefix}}/client_body;
    proxy_temp_path {{prefix}}/proxy;
    fastcgi_temp_path {{prefix}}/fastcgi;
    uwsgi_temp_path {{prefix}}/uwsgi;
    scgi_temp_path {{prefix}}/scgi;
    keepalive_requests 1000000;
    server {
        listen {{ip}}:{{port}} reuseport backlog=4096;
        location / {
            default_type text/plain;
            return 200 "vallum-bench-upstream\\n";
        }
    }
}
"""


@contextlib.contextmanager
def address_on_lo(ip: str = UPSTREAM_IP) -> Iterator[str]:
    """``ip``/32 on ``lo`` for the run (added when missing; removed only if added here)."""
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                          text=True, check=False).stdout
    added = False
    if f" {ip}/" not in have:
        done = subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise servers.ServerError(f"cannot add {ip}/32 to lo (needs root): "
                                      f"{done.stderr.strip()}")
        added = True
    try:
        yield ip
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], capture_output=True,
                           check=False)


@dataclass(frozen=True)
class Upstream:
    ip: str
    port: int
    group: int


@contextlib.contextmanager
def upstream(folder: Path, cores: Sequence[int] = ()) -> Iterator[Upstream]:
    """The upstream nginx on ``10.200.0.1`` and a free port."""
    with address_on_lo() as ip:
        port = free_port(ip)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "logs").mkdir(exist_ok=True)
        conf = folder / "nginx.conf"
        conf.write_text(servers.render(_UPSTREAM_CONF,
                                       {"prefix": folder, "ip": ip, "port": port}))
        cmd = [servers.nginx_binary(), "-p", str(folder), "-e", "stderr", "-c", str(conf),
               "-g", "daemon off;"]
        with servers.process(cmd, name="upstream", ready_url=f"http://{ip}:{port}/",
                             cores=cores, folder=folder) as proc:
            yield Upstream(ip, port, proc.pid)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB (10^6 bytes), from ``/proc/<pid>/status``."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0]) * 1024 / 1e6  # kB (KiB) -> MB
    return found["VmRSS"], found["VmHWM"]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) ``pid`` has used, from ``/proc/<pid>/stat``:
    beside wall time it tells whether a figure was long because the controller worked or
    because it waited for a core (other work on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Controller:
    """``vallum controller`` on free ports; started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, python: str, kubeconfig: str, controller_name: str, folder: Path,
                 cores: Sequence[int] = ()) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.log_path = folder / "controller.log"
        self.cmd = [
            *servers.taskset(cores), python, "-m", "vallum.cli", "controller",
            "--kubeconfig", kubeconfig,
            "--address", f"127.0.0.1:{self.port}",
            "--metrics-address", f"127.0.0.1:{self.admin_port}",
            "--insecure-server",
            "--controller-name", controller_name,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Start the process; returns the monotonic time just before it was spawned."""
        with open(self.log_path, "wb") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
                                         start_new_session=True)
        self.proc.stderr = open(self.log_path, "rb")  # noqa: SIM115 - closed by servers.stop
        return self.started_at

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise servers.ServerError(
                f"vallum controller exited with {self.proc.returncode}: {self.log_tail()}")

    def ready(self) -> bool:
        status, _, _ = probe.get_once("127.0.0.1", self.admin_port, "localhost", "/readyz")
        return status == 200

    def wait_ready(self, timeout_s: float = 120.0, interval_s: float = 0.01) -> float:
        """Poll ``/readyz`` until 200; returns the monotonic time it first answered 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready():
                return time.monotonic()
            time.sleep(interval_s)
        raise servers.ServerError(f"vallum controller not ready after {timeout_s:.0f} s: "
                                  f"{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            servers.stop(self.proc, grace_s=20.0)


@contextlib.contextmanager
def controller(python: str, kubeconfig: str, controller_name: str, folder: Path,
               cores: Sequence[int] = ()) -> Iterator[Controller]:
    """A :class:`Controller` not started yet (the caller times :meth:`Controller.start`),
    stopped when the context ends."""
    folder.mkdir(parents=True, exist_ok=True)
    running = Controller(python, kubeconfig, controller_name, folder, cores)
    try:
        yield running
    finally:
        running.stop()
