"""An in-memory transport for protocol objects: records each write call, reads nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class RecordingTransport(asyncio.Transport):
    """``calls`` holds what each ``write``/``writelines`` call sent (one system call each on
    a real socket); ``closed`` says whether ``close`` or ``abort`` was called."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__()
        self.peer = peer
        self.calls: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(bytes(data))

    def writelines(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        self.calls.append(b"".join(parts))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed
