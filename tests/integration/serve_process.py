"""The real ``vallum serve`` as a child process, for tests that must see what the CLI wires.

``serve(config_file, port)`` starts ``python -m vallum.cli serve --config FILE``, waits until the
main listener accepts connections, and on exit stops it with SIGTERM and checks it exits 0
without a traceback. The finished :class:`Served` holds its stdout (access log) and stderr (logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

START_SECONDS = 30.0


@dataclass
class Served:
    process: asyncio.subprocess.Process
    stdout: bytes = b""
    stderr: bytes = b""

    async def stop(self) -> int:
        """SIGTERM, then wait for it to drain and exit; returns the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, err = await asyncio.wait_for(self.process.communicate(), timeout=30)
        except TimeoutError:
            self.process.kill()
            out, err = await self.process.communicate()
        self.stdout, self.stderr = self.stdout + out, self.stderr + err
        return int(self.process.returncode or 0)


async def wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = asyncio.get_running_loop().time() + START_SECONDS
    while True:
        if process.returncode is not None:
            raise AssertionError("vallum serve exited at start")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def serve(config_file: Path, port: int, *args: str) -> AsyncIterator[Served]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vallum.cli", "serve", "--config", str(config_file), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    served = Served(process)
    try:
        try:
            await wait_listening(port, process)
        except (AssertionError, OSError):
            await served.stop()
            raise AssertionError(f"vallum serve did not start: {served.stderr[-3000:]!r}") from None
        yield served
    finally:
        status = await served.stop()
    assert status == 0, served.stderr[-3000:]
    assert b"Traceback" not in served.stderr, served.stderr[-3000:]
