"""Resilience properties through the real SDK adapters, with generated fault plans.

A real Gateway whose two models use the real anthropic and openai adapters; their HTTP clients
have an ``httpx2.MockTransport`` playing a generated :class:`FaultPlan` (statuses with
``retry-after``/``retry-after-ms``/``x-should-retry``, latencies, dropped connections,
timeouts, malformed bodies). Hypothesis, both backends, virtual time. What the transport saw
is checked against what the gateway did and promised (``docs/resilience.md``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any, Self

import anyio
import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from llm_gateway import (
    AuthenticationError,
    CooldownPolicy,
    Gateway,
    GatewayClosedError,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    ModelConfig,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    RateLimitError,
    RequestCancelledError,
    RequestPriority,
    RequestTimeoutError,
    ResponseFuture,
    RetriesExhaustedError,
    RetryPolicy,
)
from llm_gateway._lane import Lane
from llm_gateway._queue import DONE, Entry
from llm_gateway.providers import Provider, open_provider
from llm_gateway.testing import FakeLLMApi, Fault, FaultCall, FaultPlan, fake_answer

from .conftest import run_on_virtual_time as run

EPS = 1e-3  # looptime rounds to microseconds; workloads use whole milliseconds
MODELS = ("a", "b")
MAX_RETRY_AFTER_S = 1.0
RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}  # RetryPolicy's documented set
ADAPTERS: dict[str, dict[str, Any]] = {
    "anthropic": {"provider": "claude-haiku", "api_key": "test-key"},
    "openai": {"provider": "gpt-4o-mini", "api_key": "test-key"},
}


# -- the oracle: what each fault should mean, written from the docs ---------------------------


def retryable(fault: Fault) -> bool:
    should_retry = fault.headers.get("x-should-retry")
    if fault.kind == "status" and should_retry in ("true", "false"):
        return should_retry == "true"
    if fault.kind in ("drop", "timeout"):
        return True
    return fault.kind == "status" and fault.status in RETRYABLE_STATUSES


def provider_error_type(fault: Fault) -> type[ProviderError]:
    """The class the adapters raise for a non-retryable fault."""
    if fault.kind == "malformed":
        return ProviderResponseError
    if fault.status in (401, 403):
        return AuthenticationError
    return RateLimitError if fault.status == 429 else ProviderStatusError


# -- workloads --------------------------------------------------------------------------------


def millis(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda ms: ms / 1000)


latencies = st.one_of(st.just(0.0), millis(1, 400))


@st.composite
def status_faults(draw: st.DrawFn) -> Fault:
    status = draw(st.sampled_from([429, 429, 500, 503, 529, 408, 400, 401, 403, 404, 422]))
    hint = draw(st.sampled_from(["none", "seconds", "ms", "both"]))
    seconds = draw(millis(0, 1500)) if hint in ("seconds", "both") else None
    ms = draw(st.integers(0, 1500)) if hint in ("ms", "both") else None
    return Fault.http(
        status,
        retry_after=seconds,
        retry_after_ms=ms,
        should_retry=draw(st.sampled_from([None, None, None, True, False])),
        latency_s=draw(latencies),
    )


faults = st.one_of(
    status_faults(),
    status_faults(),
    status_faults(),
    latencies.map(lambda s: Fault.drop(latency_s=s)),
    latencies.map(lambda s: Fault.timeout(latency_s=s)),
    latencies.map(lambda s: Fault.malformed(latency_s=s)),
)


@attrs.frozen
class Arrival:
    gap_s: float
    model: str
    priority: RequestPriority
    script: list[Fault]  # its first calls fail like this (on any model), later ones succeed
    timeout_s: float | None
    cancel_after_s: float | None


@attrs.frozen
class ModelSetup:
    adapter: str
    batch_size: int
    max_concurrency: int
    retry: RetryPolicy
    cooldown: CooldownPolicy
    fallbacks: tuple[str, ...]


@attrs.frozen
class Workload:
    models: dict[str, ModelSetup]
    arrivals: list[Arrival]
    success_latency_s: float
    shutdown_timeout_s: float | None  # None: a graceful shutdown that waits for everything


@st.composite
def model_setups(draw: st.DrawFn, model_id: str) -> ModelSetup:
    other = next(m for m in MODELS if m != model_id)
    return ModelSetup(
        adapter=draw(st.sampled_from(sorted(ADAPTERS))),
        batch_size=draw(st.integers(1, 4)),
        max_concurrency=draw(st.integers(1, 4)),
        retry=RetryPolicy(
            max_attempts=draw(st.integers(1, 4)),
            backoff_base_s=draw(st.sampled_from([0.0, 0.05, 0.5])),
            backoff_max_s=draw(st.sampled_from([0.1, 2.0])),
            max_retry_after_s=MAX_RETRY_AFTER_S,
        ),
        cooldown=CooldownPolicy(
            failure_threshold=draw(st.sampled_from([2, 4, 10_000])),
            cooldown_s=draw(millis(0, 2000)),
        ),
        fallbacks=(other,) if draw(st.booleans()) else (),
    )


arrivals = st.builds(
    Arrival,
    gap_s=st.one_of(st.just(0.0), millis(0, 300)),
    model=st.sampled_from(MODELS),
    priority=st.sampled_from(list(RequestPriority)),
    script=st.lists(faults, max_size=5),
    timeout_s=st.one_of(st.none(), st.none(), millis(50, 5000)),
    cancel_after_s=st.one_of(st.none(), st.none(), st.none(), millis(0, 1500)),
)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    return Workload(
        models={m: draw(model_setups(m)) for m in MODELS},
        arrivals=draw(st.lists(arrivals, max_size=15)),
        success_latency_s=draw(millis(0, 300)),
        shutdown_timeout_s=draw(st.one_of(st.none(), st.none(), millis(0, 3000))),
    )


# -- the gateway under test -------------------------------------------------------------------


@attrs.define
class Attempt:
    model_id: str
    outcome: str = "pending"  # then "ok", "error" (it raised), or "cancelled"


@attrs.define
class CountingProvider:
    """Records the gateway's attempts: each call of ``complete``, and how it ended."""

    inner: Provider
    model_id: str
    attempts: dict[str, list[Attempt]]  # request id -> its attempts, on every model
    in_flight: int = 0
    peak: int = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        attempt = Attempt(self.model_id)
        self.attempts[request.request_id].append(attempt)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            response = await self.inner.complete(request)
        except Exception:
            attempt.outcome = "error"
            raise
        except BaseException:
            attempt.outcome = "cancelled"
            raise
        finally:
            self.in_flight -= 1
        attempt.outcome = "ok"
        return response


