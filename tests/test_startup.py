"""Opening a gateway keeps the event loop free: the SDKs are imported in a worker thread.

Each check runs in a fresh interpreter, the only place an SDK is not imported yet. How long the
loop is blocked is a speed figure, measured by ``benchmarks/startup.py`` (``nox -s bench``);
these tests pin the behaviour that figure depends on.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = r"""
import gc, json, sys, threading
import anyio
from llm_gateway import Gateway, load_config

backend, kind, collector = sys.argv[1], sys.argv[2], sys.argv[3]
sdk = "anthropic" if kind == "anthropic" else "openai"
importing = {}


def audit(event, args):
    if event == "import" and args[0] == sdk:
        importing.setdefault(args[0], threading.get_ident())


sys.addaudithook(audit)
if collector == "off":
    gc.disable()
switch_interval = sys.getswitchinterval()
config = load_config({"models": {"m": {"provider": kind, "model_name": "m", "api_key": "sk-t",
                                       "endpoint": "http://127.0.0.1:9/v1"}}, "log_dir": None})


async def main():
    loop_thread = threading.get_ident()
    assert sdk not in sys.modules
    async with Gateway(config):
        pass
    return {
        "imported": sdk in sys.modules,
        "on_loop": [name for name, ident in importing.items() if ident == loop_thread],
        "seen": sorted(importing),
        "gc_enabled": gc.isenabled(),
        "frozen": gc.get_freeze_count(),
        "switch_interval_kept": sys.getswitchinterval() == switch_interval,
    }


print(json.dumps(anyio.run(main, backend=backend)))
"""


def _open_in_fresh_interpreter(backend: str, kind: str, collector: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, backend, kind, collector],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("kind", ["openai", "anthropic", "openai-compatible"])
def test_the_sdk_is_imported_off_the_event_loop(backend: str, kind: str) -> None:
    result = _open_in_fresh_interpreter(backend, kind, "on")
    sdk = "anthropic" if kind == "anthropic" else "openai"
    assert result["imported"] is True
    assert result["seen"] == [sdk]
    assert result["on_loop"] == []


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("collector", ["on", "off"])
def test_the_import_leaves_the_collector_as_it_found_it(backend: str, collector: str) -> None:
    # The collector is paused for the import (its full collections would stall the loop) and
    # given back as the application had it: on stays on, off stays off, nothing stays frozen.
    result = _open_in_fresh_interpreter(backend, "openai", collector)
    assert result["gc_enabled"] is (collector == "on")
    assert result["frozen"] == 0
    assert result["switch_interval_kept"] is True
