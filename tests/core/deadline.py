"""A hard time limit for one block of pure code, so a catastrophic match fails instead of hanging.

Why not a thread with ``join(timeout)``: a backtracking ``re`` match holds the GIL for its whole
run, so the waiting thread never gets to report. ``SIGALRM`` works: CPython's regex engine checks
for signals while it matches, so the handler's exception ends the match where it is.
Main thread only (where pytest runs tests), POSIX only.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class DeadlineExceeded(AssertionError):
    """The block ran longer than its deadline (raised inside it, so its stack shows where)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Run the block with at most ``seconds`` of wall time; raise :class:`DeadlineExceeded`."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
