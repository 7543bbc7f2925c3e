"""The per-request path, made cheaper without changing what it does (issue 11).

- The value types built for every request check their fields in one pass over the common
  values, and run each field's own check only when that pass fails: the pass must never accept
  what the checks refuse, and every error must stay the one the field's check gives.
- A lane hands each attempt to an idle attempt task instead of starting a task per attempt;
  after a burst of retries (whose backoffs hold tasks), no more than ``max_concurrency`` stay.
- While a saturated lane gathers freed slots into a batch, a freed slot wakes its dispatcher
  only when the batch can leave: every case that let it leave before still does, at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from unittest import mock

import anyio
import pytest

from llm_gateway import (
    CooldownPolicy,
    Gateway,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ProviderError,
    RequestCancelledError,
    RequestPriority,
    RequestTimeoutError,
    RetryPolicy,
    ToolCall,
    Usage,
)
from llm_gateway import _models as models
from llm_gateway.providers import Provider

from ._support import RecordingGateway, ask, mock_model


class Text(str):
    """A str subclass: valid text, which the one-pass test leaves to the field's check."""


class Count(int):
    """An int subclass."""


TEXTS: list[Any] = ["", "x", "é", "\ud800", "a\udfffb", Text("x"), 1, None, b"x", True, ["x"]]
NUMBERS: list[Any] = [0, 1, 2, 64, 0.5, 1.0, 2.5, -1, -0.0, math.nan, math.inf, -math.inf]
NUMBERS += [True, False, Count(3), "1", None, 10**30, [1]]
MESSAGE = LLMMessage("user", "hello")
CALL = ToolCall("c1", "f", {"a": 1})


def outcome(build: Callable[[], Any]) -> tuple[Any, ...]:
    """What building gives: the value, or the exception's class and message."""
    try:
        return ("ok", build())
    except Exception as exc:
        return ("error", type(exc), str(exc))


def same_with_and_without_the_fast_pass(name: str, build: Callable[[], Any]) -> None:
    fast = outcome(build)
    with mock.patch.object(models, name, return_value=False):  # every field's check runs
        checked = outcome(build)
    assert fast == checked


