"""Reloader with real files: change -> swap, invalid -> old kept, SIGHUP, unchanged -> no swap,
a watched certificate file -> reload. The compiler here is a small JSON reader so these tests do
not depend on the YAML loader."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vallum.core import config, errors
from vallum.proxy import reload, state


def compile_json(path: str) -> config.RouteTable:
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.ConfigError([f"{path}:{exc.lineno}: {exc.msg}"]) from None
    problems = [f"{path}:1: unknown key {k!r}" for k in data if k not in ("address", "ca_file")]
    if problems:
        raise errors.ConfigError(problems)
    ca_file = data.get("ca_file")
    settings = config.Settings(
        address=data.get("address", ":443"),
        certificate_authority_pem=Path(ca_file).read_text() if ca_file else None,
        watched_files=(path, ca_file) if ca_file else (path,),
    )
    return config.RouteTable(settings, settings.checksum())


def write(path: Path, data: dict[str, Any] | str) -> None:
    """Replace the file the way editors and ConfigMap mounts do: write beside, rename over."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data))
    os.replace(tmp, path)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, state.TableHolder]:
    path = tmp_path / "vallum.json"
    write(path, {"address": ":8443"})
    return path, state.TableHolder(compile_json(str(path)))


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_change_swaps_and_keeps_old_table_for_holders(
    setup: tuple[Path, state.TableHolder],
) -> None:
    path, holder = setup
    reloader = reload.Reloader(str(path), holder, compile_json)
    old = holder.current
    write(path, {"address": ":9443"})
    swapped: list[config.RouteTable] = []
    reloader.on_swap.append(swapped.append)
    assert reloader.reload_now() is True
    assert holder.current.settings.address == ":9443"
    assert holder.generation == 2
    assert swapped == [holder.current]
    assert old.settings.address == ":8443"  # an in-flight request's table is untouched


def test_invalid_keeps_old_table_and_logs_every_problem(
    setup: tuple[Path, state.TableHolder], caplog: pytest.LogCaptureFixture
) -> None:
    path, holder = setup
    reloader = reload.Reloader(str(path), holder, compile_json)
    old = holder.current
    write(path, {"address": ":1", "frm": "x", "too": "y"})
    with caplog.at_level(logging.ERROR, logger="vallum.proxy.reload"):
        assert reloader.reload_now() is False
    assert holder.current is old
    assert holder.generation == 1 and holder.failures == 1
    assert holder.last_error is not None and "'frm'" in holder.last_error
    problems = [r.__dict__["problem"] for r in caplog.records if r.__dict__.get("event") == (
        "reload_failed"
    )]
    assert [p.split(": ")[-1] for p in problems] == ["unknown key 'frm'", "unknown key 'too'"]
    write(path, "{not json")
    assert reloader.reload_now() is False
    assert holder.last_error is not None and holder.last_error.startswith(f"{path}:1:")
    write(path, {"address": ":2"})
    assert reloader.reload_now() is True
    assert holder.current.settings.address == ":2" and holder.last_error is None


def test_unchanged_checksum_is_not_a_swap(setup: tuple[Path, state.TableHolder]) -> None:
    path, holder = setup
    reloader = reload.Reloader(str(path), holder, compile_json)
    old = holder.current
    write(path, {"address": ":8443"})  # new inode and mtime, same content
    assert reloader.reload_now() is True
    assert holder.current is old and holder.generation == 1


def test_compiler_bugs_never_escape(setup: tuple[Path, state.TableHolder]) -> None:
    path, holder = setup

    def broken(_: str) -> config.RouteTable:
        raise KeyError("boom")

    reloader = reload.Reloader(str(path), holder, broken)
    assert reloader.reload_now() is False
    assert holder.last_error is not None and "KeyError" in holder.last_error


