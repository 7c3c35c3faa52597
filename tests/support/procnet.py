"""Which process holds which TCP socket, read from ``/proc`` (Linux): which processes listen on
a port, and which one took a given client connection. For tests of multi-process servers, where
a response must not say which process answered."""

from __future__ import annotations

import os
from collections.abc import Iterable

LISTEN = "0A"
ESTABLISHED = "01"


def _entries() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket in this network namespace."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as file:
                lines = file.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            out.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                        state, int(inode)))
    return out


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening(port: int, pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that hold a socket listening on ``port``."""
    wanted = {inode for local, _, state, inode in _entries() if local == port and state == LISTEN}
    return {pid for pid in pids if socket_inodes(pid) & wanted}


def serving(port: int, client_port: int, pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` holding the server side of the connection from ``client_port``."""
    wanted = {
        inode for local, remote, state, inode in _entries()
        if local == port and remote == client_port and state == ESTABLISHED
    }
    return {pid for pid in pids if socket_inodes(pid) & wanted}


def children(pid: int) -> set[int]:
    """The direct children of ``pid``."""
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as file:
                out.update(int(p) for p in file.read().split())
        except OSError:
            continue
    return out


def memory_contains(pid: int, needle: bytes) -> bool:
    """Whether ``needle`` is anywhere in the readable memory of ``pid`` (needs the right to
    trace it: root, or the same user with ptrace allowed)."""
    with open(f"/proc/{pid}/maps") as maps:
        regions = [line.split() for line in maps]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for fields in regions:
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False
