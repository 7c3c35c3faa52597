"""setup_logging: Vallum's own messages as one JSON object per line, extras included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from vallum.proxy import logs


@pytest.fixture
def restore_vallum_logger() -> Iterator[None]:
    logger = logging.getLogger("vallum")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield None
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.mark.usefixtures("restore_vallum_logger")
def test_json_lines_with_extra_fields_and_level_filter() -> None:
    out = io.StringIO()
    logs.setup_logging("warning", stream=out)
    log = logging.getLogger("vallum.proxy.reload")
    log.info("not shown")
    log.warning("reload failed", extra={"event": "reload_failed", "problem": "a.yaml:3: x"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("unexpected")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["reload failed", "unexpected"]
    assert lines[0]["level"] == "warning"
    assert lines[0]["logger"] == "vallum.proxy.reload"
    assert lines[0]["event"] == "reload_failed" and lines[0]["problem"] == "a.yaml:3: x"
    assert "RuntimeError: boom" in lines[1]["exc"]


@pytest.mark.usefixtures("restore_vallum_logger")
def test_setup_twice_keeps_one_handler() -> None:
    logs.setup_logging("info", stream=io.StringIO())
    logs.setup_logging("debug", stream=io.StringIO())
    names = [h.get_name() for h in logging.getLogger("vallum").handlers]
    assert names.count("vallum-json") == 1


def test_unknown_level_is_named() -> None:
    with pytest.raises(ValueError, match="'loud'"):
        logs.setup_logging("loud")