async def test_polling_reloads_on_change_and_on_watched_file(
    setup: tuple[Path, state.TableHolder], tmp_path: Path
) -> None:
    path, holder = setup
    reloader = reload.Reloader(str(path), holder, compile_json, interval=0.02)
    reloader.start()
    try:
        write(path, {"address": ":9443"})
        await wait_for(lambda: holder.current.settings.address == ":9443")
        ca = tmp_path / "ca.pem"
        write(ca, "first CA")
        write(path, {"address": ":9443", "ca_file": str(ca)})
        await wait_for(lambda: holder.current.settings.certificate_authority_pem == "first CA")
        generation = holder.generation
        write(ca, "rotated CA")  # only the watched file changes
        await wait_for(lambda: holder.current.settings.certificate_authority_pem == "rotated CA")
        assert holder.generation == generation + 1
        write(path, "{broken")
        await wait_for(lambda: holder.failures == 1)
        assert holder.current.settings.certificate_authority_pem == "rotated CA"
        write(path, {"address": ":7443"})  # fixing the file reloads again
        await wait_for(lambda: holder.current.settings.address == ":7443")
    finally:
        await reloader.stop()


async def test_kubernetes_style_symlink_swap_reloads(tmp_path: Path) -> None:
    """ConfigMap volumes swap a ``..data`` symlink to a new directory; the path stays the same."""
    first, second = tmp_path / "..2026_a", tmp_path / "..2026_b"
    first.mkdir()
    second.mkdir()
    write(first / "vallum.json", {"address": ":1111"})
    write(second / "vallum.json", {"address": ":2222"})
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "vallum.json"
    path.symlink_to("..data/vallum.json")
    holder = state.TableHolder(compile_json(str(path)))
    reloader = reload.Reloader(str(path), holder, compile_json, interval=0.02)
    reloader.start()
    try:
        link = tmp_path / "..data_tmp"
        link.symlink_to(second.name)
        os.replace(link, tmp_path / "..data")  # atomic, as the kubelet does it
        await wait_for(lambda: holder.current.settings.address == ":2222")
    finally:
        await reloader.stop()


async def test_sighup_reloads(setup: tuple[Path, state.TableHolder]) -> None:
    path, holder = setup
    reloader = reload.Reloader(str(path), holder, compile_json, interval=3600)
    reloader.start()
    try:
        write(path, {"address": ":6443"})
        await asyncio.sleep(0.05)
        assert holder.generation == 1  # the poller sleeps for an hour
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: holder.current.settings.address == ":6443")
    finally:
        await reloader.stop()


async def test_before_swap_runs_first_and_its_failure_rejects_the_reload(
    setup: tuple[Path, state.TableHolder],
) -> None:
    """What must change with the table (a listener) is prepared before the swap; if it cannot
    be, the reload is rejected like a bad file: old table, ``last_error``, failure callbacks."""
    path, holder = setup
    seen: list[tuple[str, str]] = []
    outcome: list[BaseException | None] = [OSError(24, "Too many open files")]

    async def before_swap(table: config.RouteTable) -> None:
        seen.append(("before", table.settings.address))
        assert holder.current is not table  # not swapped yet
        if outcome[0] is not None:
            raise outcome[0]

    failures: list[str] = []
    reloader = reload.Reloader(
        str(path),
        holder,
        compile_json,
        before_swap=before_swap,
        on_swap=[lambda t: seen.append(("swap", t.settings.address))],
        on_failure=[failures.append],
    )
    old = holder.current
    write(path, {"address": ":9443"})
    assert await reloader.reload() is False
    assert holder.current is old and holder.generation == 1 and holder.failures == 1
    assert holder.last_error == f"{path}: [Errno 24] Too many open files"
    assert failures == [holder.last_error]
    outcome[0] = errors.ConfigError(["downstream_mtls: cannot listen"])
    assert await reloader.reload() is False
    assert holder.last_error == "downstream_mtls: cannot listen"
    outcome[0] = KeyError("a bug in the step")
    assert await reloader.reload() is False
    assert holder.last_error is not None and "KeyError" in holder.last_error
    outcome[0] = None
    assert await reloader.reload() is True
    assert holder.current.settings.address == ":9443" and holder.last_error is None
    assert seen == [("before", ":9443")] * 4 + [("swap", ":9443")]
    assert await reloader.reload() is True  # unchanged: no swap, so nothing to prepare
    assert len(seen) == 5
    with pytest.raises(RuntimeError, match="await reload"):
        reloader.reload_now()  # the step needs the loop
