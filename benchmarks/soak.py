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

With ``--abnormal-exits N`` it then plays, per backend, N short runs that each end the
gateway's ``async with`` block abnormally at a random moment, with logs on: the block's own
exception, a cancel scope around the block, KeyboardInterrupt raised in the block, or a
``shutdown(timeout=)`` shorter than the work. Several agent tasks outside the block submit a
random number of requests (``submit()``, ``request()``, or ``submit()`` then awaiting the
future) over a fresh fault server. Three counts must be zero: futures accepted and never
resolved, requests resolved more than once, and exceptions leaving the block other than the
one that ended it (or, from the agents' calls, anything but a ``GatewayError``).

Run: ``nox -s soak`` or ``python benchmarks/soak.py [--requests N] [--backend trio]
[--abnormal-exits N]`` (``--requests 0`` skips the first part).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import attrs

from llm_gateway import (
    CooldownPolicy,
    Gateway,
    GatewayClosedError,
    GatewayError,
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
    return _claude_and_gpt(base_url, common)


def _claude_and_gpt(base_url: str, common: dict[str, Any]) -> dict[str, ModelConfig]:
    """The two soak models, each the other's fallback, on the fake server at ``base_url``."""
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
    misrouted = 0
    started = time.perf_counter()
    with counting_resolutions() as resolutions:
        async with open_fake_llm_server(faults=plan) as server:
            await _soak(server.base_url, requests, budget_s, futures, report)
    report.wall_s = time.perf_counter() - started
    for prompt, fut in futures.items():
        if not fut.done():
            continue
        error = fut.exception()
        failures = _failed_attempts(fut)
        report.timeouts_seen += sum(isinstance(e, ProviderTimeoutError) for e in failures)
        if error is None:
            report.completed += 1
            response = fut.result()
            if response.request_id != prompt or response.content != fake_answer(prompt):
                misrouted += 1
            report.attempts += len(failures) + 1
        else:
            report.failed[type(error).__name__] += 1
            report.attempts += len(failures)
    report.http_calls = len(plan.calls)
    for call in plan.calls:
        if call.fault is not None:
            report.injected[call.fault.describe()] += 1
    answered = Counter(c.key for c in plan.calls if c.fault is None and c.ended is not None)
    twice_answered = sum(n - 1 for n in answered.values() if n > 1)
    twice_resolved = sum(n - 1 for n in resolutions.values() if n > 1)
    report.duplicates = twice_answered + twice_resolved + misrouted
    return report


async def _soak(
    base_url: str,
    requests: int,
    budget_s: float,
    futures: dict[str, ResponseFuture],
    report: Report,
) -> None:
    gateway = Gateway(models=models(base_url), log_dir=None)
    async with gateway:
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
    report.retries = stats.total.retries
    report.fallbacks = stats.total.fallbacks
    report.cooldowns = stats.total.cooldowns


def _failed_attempts(fut: ResponseFuture) -> list[BaseException]:
    """Every failed attempt of the request, on every model.

    A measuring hook: the public future does not list them, its private queue entry does.
    """
    entry = fut._entry
    assert entry is not None
    return entry.failures


async def _settled(fut: ResponseFuture) -> None:
    try:
        await fut.wait()
    except Exception:
        if not fut.done():
            raise


@contextmanager
def counting_resolutions() -> Iterator[Counter[ResponseFuture]]:
    """Count every call that resolves a future, including any call on a resolved one.

    A measuring hook, not an API: it wraps the private ``ResponseFuture._resolve``, the one
    place a future gets its outcome, for as long as the block runs. A request ends exactly
    once, so a count above one is a second outcome for the same request.
    """
    counts: Counter[ResponseFuture] = Counter()
    original = ResponseFuture._resolve

    def counting(fut: ResponseFuture, *args: Any, **kwargs: Any) -> None:
        counts[fut] += 1
        original(fut, *args, **kwargs)

    ResponseFuture._resolve = counting  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        ResponseFuture._resolve = original  # type: ignore[method-assign]


# -- abnormal exits ---------------------------------------------------------------------------

EXITS = ("raise", "cancel", "keyboard", "shutdown_timeout")
EXIT_SDK_TIMEOUT_S = 0.5  # what a "timeout" fault costs in these short runs
AGENTS_GRACE_S = 5.0  # after the block: time for the agents to see the gateway closed


class BlockExit(Exception):
    """The block's own exception."""


class RecordingGateway(Gateway):
    """A gateway that keeps every future it accepts (``request()`` goes through ``submit()``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: list[ResponseFuture] = []

    async def submit(self, request: LLMRequest) -> ResponseFuture:
        fut = await super().submit(request)
        self.accepted.append(fut)
        return fut


@attrs.define
class ExitReport:
    backend: str
    runs: int = 0
    exits: Counter[str] = attrs.field(factory=Counter)
    fills: Counter[str] = attrs.field(factory=Counter)
    accepted: int = 0
    refused: int = 0  # submissions refused because the gateway was closing or closed
    outcomes: Counter[str] = attrs.field(factory=Counter)
    cut_short: int = 0  # runs where the exit aborted at least one accepted request
    while_opening: int = 0  # runs the exit ended while the gateway was still opening
    unresolved: int = 0  # accepted and never resolved (counted after the agents stopped)
    unresolved_at_exit: int = 0  # of those, accepted before the block ended
    resolved_twice: int = 0  # futures resolved more than once
    stats_mismatch: int = 0  # runs where completed + failed + cancelled != accepted
    left_in_lanes: int = 0  # runs whose stats still show queued/in-flight/retrying requests
    wrong_exit: int = 0  # the block let out something other than what ended it
    unexpected: Counter[str] = attrs.field(factory=Counter)  # agents got a non-GatewayError
    observer_errors: Counter[str] = attrs.field(factory=Counter)
    examples: list[str] = attrs.field(factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.unresolved
            or self.resolved_twice
            or self.stats_mismatch
            or self.left_in_lanes
            or self.wrong_exit
            or sum(self.unexpected.values())
        )

    def note(self, what: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(what)


def exit_models(base_url: str, rng: random.Random) -> dict[str, ModelConfig]:
    """Two small models (a queue builds up), each the other's fallback; random batch_fill."""
    common: dict[str, Any] = {
        "batch_size": rng.choice([1, 4, 10]),
        "batch_timeout_ms": rng.choice([5, 50]),
        "batch_fill": rng.choice(["eager", "wait"]),
        "max_concurrency": rng.choice([2, 4, 8]),
        "queue_capacity": rng.choice([8, 1000]),  # 8: some submit() calls wait for room
        "timeout_s": EXIT_SDK_TIMEOUT_S,
        "retry": RetryPolicy(
            max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.1, max_retry_after_s=1.0
        ),
        "cooldown": CooldownPolicy(failure_threshold=6, cooldown_s=0.05),
    }
    return _claude_and_gpt(base_url, common)


def exit_plan(prompts: list[str], fault_rate: float, rng: random.Random) -> FaultPlan:
    """Faults as in the soak, then a success that takes up to 0.3 s (the work to cut short)."""
    weights = [w for w, _ in FAULT_MIX]
    makers = [m for _, m in FAULT_MIX]
    scripts: dict[str, list[Fault]] = {}
    for prompt in prompts:
        script: list[Fault] = []
        while len(script) < 4 and rng.random() < fault_rate:
            script.append(rng.choices(makers, weights)[0](rng))
        script.append(Fault.ok(latency_s=rng.uniform(0.001, 0.3)))
        scripts[prompt] = script
    return FaultPlan(scripts, latency_s=0.002)


async def exit_run(run: int, rng: random.Random, fault_rate: float, report: ExitReport) -> None:
    """One gateway, ended abnormally at a random moment; adds what it saw to ``report``."""
    kind = rng.choice(EXITS)
    exit_after = rng.uniform(0.0, 0.4)
    shutdown_timeout = rng.uniform(0.0, 0.15)
    agents_n = rng.randint(2, 6)
    # Per agent: how many requests, each with its gap, model and way of sending.
    work = [
        [
            (
                f"x{run}-{a}-{i}",
                rng.uniform(0.0, 0.03),
                rng.choice(["claude", "gpt"]),
                rng.choice(["submit", "request", "submit_wait"]),
            )
            for i in range(rng.randint(0, 30))
        ]
        for a in range(agents_n)
    ]
    plan = exit_plan([p for agent in work for p, *_ in agent], fault_rate, rng)
    report.runs += 1
    report.exits[kind] += 1
    raised: BaseException | None = None
    escaped: BaseException | None = None
    cancelled_caught = False
    agents_left = [0]  # started and not yet finished
    agents_done = anyio.Event()

    with tempfile.TemporaryDirectory(prefix="soak-exit-logs-") as logs:
        async with open_fake_llm_server(faults=plan) as server:
            config = exit_models(server.base_url, rng)
            report.fills[config["claude"].batch_fill] += 1
            gateway = RecordingGateway(models=config, log_dir=logs)

            async def agent(requests: list[tuple[str, float, str, str]]) -> None:
                waiting: list[ResponseFuture] = []
                try:
                    for prompt, gap, model, how in requests:
                        await anyio.sleep(gap)
                        request = LLMRequest(
                            model=model, messages=[LLMMessage("user", prompt)], request_id=prompt
                        )
                        try:
                            if how == "request":
                                await gateway.request(request)
                            else:
                                fut = await gateway.submit(request)
                                if how == "submit_wait":
                                    waiting.append(fut)
                        except GatewayClosedError as exc:
                            if "accepts no new requests" in str(exc) or "not open" in str(exc):
                                report.refused += 1
                                break
                        except GatewayError:
                            pass  # the request's own outcome: counted from its future
                    for fut in waiting:
                        with suppress(GatewayError):  # its outcome is counted from the future
                            await fut
                except Exception as exc:  # anything else is the gateway's internals leaking
                    report.unexpected[_describe(exc)] += 1
                    report.note(f"run {run} ({kind}): an agent got {_describe(exc)}")
                finally:
                    agents_left[0] -= 1
                    if agents_left[0] == 0:
                        agents_done.set()

            async with anyio.create_task_group() as agents:
                try:
                    with anyio.CancelScope() as scope:
                        if kind == "cancel":
                            scope.deadline = anyio.current_time() + exit_after
                        async with gateway:
                            for requests in work:
                                agents_left[0] += 1
                                agents.start_soon(agent, requests)
                            if kind == "cancel":
                                await anyio.sleep_forever()  # the scope around the block ends it
                            await anyio.sleep(exit_after)
                            if kind == "raise":
                                raised = BlockExit(f"run {run}")
                                raise raised
                            if kind == "keyboard":
                                raised = KeyboardInterrupt()
                                raise raised
                            await gateway.shutdown(timeout=shutdown_timeout)
                    cancelled_caught = scope.cancelled_caught
                except BaseException as exc:  # exactly what leaves the block is the question
                    escaped = exc
                at_exit = list(gateway.accepted)
                report.unresolved_at_exit += sum(not f.done() for f in at_exit)
                if agents_left[0]:
                    with anyio.move_on_after(AGENTS_GRACE_S):
                        await agents_done.wait()
                else:  # the exit came while the gateway was opening: no agent started
                    report.while_opening += 1
                agents.cancel_scope.cancel()

    if escaped is not raised or cancelled_caught != (kind == "cancel"):
        report.wrong_exit += 1
        report.note(
            f"run {run} ({kind}): {_describe(escaped) if escaped else 'nothing'} left the block"
            f" (expected {_describe(raised) if raised else 'nothing'}), cancelled_caught="
            f"{cancelled_caught}"
        )
    accepted = gateway.accepted
    report.accepted += len(accepted)
    unresolved = [f for f in accepted if not f.done()]
    if unresolved:
        report.unresolved += len(unresolved)
        report.note(
            f"run {run} ({kind}): {len(unresolved)} of {len(accepted)} accepted never resolved "
            f"({len(accepted) - len(at_exit)} accepted after the block ended)"
        )
    aborted = 0
    for fut in accepted:
        if not fut.done():
            continue
        error = fut.exception()
        name = "answered" if error is None else type(error).__name__
        report.outcomes[name] += 1
        aborted += isinstance(error, GatewayClosedError)
    report.cut_short += aborted > 0
    stats = gateway.get_stats()
    total = stats.total
    if total.completed + total.failed + total.cancelled != len(accepted):
        report.stats_mismatch += 1
        report.note(
            f"run {run} ({kind}): stats count {total.completed} + {total.failed} + "
            f"{total.cancelled} endings for {len(accepted)} accepted requests"
        )
    if (total.queued, total.in_flight, total.retrying) != (0, 0, 0):
        report.left_in_lanes += 1
        report.note(
            f"run {run} ({kind}): after the block, queued {total.queued}, in flight "
            f"{total.in_flight}, retrying {total.retrying}"
        )
    for name, count in stats.observer_errors.items():
        report.observer_errors[name] += count


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner = ", ".join(_describe(e) for e in exc.exceptions)
        return f"{type(exc).__name__}[{inner}]"
    return type(exc).__name__


async def abnormal_exits(backend: str, runs: int, fault_rate: float, seed: int) -> ExitReport:
    report = ExitReport(backend)
    rng = random.Random(f"{seed}-{backend}")
    started = time.perf_counter()
    with counting_resolutions() as resolutions:
        for run in range(runs):
            await exit_run(run, rng, fault_rate, report)
            report.resolved_twice += sum(n - 1 for n in resolutions.values() if n > 1)
            resolutions.clear()
    report.wall_s = time.perf_counter() - started
    return report


def print_exit_report(report: ExitReport) -> None:
    print(
        f"== {report.backend}: {report.runs} abnormal exits in {report.wall_s:.1f} s "
        f"({_counts(report.exits)}; batch_fill {_counts(report.fills)})"
    )
    print(
        f"   accepted {report.accepted}, refused after the close {report.refused}; outcomes: "
        f"{_counts(report.outcomes)}; runs whose exit aborted requests {report.cut_short}, "
        f"ended while the gateway was opening {report.while_opening}"
    )
    print(f"   observer errors: {_counts(report.observer_errors)}")
    print(
        f"   unresolved {report.unresolved} (accepted before the block ended "
        f"{report.unresolved_at_exit}), resolved twice {report.resolved_twice}, "
        f"stats mismatches {report.stats_mismatch}, runs with requests left in lanes "
        f"{report.left_in_lanes}"
    )
    print(
        f"   wrong exception out of the block {report.wrong_exit}, internal exceptions to "
        f"agents {sum(report.unexpected.values())}: {_counts(report.unexpected)}"
    )
    for example in report.examples:
        print(f"   ! {example}")


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
    parser.add_argument(
        "--abnormal-exits",
        type=int,
        default=0,
        metavar="N",
        help="then N runs per backend that end the gateway's block abnormally (default 0)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = args.backend or ["trio", "asyncio"]
    status = 0
    if args.requests:
        reports = []
        for backend in backends:
            report = anyio.run(
                soak,
                backend,
                args.requests,
                args.fault_rate,
                args.seed,
                args.budget,
                backend=backend,
            )
            print_report(report)
            reports.append(report)
        if all(r.ok for r in reports):
            print("OK: no duplicates, nothing lost")
        else:
            print("FAILED: duplicates or lost requests")
            status = 1
    if args.abnormal_exits:
        exit_reports = []
        for backend in backends:
            exit_report = anyio.run(
                abnormal_exits,
                backend,
                args.abnormal_exits,
                args.fault_rate,
                args.seed,
                backend=backend,
            )
            print_exit_report(exit_report)
            exit_reports.append(exit_report)
        if all(r.ok for r in exit_reports):
            print(
                "OK: every abnormal exit resolved every accepted request once and let out only "
                "the exception that ended the block"
            )
        else:
            print("FAILED: an abnormal exit lost a request, resolved one twice, or leaked")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
