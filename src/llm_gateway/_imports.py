"""Importing a heavy module the first time a gateway needs it, off the event loop.

An SDK import runs for hundreds of milliseconds; on the loop it would stall every other task
that long. In a worker thread it still would, through the GIL: the ~200,000 objects an SDK
creates set off full garbage collections, each holding the GIL for 30-70 ms. So the import
runs with the cyclic collector paused, and its objects are then moved to the oldest generation
unscanned (``gc.freeze`` + ``gc.unfreeze``): the application's own full collections see them
later, at their usual pace, as if the module had been imported at startup. Nothing stays
frozen, and an application that turned the collector off keeps it off.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
from types import ModuleType

import anyio.to_thread

from ._clock import virtual_clock

__all__ = ["import_off_loop"]

_IMPORTING = threading.Lock()
# While an import runs in a worker thread, the loop's thread waits this long at most for the
# GIL (CPython's default is 5 ms), so its tasks keep running at a fine grain.
_IMPORT_SWITCH_INTERVAL_S = 0.0005


def _import_paused(name: str) -> ModuleType:
    with _IMPORTING:
        was_enabled = gc.isenabled()
        switch_interval = sys.getswitchinterval()
        gc.disable()
        sys.setswitchinterval(min(switch_interval, _IMPORT_SWITCH_INTERVAL_S))
        try:
            return importlib.import_module(name)
        finally:
            sys.setswitchinterval(switch_interval)
            gc.freeze()
            gc.unfreeze()
            if was_enabled:
                gc.enable()


async def import_off_loop(name: str) -> ModuleType:
    """The module ``name``, imported in a worker thread with the collector paused if it is new.

    Once imported, it is returned at once, with no thread hop. Under a virtual clock (a test's)
    the import runs on the loop: while a worker thread imports, such a clock would jump ahead.

    Raises:
        ModuleNotFoundError: As ``importlib.import_module``.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    if virtual_clock() is not None:
        return importlib.import_module(name)
    return await anyio.to_thread.run_sync(_import_paused, name)
