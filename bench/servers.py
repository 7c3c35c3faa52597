"""Starting and stopping the servers a benchmark scenario needs, and nothing else.

Every server is a child process in its own process group, pinned with ``taskset`` when cores are
given, bound to a free loopback port, started from a temporary folder and stopped (TERM, then KILL)
when its context ends, whatever happened. nginx runs in the foreground with its own prefix, pid,
log and temp paths (``-p DIR -e stderr -c conf -g 'daemon off;'``) so it never touches the
system's nginx. A server counts as started only once it answers an HTTP(S) request with 200; if it
exits first, its own error output is the message.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

NGINX_DIR = Path(__file__).resolve().parent / "nginx"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class ServerError(RuntimeError):
    """A server did not start or did not answer (the message carries its stderr)."""


def render(template: str, values: Mapping[str, object], *, name: str = "template") -> str:
    """Fill ``{{name}}`` placeholders; a missing or unused value is an error naming it."""
    wanted = set(_PLACEHOLDER.findall(template))
    missing = sorted(wanted - set(values))
    unused = sorted(set(values) - wanted)
    if missing:
        raise ValueError(f"{name}: no value for placeholder(s) {', '.join(missing)}")
    if unused:
        raise ValueError(f"{name}: value(s) {', '.join(unused)} match no placeholder")
    return _PLACEHOLDER.sub(lambda m: str(values[m[1]]), template)


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        raise ServerError("nginx is not installed (scripts/bootstrap installs it)")
    return found


def taskset(cores: Sequence[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cores))] if cores else []


def wait_ready(
    proc: subprocess.Popen[bytes], url: str, *, name: str, headers: Mapping[str, str],
    timeout_s: float = 20.0,
) -> None:
    """Poll ``url`` until it answers 200; fail early with the server's stderr if it exits."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{name} exited with {proc.returncode}: {_stderr(proc)}")
        request = urllib.request.Request(url, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except (OSError, ssl.SSLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ServerError(f"{name} did not answer 200 at {url} within {timeout_s:.0f}s ({last})")


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    if proc.stderr is None:
        return ""
    with contextlib.suppress(OSError, ValueError):
        return proc.stderr.read().decode(errors="replace").strip()[-2000:]
    return ""


def stop(proc: subprocess.Popen[bytes], *, grace_s: float = 5.0) -> None:
    """TERM the process group (nginx workers, vallum workers), then KILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace_s)
    # Workers left behind by a leader that died first share its group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stderr is not None:
        proc.stderr.close()


@contextlib.contextmanager
def process(
    cmd: Sequence[str], *, name: str, ready_url: str, cores: Sequence[int] = (),
    headers: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
    folder: Path,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (pinned to ``cores``, in ``folder``) until the context ends.

    It counts as started once ``ready_url`` answers 200. Its stderr goes to a file in ``folder``,
    not a pipe: a chatty server must never block on a full pipe.
    """
    stem = re.sub(r"\W+", "-", name)
    log_path = folder / f"{stem}.stderr"
    with open(log_path, "wb") as log_out:
        proc = subprocess.Popen(
            [*taskset(cores), *cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log_out, start_new_session=True, env=None if env is None else dict(env),
            cwd=folder,
        )
    proc.stderr = open(log_path, "rb")  # noqa: SIM115 - closed by stop()
    try:
        wait_ready(proc, ready_url, name=name, headers=headers or {})
        yield proc
        if proc.poll() is not None:
            raise ServerError(f"{name} exited during the run ({proc.returncode}): {_stderr(proc)}")
    finally:
        stop(proc)


@contextlib.contextmanager
def nginx(
    template: str, values: Mapping[str, object], *, folder: Path, name: str, ready_url: str,
    cores: Sequence[int] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx from ``bench/nginx/<template>`` with its prefix, pid and temp paths in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    source = NGINX_DIR / template
    conf = folder / "nginx.conf"
    conf.write_text(render(source.read_text(), {**values, "prefix": folder}, name=str(source)))
    cmd = [nginx_binary(), "-p", str(folder), "-e", "stderr", "-c", str(conf),
           "-g", "daemon off;"]
    with process(cmd, name=name, ready_url=ready_url, cores=cores, folder=folder) as proc:
        yield proc


def cpu_seconds(group: int) -> float:
    """CPU time (user + system) used so far by the live processes of process group ``group``.

    Read from ``/proc/<pid>/stat`` (fields 14 and 15, after the parenthesised command name).
    Lets the report say whether the server under test was saturated during a run.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[2]) == group:  # pgrp, the 5th field overall
            total += int(fields[11]) + int(fields[12])
    return total / tick


def core_jiffies() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) clock ticks since boot, from ``/proc/stat``.

    Two readings around a run tell how busy each core was with *anything* (our servers, wrk,
    other work on the machine); beside :func:`cpu_seconds` it shows whether the server under
    test had its cores to itself.
    """
    found: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        found[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return found


def busy_percent(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cores: Sequence[int]
) -> float | None:
    """How busy ``cores`` were between two :func:`core_jiffies` readings, % of one core each."""
    busy = sum(after[c][0] - before[c][0] for c in cores if c in before and c in after)
    total = sum(after[c][1] - before[c][1] for c in cores if c in before and c in after)
    return None if total <= 0 else 100.0 * busy * len(cores) / total


def python() -> str:
    """The bench's own interpreter: Vallum runs on it unless ``--vallum-python`` names another."""
    return sys.executable


def describe_python(executable: str) -> str:
    """``executable``'s version and the interpreter behind it (a venv's ``python`` is a link):
    e.g. ``CPython 3.11.2 at /usr/bin/python3.11``. Raises ``OSError`` if it does not run."""
    code = ("import platform, sys; print(platform.python_implementation(), "
            "platform.python_version(), sys._base_executable)")
    try:
        out = subprocess.run([executable, "-c", code], capture_output=True, text=True, timeout=30,
                             check=True).stdout.split()
    except (subprocess.SubprocessError, ValueError) as exc:
        raise OSError(f"{executable} does not run: {exc}") from exc
    base = os.path.realpath(out[2]) if len(out) > 2 else executable
    return f"{out[0]} {out[1]} at {base}" if len(out) > 1 else executable
