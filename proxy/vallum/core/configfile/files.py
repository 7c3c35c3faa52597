"""Reading the files a configuration names: bounded, regular files only, and not writable by
every user.

Why a module of its own: the config file and every ``*_file`` it names are trusted input (the
routes and policies, the CAs that authenticate clients, the keys that seal sessions and sign
assertions), and they are watched: a change is loaded by itself. So every read here

* is **bounded** per kind (:data:`LIMITS`): reading stops at the limit plus one byte, and a
  bigger file is refused naming the file and the limit, instead of ending in ``MemoryError``;
* takes **regular files only**: a device (``/dev/zero``), a FIFO or a socket is refused without
  reading from it. The file is opened without blocking and checked on the open descriptor, so it
  cannot be swapped for something else between the check and the read;
* refuses a file **writable by every user** (``o+w``), as OpenSSH refuses unprotected keys: any
  local account could replace the policy, trust its own CA or plant a cookie secret, and the
  reload would pick it up. A **secret** (private keys, ``cookie_secret_file``,
  ``idp_client_secret_file``, ...) readable by every user (``o+r``) is a warning, not an error:
  Kubernetes mounts Secrets ``0644`` unless told otherwise, and refusing that would refuse the
  ordinary deployment. Only the file's own mode is checked (not its folders or owner).

Nothing here prints: problems are raised as :class:`FileProblem`, warnings returned.
"""

from __future__ import annotations

import os
import stat
from typing import Literal

Kind = Literal["config", "certificate", "key", "secret", "crl", "policy", "json"]

MiB = 1024 * 1024
LIMITS: dict[Kind, int] = {
    "config": 16 * MiB,  # 10,000 routes with policies is a few MiB
    "certificate": 1 * MiB,  # a whole public CA bundle is about 250 KiB
    "key": 1 * MiB,
    "secret": 1 * MiB,
    "crl": 16 * MiB,  # a large CA's CRL can run to megabytes
    "policy": 16 * MiB,
    "json": 1 * MiB,
}
SECRET_KINDS: frozenset[Kind] = frozenset({"key", "secret"})


class FileProblem(Exception):
    """A file that cannot be used: ``str()`` names the file and why, ``reason`` just why."""

    def __init__(self, path: str, reason: str, verb: str = "cannot read") -> None:
        super().__init__(f"{verb} {path}: {reason}")
        self.path = path
        self.reason = reason


def describe_size(size: int) -> str:
    return f"{size // MiB} MiB" if size % MiB == 0 else f"{size} bytes"


def read_text(path: str, kind: Kind, *, check_mode: bool = True) -> tuple[str, list[str]]:
    """The UTF-8 text of ``path`` and any warnings about it; raises :class:`FileProblem`.

    ``check_mode`` refuses a world-writable file (and warns about a world-readable secret);
    ``vallum policy`` reads a policy to show it, not to trust it, and passes False.
    """
    limit = LIMITS[kind]
    try:
        before = os.stat(path)  # refuse a FIFO or device before opening it
    except OSError as exc:
        raise FileProblem(path, exc.strerror or str(exc)) from None
    _check_regular(path, before.st_mode)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileProblem(path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        _check_regular(path, st.st_mode)
        warnings = _check_mode(path, st.st_mode, kind) if check_mode else []
        if st.st_size > limit:
            raise FileProblem(path, _too_big(kind, limit))
        data = _read_at_most(fd, limit + 1, path)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since fstat
        raise FileProblem(path, _too_big(kind, limit))
    try:
        return data.decode("utf-8"), warnings
    except UnicodeDecodeError as exc:
        raise FileProblem(path, f"not UTF-8 text ({exc.reason})") from None


def _read_at_most(fd: int, size: int, path: str) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        try:
            chunk = os.read(fd, min(size - got, 1 << 20))
        except OSError as exc:
            raise FileProblem(path, exc.strerror or str(exc)) from None
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _check_regular(path: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    what = (
        "a folder" if stat.S_ISDIR(mode)
        else "a FIFO" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise FileProblem(path, f"{what}, expected a regular file")


def _check_mode(path: str, mode: int, kind: Kind) -> list[str]:
    perms = f"{stat.S_IMODE(mode):04o}"
    if mode & stat.S_IWOTH:
        raise FileProblem(
            path,
            f"writable by every user (mode {perms}), so anyone on this machine could change "
            f"it; remove that permission: chmod o-w {path}",
            "refusing",
        )
    if kind in SECRET_KINDS and mode & stat.S_IROTH:
        return [
            f"{path} holds a secret and is readable by every user (mode {perms}); "
            f"consider chmod o-r {path}"
        ]
    return []


def _too_big(kind: Kind, limit: int) -> str:
    return f"larger than {describe_size(limit)}, the limit for a {kind} file"
