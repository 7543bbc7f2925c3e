"""The Gateway's API on both backends, virtual time: request, submit, batch, cancel, shutdown."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest

from llm_gateway import (
    BatchError,
    ConfigError,
    Gateway,
    GatewayClosedError,
    LLMGateway,
    LLMMessage,
    LLMRequest,
    ModelProvider,
    ProviderError,
    QueueFullError,
    RequestCancelledError,
    RequestPriority,
    RequestTimeoutError,
    RequestValidationError,
    ResponseFuture,
    RetryPolicy,
    UnknownModelError,
)
from llm_gateway.testing import MockError, MockLLMGateway

from ._support import RecordingGateway, ask, mock_model

pytestmark = pytest.mark.anyio

HIGH, NORMAL, LOW = RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW


async def test_request_returns_the_providers_answer() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.5) as gw:
        request = ask(priority=HIGH, agent_id="agent-1")
        response = await gw.request(request)
    assert response.request_id == request.request_id
    assert response.content == f"answer to {request.request_id}"
    assert response.model == "m"
    assert response.latency_ms == pytest.approx(500, abs=1)
    assert response.queue_wait_ms == pytest.approx(0, abs=1)
    assert [c.request for c in gw.calls] == [request]


async def test_spec_name_llm_gateway_is_the_gateway() -> None:
    assert LLMGateway is Gateway


async def test_lone_high_request_on_idle_gateway_waits_for_no_timer() -> None:
    config = mock_model(batch_timeout_ms=100, low_max_wait_s=2.0)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.0) as gw:
        start = anyio.current_time()
        await gw.request(ask(priority=HIGH))
        assert anyio.current_time() - start == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize(("priority", "wait"), [(NORMAL, 0.1), (LOW, 2.0)])
async def test_lone_request_waiting_for_its_batch_leaves_at_its_priority_maximum_wait(
    priority: RequestPriority, wait: float
) -> None:
    config = mock_model(batch_fill="wait", batch_timeout_ms=100, low_max_wait_s=2.0)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.0) as gw:
        response = await gw.request(ask(priority=priority))
    assert response.queue_wait_ms == pytest.approx(wait * 1000, abs=1)


@pytest.mark.parametrize("priority", list(RequestPriority))
async def test_work_conserving_lone_request_on_an_idle_model_leaves_at_once(
    priority: RequestPriority,
) -> None:
    config = mock_model(batch_timeout_ms=100, low_max_wait_s=2.0)  # batch_fill="eager"
    async with RecordingGateway({"m": config}, latency=lambda r: 0.0) as gw:
        response = await gw.request(ask(priority=priority))
    assert response.queue_wait_ms == 0.0


async def test_work_conserving_requests_gather_into_batches_while_saturated() -> None:
    config = mock_model(batch_size=4, max_concurrency=4)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        futures = [gw.submit_nowait(ask(request_id=f"r{i}")) for i in range(4)]
        await anyio.sleep(0.1)  # the first four left at once; the model is saturated now
        futures += [gw.submit_nowait(ask(request_id=f"r{i}")) for i in range(4, 12)]
        for fut in futures:
            await fut
    assert [(b.at, len(b.taken)) for b in gw.batches] == [(0.0, 4), (1.0, 4), (2.0, 4)]
    assert gw.get_stats().models["m"].mean_batch_size == 4.0


async def test_full_batch_leaves_without_waiting_for_the_timer() -> None:
    config = mock_model(batch_fill="wait", batch_size=4, batch_timeout_ms=100)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.0) as gw:
        futures = [await gw.submit(ask()) for _ in range(4)]
        for fut in futures:
            assert (await fut).queue_wait_ms == pytest.approx(0, abs=1e-3)
    assert [len(b.taken) for b in gw.batches] == [4]


async def test_submit_returns_a_future_when_queued() -> None:
    async with RecordingGateway({"m": mock_model(batch_fill="wait")}, latency=lambda r: 1.0) as gw:
        fut = await gw.submit(ask(priority=LOW))
        assert isinstance(fut, ResponseFuture)
        assert not fut.done()
        assert gw.get_stats().models["m"].queued == 1
        with pytest.raises(RuntimeError, match="has not finished"):
            fut.result()
        response = await fut
        assert fut.done() and not fut.cancelled()
        assert fut.result() is response
        assert fut.exception() is None


async def test_cancel_before_dispatch_never_reaches_the_provider() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 1.0) as gw:
        fut = await gw.submit(ask(priority=LOW))
        assert fut.cancel()
        assert not fut.cancel()  # already done
        assert fut.cancelled()
        with pytest.raises(RequestCancelledError):
            await fut
        stats = gw.get_stats().models["m"]
        assert (stats.queued, stats.cancelled) == (0, 1)
    assert gw.calls == []


async def test_cancel_in_flight_cancels_the_provider_call() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0) as gw:
        fut = await gw.submit(ask(priority=HIGH))
        await anyio.sleep(1)
        assert len(gw.calls) == 1 and gw.calls[0].ended is None
        fut.cancel()
        with pytest.raises(RequestCancelledError):
            await fut
        await anyio.sleep(0.01)
        assert gw.calls[0].cancelled
        assert gw.calls[0].ended == pytest.approx(1.0 + gw.calls[0].started, abs=1e-3)
        stats = gw.get_stats().models["m"]
        assert (stats.in_flight, stats.cancelled, stats.completed) == (0, 1, 0)


async def test_cancelled_caller_cancels_its_queued_request() -> None:
    # max_concurrency=1 and a long call in flight: the second request stays queued.
    config = mock_model(max_concurrency=1)
    async with RecordingGateway({"m": config}, latency=lambda r: 10.0) as gw:
        blocker = await gw.submit(ask(priority=HIGH))
        with anyio.move_on_after(2):
            await gw.request(ask(priority=HIGH, request_id="waiting"))
        await blocker
    assert [c.request.request_id for c in gw.calls] == [blocker.request.request_id]
    assert gw.get_stats().models["m"].cancelled == 1


async def test_cancelled_caller_cancels_its_in_flight_request() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0) as gw:
        with anyio.move_on_after(3):
            await gw.request(ask(priority=HIGH))
        await anyio.sleep(0.01)  # virtual time: let the cancelled call unwind
        assert gw.calls[0].cancelled
        assert gw.calls[0].ended == pytest.approx(3.0, abs=1e-3)


async def test_awaiting_a_future_with_a_timeout_does_not_cancel_the_request() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 5.0) as gw:
        fut = await gw.submit(ask(priority=HIGH))
        with anyio.move_on_after(1):
            await fut
        assert not fut.done()
        response = await fut
        assert response.latency_ms == pytest.approx(5000, abs=1)


async def test_submit_nowait_raises_when_the_queue_is_full() -> None:
    config = mock_model(queue_capacity=2, max_concurrency=1)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        first = gw.submit_nowait(ask(priority=LOW))
        second = gw.submit_nowait(ask(priority=LOW))
        with pytest.raises(QueueFullError, match="queue_capacity"):
            gw.submit_nowait(ask(priority=LOW))
        second.cancel()  # frees a slot at once
        third = gw.submit_nowait(ask(priority=LOW))
        await first
        await third


async def test_submit_waits_for_room_in_a_full_queue() -> None:
    config = mock_model(batch_fill="wait", queue_capacity=1, max_concurrency=1, low_max_wait_s=0.5)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        gw.submit_nowait(ask(priority=LOW))
        start = anyio.current_time()
        fut = await gw.submit(ask(priority=LOW))  # room comes when the first is dispatched
        assert anyio.current_time() - start == pytest.approx(0.5, abs=1e-3)
        await fut


async def test_timeout_while_queued_fails_without_reaching_the_provider() -> None:
    config = mock_model(max_concurrency=1)
    async with RecordingGateway({"m": config}, latency=lambda r: 10.0) as gw:
        await gw.submit(ask(priority=HIGH))
        with pytest.raises(RequestTimeoutError, match="in the queue"):
            await gw.request(ask(priority=HIGH, timeout_s=2, request_id="late"))
        assert anyio.current_time() == pytest.approx(2.0, abs=1e-3)
        stats = gw.get_stats().models["m"]
        assert (stats.failed, stats.queued) == (1, 0)
    assert "late" not in [c.request.request_id for c in gw.calls]


async def test_timeout_in_flight_cancels_the_provider_call() -> None:
    async with RecordingGateway({"m": mock_model(timeout_s=3)}, latency=lambda r: 10.0) as gw:
        fut = await gw.submit(ask(priority=HIGH))  # nobody awaits: the executor enforces it
        await anyio.sleep(5)
        assert isinstance(fut.exception(), RequestTimeoutError)
        assert gw.calls[0].cancelled
        assert gw.calls[0].ended == pytest.approx(3.0, abs=1e-3)


async def test_provider_error_reaches_only_its_caller() -> None:
    def fail(request: LLMRequest) -> BaseException | None:
        return ProviderError("boom", status_code=400) if request.request_id == "bad" else None

    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.1, fail=fail) as gw:
        bad = await gw.submit(ask(request_id="bad"))
        good = await gw.submit(ask(request_id="good"))
        with pytest.raises(ProviderError, match="boom"):
            await bad
        assert (await good).request_id == "good"
        stats = gw.get_stats().models["m"]
        assert (stats.completed, stats.failed) == (1, 1)


async def test_batch_returns_responses_in_input_order_across_models() -> None:
    models = {"a": mock_model(), "b": mock_model()}
    async with RecordingGateway(models, latency=lambda r: 0.1) as gw:
        requests = [ask("a" if i % 3 else "b", f"q{i}", priority=1 + i % 3) for i in range(12)]
        responses = await gw.batch(requests)
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert [r.model for r in responses] == [r.model for r in requests]
    for record in gw.batches:
        assert {f.request.model for f in record.taken} == {record.model_id}


async def test_batch_failure_lets_the_others_finish_and_reports_all() -> None:
    def fail(request: LLMRequest) -> BaseException | None:
        return ProviderError("nope", status_code=400) if request.request_id == "r1" else None

    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.1, fail=fail) as gw:
        requests = [ask(request_id=f"r{i}") for i in range(3)]
        with pytest.raises(BatchError, match="1 of 3 requests failed") as info:
            await gw.batch(requests)
        results = info.value.results
        assert [type(r).__name__ for r in results] == [
            "LLMResponse",
            "ProviderError",
            "LLMResponse",
        ]
        assert info.value.exceptions == [results[1]]
        mixed = await gw.batch(requests, return_exceptions=True)
        assert isinstance(mixed[1], ProviderError)
    assert len(gw.calls) == 6


async def test_batch_validates_every_request_before_queueing_any() -> None:
    async with RecordingGateway({"m": mock_model()}) as gw:
        with pytest.raises(UnknownModelError, match="'nope'"):
            await gw.batch([ask(), ask(model="nope")])
        assert gw.get_stats().total.queued == 0
    assert gw.calls == []


async def test_cancelled_batch_cancels_all_its_requests() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0) as gw:
        with anyio.move_on_after(1):
            await gw.batch([ask() for _ in range(5)])
        await anyio.sleep(0.01)  # virtual time: let the cancelled calls unwind
        assert gw.get_stats().models["m"].cancelled == 5
        assert all(c.cancelled for c in gw.calls)


async def test_unknown_model_is_a_clear_error_naming_the_choices() -> None:
    async with RecordingGateway({"fast": mock_model(), "smart": mock_model()}) as gw:
        with pytest.raises(UnknownModelError, match=r"'slow'.*\['fast', 'smart'\]"):
            await gw.request(ask(model="slow"))
        with pytest.raises(RequestValidationError, match="expected an LLMRequest"):
            gw.submit_nowait({"model": "fast"})  # type: ignore[arg-type]


async def test_model_provider_names_a_model_when_only_one_uses_it() -> None:
    models = {
        "haiku": mock_model(),
        "other": mock_model(),
    }
    async with MockLLMGateway(models=models) as gw:
        # Two models use `mock`: ambiguous, so it is an unknown model.
        with pytest.raises(UnknownModelError):
            await gw.request(
                LLMRequest(model=ModelProvider.MOCK, messages=[LLMMessage("user", "x")])
            )
    async with MockLLMGateway(models={"haiku": mock_model()}) as gw:
        response = await gw.request(
            LLMRequest(model=ModelProvider.MOCK, messages=[LLMMessage("user", "x")])
        )
        assert response.model == "haiku"


async def test_using_a_gateway_outside_its_block_is_a_clear_error() -> None:
    gw = MockLLMGateway()
    with pytest.raises(GatewayClosedError, match="not open"):
        await gw.request(ask("mock"))
    async with gw:
        await gw.request(ask("mock"))
    with pytest.raises(GatewayClosedError, match="closed"):
        await gw.request(ask("mock"))
    with pytest.raises(RuntimeError, match="opened once"):
        async with gw:
            pass


async def test_entering_twice_is_a_clear_error() -> None:
    async with MockLLMGateway() as gw:
        with pytest.raises(RuntimeError, match="already been entered"):
            async with gw:
                pass
        await gw.request(ask("mock"))  # the open gateway is unharmed


async def test_config_and_models_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        Gateway()
    with pytest.raises(ConfigError, match="exactly one"):
        Gateway({"models": {"m": {"provider": "mock", "model_name": "x"}}}, models={})


async def test_graceful_shutdown_finishes_every_accepted_request() -> None:
    config = mock_model(max_concurrency=2, low_max_wait_s=30.0)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        futures = [await gw.submit(ask(priority=LOW)) for _ in range(5)]
        start = anyio.current_time()
        await gw.shutdown()
        # Queued LOW requests leave at once (no 30 s wait), two at a time.
        assert anyio.current_time() - start == pytest.approx(3.0, abs=1e-3)
        assert all(f.done() and f.exception() is None for f in futures)
        with pytest.raises(GatewayClosedError, match="shutting down"):
            await gw.submit(ask())
        await gw.shutdown()  # idempotent
    stats = gw.get_stats().total
    assert (stats.completed, stats.queued, stats.in_flight) == (5, 0, 0)


async def test_shutdown_timeout_fails_the_rest_clearly() -> None:
    config = mock_model(max_concurrency=1)
    async with RecordingGateway({"m": config}, latency=lambda r: 10.0) as gw:
        futures = [await gw.submit(ask(priority=HIGH)) for _ in range(3)]
        await gw.shutdown(timeout=15)
        assert anyio.current_time() == pytest.approx(15.0, abs=1e-3)
    assert futures[0].exception() is None
    for fut in futures[1:]:
        with pytest.raises(GatewayClosedError, match=r"aborted: shutdown\(timeout=15\)"):
            fut.result()
    assert [c.cancelled for c in gw.calls] == [False, True]  # the third never started


async def test_leaving_the_block_with_an_error_aborts_pending_requests() -> None:
    gw = RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0)
    futures: list[ResponseFuture] = []
    with pytest.raises(ZeroDivisionError):
        async with gw:
            futures.append(await gw.submit(ask(priority=HIGH)))
            futures.append(await gw.submit(ask(priority=LOW)))
            await anyio.sleep(1)
            1 / 0  # noqa: B018
    for fut in futures:
        assert isinstance(fut.exception(), GatewayClosedError)


async def test_outer_cancellation_aborts_pending_requests_and_leaves_no_task() -> None:
    gw = RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0)
    futures: list[ResponseFuture] = []
    with anyio.move_on_after(2):
        async with gw:
            futures.append(await gw.submit(ask(priority=HIGH)))
            futures.append(await gw.submit(ask(priority=LOW)))
            await anyio.sleep_forever()
    assert anyio.current_time() == pytest.approx(2.0, abs=1e-3)
    for fut in futures:
        assert isinstance(fut.exception(), GatewayClosedError)


async def test_stats_report_counts_batches_latency_and_tokens() -> None:
    config = mock_model(batch_fill="wait", batch_size=2, max_concurrency=4)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.25) as gw:
        await gw.batch([ask() for _ in range(4)])
        await anyio.sleep(1)
        stats = gw.get_stats()
    model = stats.models["m"]
    assert (model.completed, model.batches, model.mean_batch_size) == (4, 2, 2.0)
    assert (model.input_tokens, model.output_tokens) == (12, 20)
    assert model.latency_ms.p50 == pytest.approx(250, abs=1)
    assert model.latency_ms.p99 == pytest.approx(250, abs=1)
    assert stats.total == model
    assert stats.uptime_s == pytest.approx(1.25, abs=1e-3)
    as_dict = stats.to_dict()
    assert as_dict["models"]["m"]["latency_ms"]["p50"] == model.latency_ms.p50


async def test_stats_before_any_request_have_no_percentiles() -> None:
    async with MockLLMGateway() as gw:
        stats = gw.get_stats().models["mock"]
    assert stats.completed == 0 and stats.mean_batch_size == 0.0
    assert math.isnan(stats.latency_ms.p50)


async def test_mock_gateway_is_deterministic_and_records_requests() -> None:
    async with MockLLMGateway() as gw:
        first = await gw.request(ask("mock", "what is 2+2?", priority=HIGH))
        second = await gw.request(ask("mock", "what is 2+2?", priority=LOW, agent_id="x"))
        other = await gw.request(ask("mock", "something else"))
    assert first.content == second.content != other.content
    assert first.content.startswith("Mock answer ")
    assert [r.messages[0].content for r in gw.received] == [
        "what is 2+2?",
        "what is 2+2?",
        "something else",
    ]


async def test_mock_gateway_fixtures_latency_and_scripted_failures() -> None:
    fixtures = {
        "fixtures": [
            {"match": {"last_user_regex": "weather"}, "content": "Sunny.", "latency_s": 2.0},
            {"match": {"last_user_message": "fail"}, "error": {"status_code": 429}},
        ]
    }
    no_retries = {"mock": mock_model(retry=RetryPolicy(max_attempts=1))}
    async with MockLLMGateway(models=no_retries, fixtures=fixtures, latency_s=0.5) as gw:
        start = anyio.current_time()
        response = await gw.request(ask("mock", "the weather in Oslo?", priority=HIGH))
        assert response.content == "Sunny."
        assert anyio.current_time() - start == pytest.approx(2.0, abs=1e-3)
        with pytest.raises(ProviderError) as info:
            await gw.request(ask("mock", "fail"))
        assert info.value.status_code == 429
        gw.fail_next(error=MockError(status_code=529, message="overloaded"))
        with pytest.raises(ProviderError, match="overloaded"):
            await gw.request(ask("mock", "anything"))
        assert (await gw.request(ask("mock", "anything"))).content.startswith("Mock answer")


async def test_mock_gateway_scripted_overload_is_retried_by_the_gateway() -> None:
    async with MockLLMGateway() as gw:
        gw.fail_next(2, error=MockError(status_code=529))
        response = await gw.request(ask("mock", "anything"))
        assert response.content.startswith("Mock answer")
        assert gw.get_stats().models["mock"].retries == 2
    assert len(gw.received) == 3


async def test_mock_gateway_loads_the_sample_fixtures_file() -> None:
    sample = Path(__file__).parent / "fixtures" / "sample_responses.json"
    models = {"fast": mock_model(), "smart": mock_model()}
    async with MockLLMGateway(models=models, fixtures=sample) as gw:
        weather = await gw.request(ask("fast", "What's the WEATHER like?"))
        assert weather.finish_reason == "tool_calls"
        assert weather.tool_calls[0].arguments == {"city": "Oslo"}
        assert weather.usage.input_tokens == 42
        paris = await gw.request(ask("smart", "What is the capital of France?", priority=HIGH))
        assert paris.content == "Paris."
        assert paris.latency_ms == pytest.approx(250, abs=1)
        with pytest.raises(ProviderError) as info:
            await gw.request(ask("smart", "overload me"))
        assert (info.value.status_code, info.value.retry_after_s) == (529, 2.0)
        # The same regex on another model does not match: the deterministic default answers.
        assert (await gw.request(ask("fast", "overload me"))).content.startswith("Mock answer")


@pytest.mark.parametrize("bad", [math.nan, -1.0, True, "1"])
async def test_shutdown_refuses_a_timeout_that_is_not_seconds(bad: object) -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 1.0) as gw:
        fut = await gw.submit(ask())
        with pytest.raises(ValueError, match=r"shutdown\(timeout=.*seconds >= 0"):
            await gw.shutdown(timeout=bad)  # type: ignore[arg-type]
        # Nothing was aborted: the request is answered.
        assert (await fut).request_id == fut.request.request_id


async def test_aclose_finishes_every_accepted_request_then_refuses_new_ones() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 1.0) as gw:
        futures = [await gw.submit(ask()) for _ in range(3)]
        await gw.aclose()
        assert all(f.done() and f.exception() is None for f in futures)
        with pytest.raises(GatewayClosedError):
            await gw.submit(ask())


async def test_an_unknown_model_suggests_the_nearest_configured_one() -> None:
    async with RecordingGateway({"fast": mock_model(), "smart": mock_model()}) as gw:
        with pytest.raises(UnknownModelError, match=r"'fsat'.*did you mean 'fast'\?"):
            await gw.request(ask(model="fsat"))


async def test_saturated_model_gathers_slots_freed_one_at_a_time_into_batches() -> None:
    # Answers trickle in 10 ms apart, so slots free one at a time; with a backlog, the lane holds
    # them (at most one NORMAL max wait, 100 ms) until a whole batch of 5 can leave.
    config = mock_model(batch_size=5, max_concurrency=10, batch_timeout_ms=100)
    latency = {f"r{i}": 1.0 + (i % 10) * 0.01 for i in range(60)}
    async with RecordingGateway({"m": config}, latency=lambda r: latency[r.request_id]) as gw:
        futures = [gw.submit_nowait(ask(request_id=f"r{i}")) for i in range(60)]
        for fut in futures:
            await fut
    sizes = [len(b.taken) for b in gw.batches]
    assert sizes[:2] == [5, 5]  # the idle model takes as much as it can at once
    assert all(size == 5 for size in sizes)
    assert gw.get_stats().models["m"].mean_batch_size == 5.0
    # Held at most 100 ms: no slot idles longer than the NORMAL max wait.
    for batch in gw.batches[2:]:
        assert batch.free <= 5


async def test_a_high_request_at_the_head_takes_a_freed_slot_at_once() -> None:
    config = mock_model(batch_size=5, max_concurrency=2, batch_timeout_ms=100)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        for i in range(6):
            gw.submit_nowait(ask(request_id=f"n{i}"))
        await anyio.sleep(0.5)  # saturated, with a backlog of NORMAL work
        high = await gw.submit(ask(request_id="high", priority=HIGH))
        response = await high
    assert response.queue_wait_ms == pytest.approx(500, abs=1)  # the first slot, at t=1


async def test_a_submit_cancelled_as_it_starts_takes_no_queue_slot() -> None:
    config = mock_model(queue_capacity=2, max_concurrency=1)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        for _ in range(5):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await gw.submit(ask())
            assert scope.cancelled_caught
        assert gw.get_stats().total.queued == 0
        # Both slots are still there.
        futures = [gw.submit_nowait(ask()), gw.submit_nowait(ask())]
        for fut in futures:
            await fut
