"""Shared test setup: every async test runs on trio and on asyncio, on virtual time."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import looptime
import pytest
from hypothesis import settings
from trio.testing import MockClock

# CI (CI=true) replays the same examples every run, so a green main stays green; developers'
# runs keep exploring new ones (and keep the failures they find in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
