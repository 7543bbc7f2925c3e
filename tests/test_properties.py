"""Properties of the batcher and gateway, checked by Hypothesis on both backends, virtual time.

One generated workload: requests arriving over time to two models, with mixed priorities,
latencies, scripted failures (retryable, rate-limited with retry-after, non-retryable),
deadlines and cancellations; then a graceful shutdown. Every invariant the core and the
resilience layer promise is checked on what actually happened.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    CooldownPolicy,
    GatewayClosedError,
    LLMRequest,
    ProviderError,
    RequestCancelledError,
    RequestPriority,
    RequestTimeoutError,
    ResponseFuture,
    RetriesExhaustedError,
    RetryPolicy,
)
from llm_gateway._queue import QUEUED

from ._support import Call, RecordingGateway, ask, mock_model
from .conftest import run_on_virtual_time as run

EPS = 1e-3  # looptime rounds to microseconds; workloads use whole milliseconds
MODELS = ("a", "b")


@attrs.frozen
class Failure:
    status_code: int  # 500 and 529 are retried, 429 too (after retry_after_s), 400 is not
    retry_after_s: float | None = None

    def error(self) -> ProviderError:
        return ProviderError(
            "scripted", status_code=self.status_code, retry_after_s=self.retry_after_s
        )


@attrs.frozen
class Arrival:
    gap_s: float
    model: str
    priority: RequestPriority
    latency_s: float
    cancel_after_s: float | None
    failures: list[Failure]  # the first attempts fail like this, later ones succeed
    timeout_s: float | None


@attrs.frozen
class Workload:
    batch_fill: str  # "eager" (work-conserving) or "wait" (the fixed window)
    batch_size: int
    max_concurrency: int
    max_wait_s: tuple[float, float, float]  # HIGH, NORMAL, LOW
    max_attempts: int
    fallback: bool  # model "a" falls back to "b"
    shutdown_timeout_s: float | None  # None: a graceful shutdown that waits for everything
    arrivals: list[Arrival]


def millis(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda ms: ms / 1000)


errors = st.builds(Failure, status_code=st.sampled_from([500, 529, 400]))
rate_limits = st.builds(Failure, status_code=st.just(429), retry_after_s=millis(1, 1500))


def arrivals(failures: st.SearchStrategy[Failure]) -> st.SearchStrategy[Arrival]:
    return st.builds(
        Arrival,
        gap_s=st.one_of(st.just(0.0), millis(0, 400)),
        model=st.sampled_from(MODELS),
        priority=st.sampled_from(list(RequestPriority)),
        latency_s=millis(1, 800),
        cancel_after_s=st.one_of(st.none(), st.none(), millis(0, 900)),
        failures=st.one_of(st.just([]), st.lists(failures, max_size=4)),
        timeout_s=st.one_of(st.none(), millis(50, 4000)),
    )


@st.composite
def workloads(draw: st.DrawFn, *, unlimited_capacity: bool = False) -> Workload:
    """Workloads; with unlimited capacity, no 429s either (their cooldown pauses a model)."""
    high = draw(st.sampled_from([0.0, 0.0, 0.03]))
    normal = draw(st.sampled_from([0.0, 0.05, 0.1, 0.3]))
    low = draw(st.sampled_from([normal, 0.5, 1.2]))
    return Workload(
        batch_fill=draw(st.sampled_from(["eager", "wait"])),
        batch_size=draw(st.integers(1, 6)),
        max_concurrency=10_000 if unlimited_capacity else draw(st.integers(1, 5)),
        max_wait_s=(high, normal, low),
        max_attempts=draw(st.integers(1, 3)),
        fallback=draw(st.booleans()),
        shutdown_timeout_s=draw(st.one_of(st.none(), millis(0, 1500))),
        arrivals=draw(
            st.lists(arrivals(errors if unlimited_capacity else errors | rate_limits), max_size=25)
        ),
    )


@attrs.define
class Outcome:
    gateway: RecordingGateway
    futures: dict[str, ResponseFuture]
    cancelled_in_queue: set[str]
    closed_at: float


async def play(workload: Workload) -> Outcome:
    high, normal, low = workload.max_wait_s
    common: dict[str, Any] = {
        "batch_fill": workload.batch_fill,
        "batch_size": workload.batch_size,
        "max_concurrency": workload.max_concurrency,
        "high_max_wait_s": high,
        "batch_timeout_ms": normal * 1000,
        "low_max_wait_s": low,
        "aging_s": 1e6,  # strict priority is checked here; aging has its own tests
        "timeout_s": None,
        "retry": RetryPolicy(max_attempts=workload.max_attempts, max_retry_after_s=1.0),
        # Cooldowns pause whole models; they have their own tests.
        "cooldown": CooldownPolicy(failure_threshold=10_000),
    }
    models = {
        "a": mock_model(**common, fallbacks=("b",) if workload.fallback else ()),
        "b": mock_model(**common),
    }
    by_id = {f"r{i}": a for i, a in enumerate(workload.arrivals)}
    calls: dict[str, int] = defaultdict(int)

    def fail(request: LLMRequest) -> BaseException | None:
        calls[request.request_id] += 1  # the attempt that just ended, on any model
        script = by_id[request.request_id].failures
        attempt = calls[request.request_id]
        return script[attempt - 1].error() if attempt <= len(script) else None

    gateway = RecordingGateway(models, latency=lambda r: by_id[r.request_id].latency_s, fail=fail)
    futures: dict[str, ResponseFuture] = {}
    cancelled_in_queue: set[str] = set()
    # Virtual time makes this guard free: a hang jumps the clock to it and fails the example.
    with anyio.fail_after(100_000):
        await _drive(gateway, by_id, futures, cancelled_in_queue, workload.shutdown_timeout_s)
    return Outcome(gateway, futures, cancelled_in_queue, gateway.closing_started)


async def _drive(
    gateway: RecordingGateway,
    by_id: dict[str, Arrival],
    futures: dict[str, ResponseFuture],
    cancelled_in_queue: set[str],
    shutdown_timeout_s: float | None,
) -> None:
    async def cancel_later(fut: ResponseFuture, delay: float) -> None:
        await anyio.sleep(delay)
        entry = fut._entry
        assert entry is not None
        if entry.state is QUEUED and not entry.failures:
            cancelled_in_queue.add(fut.request.request_id)
        fut.cancel()

    async with gateway:
        async with anyio.create_task_group() as tg:
            for request_id, arrival in by_id.items():
                await anyio.sleep(arrival.gap_s)
                request = ask(
                    arrival.model,
                    priority=arrival.priority,
                    request_id=request_id,
                    timeout_s=arrival.timeout_s,
                )
                futures[request_id] = fut = gateway.submit_nowait(request)
                if arrival.cancel_after_s is not None:
                    tg.start_soon(cancel_later, fut, arrival.cancel_after_s)
        gateway.closing_started = anyio.current_time()
        if shutdown_timeout_s is not None:
            await gateway.shutdown(timeout=shutdown_timeout_s)


def check_invariants(workload: Workload, outcome: Outcome) -> None:
    gateway, futures = outcome.gateway, outcome.futures
    high, normal, low = workload.max_wait_s
    max_wait = {
        RequestPriority.HIGH: high,
        RequestPriority.NORMAL: normal,
        RequestPriority.LOW: low,
    }
    arrivals = {f"r{i}": a for i, a in enumerate(workload.arrivals)}

    # Every accepted request resolved exactly once: each future is done, and the stats counted
    # exactly one ending per request (they count state transitions, which happen once).
    assert all(f.done() for f in futures.values())
    total = gateway.get_stats().total
    assert total.completed + total.failed + total.cancelled == len(futures)
    assert (total.queued, total.in_flight, total.retrying) == (0, 0, 0)

    calls_by_request: dict[str, list[Call]] = defaultdict(list)
    for call in gateway.calls:
        calls_by_request[call.request.request_id].append(call)
    models_tried = 2 if workload.fallback else 1
    for request_id, fut in futures.items():
        arrival, calls = arrivals[request_id], calls_by_request[request_id]
        # The attempt budget holds (per model; a fallback brings a fresh budget).
        per_model: dict[str, int] = defaultdict(int)
        for call in calls:
            per_model[call.model_id] += 1
        assert all(n <= workload.max_attempts for n in per_model.values())
        assert len(per_model) <= models_tried
        # A fallback fires only after the first model's retryable attempts are used up, or
        # when waiting there would pass the request's deadline (a long retry-after, the
        # model's cooldown): never for a request without a deadline and short retry-afters.
        if "b" in per_model and arrival.model == "a":
            failed_on_a = arrival.failures[: per_model["a"]]
            assert all(f.status_code != 400 for f in failed_on_a)
            assert (
                per_model["a"] == workload.max_attempts
                or arrival.timeout_s is not None
                or any((f.retry_after_s or 0) > 1.0 for f in failed_on_a)
            )
        # No retry on a model before the provider's retry-after.
        for before, after in pairwise(calls):
            script = arrival.failures[calls.index(before)]
            assert before.ended is not None
            if before.model_id == after.model_id:
                assert after.started - before.ended >= (script.retry_after_s or 0.0) - EPS
        error = fut.exception()
        if error is None:
            assert fut.result().request_id == request_id
            assert len(calls) == len(arrival.failures) + 1
        elif isinstance(error, RequestCancelledError | RequestTimeoutError):
            pass
        elif isinstance(error, GatewayClosedError):
            assert workload.shutdown_timeout_s is not None  # only a timed shutdown aborts
            assert "aborted: shutdown(timeout=" in str(error)
        elif arrival.failures[len(calls) - 1].status_code == 400:
            # Non-retryable: fails at once with the provider's own error.
            assert type(error) is ProviderError
            assert error.status_code == 400
            assert str(error) == "scripted"
        else:
            assert isinstance(error, RetriesExhaustedError)
            assert f"failed after {len(calls)} attempt{'s' if len(calls) > 1 else ''}" in str(error)

    # Cancelled before its first dispatch: never reached the provider.
    called = {request_id for request_id, calls in calls_by_request.items() if calls}
    assert not outcome.cancelled_in_queue & called

    for provider in gateway.providers.values():
        assert provider.peak <= workload.max_concurrency

    for batch in gateway.batches:
        assert set(batch.owners) == {batch.model_id}  # one model per batch
        assert 1 <= len(batch.taken) <= workload.batch_size
        # As many as allowed leave: the batch is cut only by batch_size, capacity or demand.
        waiting_before = len(batch.taken) + len(batch.waiting)
        assert len(batch.taken) == min(workload.batch_size, batch.free, waiting_before)
        # Strict priority at each take; FIFO within a priority among first attempts.
        if batch.waiting:
            assert max(f.request.priority for f in batch.taken) <= min(
                f.request.priority for f in batch.waiting
            )
            # (Retries and requests moved here from another model go to the front of their line.)
            fresh_taken = [
                f
                for f, n in zip(batch.taken, batch.failures_before, strict=True)
                if not n and f.request.model == batch.model_id
            ]
            fresh_waiting = [
                f for f in batch.waiting if not f.failures and f.request.model == batch.model_id
            ]
            for taken in fresh_taken:
                for waiting in fresh_waiting:
                    if taken.request.priority == waiting.request.priority:
                        assert taken.enqueued_at <= waiting.enqueued_at
        # Waiting for the window: a batch short for lack of requests leaves only at a deadline
        # (or at shutdown). Work-conserving: it leaves at once (checked below).
        if (
            workload.batch_fill == "wait"
            and waiting_before < workload.batch_size
            and batch.at < outcome.closed_at
        ):
            overdue = [
                f
                for f in batch.taken + batch.waiting
                if batch.at - f.enqueued_at >= max_wait[f.request.priority] - EPS
            ]
            assert overdue, f"a short batch left at {batch.at} before any deadline"


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=150)
@given(workload=workloads())
def test_batcher_and_gateway_invariants(backend: str, workload: Workload) -> None:
    outcome: list[Outcome] = []

    async def main() -> None:
        outcome.append(await play(workload))

    run(backend, main)
    check_invariants(workload, outcome[0])


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=100)
@given(workload=workloads(unlimited_capacity=True))
def test_no_request_waits_past_its_maximum_when_capacity_is_free(
    backend: str, workload: Workload
) -> None:
    outcome: list[Outcome] = []

    async def main() -> None:
        outcome.append(await play(workload))

    run(backend, main)
    check_invariants(workload, outcome[0])
    high, normal, low = workload.max_wait_s
    max_wait = {
        RequestPriority.HIGH: high,
        RequestPriority.NORMAL: normal,
        RequestPriority.LOW: low,
    }
    if workload.batch_fill == "eager":  # with free capacity, no request waits at all
        max_wait = dict.fromkeys(RequestPriority, 0.0)
    for batch in outcome[0].gateway.batches:
        for entry, failures_before in zip(batch.taken, batch.failures_before, strict=True):
            if not failures_before:  # a retry waits for its backoff instead
                assert batch.at - entry.enqueued_at <= max_wait[entry.request.priority] + EPS
