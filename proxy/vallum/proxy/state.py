"""The swap-on-change holder of the route table the proxy serves from.

Requests read ``holder.current`` once, at their start, and keep that table to the end: a reload
builds a whole new :class:`~vallum.core.config.RouteTable` beside the old one and replaces the
reference in one assignment (Pomerium's proxy does the same with an atomic pointer). In-flight
requests and open websockets therefore finish on the table they started with; nothing here ever
mutates a table.
"""

from __future__ import annotations

import time

from vallum.core import config


class TableHolder:
    """Holds the current :class:`RouteTable` and what the last reload said.

    ``current`` is a plain attribute: reading it on the hot path is one attribute load.
    ``generation`` counts successful swaps (the first table is generation 1), ``failures``
    counts rejected reloads, ``last_error`` is the last rejection's message (``None`` after a
    good reload) and ``loaded_at`` is the wall-clock time of the last swap.
    """

    __slots__ = ("current", "failures", "generation", "last_error", "loaded_at")

    def __init__(self, table: config.RouteTable) -> None:
        self.current: config.RouteTable = table
        self.generation: int = 1
        self.failures: int = 0
        self.last_error: str | None = None
        self.loaded_at: float = time.time()

    def swap(self, table: config.RouteTable) -> None:
        """Serve ``table`` from now on; requests already running keep the table they read."""
        self.current = table
        self.generation += 1
        self.last_error = None
        self.loaded_at = time.time()

    def reject(self, message: str) -> None:
        """Record a reload that was refused; the current table stays."""
        self.failures += 1
        self.last_error = message
