"""Retries, backoff, cooldowns and fallbacks, on both backends and virtual time."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from llm_gateway import (
    CooldownPolicy,
    GatewayClosedError,
    LLMRequest,
    ProviderError,
    RequestPriority,
    RequestTimeoutError,
    RetriesExhaustedError,
    RetryPolicy,
)
from llm_gateway._retry import Decision, decide, is_retryable, jitter

from ._support import RecordingGateway, ask, mock_model

pytestmark = pytest.mark.anyio

HIGH = RequestPriority.HIGH


def failing(
    plan: dict[str, list[ProviderError]],
) -> tuple[dict[str, int], Callable[[LLMRequest], BaseException | None]]:
    """A `fail` hook: request id -> the errors its first attempts raise."""
    attempts: dict[str, int] = defaultdict(int)

    def fail(request: LLMRequest) -> BaseException | None:
        attempts[request.request_id] += 1
        errors = plan.get(request.request_id, [])
        n = attempts[request.request_id]
        return errors[n - 1] if n <= len(errors) else None

    return attempts, fail


def http(
    status: int, retry_after: float | None = None, headers: dict[str, str] | None = None
) -> ProviderError:
    return ProviderError(
        f"HTTP {status}", status_code=status, retry_after_s=retry_after, headers=headers
    )


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (http(429), True),
        (http(529), True),
        (http(500), True),
        (http(503), True),
        (http(408), True),
        (http(400), False),
        (http(401), False),
        (http(404), False),
        (http(422), False),
        (http(400, headers={"x-should-retry": "true"}), True),
        (http(503, headers={"x-should-retry": "false"}), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_is_retryable(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error, RetryPolicy()) is retryable


def test_backoff_is_full_jitter_capped_and_never_before_retry_after() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_s=1.0, backoff_max_s=8.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)]:
        for fraction in (0.0, 0.5, 0.999):
            decision = decide(
                http(500), attempt, policy, time_left_s=100, has_fallback=False, jitter=fraction
            )
            assert decision == Decision("retry", delay_s=fraction * ceiling)
    after = decide(http(429, 5.0), 1, policy, time_left_s=100, has_fallback=False, jitter=0.1)
    assert after.delay_s == 5.0
    assert 0 <= jitter("r1", 1) < 1
    assert jitter("r1", 1) == jitter("r1", 1) != jitter("r2", 1)


def test_a_retry_after_beyond_the_cap_fails_fast() -> None:
    policy = RetryPolicy(max_retry_after_s=30.0)
    decision = decide(http(429, 3600.0), 1, policy, time_left_s=1e9, has_fallback=False, jitter=0)
    assert decision.action == "fail"
    assert "3600 s" in decision.reason and "max_retry_after_s=30" in decision.reason


async def test_retry_waits_for_backoff_without_holding_capacity() -> None:
    attempts, fail = failing({"flaky": [http(529, retry_after=2.0)]})
    config = mock_model(max_concurrency=1, retry=RetryPolicy(backoff_base_s=0.1))
    async with RecordingGateway({"m": config}, latency=lambda r: 0.5, fail=fail) as gw:
        flaky = await gw.submit(ask(request_id="flaky", priority=HIGH))
        await anyio.sleep(0.6)  # flaky failed at 0.5 and now waits out retry-after
        stats = gw.get_stats().models["m"]
        assert (stats.in_flight, stats.retrying, stats.retries) == (0, 1, 1)
        other = await gw.request(ask(request_id="other", priority=HIGH))  # gets the only slot
        assert other.latency_ms == pytest.approx(500, abs=1)
        response = await flaky
    assert attempts["flaky"] == 2
    starts = [c.started for c in gw.calls if c.request.request_id == "flaky"]
    assert starts == [pytest.approx(0.0, abs=1e-3), pytest.approx(2.5, abs=1e-3)]
    # Submission to the answering attempt's dispatch: the caller waited queue_wait + latency.
    assert response.queue_wait_ms == pytest.approx(2500, abs=1)
    assert response.latency_ms == pytest.approx(500, abs=1)


async def test_exhausted_retries_say_how_many_attempts_and_why() -> None:
    plan = {"r": [http(500), http(529), http(503)]}
    attempts, fail = failing(plan)
    config = mock_model(retry=RetryPolicy(max_attempts=3, backoff_base_s=0.1))
    async with RecordingGateway({"m": config}, latency=lambda r: 0.1, fail=fail) as gw:
        with pytest.raises(RetriesExhaustedError) as info:
            await gw.request(ask(request_id="r", priority=HIGH))
    assert attempts["r"] == 3
    message = str(info.value)
    assert "failed after 3 attempts (max_attempts=3 reached)" in message
    assert "attempt 1: HTTP 500" in message and "attempt 3: HTTP 503" in message
    assert info.value.status_code == 503
    assert info.value.__cause__ is plan["r"][-1]
    assert info.value.attempts == plan["r"]


async def test_non_retryable_error_fails_on_the_first_attempt_as_itself() -> None:
    error = http(401)
    attempts, fail = failing({"r": [error]})
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.1, fail=fail) as gw:
        with pytest.raises(ProviderError) as info:
            await gw.request(ask(request_id="r"))
    assert info.value is error
    assert attempts["r"] == 1


async def test_retry_that_would_pass_the_deadline_fails_now() -> None:
    attempts, fail = failing({"r": [http(429, retry_after=10.0)]})
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.1, fail=fail) as gw:
        with pytest.raises(RetriesExhaustedError, match="would pass the request's deadline"):
            await gw.request(ask(request_id="r", timeout_s=5.0, priority=HIGH))
        assert anyio.current_time() == pytest.approx(0.1, abs=1e-3)  # no pointless wait
    assert attempts["r"] == 1


async def test_repeated_failures_start_a_cooldown_queued_callers_wait() -> None:
    plan = {f"bad{i}": [http(500)] for i in range(3)}
    _, fail = failing(plan)
    config = mock_model(
        max_concurrency=3,
        cooldown=CooldownPolicy(failure_threshold=3, cooldown_s=10.0),
        retry=RetryPolicy(backoff_base_s=0.01),
    )
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0, fail=fail) as gw:
        bad = [await gw.submit(ask(request_id=f"bad{i}", priority=HIGH)) for i in range(3)]
        await anyio.sleep(1.5)  # all three failed at 1.0: the model cools down until 11.0
        stats = gw.get_stats().models["m"]
        assert stats.cooldowns == 1
        assert stats.cooldown_remaining_s == pytest.approx(9.5, abs=1e-3)
        waiting = await gw.submit(ask(request_id="waiting", priority=HIGH))
        response = await waiting
        # At 11.0 the three retries, at the front of the line, take the three slots; the
        # waiting caller goes next, at 12.0.
        assert anyio.current_time() == pytest.approx(13.0, abs=1e-3)
        assert response.queue_wait_ms == pytest.approx(10500, abs=1)
        for fut in bad:
            await fut  # their retries, after the cooldown, succeed
    starts = sorted(c.started for c in gw.calls if c.request.request_id != "waiting")
    assert starts[3:] == [pytest.approx(11.0, abs=1e-3)] * 3


async def test_a_429_with_retry_after_pauses_the_whole_model() -> None:
    _, fail = failing({"limited": [http(429, retry_after=4.0)]})
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 1.0, fail=fail) as gw:
        limited = await gw.submit(ask(request_id="limited", priority=HIGH))
        await anyio.sleep(1.5)
        other = await gw.request(ask(request_id="other", priority=HIGH))
        await limited
    calls = {c.request.request_id: c.started for c in gw.calls if c.request.request_id == "other"}
    assert calls["other"] == pytest.approx(5.0, abs=1e-3)  # waited out the retry-after
    assert other.queue_wait_ms == pytest.approx(3500, abs=1)


async def test_fallback_after_exhausting_retries_answers_from_the_other_model() -> None:
    _, fail = failing({"r": [http(529), http(529)]})
    models = {
        "primary": mock_model(fallbacks=("backup",), retry=RetryPolicy(max_attempts=2)),
        "backup": mock_model(),
    }
    async with RecordingGateway(models, latency=lambda r: 0.1, fail=fail) as gw:
        response = await gw.request(ask("primary", request_id="r", priority=HIGH))
        stats = gw.get_stats()
    assert response.model == "backup"
    assert [c.model_id for c in gw.calls] == ["primary", "primary", "backup"]
    assert stats.models["primary"].fallbacks == 1
    assert stats.total.completed == 1


async def test_no_fallback_for_non_retryable_errors() -> None:
    _, fail = failing({"r": [http(400)]})
    models = {"primary": mock_model(fallbacks=("backup",)), "backup": mock_model()}
    async with RecordingGateway(models, latency=lambda r: 0.1, fail=fail) as gw:
        with pytest.raises(ProviderError):
            await gw.request(ask("primary", request_id="r"))
    assert [c.model_id for c in gw.calls] == ["primary"]


async def test_cooldown_past_the_deadline_sends_queued_requests_to_the_fallback() -> None:
    _, fail = failing({"limited": [http(429, retry_after=30.0)]})
    models = {
        "primary": mock_model(fallbacks=("backup",), retry=RetryPolicy(max_retry_after_s=60)),
        "backup": mock_model(),
    }
    async with RecordingGateway(models, latency=lambda r: 1.0, fail=fail) as gw:
        limited = await gw.submit(ask("primary", request_id="limited", priority=HIGH))
        await anyio.sleep(1.5)  # primary cools down until 31.0
        urgent = await gw.request(ask("primary", request_id="urgent", timeout_s=5, priority=HIGH))
        patient = await gw.request(ask("primary", request_id="patient", priority=HIGH))
        assert (await limited).model == "primary"
    assert urgent.model == "backup"
    assert anyio.current_time() >= 31.0
    assert patient.model == "primary"  # no deadline before the cooldown ends: it waited


async def test_graceful_shutdown_finishes_requests_waiting_to_retry() -> None:
    _, fail = failing({"r": [http(503, retry_after=3.0)]})
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.5, fail=fail) as gw:
        fut = await gw.submit(ask(request_id="r", priority=HIGH))
        await anyio.sleep(1)
    assert (await fut).request_id == "r"
    assert anyio.current_time() == pytest.approx(4.0, abs=1e-3)


async def test_shutdown_timeout_fails_requests_waiting_to_retry() -> None:
    attempts, fail = failing({"r": [http(503, retry_after=30.0)]})
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.5, fail=fail) as gw:
        fut = await gw.submit(ask(request_id="r", priority=HIGH))
        await anyio.sleep(1)
        await gw.shutdown(timeout=2)
    with pytest.raises(GatewayClosedError, match="aborted"):
        fut.result()
    assert anyio.current_time() == pytest.approx(3.0, abs=1e-3)
    assert attempts["r"] == 1


async def test_deadline_during_cooldown_without_fallback_is_a_timeout() -> None:
    _, fail = failing({"limited": [http(429, retry_after=20.0)]})
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 1.0, fail=fail) as gw:
        await gw.submit(ask(request_id="limited", priority=HIGH))
        await anyio.sleep(1.5)
        with pytest.raises(RequestTimeoutError, match="in the queue"):
            await gw.request(ask(request_id="late", timeout_s=3, priority=HIGH))
        await gw.shutdown(timeout=0)


async def test_every_failed_attempt_is_logged_with_its_decision(tmp_path: Path) -> None:
    _, fail = failing({"r": [http(529, retry_after=1.0), http(500), http(400)]})
    gateway = RecordingGateway(
        {"m": mock_model()}, latency=lambda r: 0.1, fail=fail, log_dir=str(tmp_path)
    )
    async with gateway as gw:
        with pytest.raises(ProviderError):
            await gw.request(ask(request_id="r", priority=HIGH, agent_id="a1"))
    logs = tmp_path / "gateway"
    lines = [json.loads(x) for x in (logs / "errors.jsonl").read_text().splitlines()]
    assert [(x["attempt"], x["status_code"], x["decision"]) for x in lines] == [
        (1, 529, "retry"),
        (2, 500, "retry"),
        (3, 400, "fail"),
    ]
    assert lines[0]["retry_after_s"] == 1.0
    assert all(x["request_id"] == "r" and x["agent_id"] == "a1" for x in lines)
    batches = [json.loads(x) for x in (logs / "batches.jsonl").read_text().splitlines()]
    assert [b["outcomes"] for b in batches] == [["retry"], ["retry"], ["error"]]
