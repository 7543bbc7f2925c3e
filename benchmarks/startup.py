"""How long opening a gateway blocks the event loop, measured in fresh interpreters.

    python -m benchmarks.startup            # prints the figures as JSON

A gateway with three SDK models (openai, anthropic, openai-compatible; nothing is sent: the
endpoints are never called) is opened and closed twice in one process: the first open imports
the SDKs, the second finds them imported. What is measured is the loop's longest *step*: the
longest time one task ran without yielding (trio: an ``Instrument``; asyncio: each callback the
loop runs), which is what every other task on the loop waits for. It counts the time a step
waits for the GIL while a worker thread holds it, and not the scheduler's own noise between
steps, so it stays meaningful on a busy machine. For reference, the same loop measures an
``import openai, anthropic`` done in a task on the loop (what opening cost before the SDK
import moved to a worker thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

MODELS = ("openai", "anthropic", "openai-compatible")

_PROBE = r"""
import json, sys, time
import anyio
from llm_gateway import Gateway, load_config

backend, mode = sys.argv[1], sys.argv[2]
steps = []


def timed(run):
    def step(*args, **kwargs):
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            steps.append(time.perf_counter() - started)
    return step


if backend == "asyncio":
    import asyncio.events
    asyncio.events.Handle._run = timed(asyncio.events.Handle._run)
    options = {}
else:
    import trio

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task):
            self.started = time.perf_counter()

        def after_task_step(self, task):
            steps.append(time.perf_counter() - self.started)

    options = {"instruments": [Steps()]}

models = {
    f"m{i}": {"provider": kind, "model_name": "m", "api_key": "sk-bench",
              "endpoint": "http://127.0.0.1:9/v1"}
    for i, kind in enumerate(sys.argv[3].split(","))
}
config = load_config({"models": models, "log_dir": None})


async def main():
    out = {}
    if mode == "on-loop-import":
        steps.clear()
        import openai, anthropic  # noqa: F401, E401
        await anyio.sleep(0)
        out["on_loop_import_ms"] = max(steps) * 1000
        return out
    for name in ("first_open_ms", "later_open_ms"):
        await anyio.sleep(0.01)
        steps.clear()
        async with Gateway(config):
            pass
        out[name] = max(steps) * 1000
    return out


print(json.dumps(anyio.run(main, backend=backend, backend_options=options)))
"""


def _probe(backend: str, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, backend, mode, ",".join(MODELS)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def open_stalls(reps: int) -> dict[str, Any]:
    """The loop's longest step (ms) while a 3-model gateway opens, per backend, ``reps`` runs."""
    results: dict[str, Any] = {"models": len(MODELS)}
    for rep in range(reps):
        for backend in ("trio", "asyncio") if rep % 2 == 0 else ("asyncio", "trio"):
            for mode in ("open", "on-loop-import"):
                for key, value in _probe(backend, mode).items():
                    results.setdefault(backend, {}).setdefault(key, []).append(value)
    return results


if __name__ == "__main__":
    started = time.perf_counter()
    print(json.dumps(open_stalls(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
