"""Shared test setup: every async test runs on trio and on asyncio, on virtual time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import looptime
import pytest
from trio.testing import MockClock


def virtual_time_backend(name: str) -> tuple[str, dict[str, Any]]:
    """An anyio backend spec whose clock jumps ahead whenever every task is blocked."""
    if name == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return ("asyncio", {"loop_factory": looptime.new_event_loop})


def run_on_virtual_time(backend: str, fn: Callable[[], Awaitable[Any]]) -> None:
    """Run ``fn`` on ``backend`` with a fresh virtual clock (one Hypothesis example per call)."""
    name, options = virtual_time_backend(backend)
    anyio.run(fn, backend=name, backend_options=options)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both backends, a fresh virtual clock per test (override per module for real time)."""
    return virtual_time_backend(request.param)
