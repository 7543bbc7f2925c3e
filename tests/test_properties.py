"""Properties of the batcher and gateway, checked by Hypothesis on both backends, virtual time.

One generated workload: requests arriving over time to two models, with mixed priorities,
latencies, failures, deadlines and cancellations; then a graceful shutdown. Every invariant the
core promises is checked on what actually happened.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    ProviderError,
    RequestCancelledError,
    RequestPriority,
    RequestTimeoutError,
    ResponseFuture,
)
from llm_gateway._future import QUEUED

from ._support import RecordingGateway, ask, mock_model
from .conftest import virtual_time_backend

EPS = 1e-3  # looptime rounds to microseconds; workloads use whole milliseconds
MODELS = ("a", "b")


def run(backend: str, fn: Callable[[], Any]) -> None:
    name, options = virtual_time_backend(backend)
    anyio.run(fn, backend=name, backend_options=options)


@attrs.frozen
class Arrival:
    gap_s: float
    model: str
    priority: RequestPriority
    latency_s: float
    cancel_after_s: float | None
    fails: bool
    timeout_s: float | None


@attrs.frozen
class Workload:
    batch_size: int
    max_concurrency: int
    max_wait_s: tuple[float, float, float]  # HIGH, NORMAL, LOW
    arrivals: list[Arrival]


def millis(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda ms: ms / 1000)


arrivals = st.builds(
    Arrival,
    gap_s=st.one_of(st.just(0.0), millis(0, 400)),
    model=st.sampled_from(MODELS),
    priority=st.sampled_from(list(RequestPriority)),
    latency_s=millis(1, 800),
    cancel_after_s=st.one_of(st.none(), millis(0, 900)),
    fails=st.booleans(),
    timeout_s=st.one_of(st.none(), millis(50, 2000)),
)


@st.composite
def workloads(draw: st.DrawFn, *, unlimited_capacity: bool = False) -> Workload:
    high = draw(st.sampled_from([0.0, 0.0, 0.03]))
    normal = draw(st.sampled_from([0.0, 0.05, 0.1, 0.3]))
    low = draw(st.sampled_from([normal, 0.5, 1.2]))
    return Workload(
        batch_size=draw(st.integers(1, 6)),
        max_concurrency=10_000 if unlimited_capacity else draw(st.integers(1, 5)),
        max_wait_s=(high, normal, low),
        arrivals=draw(st.lists(arrivals, max_size=25)),
    )


@attrs.define
class Outcome:
    gateway: RecordingGateway
    futures: dict[str, ResponseFuture]
    cancelled_in_queue: set[str]
    closed_at: float


async def play(workload: Workload) -> Outcome:
    high, normal, low = workload.max_wait_s
    config = mock_model(
        batch_size=workload.batch_size,
        max_concurrency=workload.max_concurrency,
        high_max_wait_s=high,
        batch_timeout_ms=normal * 1000,
        low_max_wait_s=low,
        aging_s=1e6,  # strict priority is checked here; aging has its own test
        timeout_s=None,
    )
    by_id = {f"r{i}": a for i, a in enumerate(workload.arrivals)}
    gateway = RecordingGateway(
        dict.fromkeys(MODELS, config),
        latency=lambda r: by_id[r.request_id].latency_s,
        fail=lambda r: (
            ProviderError("scripted", status_code=500) if by_id[r.request_id].fails else None
        ),
    )
    futures: dict[str, ResponseFuture] = {}
    cancelled_in_queue: set[str] = set()

    async def cancel_later(fut: ResponseFuture, delay: float) -> None:
        await anyio.sleep(delay)
        if fut._state is QUEUED:
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
        closed_at = anyio.current_time()  # leaving the block starts the graceful shutdown
    return Outcome(gateway, futures, cancelled_in_queue, closed_at)


def order_key(fut: ResponseFuture) -> tuple[int, int]:
    return (int(fut.request.priority), int(fut.request.request_id[1:]))


def check_invariants(workload: Workload, outcome: Outcome) -> None:
    gateway, futures = outcome.gateway, outcome.futures
    high, normal, low = workload.max_wait_s
    max_wait = {
        RequestPriority.HIGH: high,
        RequestPriority.NORMAL: normal,
        RequestPriority.LOW: low,
    }

    # Every accepted request resolved exactly once: each future is done, and the stats counted
    # exactly one ending per request (they count state transitions, which happen once).
    assert all(f.done() for f in futures.values())
    total = gateway.get_stats().total
    assert total.completed + total.failed + total.cancelled == len(futures)
    assert (total.queued, total.in_flight) == (0, 0)
    for request_id, fut in futures.items():
        error = fut.exception()
        if error is None:
            assert fut.result().request_id == request_id
        else:
            assert isinstance(error, RequestCancelledError | RequestTimeoutError | ProviderError)

    # Nothing duplicated: each request reached the provider at most once.
    called = [c.request.request_id for c in gateway.calls]
    assert len(called) == len(set(called))
    # Cancelled before dispatch: never reached the provider.
    assert not outcome.cancelled_in_queue & set(called)
    # Every provider call was for a dispatched request; every dispatched one was called or
    # resolved before its task started.
    dispatched = [f.request.request_id for b in gateway.batches for f in b.taken]
    assert len(dispatched) == len(set(dispatched))
    assert set(called) <= set(dispatched)

    for provider in gateway.providers.values():
        assert provider.peak <= workload.max_concurrency

    for batch in gateway.batches:
        models = {f.request.model for f in batch.taken}
        assert models == {batch.model_id}
        assert 1 <= len(batch.taken) <= workload.batch_size
        # As many as allowed leave: the batch is cut only by batch_size, capacity or demand.
        waiting_before = len(batch.taken) + len(batch.waiting)
        assert len(batch.taken) == min(workload.batch_size, batch.free, waiting_before)
        # Strict priority at each take, FIFO within a priority.
        if batch.waiting:
            assert max(map(order_key, batch.taken)) < min(map(order_key, batch.waiting))
        # A batch short for lack of requests leaves only at a deadline (or at shutdown).
        if waiting_before < workload.batch_size and batch.at < outcome.closed_at:
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
    run(backend, partial(_play_into, workload, outcome))
    check_invariants(workload, outcome[0])
    high, normal, low = workload.max_wait_s
    max_wait = {
        RequestPriority.HIGH: high,
        RequestPriority.NORMAL: normal,
        RequestPriority.LOW: low,
    }
    for batch in outcome[0].gateway.batches:
        for fut in batch.taken:
            assert batch.at - fut.enqueued_at <= max_wait[fut.request.priority] + EPS


async def _play_into(workload: Workload, into: list[Outcome]) -> None:
    into.append(await play(workload))
