"""Which clock the running event loop keeps: real time, or a test's virtual clock."""

from __future__ import annotations

import asyncio
import sys

__all__ = ["virtual_clock"]


def virtual_clock() -> str | None:
    """The name of the running event loop's virtual clock, or ``None`` on real time."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio, if it is imported and running
        trio = sys.modules.get("trio")
        if trio is None:
            return None
        try:
            clock = trio.lowlevel.current_clock()
        except RuntimeError:
            return None
        # MockClock, or any clock but trio's default one.
        if type(clock).__name__ == "SystemClock" and type(clock).__module__.startswith("trio."):
            return None
        return f"trio clock {type(clock).__qualname__}"
    looptime = sys.modules.get("looptime")
    if looptime is not None and isinstance(loop, looptime.LoopTimeEventLoop) and loop.looptime_on:
        return "looptime's event loop"
    return None
