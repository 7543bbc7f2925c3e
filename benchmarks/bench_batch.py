"""What the batch lane costs the client, and what it saves: the same LOW requests answered
realtime and through the provider's batch API, side by side.

Both paths go through the real Anthropic adapter to the fake API on an in-process
``httpx2.MockTransport`` (``llm_gateway.testing.FakeLLMApi``: its answers cost the same CPU on
both paths), interleaved repetition by repetition, on asyncio and on trio, on real time (the
batch lane's window and polls are short). Figures: client CPU per request (gateway, SDK and the
fake's answer generation), HTTP calls per request, and the price at the configured pricing.

    python -m benchmarks.bench_batch [--quick]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from typing import Any

import anyio

from llm_gateway import (
    BatchApiPolicy,
    Gateway,
    GatewayConfig,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ModelPricing,
)
from llm_gateway.providers import open_provider
from llm_gateway.testing import FakeLLMApi

MODES = ("realtime", "batch lane")
BACKENDS = ("asyncio", "trio")
PRICING = ModelPricing(input_usd_per_mtok=1.0, output_usd_per_mtok=5.0)


def _model(mode: str) -> ModelConfig:
    return ModelConfig(
        provider="anthropic",
        model_name="claude-haiku-4-5",
        api_key="sk-bench-0123456789",
        pricing=PRICING,
        max_concurrency=64,
        batch_api=BatchApiPolicy(enabled=mode == "batch lane", window_s=0.05, poll_interval_s=0.02),
    )


async def _run(mode: str, requests: int, state_dir: str) -> dict[str, float]:
    api = FakeLLMApi()

    def factory(model_id: str, config: ModelConfig) -> Any:
        return open_provider(model_id, config, http_client=api.mock_client())

    config = GatewayConfig(models={"m": _model(mode)}, log_dir=None, state_dir=state_dir)
    async with Gateway(config, provider_factory=factory) as gw:
        await gw.request(  # the SDK's first call (platform detection) off the measurement
            LLMRequest(model="m", messages=[LLMMessage("user", "warm")], priority="high")
        )
        calls_before = len(api.received)
        batch = [
            LLMRequest(model="m", messages=[LLMMessage("user", f"document {i}")], priority="low")
            for i in range(requests)
        ]
        gc.collect()
        cpu = time.process_time()
        wall = time.perf_counter()
        answers = await gw.batch(batch)
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
    cost = sum(a.cost_usd or 0.0 for a in answers)
    return {
        "cpu_us": cpu / requests * 1e6,
        "wall_s": wall,
        "calls_per_request": (len(api.received) - calls_before) / requests,
        "cost_usd_per_1k": cost / requests * 1000,
    }


def measure(quick: bool) -> dict[str, Any]:
    """Each mode on each backend, repetitions interleaved; medians."""
    requests = 300 if quick else 2000
    repetitions = 2 if quick else 5
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        b: {m: [] for m in MODES} for b in BACKENDS
    }
    with tempfile.TemporaryDirectory() as state_dir:
        for _ in range(repetitions):
            for backend in BACKENDS:
                for mode in MODES:
                    samples[backend][mode].append(
                        anyio.run(_run, mode, requests, state_dir, backend=backend)
                    )
    results: dict[str, Any] = {"requests": requests, "repetitions": repetitions}
    for backend in BACKENDS:
        results[backend] = {
            mode: {
                key: statistics.median(s[key] for s in samples[backend][mode])
                for key in samples[backend][mode][0]
            }
            for mode in MODES
        }
    return results


def report(results: dict[str, Any]) -> str:
    """A markdown section: the two paths side by side, with ratios."""
    lines = [
        "## The batch lane (bench_batch)",
        "",
        f"{results['requests']} LOW requests through the Anthropic adapter to the in-process "
        f"fake API, median of {results['repetitions']} interleaved repetitions. CPU is the "
        "client's (gateway, SDK, and the fake's answers, the same on both paths).",
        "",
        "| backend | path | CPU per request (us) | HTTP calls per request | USD per 1k requests |",
        "|---|---|---|---|---|",
    ]
    for backend in BACKENDS:
        for mode in MODES:
            r = results[backend][mode]
            lines.append(
                f"| {backend} | {mode} | {r['cpu_us']:.0f} | {r['calls_per_request']:.4f} | "
                f"{r['cost_usd_per_1k']:.4f} |"
            )
    lines.append("")
    for backend in BACKENDS:
        rt, bl = results[backend]["realtime"], results[backend]["batch lane"]
        lines.append(
            f"- {backend}: batch lane / realtime: CPU {bl['cpu_us'] / rt['cpu_us']:.2f}x, "
            f"HTTP calls {bl['calls_per_request'] / rt['calls_per_request']:.4f}x, "
            f"price {bl['cost_usd_per_1k'] / rt['cost_usd_per_1k']:.2f}x"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(report(measure(args.quick)))


if __name__ == "__main__":
    main()
