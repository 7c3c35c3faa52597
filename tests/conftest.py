"""Shared fixtures. Integration tests bind real servers to 127.0.0.1 on free ports."""

from __future__ import annotations

import pytest

from tests.support.certs import TestCA
from tests.support.net import free_port


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def port() -> int:
    return free_port()
