"""The batch lane through the fake batch APIs (both protocols, both backends, virtual time).

LOW requests that can wait ride the provider's batch API; HIGH ones stay realtime; per-item
errors and expiries end as documented; cancelling every caller cancels the batch at the
provider; a closing gateway leaves its batches to the journal, and the next gateway on the same
state directory delivers their results through ``deferred_result``.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_gateway import (
    BatchApiPolicy,
    BatchExpiredError,
    BatchPendingError,
    ConfigError,
    Gateway,
    GatewayConfig,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    ModelConfig,
    ModelPricing,
    ProviderStatusError,
    RequestCancelledError,
    UnknownRequestError,
    load_config,
)
from llm_gateway._journal import JOURNAL_FILE, Journal
from llm_gateway.providers import open_provider
from llm_gateway.testing import FakeLLMApi, fake_answer

PROTOCOLS = ["anthropic", "openai"]
PRICING = ModelPricing(input_usd_per_mtok=3.0, output_usd_per_mtok=15.0)
WINDOW_S = 60.0
PROCESSING_S = 600.0


def batch_model(protocol: str, **policy: Any) -> ModelConfig:
    settings: dict[str, Any] = {
        "enabled": True,
        "window_s": WINDOW_S,
        "poll_interval_s": 30.0,
        "max_poll_interval_s": 120.0,
        **policy,
    }
    return ModelConfig(
        provider=protocol,
        model_name=f"{protocol}-model",
        api_key="sk-test-0123456789",
        pricing=PRICING,
        batch_api=BatchApiPolicy(**settings),
        # No default deadline: the SDKs' first request (and the journal) work in worker
        # threads, and a virtual clock jumps to the next deadline while a thread works.
        timeout_s=None,
    )


async def tick() -> None:
    """Keep a timer pending, one second ahead, until cancelled."""
    while True:  # noqa: ASYNC110 - the point is a timer, not waiting for an event
        await anyio.sleep(1)


async def until(condition: Callable[[], bool], within_s: float = 86400.0) -> None:
    """Wait (on the virtual clock) until ``condition()`` holds; fail after ``within_s``."""
    give_up = anyio.current_time() + within_s
    while not condition():
        assert anyio.current_time() < give_up, "the condition never held"
        await anyio.sleep(0.5)


def low(text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(
        model="m", messages=[LLMMessage("user", text)], **{"priority": "low", **fields}
    )


@asynccontextmanager
async def batch_gateway(
    api: FakeLLMApi, state_dir: Path, model: ModelConfig
) -> AsyncGenerator[Gateway]:
    def factory(model_id: str, config: ModelConfig) -> Any:
        return open_provider(model_id, config, http_client=api.mock_client())

    config = GatewayConfig(models={"m": model}, log_dir=None, state_dir=str(state_dir))
    async with Gateway(config, provider_factory=factory) as gw:
        yield gw


def provider_calls(api: FakeLLMApi, protocol: str) -> list[str]:
    """The realtime calls the fake received (not the batch API's)."""
    path = "/v1/messages" if protocol == "anthropic" else "/v1/chat/completions"
    return [r.path for r in api.received if r.path == path]


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_low_requests_ride_few_batches_and_high_ones_stay_realtime(
    protocol: str, tmp_path: Path
) -> None:
    api = FakeLLMApi()
    api.batches.processing_delay_s = PROCESSING_S
    callers, per_caller, max_batch = 50, 20, 300
    answers: dict[str, LLMResponse] = {}
    high_waits: list[float] = []
    rng = random.Random(7)
    async with batch_gateway(
        api, tmp_path, batch_model(protocol, max_batch_requests=max_batch)
    ) as gw:
        # The SDK's first call does some work in a worker thread, during which a virtual clock
        # may jump to the next timer: warm it up before measuring anything.
        await gw.request(low("warm-up", priority="high"))
        start = anyio.current_time()

        async def caller(n: int) -> None:
            await anyio.sleep(rng.uniform(0, WINDOW_S / 2))  # callers arrive over the window
            requests = [low(f"caller {n} question {i}") for i in range(per_caller)]
            for request, answer in zip(requests, await gw.batch(requests), strict=True):
                answers[request.request_id] = answer
                assert answer.content == fake_answer(request.messages[-1].content)

        async def high(n: int) -> None:
            await anyio.sleep(n)
            sent = anyio.current_time()
            answer = await gw.request(low(f"urgent {n}", priority="high"))
            high_waits.append(anyio.current_time() - sent)
            assert answer.batch_id is None
            assert answer.content == fake_answer(f"urgent {n}")

        async with anyio.create_task_group() as tg:
            for n in range(callers):
                tg.start_soon(caller, n)
            for n in range(5):
                tg.start_soon(high, n * 7)
        elapsed = anyio.current_time() - start

    total = callers * per_caller
    assert len(answers) == total  # every caller got its own answer for each request
    batches = list(api.batches.batches.values())
    assert len(batches) <= math.ceil(total / max_batch)
    assert sum(len(b.items) for b in batches) == total
    assert all(len(b.items) <= max_batch for b in batches)
    assert {a.batch_id for a in answers.values()} == {b.id for b in batches}
    # The LOW answers waited for the batch (the window and the provider's processing).
    assert elapsed >= PROCESSING_S
    # HIGH requests went realtime, at once, while the batch gathered and ran.
    assert len(high_waits) == 5
    assert max(high_waits) < 0.01
    assert len(provider_calls(api, protocol)) == 5 + 1
    # Half price: the stats count the cost and what the batch lane saved.
    stats = gw.get_stats().models["m"]
    costs = sum(a.cost_usd or 0.0 for a in answers.values())
    assert costs > 0
    assert all(
        a.cost_usd is not None and math.isclose(a.cost_usd, PRICING.cost_usd(a.usage, batch=True))
        for a in answers.values()
    )
    assert math.isclose(stats.batch_savings_usd, costs)  # a 50% discount saves what it cost
    assert stats.completed == total + 5 + 1


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_item_errors_fail_their_own_request_and_expired_items_go_realtime(
    protocol: str, tmp_path: Path
) -> None:
    api = FakeLLMApi()
    api.batches.processing_delay_s = 5.0
    async with batch_gateway(api, tmp_path, batch_model(protocol)) as gw:
        ok = low("fine")
        bad = low("please fail [batch-error] secret prompt")
        late = low("too slow [batch-expire]")
        results = await gw.batch([ok, bad, late], return_exceptions=True)
    answer, error, retried = results
    assert isinstance(answer, LLMResponse) and answer.batch_id is not None
    assert isinstance(error, ProviderStatusError)
    assert error.status_code == 400
    assert error.error_type == "invalid_request_error"
    assert "secret prompt" not in str(error)  # never the prompt
    assert isinstance(retried, LLMResponse)
    assert retried.batch_id is None  # answered realtime after its batch expired
    assert retried.content == fake_answer("too slow [batch-expire]")
    assert len(provider_calls(api, protocol)) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_expired_items_fail_when_the_policy_says_so(protocol: str, tmp_path: Path) -> None:
    api = FakeLLMApi()
    model = batch_model(protocol, on_expired="fail")
    async with batch_gateway(api, tmp_path, model) as gw:
        with pytest.raises(BatchExpiredError, match="expired before processing it"):
            await gw.request(low("too slow [batch-expire]"))
    assert provider_calls(api, protocol) == []


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cancelling_every_caller_cancels_the_batch_at_the_provider(
    protocol: str, tmp_path: Path
) -> None:
    api = FakeLLMApi()
    api.batches.processing_delay_s = math.inf
    async with batch_gateway(api, tmp_path, batch_model(protocol)) as gw:
        futures = [await gw.submit(low(f"q{i}")) for i in range(4)]
        await until(lambda: bool(api.batches.batches))  # the batch was submitted
        (batch,) = api.batches.batches.values()
        figures = gw.get_stats().models["m"]
        assert (figures.batch_pending, figures.queued, figures.in_flight) == (4, 0, 0)
        for fut in futures[:3]:
            fut.cancel()
        await anyio.sleep(1)
        assert api.batches.cancelled == []  # one caller is still there
        futures[3].cancel()
        await until(lambda: bool(api.batches.cancelled))
        assert api.batches.cancelled == [batch.id]
        assert all(f.cancelled() for f in futures)
        assert gw.get_stats().models["m"].batch_pending == 0
        with pytest.raises(UnknownRequestError):  # nothing kept for callers who left
            await gw.deferred_result(futures[0].request.request_id)


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_cancelled_callers_result_is_dropped_and_the_others_delivered(
    protocol: str, tmp_path: Path
) -> None:
    api = FakeLLMApi()
    api.batches.processing_delay_s = math.inf
    async with batch_gateway(api, tmp_path, batch_model(protocol)) as gw:
        gone = await gw.submit(low("gone"))
        stays = await gw.submit(low("stays"))
        await until(lambda: bool(api.batches.batches))
        gone.cancel()
        api.batches.end_all()
        answer = await stays
        assert answer.content == fake_answer("stays")
        with pytest.raises(RequestCancelledError):
            await gone
        with pytest.raises(UnknownRequestError):
            await gw.deferred_result(gone.request.request_id)
    assert api.batches.cancelled == []


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_shutdown_leaves_batches_to_the_journal_and_a_new_gateway_delivers_them(
    protocol: str, tmp_path: Path
) -> None:
    api = FakeLLMApi()
    api.batches.processing_delay_s = math.inf  # until end_all()
    model = batch_model(protocol)
    async with batch_gateway(api, tmp_path, model) as gw:
        early = [await gw.submit(low(f"early {i}")) for i in range(3)]
        await until(lambda: bool(api.batches.batches))  # submitted
        await anyio.sleep(1)  # and recorded
        late = [await gw.submit(low(f"late {i}")) for i in range(2)]  # still gathering
    # The block ended while no batch had: shutdown does not wait for the provider. (No
    # fail_after here: virtual time jumps to the next deadline while the journal's worker
    # thread works, and that would be the fail_after's.)
    # The gathered ones were submitted, and every caller was told where its result will be.
    assert len(api.batches.batches) == 2
    assert not any(b.ended(anyio.current_time()) for b in api.batches.batches.values())
    api.batches.end_all()
    for fut in [*early, *late]:
        error = fut.exception()
        assert isinstance(error, BatchPendingError)
        assert error.request_id == fut.request.request_id
        assert error.batch_id in api.batches.batches
    async with batch_gateway(api, tmp_path, model) as gw:
        for fut in [*early, *late]:
            answer = await gw.deferred_result(fut.request.request_id)
            assert answer.content == fake_answer(fut.request.messages[-1].content)
            assert answer.batch_id == fut.exception().batch_id  # type: ignore[union-attr]
            assert answer.cost_usd is not None
            with pytest.raises(UnknownRequestError):  # collected: gone from the journal
                await gw.deferred_result(fut.request.request_id)
        assert await gw._journal.counts() == {}  # type: ignore[union-attr]
    assert api.batches.cancelled == []


@pytest.mark.anyio
async def test_oversize_batches_are_split_to_the_byte_limit(tmp_path: Path) -> None:
    api = FakeLLMApi()
    api.batches.max_bytes = 4000  # the provider refuses larger batches (HTTP 413)
    model = batch_model("anthropic", max_batch_bytes=4000)
    async with batch_gateway(api, tmp_path, model) as gw:
        requests = [low(f"question number {i} " + "x" * 100) for i in range(60)]
        answers = await gw.batch(requests)
    assert [a.content for a in answers] == [fake_answer(r.messages[-1].content) for r in requests]
    batches = list(api.batches.batches.values())
    assert len(batches) > 1
    assert all(b.size_bytes <= 4000 for b in batches)
    assert provider_calls(api, "anthropic") == []  # none was refused and sent realtime


@pytest.mark.anyio
async def test_short_deadlines_and_normal_requests_stay_realtime(tmp_path: Path) -> None:
    api = FakeLLMApi()
    model = batch_model("anthropic", min_timeout_s=3600)
    async with batch_gateway(api, tmp_path, model) as gw:
        await gw.request(low("warm up", priority="high"))  # the SDK's thread, off the clock
        quick = await gw.request(low("quick", timeout_s=60))
        normal = await gw.request(low("normal", priority="normal"))
        async with anyio.create_task_group() as tg:
            # A deadline would be the only timer while the journal's thread works, and a
            # virtual clock jumps to the next timer then: a ticker keeps the jumps short.
            tg.start_soon(tick)
            slow = await gw.request(low("slow", timeout_s=30 * 86400.0))
            tg.cancel_scope.cancel()
    assert quick.batch_id is None and normal.batch_id is None
    assert slow.batch_id is not None
    assert len(provider_calls(api, "anthropic")) == 3


def test_batch_api_policy_is_validated_and_loaded_strictly() -> None:
    with pytest.raises(ConfigError, match=r"BatchApiPolicy\.window_s"):
        BatchApiPolicy(window_s=0)
    with pytest.raises(ConfigError, match=r"BatchApiPolicy\.max_poll_interval_s"):
        BatchApiPolicy(poll_interval_s=60, max_poll_interval_s=30)
    with pytest.raises(ConfigError, match=r"BatchApiPolicy\.on_expired"):
        BatchApiPolicy(on_expired="retry")
    model = {"provider": "anthropic", "model_name": "m"}
    config = load_config(
        {"models": {"m": {**model, "batch_api": {"enabled": True, "window_s": 5}}}}
    )
    assert config.models["m"].batch_api == BatchApiPolicy(enabled=True, window_s=5)
    assert config.journal_dir == "04_state"  # beside the default log_dir, 04_logs
    with pytest.raises(ConfigError, match=r"models\.m\.batch_api\.enabled must be a bool"):
        load_config({"models": {"m": {**model, "batch_api": {"enabled": 1}}}})
    with pytest.raises(ConfigError, match=r"'windows_s'.*did you mean 'window_s'"):
        load_config({"models": {"m": {**model, "batch_api": {"windows_s": 1}}}})
    with pytest.raises(ConfigError, match=r"models\.m\.batch_api is enabled.*set state_dir"):
        load_config({"models": {"m": {**model, "batch_api": {"enabled": True}}}, "log_dir": None})


@pytest.mark.anyio
async def test_a_batch_model_needs_an_adapter_with_a_batch_api(tmp_path: Path) -> None:
    model = ModelConfig(provider="mock", model_name="m", batch_api=BatchApiPolicy(enabled=True))
    with pytest.raises(ConfigError, match=r"models\.m\.batch_api is enabled.*has no batch API"):
        async with Gateway(
            GatewayConfig(models={"m": model}, log_dir=None, state_dir=str(tmp_path))
        ):
            pass


@pytest.mark.anyio
async def test_no_journal_is_created_without_batch_models(tmp_path: Path) -> None:
    model = ModelConfig(provider="mock", model_name="m")
    config = GatewayConfig(models={"m": model}, log_dir=None, state_dir=str(tmp_path / "s"))
    async with Gateway(config) as gw:
        with pytest.raises(UnknownRequestError, match="no batch journal"):
            await gw.deferred_result("r")
    assert not (tmp_path / "s" / JOURNAL_FILE).exists()


@pytest.mark.anyio
async def test_a_failing_journal_disk_never_fails_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_error(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Journal, "_settle", disk_error)
    api = FakeLLMApi()
    async with batch_gateway(api, tmp_path, batch_model("openai")) as gw:
        answer = await gw.request(low("fine"))
    assert answer.content == fake_answer("fine")  # delivered; only the record failed
    assert answer.batch_id is not None
    assert "the batch journal could not record results (OperationalError)" in caplog.text
