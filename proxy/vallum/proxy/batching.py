"""Writes batched per event-loop round, for both legs of the hot path.

A connection with small writes queued (a response head and body, a request head) joins the
:class:`Round`; when the loop has run the round of callbacks that queued them, every queued
connection writes at once (``call_soon`` runs after the current batch of I/O callbacks, before
the loop sleeps again). A peer on loopback that sleeps is then woken once per burst rather than
once per connection with Python work in between, and no response waits longer than the round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

JOIN_PARTS = 8  # queued writes joined into one bytes object up to this many parts ...
JOIN_BYTES = 16 * 1024  # ... and this size (larger ones go out as one vectored write)


class Queued(Protocol):
    def flush_writes(self) -> None:
        """Write what is queued, now."""
        ...


class Round:
    """The connections with writes due at the end of the current loop round."""

    __slots__ = ("due", "scheduled")

    def __init__(self) -> None:
        self.due: list[Queued] = []
        self.scheduled = False

    def add(self, conn: Queued) -> None:
        self.due.append(conn)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.end)

    def end(self) -> None:
        """Run by the loop after the round of callbacks (``call_soon``)."""
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        """Every due connection writes what it queued."""
        due, self.due = self.due, []
        for conn in due:
            conn.flush_writes()


def send(transport: asyncio.WriteTransport, parts: Sequence[bytes]) -> None:
    """``parts`` in one system call: small ones joined (one bytes object takes the transport's
    direct write path; ``writelines`` queues a vectored write request, which costs more than
    copying a small response), large ones as one vectored write."""
    if len(parts) == 1:
        transport.write(parts[0])
    elif len(parts) <= JOIN_PARTS and sum(map(len, parts)) <= JOIN_BYTES:
        transport.write(b"".join(parts))
    else:
        transport.writelines(parts)
