"""Soak test: many requests through the gateway against the loopback fault server.

Every request goes through a real :class:`~llm_gateway.Gateway`, the real anthropic and openai
SDK adapters, and real sockets on 127.0.0.1, to :func:`llm_gateway.testing.open_fake_llm_server`
playing a seeded :class:`~llm_gateway.testing.FaultPlan`: about ``--fault-rate`` of all calls
fail (429 with ``retry-after``/``retry-after-ms``, 529, 500, 503, dropped connections, timeouts,
and a few non-retryable 400s and malformed bodies). Real time, short latencies and backoffs.

Per backend (trio, asyncio) it reports what ended how, the attempts and HTTP calls, and two
numbers that must be zero: duplicates (a request answered twice by the server, a future
resolved twice, or an answer given to the wrong request) and lost (a submitted request that
never resolved). The exit status is 1 if either is not zero.

Run: ``nox -s soak`` or ``python benchmarks/soak.py [--requests N] [--backend trio]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from typing import Any

import anyio
import attrs

from llm_gateway import (
    CooldownPolicy,
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ProviderTimeoutError,
    ResponseFuture,
    RetryPolicy,
)
from llm_gateway.testing import Fault, FaultPlan, fake_answer, open_fake_llm_server

# The fault mix: (weight, a fault drawn from the seeded RNG).
FAULT_MIX: list[tuple[float, Any]] = [
    (14, lambda r: Fault.http(429, retry_after_ms=r.randint(5, 40))),
    (8, lambda r: Fault.http(429, retry_after=round(r.uniform(0.005, 0.04), 3))),
    (16, lambda r: Fault.http(529, latency_s=r.uniform(0, 0.003))),
    (16, lambda r: Fault.http(500, latency_s=r.uniform(0, 0.003))),
    (16, lambda r: Fault.http(503, latency_s=r.uniform(0, 0.003))),
    (14, lambda r: Fault.drop(latency_s=r.uniform(0, 0.003))),
    (10, lambda r: Fault.timeout()),
    (4, lambda r: Fault.http(400)),
    (2, lambda r: Fault.malformed()),
]
# What a "timeout" fault costs: the SDK gives up after this. Far above the event loop's worst
# lag under this load (client and server share one loop), so only injected hangs time out: a
# timeout shorter than the lag turns answers the server did send into timeouts, and their
# retries into work done twice (counted as duplicates here).
SDK_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 300.0  # the gateway's deadline: far away, so the SDK's timeout counts


@attrs.define
class Report:
    backend: str
    requests: int
    completed: int = 0
    failed: Counter[str] = attrs.field(factory=Counter)
    attempts: int = 0
    http_calls: int = 0
    injected: Counter[str] = attrs.field(factory=Counter)
    retries: int = 0
    fallbacks: int = 0
    cooldowns: int = 0
    duplicates: int = 0
    lost: int = 0
    timeouts_seen: int = 0  # attempts that ended in ProviderTimeoutError
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.lost == 0


def fault_plan(requests: int, fault_rate: float, seed: int) -> FaultPlan:
    """Each call of each request fails with probability ``fault_rate`` (at most 6 in a row)."""
    rng = random.Random(seed)
    weights = [w for w, _ in FAULT_MIX]
    makers = [m for _, m in FAULT_MIX]
    scripts: dict[str, list[Fault]] = {}
    for i in range(requests):
        script: list[Fault] = []
        while len(script) < 6 and rng.random() < fault_rate:
            script.append(rng.choices(makers, weights)[0](rng))
        if script:
            scripts[f"soak-{i}"] = script
    return FaultPlan(scripts, latency_s=0.002)


def models(base_url: str) -> dict[str, ModelConfig]:
    common: dict[str, Any] = {
        "batch_size": 8,
        "batch_timeout_ms": 5,
        "max_concurrency": 32,
        "timeout_s": SDK_TIMEOUT_S,
        "retry": RetryPolicy(
            max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.1, max_retry_after_s=1.0
        ),
        "cooldown": CooldownPolicy(failure_threshold=8, cooldown_s=0.05),
    }
    return {
        "claude": ModelConfig(
            provider="claude-haiku",
            model_name="claude-haiku-4-5",
            endpoint=base_url,
            api_key="soak-key",
            fallbacks=("gpt",),
            **common,
        ),
        "gpt": ModelConfig(
            provider="gpt-4o-mini",
            model_name="gpt-4o-mini",
            endpoint=f"{base_url}/v1",
            api_key="soak-key",
            fallbacks=("claude",),
            **common,
        ),
    }


async def soak(
    backend: str, requests: int, fault_rate: float, seed: int, budget_s: float
) -> Report:
    report = Report(backend, requests)
    plan = fault_plan(requests, fault_rate, seed)
    futures: dict[str, ResponseFuture] = {}
    resolutions: Counter[str] = Counter()
    misrouted = 0
    started = time.perf_counter()
    async with open_fake_llm_server(faults=plan) as server:
        gateway = Gateway(models=models(server.base_url), log_dir=None)
        async with gateway:
            _count_resolutions(gateway, resolutions)
            for i in range(requests):
                prompt = f"soak-{i}"
                request = LLMRequest(
                    model="claude" if i % 2 else "gpt",
                    messages=[LLMMessage("user", prompt)],
                    request_id=prompt,
                    timeout_s=REQUEST_TIMEOUT_S,
                )
                futures[prompt] = await gateway.submit(request)
            with anyio.move_on_after(budget_s):
                for fut in futures.values():
                    await _settled(fut)
            report.lost = sum(not fut.done() for fut in futures.values())
            stats = gateway.get_stats()
            await gateway.shutdown(timeout=0)  # fails the lost ones, if any: they stay counted
    report.wall_s = time.perf_counter() - started
    for prompt, fut in futures.items():
        if not fut.done():
            continue
        error = fut.exception()
        report.timeouts_seen += sum(isinstance(e, ProviderTimeoutError) for e in fut.failures)
        if error is None:
            report.completed += 1
            response = fut.result()
            if response.request_id != prompt or response.content != fake_answer(prompt):
                misrouted += 1
            report.attempts += len(fut.failures) + 1
        else:
            report.failed[type(error).__name__] += 1
            report.attempts += len(fut.failures)
    report.http_calls = len(plan.calls)
    for call in plan.calls:
        if call.fault is not None:
            report.injected[call.fault.describe()] += 1
    answered = Counter(c.key for c in plan.calls if c.fault is None and c.ended is not None)
    twice_answered = sum(n - 1 for n in answered.values() if n > 1)
    twice_resolved = sum(n - 1 for n in resolutions.values() if n > 1)
    report.duplicates = twice_answered + twice_resolved + misrouted
    report.retries = stats.total.retries
    report.fallbacks = stats.total.fallbacks
    report.cooldowns = stats.total.cooldowns
    return report


async def _settled(fut: ResponseFuture) -> None:
    try:
        await fut.wait()
    except Exception:
        if not fut.done():
            raise


def _count_resolutions(gateway: Gateway, resolutions: Counter[str]) -> None:
    """Count every call that resolves a future, including any call on a resolved one.

    In this soak nothing cancels and no deadline passes, so a future is resolved exactly
    once: a second call would be a second outcome for the same request.
    """
    for batcher in gateway._batchers.values():
        resolve = batcher.resolve

        def counting(fut: ResponseFuture, _resolve: Any = resolve, **kwargs: Any) -> None:
            resolutions[fut.request.request_id] += 1
            _resolve(fut, **kwargs)

        batcher.resolve = counting  # type: ignore[method-assign]


def print_report(report: Report) -> None:
    failed = sum(report.failed.values())
    print(f"== {report.backend}: {report.requests} requests in {report.wall_s:.1f} s")
    print(f"   completed {report.completed}, failed {failed}: {_counts(report.failed)}")
    injected = sum(report.injected.values())
    share = injected / report.http_calls if report.http_calls else 0.0
    print(
        f"   attempts {report.attempts}, HTTP calls {report.http_calls} "
        f"({injected} injected faults, {share:.0%}): {_counts(report.injected)}"
    )
    print(
        f"   retries {report.retries}, fallbacks {report.fallbacks}, cooldowns {report.cooldowns}"
    )
    print(
        f"   timeouts seen {report.timeouts_seen} (injected {report.injected['timeout']}); "
        f"duplicates {report.duplicates}, lost {report.lost}"
    )


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counter.most_common()) or "none"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of calls that fail")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--backend", action="append", choices=["trio", "asyncio"], help="default: both"
    )
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds before unresolved requests are lost"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reports = []
    for backend in args.backend or ["trio", "asyncio"]:
        report = anyio.run(
            soak, backend, args.requests, args.fault_rate, args.seed, args.budget, backend=backend
        )
        print_report(report)
        reports.append(report)
    if all(r.ok for r in reports):
        print("OK: no duplicates, nothing lost")
        return 0
    print("FAILED: duplicates or lost requests")
    return 1


if __name__ == "__main__":
    sys.exit(main())
