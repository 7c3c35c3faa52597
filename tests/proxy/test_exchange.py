"""The pieces of one exchange that stand alone: status lines, grouped deadlines, resuming a
half-run coroutine. (Whole exchanges are tested through real sockets in test_http1.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vallum.proxy import exchange


def test_status_lines() -> None:
    assert exchange.status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert exchange.status_line(504) == b"HTTP/1.1 504 Gateway Timeout\r\n"
    assert exchange.status_line(599) == b"HTTP/1.1 599 Unknown\r\n"


class _Timed:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fired_at: float | None = None

    def deadline_passed(self) -> None:
        self.fired_at = self.loop.time()


def _fired(timed: _Timed) -> float | None:
    return timed.fired_at


async def test_deadlines_fire_once_per_tick_and_removed_ones_do_not() -> None:
    loop = asyncio.get_running_loop()
    deadlines = exchange.Deadlines(loop)
    kept, removed, later = _Timed(loop), _Timed(loop), _Timed(loop)
    start = loop.time()
    tick = deadlines.add(kept, 0.1)  # type: ignore[arg-type]
    assert deadlines.add(removed, 0.1) == tick  # type: ignore[arg-type]
    deadlines.remove(removed, tick)  # type: ignore[arg-type]
    deadlines.add(later, 0.3)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert kept.fired_at is not None and 0.09 <= kept.fired_at - start <= 0.2
    assert removed.fired_at is None and _fired(later) is None
    await asyncio.sleep(0.2)
    assert _fired(later) is not None
    assert deadlines.buckets == {}


async def test_resume_finishes_a_coroutine_that_suspended() -> None:
    async def work(delay: float) -> str:
        await asyncio.sleep(delay)
        await asyncio.sleep(0)
        return "done"

    coro = work(0.01)
    first = coro.send(None)  # runs to the first suspension, as Exchange.start does
    assert await exchange._Resume(coro, first) == "done"


async def test_resume_passes_exceptions_and_cancellation_through() -> None:
    async def fails() -> Any:
        await asyncio.sleep(0)
        raise ValueError("boom")

    coro = fails()
    first = coro.send(None)
    with pytest.raises(ValueError, match="boom"):
        await exchange._Resume(coro, first)

    async def slow() -> None:
        await asyncio.sleep(10)

    coro2 = slow()
    first2 = coro2.send(None)

    async def wrapper() -> Any:
        return await exchange._Resume(coro2, first2)

    task = asyncio.ensure_future(wrapper())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_status_lines_carry_the_error_pages_reason_phrases() -> None:
    assert exchange.status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert exchange.status_line(495) == b"HTTP/1.1 495 SSL Certificate Error\r\n"
    assert exchange.status_line(496) == b"HTTP/1.1 496 SSL Certificate Required\r\n"
    assert exchange.status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
