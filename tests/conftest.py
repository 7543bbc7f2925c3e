"""Shared test setup: every async test runs on trio and on asyncio, on virtual time."""

from __future__ import annotations

from typing import Any

import looptime
import pytest
from trio.testing import MockClock


def virtual_time_backend(name: str) -> tuple[str, dict[str, Any]]:
    """An anyio backend spec whose clock jumps ahead whenever every task is blocked."""
    if name == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return ("asyncio", {"loop_factory": looptime.new_event_loop})


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both backends, a fresh virtual clock per test (override per module for real time)."""
    return virtual_time_backend(request.param)
