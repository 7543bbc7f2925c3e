"""Every anyio test of the example runs on trio and on asyncio, on virtual time.

Virtual time makes simulated latency and retry back-off instant and exact: trio's MockClock
jumps ahead whenever every task is blocked; looptime does the same for asyncio.
"""

from __future__ import annotations

from typing import Any

import looptime
import pytest
from trio.testing import MockClock


def virtual_time(backend: str) -> dict[str, Any]:
    """``anyio.run`` arguments for ``backend`` with a fresh virtual clock."""
    if backend == "trio":
        return {"backend": "trio", "backend_options": {"clock": MockClock(autojump_threshold=0)}}
    return {"backend": "asyncio", "backend_options": {"loop_factory": looptime.new_event_loop}}


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    options = virtual_time(request.param)
    return (options["backend"], options["backend_options"])