def with_one_odd_field(
    valid: dict[str, list[Any]], odd: list[Any], name: str, required: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Keyword arguments for each value of ``odd`` in field ``name``, each beside a few mixes
    of valid values in the other fields (the required ones always, the others or their
    defaults): every odd value is tried, the mixes are drawn with a fixed seed."""
    draw = random.Random(name)
    cases = []
    for value in odd:
        for _ in range(8):
            fields = {
                field: draw.choice(values)
                for field, values in valid.items()
                if field in required or draw.random() < 0.5
            }
            fields[name] = value
            cases.append(fields)
    return cases


IDS = ["r1", "", "é"]
SECONDS = [0.5, 1, 30.0, None]
REQUEST_REQUIRED = ("model", "messages", "request_id")
REQUEST_VALID: dict[str, list[Any]] = {
    "model": ["m", "é"],
    "messages": [[MESSAGE], (MESSAGE, MESSAGE)],
    "tools": [(), [LLMTool("t")]],
    "request_id": ["r1", "é"],
    "priority": [*RequestPriority, "high", 1],
    "temperature": [0, 0.5, 2],
    "max_tokens": [None, 1, 64],
    "agent_id": [*IDS, None],
    "trace_id": [*IDS, None],
    "timeout_s": SECONDS,
    "stop": [(), ["a"]],
    "top_p": [None, 0.5, 1],
    "seed": [None, 0, 7],
    "tool_choice": [None, "auto"],
    "response_format": [None, {"type": "object"}],
    "first_token_timeout_s": SECONDS,
}
REQUEST_ODD: dict[str, list[Any]] = {
    "model": TEXTS,
    "messages": [[], (), [1], "x", None, [MESSAGE, None]],
    "tools": [None, [1], "t"],
    "request_id": TEXTS,
    "priority": [5, True, None, "x", 1.0],
    "temperature": NUMBERS,
    "max_tokens": NUMBERS,
    "agent_id": TEXTS,
    "trace_id": TEXTS,
    "timeout_s": NUMBERS,
    "stop": [[""], ["a"] * 5, "ab", None, [1], ["\ud800"]],
    "top_p": NUMBERS,
    "seed": NUMBERS,
    "tool_choice": ["t", "nope", *TEXTS],
    "response_format": [{}, {"a": math.nan}, [1]],
    "first_token_timeout_s": NUMBERS,
}


@pytest.mark.parametrize("name", sorted(REQUEST_ODD))
def test_a_request_is_checked_the_same_with_or_without_the_one_pass_test(name: str) -> None:
    cases = with_one_odd_field(REQUEST_VALID, REQUEST_ODD[name], name, REQUEST_REQUIRED)
    for fields in cases:
        same_with_and_without_the_fast_pass("_plain_request", partial(LLMRequest, **fields))


MESSAGE_VALID: dict[str, list[Any]] = {
    "role": ["user", "assistant", "system"],
    "content": ["", "x", "é"],
    "tool_call_id": [None, "c1"],
}
MESSAGE_ODD: dict[str, list[Any]] = {
    "role": ["tool", "robot", *TEXTS],
    "content": TEXTS,
    "tool_call_id": TEXTS,
    "tool_calls": [(), None, [CALL], [1], "c"],
}


@pytest.mark.parametrize("name", sorted(MESSAGE_ODD))
def test_a_message_is_checked_the_same_with_or_without_the_one_pass_test(name: str) -> None:
    cases = with_one_odd_field(MESSAGE_VALID, MESSAGE_ODD[name], name, required=("role",))
    for fields in cases:
        same_with_and_without_the_fast_pass("_plain_message", partial(LLMMessage, **fields))


COUNTS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]
USAGE_VALID = {count: [0, 1, 10**6] for count in COUNTS}
USAGE_ODD = dict.fromkeys(COUNTS, NUMBERS)


@pytest.mark.parametrize("name", sorted(USAGE_ODD))
def test_a_usage_is_checked_the_same_with_or_without_the_one_pass_test(name: str) -> None:
    cases = with_one_odd_field(USAGE_VALID, USAGE_ODD[name], name)
    for fields in cases:
        same_with_and_without_the_fast_pass("_plain_usage", partial(Usage, **fields))


MILLISECONDS = [0, 0.5, 12.25, 10**6]
RESPONSE_REQUIRED = ("request_id", "content", "model")
RESPONSE_VALID: dict[str, list[Any]] = {
    "request_id": ["r1", ""],
    "content": ["", "x", "é"],
    "model": ["m"],
    "tool_calls": [(), [CALL]],
    "usage": [Usage(1, 2)],
    "finish_reason": ["stop", None],
    "latency_ms": MILLISECONDS,
    "queue_wait_ms": MILLISECONDS,
    "provider_request_id": [None, "p1"],
    "rate_limit_headers": [{}, {"x-ratelimit-remaining-requests": "9"}],
    "parsed": [None, {"a": 1}],
    "cost_usd": [None, 0, 0.25],
    "batch_id": [None, "b1"],
}
RESPONSE_ODD: dict[str, list[Any]] = {
    "request_id": TEXTS,
    "content": TEXTS,
    "model": TEXTS,
    "tool_calls": [None, [1], "c"],
    "usage": [None, 3, (1, 2)],
    "finish_reason": TEXTS,
    "latency_ms": NUMBERS,
    "queue_wait_ms": NUMBERS,
    "provider_request_id": TEXTS,
    "rate_limit_headers": [{"a": 1}, {1: "a"}, {"a": "\ud800"}, {Text("a"): "b"}, None],
    "cost_usd": NUMBERS,
    "batch_id": TEXTS,
}


@pytest.mark.parametrize("name", sorted(RESPONSE_ODD))
def test_a_response_is_checked_the_same_with_or_without_the_one_pass_test(name: str) -> None:
    cases = with_one_odd_field(RESPONSE_VALID, RESPONSE_ODD[name], name, RESPONSE_REQUIRED)
    for fields in cases:
        same_with_and_without_the_fast_pass("_plain_response", partial(LLMResponse, **fields))


def test_a_fresh_request_id_is_a_uuid4_in_hex() -> None:
    import uuid

    ids = {ask().request_id for _ in range(200)}
    assert len(ids) == 200
    for request_id in ids:
        parsed = uuid.UUID(hex=request_id)
        assert parsed.hex == request_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.anyio
async def test_a_retry_burst_leaves_at_most_max_concurrency_idle_attempt_tasks() -> None:
    failed: set[str] = set()

    def fail_once(request: LLMRequest) -> BaseException | None:
        if request.request_id in failed:
            return None
        failed.add(request.request_id)
        return ProviderError("busy", status_code=503)

    retry = RetryPolicy(max_attempts=2, backoff_base_s=5.0, backoff_max_s=5.0)
    no_cooldown = CooldownPolicy(failure_threshold=100)
    config = mock_model(max_concurrency=2, retry=retry, cooldown=no_cooldown)
    requests = [ask(request_id=f"r{i}") for i in range(20)]
    async with RecordingGateway({"m": config}, latency=lambda r: 0.1, fail=fail_once) as gw:
        before = len(anyio.get_running_tasks())
        async with anyio.create_task_group() as tg:
            tg.start_soon(gw.batch, requests)
            await anyio.sleep(2)
            # Every request failed once and waits out its backoff in its attempt's task.
            assert gw.get_stats().total.retrying == 20
            assert len(anyio.get_running_tasks()) - before >= 20
        assert gw.get_stats().total.completed == 20
        assert len(anyio.get_running_tasks()) - before <= 2


@pytest.mark.anyio
async def test_a_gathering_batch_leaves_once_the_free_slots_hold_every_waiting_request() -> None:
    # Slots free at t=1 and t=2; two requests wait. At t=1 one slot is free for two waiting:
    # the lane gathers (a batch of 4 would be whole). At t=2 both fit: they leave at once,
    # not when the gathering's time limit (10 s) runs out.
    config = mock_model(batch_size=4, max_concurrency=4, batch_timeout_ms=10_000)
    latency = {"a": 1.0, "b": 2.0, "c": 30.0, "d": 30.0, "e": 1.0, "f": 1.0}
    async with RecordingGateway({"m": config}, latency=lambda r: latency[r.request_id]) as gw:
        futures = [gw.submit_nowait(ask(request_id=name)) for name in latency]
        answers = [await fut for fut in futures]
        waits = {r.request_id: r.queue_wait_ms for r in answers}
    assert waits["e"] == pytest.approx(2000, abs=1)
    assert waits["f"] == pytest.approx(2000, abs=1)


@pytest.mark.anyio
async def test_a_request_promoted_to_high_while_a_batch_gathers_takes_the_next_freed_slot() -> None:
    # Saturated from t=0; a slot frees at t=1 and the lane gathers. At t=2 the waiting NORMAL
    # requests age into HIGH (aging_s=2); the slot freed at t=3 goes to the first of them at
    # once, as a HIGH request at the head never waits for a batch to fill.
    config = mock_model(batch_size=3, max_concurrency=3, batch_timeout_ms=10_000, aging_s=2.0)
    latency = {"a": 1.0, "b": 3.0, "c": 30.0, "d": 1.0, "e": 1.0, "f": 1.0}
    async with RecordingGateway({"m": config}, latency=lambda r: latency[r.request_id]) as gw:
        futures = [gw.submit_nowait(ask(request_id=name)) for name in latency]
        answers = [await fut for fut in futures]
        waits = {r.request_id: r.queue_wait_ms for r in answers}
    assert waits["d"] == pytest.approx(3000, abs=1)


# -- attempts share their task's cancel scope; one watch per lane keeps the deadlines -------


@pytest.mark.anyio
async def test_a_request_in_flight_times_out_at_its_deadline_with_nobody_waiting() -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0) as gw:
        fut = gw.submit_nowait(ask(timeout_s=1.5))
        await anyio.sleep(1.6)
        assert fut.done()
        assert isinstance(fut.exception(), RequestTimeoutError)
        assert "timed out after 1.5 s (in flight)" in str(fut.exception())
        [call] = gw.calls
        assert call.cancelled
        assert call.ended == pytest.approx(1.5)


@pytest.mark.anyio
async def test_the_earliest_deadline_in_flight_is_kept_whatever_the_order() -> None:
    # A later request with an earlier deadline: the lane's watch wakes for it, not the first's.
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0) as gw:
        late = gw.submit_nowait(ask(timeout_s=8.0))
        await anyio.sleep(0.5)
        early = gw.submit_nowait(ask(timeout_s=1.0))
        await anyio.sleep(1.1)
        assert isinstance(early.exception(), RequestTimeoutError)
        assert not late.done()
        await anyio.sleep(7.0)
        assert isinstance(late.exception(), RequestTimeoutError)
        assert [c.ended for c in gw.calls] == [pytest.approx(8.0), pytest.approx(1.5)]


@pytest.mark.parametrize("stop", ["cancel", "deadline"])
@pytest.mark.anyio
async def test_an_attempt_stopped_early_leaves_its_task_fit_for_the_next(stop: str) -> None:
    # One slot, so one attempt task serves every request in turn.
    config = mock_model(max_concurrency=1)
    async with RecordingGateway({"m": config}, latency=lambda r: 2.0) as gw:
        first = gw.submit_nowait(ask(request_id="first", timeout_s=1.0))
        await anyio.sleep(0.5)
        if stop == "cancel":
            first.cancel()
        await anyio.sleep(1.0)
        assert isinstance(first.exception(), RequestCancelledError | RequestTimeoutError)
        for i in range(3):
            response = await gw.request(ask(request_id=f"next{i}"))
            assert response.latency_ms == pytest.approx(2000, abs=1)
        assert [c.cancelled for c in gw.calls] == [True, False, False, False]


class SwallowingProvider:
    """Answers after 1 s; answers ``"deaf"`` even when its call is cancelled (a provider that
    swallows cancellation, so its attempt ends normally under a cancelled scope)."""

    async def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            await anyio.sleep(1.0)
        except anyio.get_cancelled_exc_class():
            if request.request_id != "deaf":
                raise
        return LLMResponse(request_id=request.request_id, content="ok", model="m")


@pytest.mark.anyio
async def test_a_provider_that_swallows_a_cancel_does_not_stop_the_next_attempt() -> None:
    @asynccontextmanager
    async def provider(model_id: str, config: ModelConfig) -> AsyncGenerator[Provider]:
        yield SwallowingProvider()

    models = {"m": mock_model(max_concurrency=1)}
    async with Gateway(models=models, log_dir=None, provider_factory=provider) as gw:
        deaf = gw.submit_nowait(ask(request_id="deaf"))
        after = [gw.submit_nowait(ask(request_id=f"r{i}")) for i in range(3)]
        await anyio.sleep(0.5)
        deaf.cancel()
        assert [(await fut).content for fut in after] == ["ok", "ok", "ok"]
        assert deaf.cancelled()
        assert gw.get_stats().total.completed == 3


@pytest.mark.parametrize("stop", ["cancel", "deadline"])
@pytest.mark.anyio
async def test_a_shutdown_ends_when_its_last_request_in_flight_is_stopped(stop: str) -> None:
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 10.0) as gw:
        fut = gw.submit_nowait(ask(timeout_s=1.0))
        await anyio.sleep(0.5)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(gw.shutdown)
                if stop == "cancel":
                    await anyio.sleep(0.25)
                    fut.cancel()
        assert anyio.current_time() == pytest.approx(0.75 if stop == "cancel" else 1.0)