class FaultGateway(Gateway):
    """A real Gateway whose SDK adapters talk to ``api`` through a MockTransport."""

    def __init__(self, models: Mapping[str, ModelConfig], api: FakeLLMApi) -> None:
        super().__init__(models=models, log_dir=None, provider_factory=self._counting)
        self.api = api
        self.attempts: dict[str, list[Attempt]] = defaultdict(list)
        self.providers: dict[str, CountingProvider] = {}
        self.resolutions: dict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def _counting(self, model_id: str, config: ModelConfig) -> AsyncGenerator[Provider]:
        client = self.api.mock_client()
        async with open_provider(model_id, config, http_client=client) as provider:
            self.providers[model_id] = counting = CountingProvider(
                provider, model_id, self.attempts
            )
            yield counting

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        async with super().__asynccontextmanager__():
            for lane in self._lanes.values():
                self._count_resolutions(lane)
            yield self

    def _count_resolutions(self, lane: Lane) -> None:
        finish = lane._finish

        def counting_finish(entry: Entry, *args: Any, **kwargs: Any) -> None:
            if entry.state is not DONE:
                self.resolutions[entry.request.request_id] += 1
            finish(entry, *args, **kwargs)

        lane._finish = counting_finish  # type: ignore[method-assign]


def configs(workload: Workload) -> dict[str, ModelConfig]:
    return {
        model_id: ModelConfig(
            **ADAPTERS[setup.adapter],
            model_name=f"model-{model_id}",
            batch_size=setup.batch_size,
            max_concurrency=setup.max_concurrency,
            batch_timeout_ms=20,
            low_max_wait_s=0.1,
            # No SDK timeout, no default deadline: the SDKs' first request detects the
            # platform in a worker thread, and virtual clocks jump while a thread works.
            timeout_s=None,
            retry=setup.retry,
            cooldown=setup.cooldown,
            fallbacks=setup.fallbacks,
        )
        for model_id, setup in workload.models.items()
    }


