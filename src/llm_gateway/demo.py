"""Demo: simulated agents send mixed-priority requests through one gateway.

Run ``python -m llm_gateway.demo`` (the built-in mock provider, no network, no keys), or point it
at real models: ``--config gateway.toml``, or ``--model gpt-4o-mini`` / ``--model claude-haiku``
(keys from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``), or
``--model local-llama --endpoint http://127.0.0.1:11434/v1 --model-name llama3.2``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._config import GatewayConfig, ModelConfig, load_config
from ._exceptions import GatewayError
from ._gateway import Gateway
from ._models import LLMMessage, LLMRequest, ModelProvider, RequestPriority
from ._stats import GatewayStats, LatencySummary

# Provider model names the demo uses with --model unless --model-name says otherwise.
DEFAULT_MODEL_NAMES = {
    ModelProvider.CLAUDE_HAIKU: "claude-haiku-4-5",
    ModelProvider.CLAUDE_SONNET: "claude-sonnet-4-5",
    ModelProvider.CLAUDE_OPUS: "claude-opus-4-1",
    ModelProvider.GPT_4O_MINI: "gpt-4o-mini",
    ModelProvider.GPT_4O: "gpt-4o",
    ModelProvider.LOCAL_LLAMA: "llama3.2",
    ModelProvider.MOCK: "mock",
}

MOCK_CONFIG: dict[str, Any] = {
    "models": {
        "fast": {
            "provider": "mock",
            "model_name": "mock-fast",
            "batch_size": 8,
            "max_concurrency": 8,
            "provider_options": {"latency_s": 0.15},
        },
        "smart": {
            "provider": "mock",
            "model_name": "mock-smart",
            "batch_size": 4,
            "max_concurrency": 4,
            "provider_options": {"latency_s": 0.6},
        },
    },
}

QUESTIONS = [
    "Summarise the last deployment log in one sentence.",
    "Which of these three tickets is most urgent?",
    "Draft a one-line reply to the customer.",
    "List two risks in the migration plan.",
    "Classify this message: billing, bug or feature request?",
    "Suggest a title for the incident report.",
]


def build_config(args: argparse.Namespace) -> GatewayConfig:
    if args.config:
        config = load_config(args.config)
    elif args.model:
        provider = ModelProvider(args.model)
        model = ModelConfig(
            provider=provider,
            model_name=args.model_name or DEFAULT_MODEL_NAMES[provider],
            endpoint=args.endpoint,
            max_concurrency=4,
        )
        config = GatewayConfig(models={args.model: model})
    else:
        config = load_config(MOCK_CONFIG)
    if args.no_logs:
        config = GatewayConfig(models=config.models, log_dir=None)
    return config


async def agent(
    gw: Gateway,
    name: str,
    priority: RequestPriority,
    models: Sequence[str],
    count: int,
    think_s: float,
    rng: random.Random,
) -> None:
    """One simulated agent; HIGH uses request(), NORMAL submit(), LOW batch()."""

    def make(i: int) -> LLMRequest:
        return LLMRequest(
            model=models[i % len(models)],
            messages=[
                LLMMessage("system", f"You are the {name} agent. Answer in one short sentence."),
                LLMMessage("user", rng.choice(QUESTIONS)),
            ],
            priority=priority,
            max_tokens=64,
            agent_id=name,
            trace_id=f"{name}-{i}",
        )

    if priority is RequestPriority.LOW:
        results = await gw.batch([make(i) for i in range(count)], return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in results)
        print(f"  [{name}] batch of {count} finished ({failed} failed)")
        return
    pending = []
    for i in range(count):
        if priority is RequestPriority.HIGH:
            try:
                response = await gw.request(make(i))
            except GatewayError as exc:
                print(f"  [{name}] request failed: {type(exc).__name__}")
            else:
                words = response.content.split()
                preview = " ".join(words[:8]) + (" ..." if len(words) > 8 else "")
                print(f"  [{name}] answer in {response.latency_ms:.0f} ms: {preview}")
        else:
            pending.append(await gw.submit(make(i)))
        await anyio.sleep(rng.uniform(0, think_s))
    for fut in pending:
        try:
            await fut
        except GatewayError as exc:
            print(f"  [{name}] request failed: {type(exc).__name__}")
    print(f"  [{name}] all {count} requests done")


async def monitor(gw: Gateway, interval_s: float) -> None:
    while True:
        await anyio.sleep(interval_s)
        stats = gw.get_stats()
        parts = [
            f"{mid}: {m.queued} queued, {m.in_flight} in flight, {m.completed} done"
            for mid, m in stats.models.items()
        ]
        print(f"t={stats.uptime_s:4.1f}s  " + " | ".join(parts))


def format_stats(stats: GatewayStats) -> str:
    def ms(summary: LatencySummary) -> str:
        if math.isnan(summary.p50):
            return "-"
        return f"{summary.p50:.0f}/{summary.p95:.0f}/{summary.p99:.0f}"

    header = (
        f"{'model':<10}{'done':>6}{'failed':>8}{'cancel':>8}{'batches':>9}{'mean':>6}"
        f"{'wait ms p50/95/99':>20}{'latency ms p50/95/99':>23}{'tokens in/out':>16}"
    )
    rows = [header, "-" * len(header)]
    for name, m in [*stats.models.items(), ("TOTAL", stats.total)]:
        rows.append(
            f"{name:<10}{m.completed:>6}{m.failed:>8}{m.cancelled:>8}{m.batches:>9}"
            f"{m.mean_batch_size:>6.1f}{ms(m.queue_wait_ms):>20}{ms(m.latency_ms):>23}"
            f"{f'{m.input_tokens}/{m.output_tokens}':>16}"
        )
    rows.append(f"uptime {stats.uptime_s:.1f} s")
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> None:
    config = build_config(args)
    models = list(config.models)
    rng = random.Random(args.seed)
    print(f"llm_gateway demo: models {models}, logs in {config.log_dir or '(off)'}")
    async with Gateway(config) as gw, anyio.create_task_group() as tg:
        tg.start_soon(monitor, gw, 0.5)
        async with anyio.create_task_group() as agents:
            n = args.requests
            agents.start_soon(agent, gw, "assistant", RequestPriority.HIGH, models, n, 0.3, rng)
            agents.start_soon(agent, gw, "planner", RequestPriority.NORMAL, models, 2 * n, 0.1, rng)
            agents.start_soon(agent, gw, "writer", RequestPriority.NORMAL, models, 2 * n, 0.1, rng)
            agents.start_soon(agent, gw, "indexer", RequestPriority.LOW, models, 3 * n, 0.0, rng)
        tg.cancel_scope.cancel()
        print()
        print(format_stats(gw.get_stats()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llm_gateway.demo", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="a gateway TOML file")
    source.add_argument(
        "--model", choices=[p.value for p in ModelProvider], help="one model of this provider"
    )
    parser.add_argument("--model-name", help="the provider's model name (with --model)")
    parser.add_argument("--endpoint", help="base URL (with --model; needed for local-llama)")
    parser.add_argument("--requests", type=int, default=6, help="requests per agent unit")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="trio")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-logs", action="store_true", help="do not write 04_logs/gateway")
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        anyio.run(main, args, backend=args.backend)
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
