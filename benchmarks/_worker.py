"""A benchmark worker: one process per contender, running the jobs its parent sends.

Each contender lives in its own process (started with ``spawn``), so one library's imports,
global state and garbage never weigh on another's numbers. The parent sends jobs over a pipe;
each job runs in a fresh event loop, and its CPU time is ``time.process_time()`` around the
timed part (all the process's threads: a library's logging threads count).
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from multiprocessing.connection import Connection
from typing import Any

import anyio
import attrs

from ._contenders import BACKENDS, CONTENDERS, LITELLM_ENV, Setup, bench_gateway
from ._fake import MAX_TOKENS, PROMPT

TICK_S = 0.001


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``nan`` for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        "p50": _percentile(ms, 0.50),
        "p99": _percentile(ms, 0.99),
        "max": max(ms, default=math.nan),
        "mean": statistics.fmean(ms) if ms else math.nan,
        "count": len(ms),
    }


async def _ticker(overshoots: list[float]) -> None:
    """Sleep 1 ms again and again; record by how much each wake-up came late."""
    while True:
        start = time.perf_counter()
        await anyio.sleep(TICK_S)
        overshoots.append(time.perf_counter() - start - TICK_S)


# -- jobs -----------------------------------------------------------------------------------------


async def load(contender: str, job: dict[str, Any]) -> dict[str, Any]:
    """Send ``n`` requests (after ``warmup`` untimed ones) through ``contender``."""
    setup = Setup(**job["setup"])
    if contender.endswith("-high"):
        setup = attrs.evolve(setup, priority="HIGH")
    n, warmup = job["n"], job["warmup"]
    overshoots: list[float] = []
    async with CONTENDERS[contender](setup) as send:
        if warmup:
            await send(warmup)
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if job.get("lag"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_ticker, overshoots)
                ok = await send(n)
                tg.cancel_scope.cancel()
        else:
            ok = await send(n)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    result = {"cpu_s": cpu, "wall_s": wall, "ok": ok, "n": n}
    if job.get("lag"):
        result["lag_ms"] = _summary_ms(overshoots)
    return result


class _TimedProvider:
    """Wraps the gateway's provider adapter: records how long each call spent inside it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spent: dict[str, float] = {}

    async def complete(self, request: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.complete(request)
        finally:
            self.spent[request.request_id] = time.perf_counter() - start


async def idle(job: dict[str, Any]) -> dict[str, Any]:
    """Added latency of lone requests on an idle gateway: caller's time minus provider time."""
    from llm_gateway import LLMMessage, LLMRequest, RequestPriority

    timed: list[_TimedProvider] = []

    def wrap(cm: AbstractAsyncContextManager[Any]) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def wrapped() -> AsyncGenerator[Any]:
            async with cm as provider:
                timed.append(_TimedProvider(provider))
                yield timed[-1]

        return wrapped()

    setup = Setup("openai", "mock", concurrency=32, priority=job["priority"])  # 32: the default
    priority = RequestPriority[job["priority"]]
    fill = job.get("batch_fill", "eager")
    added: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        async with bench_gateway(setup, log_dir=logs, wrap=wrap, batch_fill=fill) as gw:
            for i in range(job["warmup"] + job["n"]):
                request = LLMRequest(
                    model="m",
                    messages=[LLMMessage("user", PROMPT)],
                    max_tokens=MAX_TOKENS,
                    priority=priority,
                )
                await anyio.sleep(job["gap_s"])  # the gateway is idle when the request comes
                start = time.perf_counter()
                await gw.request(request)
                total = time.perf_counter() - start
                if i >= job["warmup"]:
                    added.append(total - timed[0].spent[request.request_id])
    return {"added_ms": _summary_ms(added)}


async def saturation(job: dict[str, Any]) -> dict[str, Any]:
    """Batches at twice the capacity offered: a mock model (``max_concurrency`` C, fixed
    latency L, ``batch_size`` 10) gets requests at 2*C/L per second, evenly spaced, for
    ``seconds``; the figures are ``get_stats()``'s once the last one is submitted."""
    from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig

    c, latency, seconds = job["concurrency"], job["latency_s"], job["seconds"]
    rate = job.get("load", 2.0) * c / latency
    n = int(rate * seconds)
    model = ModelConfig(
        provider="mock",
        model_name="mock",
        max_concurrency=c,
        batch_size=job.get("batch_size", 10),
        batch_fill=job["batch_fill"],
        queue_capacity=n + 1,
        timeout_s=None,
        provider_options={"latency_s": latency},
    )
    message = LLMMessage("user", PROMPT)
    late: list[float] = []  # how far behind schedule each submission was (the offered load)
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        async with Gateway(models={"m": model}, log_dir=logs) as gw:
            start = anyio.current_time()
            for i in range(n):
                due = start + i / rate
                await anyio.sleep_until(due)
                late.append(anyio.current_time() - due)
                gw.submit_nowait(LLMRequest(model="m", messages=(message,), max_tokens=64))
            elapsed = anyio.current_time() - start
            stats = gw.get_stats().models["m"]
            await gw.shutdown(timeout=0)  # the backlog is not what is measured
    return {
        "batch_fill": job["batch_fill"],
        "concurrency": c,
        "latency_s": latency,
        "offered_rps": rate,
        "submitted": n,
        "seconds": elapsed,
        "late_ms": _summary_ms(late),
        "batches": stats.batches,
        "dispatched": round(stats.batches * stats.mean_batch_size),
        "mean_batch_size": stats.mean_batch_size,
        "completed": stats.completed,
        "completed_rps": stats.completed / elapsed,
        "queue_wait_ms": {"p50": stats.queue_wait_ms.p50, "p99": stats.queue_wait_ms.p99},
    }


async def memory(job: dict[str, Any]) -> dict[str, Any]:
    """Bytes per queued request, with ``n`` requests queued behind one that never ends."""
    import tracemalloc

    from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig

    n = job["n"]
    model = ModelConfig(
        provider="mock",
        model_name="mock",
        max_concurrency=1,
        queue_capacity=n + 1,
        timeout_s=None,
        provider_options={"latency_s": 3600.0},  # the first request holds the only slot
    )
    message = LLMMessage("user", PROMPT)  # one message object: its text is stored once
    gc.collect()
    tracemalloc.start()
    try:
        before_requests = tracemalloc.get_traced_memory()[0]
        requests = [LLMRequest(model="m", messages=(message,), max_tokens=64) for _ in range(n)]
        gc.collect()
        after_requests = tracemalloc.get_traced_memory()[0]
        async with Gateway(models={"m": model}, log_dir=None) as gw:
            await anyio.sleep(0.01)
            gc.collect()
            before_queue = tracemalloc.get_traced_memory()[0]
            futures = [gw.submit_nowait(request) for request in requests]
            await anyio.sleep(0.2)  # the batcher takes the first; the rest wait for capacity
            gc.collect()
            after_queue = tracemalloc.get_traced_memory()[0]
            queued = gw.get_stats().total.queued
            await gw.shutdown(timeout=0)  # fail them all, at once
        del futures
    finally:
        tracemalloc.stop()
    return {
        "n": n,
        "queued": queued,
        "request_bytes": (after_requests - before_requests) / n,
        "gateway_bytes": (after_queue - before_queue) / n,
        "message_text_bytes": len(PROMPT),
    }


async def scale(job: dict[str, Any]) -> dict[str, Any]:
    """CPU per request for ``n`` requests through the gateway on its zero-latency mock model."""
    from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig

    n, warmup = job["n"], job["warmup"]
    model = ModelConfig(
        provider="mock", model_name="mock", max_concurrency=64, queue_capacity=n + warmup
    )

    def make(count: int) -> list[LLMRequest]:
        return [
            LLMRequest(model="m", messages=[LLMMessage("user", PROMPT)], max_tokens=MAX_TOKENS)
            for _ in range(count)
        ]

    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        async with Gateway(models={"m": model}, log_dir=logs) as gw:
            await gw.batch(make(warmup))
            gc.collect()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await gw.batch(make(n))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_s": cpu, "wall_s": wall, "n": n}


# -- the process --------------------------------------------------------------------------------


PACKAGES = {
    "sdk": ["openai", "anthropic", "httpx2"],
    "sdk-post": ["openai", "anthropic", "httpx2"],
    "gateway-asyncio": ["trio-llm-gateway", "anyio", "openai", "anthropic", "httpx2", "aiohttp"],
    "gateway-asyncio-httpx": ["trio-llm-gateway"],
    "sdk-aiohttp": ["openai", "anthropic", "aiohttp"],
    "gateway-trio": ["trio-llm-gateway", "anyio", "trio", "openai", "anthropic", "httpx2"],
    "gateway-asyncio-high": ["trio-llm-gateway"],
    "litellm": ["litellm", "httpx", "aiohttp", "openai"],
    "langchain": ["langchain-openai", "langchain-core", "openai", "httpx2"],
}
IMPORTS = {"litellm": "litellm", "langchain": "langchain_openai"}


def probe(contender: str) -> dict[str, str]:
    """The versions of the packages ``contender`` runs on (raises if one is missing)."""
    import importlib
    from importlib.metadata import version

    if contender in IMPORTS:
        importlib.import_module(IMPORTS[contender])
    return {name: version(name) for name in PACKAGES[contender]}


def run_job(contender: str, job: dict[str, Any]) -> dict[str, Any]:
    backend = BACKENDS.get(contender, "asyncio")
    kind = job["kind"]
    if kind == "probe":
        return probe(contender)
    if kind == "load":
        return anyio.run(load, contender, job, backend=backend)
    if kind == "idle":
        return anyio.run(idle, job, backend=backend)
    if kind == "saturation":
        return anyio.run(saturation, job, backend=backend)
    if kind == "memory":
        return anyio.run(memory, job, backend=backend)
    if kind == "scale":
        return anyio.run(scale, job, backend=backend)
    raise ValueError(f"unknown job kind {kind!r}")


def serve(contender: str, conn: Connection) -> None:
    """Entry point of a worker process: run jobs from ``conn`` until it sends ``None``."""
    os.environ.update(LITELLM_ENV)
    while (job := conn.recv()) is not None:
        try:
            conn.send({"result": run_job(contender, job)})
        except Exception:
            conn.send({"error": traceback.format_exc()})