@attrs.define
class Outcome:
    gateway: FaultGateway
    plan: FaultPlan
    futures: dict[str, ResponseFuture]


def ask(model: str, text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(model=model, messages=[LLMMessage("user", text)], request_id=text, **fields)


async def play(workload: Workload) -> Outcome:
    scripts = {f"r{i}": arrival.script for i, arrival in enumerate(workload.arrivals)}
    plan = FaultPlan(scripts, latency_s=workload.success_latency_s)
    gateway = FaultGateway(configs(workload), FakeLLMApi(plan))
    futures: dict[str, ResponseFuture] = {}

    async def cancel_later(fut: ResponseFuture, delay: float) -> None:
        await anyio.sleep(delay)
        fut.cancel()

    async with gateway:
        # Each SDK client detects the platform in a worker thread on its first request; a
        # virtual clock jumps while a thread works: no deadline may be pending meanwhile.
        for model_id in MODELS:
            await gateway.request(ask(model_id, f"warm-{model_id}"))
        # Virtual time makes this guard free: a hang jumps the clock to it and fails the example.
        with anyio.fail_after(100_000):
            async with anyio.create_task_group() as tg:
                for i, arrival in enumerate(workload.arrivals):
                    await anyio.sleep(arrival.gap_s)
                    request = ask(
                        arrival.model,
                        f"r{i}",
                        priority=arrival.priority,
                        timeout_s=arrival.timeout_s,
                    )
                    futures[request.request_id] = fut = gateway.submit_nowait(request)
                    if arrival.cancel_after_s is not None:
                        tg.start_soon(cancel_later, fut, arrival.cancel_after_s)
            await gateway.shutdown(timeout=workload.shutdown_timeout_s)
    return Outcome(gateway, plan, futures)


ENDED_ELSEWHERE = (RequestCancelledError, RequestTimeoutError, GatewayClosedError)
"""Errors that end a request whatever its provider calls did."""


def check(workload: Workload, outcome: Outcome) -> None:
    gateway, futures = outcome.gateway, outcome.futures
    model_of = {f"model-{m}": m for m in MODELS}
    calls_by_key = outcome.plan.calls_by_key()
    arrivals = {f"r{i}": a for i, a in enumerate(workload.arrivals)}

    # Every request resolved exactly once; nothing is left anywhere.
    total = gateway.get_stats().total
    assert total.completed + total.failed + total.cancelled == len(futures) + len(MODELS)
    assert (total.queued, total.in_flight, total.retrying) == (0, 0, 0)
    for model_id, provider in gateway.providers.items():
        assert provider.peak <= workload.models[model_id].max_concurrency
    if any(m.cooldowns for m in gateway.get_stats().models.values()):
        event("a model cooled down")

    for request_id, fut in futures.items():
        arrival = arrivals[request_id]
        origin = workload.models[arrival.model]
        assert fut.done()
        assert gateway.resolutions[request_id] == 1
        calls: list[FaultCall] = calls_by_key.get(request_id, [])
        attempts = gateway.attempts.get(request_id, [])
        error = fut.exception()
        assert fut._entry is not None
        failures = fut._entry.failures

        # Exactly one HTTP call per gateway attempt, on the same model (SDK retries are off);
        # every attempt that ended with an error is one of the request's failures.
        assert [model_of[c.model or ""] for c in calls] == [a.model_id for a in attempts]
        outcomes = [a.outcome for a in attempts]
        assert "pending" not in outcomes
        if isinstance(error, GatewayClosedError | RequestCancelledError | RequestTimeoutError):
            # An abort, cancel or deadline that lands in the same instant as the last
            # attempt's error wins: the request is already resolved when that error comes
            # back, and it is not recorded.
            assert outcomes.count("error") - len(failures) in (0, 1)
        else:
            assert outcomes.count("error") == len(failures)
        if error is None:
            assert outcomes[-1] == "ok" and outcomes.count("ok") == 1
        else:
            assert outcomes.count("ok") <= 1
            assert outcomes.count("ok") == 0 or isinstance(error, ENDED_ELSEWHERE)

        # The attempt budget holds, per model (a fallback brings a fresh one).
        per_model: dict[str, int] = defaultdict(int)
        for attempt in attempts:
            per_model[attempt.model_id] += 1
        for model_id, n in per_model.items():
            assert n <= workload.models[model_id].retry.max_attempts
        assert set(per_model) <= {arrival.model, *origin.fallbacks}

        # No retry on a model before the provider's retry-after (capped: beyond the cap the
        # request leaves the model instead).
        for before, after in pairwise(calls):
            assert before.fault is not None and before.fault.kind != "ok"
            retry_after = before.fault.retry_after_s or 0.0
            if before.model == after.model:
                assert retry_after <= MAX_RETRY_AFTER_S
                assert before.ended is not None
                assert after.started - before.ended >= retry_after - EPS

        # A non-retryable error is the request's last call, and surfaces as itself.
        for i, (call, attempt) in enumerate(zip(calls, attempts, strict=True)):
            if call.fault is None or retryable(call.fault) or attempt.outcome != "error":
                continue
            assert i == len(calls) - 1
            if not isinstance(error, ENDED_ELSEWHERE):
                assert type(error) is provider_error_type(call.fault)
                assert isinstance(error, ProviderError)
                assert error.status_code == (
                    200 if call.fault.kind == "malformed" else call.fault.status
                )
                assert "scripted fault" not in str(error)  # never the provider's own text

        # A fallback fires only when the first model's retryable attempts are used up, or
        # when waiting there would pass the request's deadline (a retry-after beyond the cap,
        # a backoff or cooldown longer than the time left).
        on_origin = [c for c in calls if model_of[c.model or ""] == arrival.model]
        if len(on_origin) < len(calls):
            assert all(c.fault is not None and retryable(c.fault) for c in on_origin)
            assert (
                len(on_origin) == origin.retry.max_attempts
                or arrival.timeout_s is not None
                or any(
                    (c.fault.retry_after_s or 0) > MAX_RETRY_AFTER_S for c in on_origin if c.fault
                )
            )

        # How it ended.
        event(f"outcome: {'ok' if error is None else type(error).__name__}")
        if len(on_origin) < len(calls):
            event("fell back")
        if len({c.model for c in calls}) == 1 and len(calls) > 1:
            event("retried on one model")
        if error is None:
            response = fut.result()
            assert response.request_id == request_id
            assert response.content == fake_answer(request_id)
            assert response.model == model_of[calls[-1].model or ""]  # who answered
            assert calls[-1].fault is None
        elif isinstance(error, GatewayClosedError):
            assert workload.shutdown_timeout_s is not None  # only a timed shutdown aborts
        elif isinstance(error, RetriesExhaustedError):
            last = calls[-1].fault
            assert last is not None and retryable(last)
            assert f"failed after {len(failures)} attempt{'s' if len(failures) > 1 else ''}" in str(
                error
            )
            assert error.attempts == failures
            # Exhausting the first model's attempts moves the request on, even while the
            # gateway shuts down gracefully (the fallback model keeps running for it).
            if origin.fallbacks:
                assert len(on_origin) < len(calls)
        elif not isinstance(error, ENDED_ELSEWHERE):
            last = calls[-1].fault
            assert last is not None and not retryable(last)

    # A 429 with a retry-after pauses its whole model, for at most max_retry_after_s: no call
    # starts there until that has passed.
    all_calls = outcome.plan.calls
    by_request_index: dict[str, int] = defaultdict(int)
    for call in all_calls:
        index = by_request_index[call.key]
        by_request_index[call.key] += 1
        fault = call.fault
        if fault is None or fault.kind != "status" or fault.status != 429:
            continue
        pause = fault.retry_after_s and min(fault.retry_after_s, MAX_RETRY_AFTER_S)
        attempts = gateway.attempts.get(call.key, [])
        if not pause or call.ended is None or attempts[index].outcome != "error":
            continue
        for later in all_calls:
            if later.model == call.model and later.started > call.ended + EPS:
                event("a call after a 429 pause")
                assert later.started >= call.ended + pause - EPS


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=200)
@given(workload=workloads())
def test_resilience_properties_through_the_real_adapters(backend: str, workload: Workload) -> None:
    outcome: list[Outcome] = []

    async def main() -> None:
        outcome.append(await play(workload))

    run(backend, main)
    check(workload, outcome[0])
