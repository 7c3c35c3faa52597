"""TableHolder: one reference swapped, generations counted, rejections recorded."""

from __future__ import annotations

from vallum.core import config
from vallum.proxy import state


def _table(address: str) -> config.RouteTable:
    settings = config.Settings(address=address)
    return config.RouteTable(settings, settings.checksum())


def test_starts_at_generation_one_with_no_error() -> None:
    first = _table(":1")
    holder = state.TableHolder(first)
    assert holder.current is first
    assert holder.generation == 1
    assert holder.last_error is None
    assert holder.failures == 0


def test_swap_replaces_reference_and_keeps_old_table_intact() -> None:
    first, second = _table(":1"), _table(":2")
    holder = state.TableHolder(first)
    in_flight = holder.current  # what a running request holds
    before = holder.loaded_at
    holder.reject("routes.yaml:3: bad")
    holder.swap(second)
    assert holder.current is second
    assert in_flight is first and in_flight.settings.address == ":1"
    assert holder.generation == 2
    assert holder.last_error is None
    assert holder.loaded_at >= before


def test_reject_keeps_table_and_records_error() -> None:
    first = _table(":1")
    holder = state.TableHolder(first)
    holder.reject("routes.yaml:3: unknown key 'frm'")
    assert holder.current is first
    assert holder.generation == 1
    assert holder.failures == 1
    assert holder.last_error == "routes.yaml:3: unknown key 'frm'"
