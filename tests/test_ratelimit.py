"""Rate-limit pacing through the gateway: pacing, priority, reconciliation, provider feedback.

Only the public API (``Gateway(provider_factory=...)``, ``get_stats``, requests and responses),
so these tests hold whatever engine runs the lanes. The books alone are tested in
test_ratelimit_books.py.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llm_gateway import (
    ConfigError,
    Gateway,
    GatewayConfig,
    LimitGroup,
    LLMRequest,
    ModelConfig,
    ProviderError,
    RateLimitPolicy,
    RequestPriority,
    RequestValidationError,
    RetryPolicy,
    Usage,
    load_config,
)
from llm_gateway._tokens import estimate_tokens, token_counter
from llm_gateway.providers import Provider

from ._support import Call, RecordingProvider, ask, mock_model
from .conftest import run_on_virtual_time as run

HIGH, NORMAL, LOW = RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW
SPAN = 60.0 + 0.25  # how long an admission holds a 60-s window's budget (the skew margin)


class Recorded:
    """A real Gateway whose models are answered by :class:`RecordingProvider`, and its calls."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        *,
        latency: Callable[[LLMRequest], float] = lambda r: 1.0,
        fail: Callable[[LLMRequest], BaseException | None] = lambda r: None,
        usage: Callable[[LLMRequest], Usage] = lambda r: Usage(input_tokens=3, output_tokens=5),
        headers: Callable[[LLMRequest], Mapping[str, str]] = lambda r: {},
        limit_groups: Mapping[str, LimitGroup] | None = None,
    ) -> None:
        self.calls: list[Call] = []

        def open_recording(
            model_id: str, config: ModelConfig
        ) -> AbstractAsyncContextManager[Provider]:
            return nullcontext(
                RecordingProvider(model_id, latency, fail, self.calls, usage, headers)
            )

        config = GatewayConfig(models=models, log_dir=None, limit_groups=limit_groups or {})
        self.gateway = Gateway(config, provider_factory=open_recording)

    @property
    def starts(self) -> list[float]:
        return sorted(c.started for c in self.calls)


def limited(**fields: Any) -> ModelConfig:
    return mock_model(max_concurrency=100, **fields)


# -- configuration and estimates ---------------------------------------------------------------


def test_a_window_must_split_the_minute_evenly() -> None:
    with pytest.raises(ConfigError, match="divisor of 60"):
        limited(max_requests_per_minute=60, rate_limit=RateLimitPolicy(window_s=25))
    with pytest.raises(ConfigError, match="less than one per window"):
        limited(max_requests_per_minute=2, rate_limit=RateLimitPolicy(window_s=10))
    with pytest.raises(ConfigError, match="less than one per window"):
        LimitGroup(max_requests_per_minute=5, window_s=6)


def test_token_estimate_counts_messages_tools_and_output() -> None:
    from llm_gateway import LLMMessage, LLMTool

    count = token_counter("heuristic", "m")
    short = ask(text="x" * 40, max_tokens=100)
    assert estimate_tokens(short, count, 1024) == 3 + 4 + 10 + 100
    default = ask(text="x" * 40)
    assert estimate_tokens(default, count, 1024) == 3 + 4 + 10 + 1024
    tool = LLMTool("lookup", "find a thing", {"type": "object"})
    with_tool = LLMRequest(model="m", messages=[LLMMessage("user", "x" * 40)], tools=[tool])
    assert estimate_tokens(with_tool, count, 0) > estimate_tokens(default, count, 0)


def test_tiktoken_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(ConfigError, match="pip install tiktoken"):
        token_counter("tiktoken", "gpt-4o")


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="high_reserve"):
        RateLimitPolicy(high_reserve=1.5)
    with pytest.raises(ConfigError, match="window_s"):
        RateLimitPolicy(window_s=0)
    with pytest.raises(ConfigError, match="limit_group is 'org'"):
        load_config(
            {"models": {"a": {"provider": "mock", "model_name": "m", "limit_group": "org"}}}
        )
    config = load_config(
        {
            "models": {"a": {"provider": "mock", "model_name": "m", "limit_group": "org"}},
            "limit_groups": {"org": {"max_requests_per_minute": 100}},
        }
    )
    assert config.limit_groups["org"].max_requests_per_minute == 100


# -- through the gateway ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_per_minute_pace_the_model() -> None:
    rec = Recorded({"m": limited(max_requests_per_minute=5)}, latency=lambda r: 0.5)
    async with rec.gateway as gw:
        await gw.batch([ask(priority=HIGH) for _ in range(12)])
        stats = gw.get_stats().models["m"]
    assert rec.starts == pytest.approx([0.0] * 5 + [SPAN] * 5 + [2 * SPAN] * 2, abs=1e-3)
    assert stats.throttled_s == pytest.approx(2 * SPAN, abs=1e-3)
    assert stats.remaining_requests == 3


@pytest.mark.anyio
async def test_a_request_that_could_never_fit_fails_at_submit() -> None:
    rec = Recorded({"m": limited(max_tokens_per_minute=1000)})
    async with rec.gateway as gw:
        with pytest.raises(RequestValidationError, match=r"estimated at \d+ tokens.*max_tokens"):
            gw.submit_nowait(ask(max_tokens=5000))
        with pytest.raises(RequestValidationError):
            await gw.submit(ask())  # max_tokens unset: the default 1024 output tokens
        assert (await gw.request(ask(max_tokens=500, priority=HIGH))).content


@pytest.mark.anyio
async def test_high_gets_the_budget_before_low_that_waited_longer() -> None:
    config = limited(max_requests_per_minute=2, low_max_wait_s=0.0)
    rec = Recorded({"m": config}, latency=lambda r: 0.1)
    async with rec.gateway as gw:
        first = [gw.submit_nowait(ask(priority=HIGH))]
        await anyio.sleep(1)
        first.append(gw.submit_nowait(ask(priority=HIGH)))
        await anyio.sleep(0.5)  # the window is full: one slot frees at SPAN, one at 1 + SPAN
        lows = [gw.submit_nowait(ask(priority=LOW, request_id=f"low{i}")) for i in range(2)]
        await anyio.sleep(1)
        high = gw.submit_nowait(ask(priority=HIGH, request_id="high"))
        await high
        for fut in first + lows:
            await fut
    # The first slot to free goes to HIGH, though the LOWs waited longer.
    started = {c.request.request_id: c.started for c in rec.calls}
    assert started["high"] == pytest.approx(SPAN, abs=1e-3)
    assert started["low0"] == pytest.approx(1 + SPAN, abs=1e-3)
    assert started["low1"] == pytest.approx(2 * SPAN, abs=1e-3)


@pytest.mark.anyio
async def test_reconciled_usage_frees_budget_for_waiting_requests() -> None:
    # Estimates are ~1k tokens each; the provider reports 8: the books follow the truth.
    rec = Recorded({"m": limited(max_tokens_per_minute=2100)}, latency=lambda r: 1.0)
    async with rec.gateway as gw:
        await gw.batch([ask(priority=HIGH) for _ in range(6)])
    assert rec.starts == pytest.approx([0, 0, 1, 1, 2, 2], abs=1e-3)


@pytest.mark.anyio
async def test_an_error_answer_is_booked_at_zero_tokens() -> None:
    def fail(request: LLMRequest) -> BaseException | None:
        if request.request_id.startswith("bad"):
            return ProviderError("bad request", status_code=400)
        return None

    rec = Recorded({"m": limited(max_tokens_per_minute=2100)}, latency=lambda r: 1.0, fail=fail)
    async with rec.gateway as gw:
        bad = [ask(priority=HIGH, request_id=f"bad{i}") for i in range(2)]
        good = [ask(priority=HIGH, request_id=f"good{i}") for i in range(2)]
        results = await gw.batch(bad + good, return_exceptions=True)
    assert [isinstance(r, ProviderError) for r in results] == [True, True, False, False]
    assert rec.starts == pytest.approx([0, 0, 1, 1], abs=1e-3)


@pytest.mark.anyio
async def test_provider_headers_lower_the_pace() -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    rec = Recorded(
        {"m": limited(max_requests_per_minute=1000)},
        latency=lambda r: 0.1,
        headers=lambda r: headers,
    )
    async with rec.gateway as gw:
        await gw.request(ask(priority=HIGH))
        second = await gw.request(ask(priority=HIGH))
    # The provider said none remain for 30 s (from the first answer, at 0.1 s).
    assert second.queue_wait_ms == pytest.approx(30_000, abs=1)


@pytest.mark.anyio
async def test_a_limit_group_is_shared_by_its_models() -> None:
    models = {"a": limited(limit_group="org"), "b": limited(limit_group="org")}
    groups = {"org": LimitGroup(max_requests_per_minute=3)}
    rec = Recorded(models, latency=lambda r: 0.1, limit_groups=groups)
    async with rec.gateway as gw:
        await gw.batch([ask(m, priority=HIGH) for m in "abab"])
        stats = gw.get_stats()
    assert rec.starts == pytest.approx([0, 0, 0, SPAN], abs=1e-3)
    assert stats.limit_groups["org"].throttled_s == pytest.approx(SPAN, abs=1e-3)
    assert stats.limit_groups["org"].remaining_requests == 2


@pytest.mark.anyio
async def test_429s_are_counted() -> None:
    calls = {"n": 0}

    def fail(request: LLMRequest) -> BaseException | None:
        calls["n"] += 1
        return (
            ProviderError("limited", status_code=429, retry_after_s=1) if calls["n"] == 1 else None
        )

    rec = Recorded({"m": limited(max_requests_per_minute=100)}, latency=lambda r: 0.1, fail=fail)
    async with rec.gateway as gw:
        await gw.request(ask(priority=HIGH))
        assert gw.get_stats().models["m"].rate_limited == 1


# -- regressions: issue 10, defect classes 3 (headers) and 7 -----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "inf", "x-ratelimit-reset-requests": "1s"},
        {"x-ratelimit-remaining-tokens": "-inf", "x-ratelimit-reset-tokens": "1s"},
        {"x-ratelimit-remaining-requests": "nan", "x-ratelimit-reset-requests": "nan"},
        {
            "anthropic-ratelimit-requests-remaining": "1e309",
            "anthropic-ratelimit-requests-reset": "x",
        },
        {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s"},
    ],
)
async def test_unusable_rate_limit_headers_harm_no_request(headers: dict[str, str]) -> None:
    # Before: int(float("inf")) raised OverflowError in the engine and failed every request.
    config = limited(max_requests_per_minute=1000, max_tokens_per_minute=1_000_000)
    rec = Recorded({"m": config}, latency=lambda r: 0.1, headers=lambda r: headers)
    async with rec.gateway as gw:
        first = await gw.batch([ask(priority=HIGH) for _ in range(5)])
        later = await gw.request(ask(priority=HIGH))
        stats = gw.get_stats().models["m"]
    assert len(first) == 5 and later.content
    assert later.queue_wait_ms == pytest.approx(0, abs=1)  # an unusable value holds nothing
    assert stats.remaining_requests == 1000 - 6


@pytest.mark.anyio
@pytest.mark.parametrize(
    "reset", ["1000000h", "9999-12-31T23:59:59Z", "1e309", "99999999999999999999999s"]
)
async def test_a_far_provider_reset_is_capped_like_retry_after(reset: str) -> None:
    # Before: the model stalled for the whole reset (114 years; year 9999), uncapped.
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset}
    config = limited(
        max_requests_per_minute=1000,
        retry=RetryPolicy(max_retry_after_s=5.0),
        timeout_s=None,
    )
    rec = Recorded({"m": config}, latency=lambda r: 0.1, headers=lambda r: headers)
    async with rec.gateway as gw:
        await gw.request(ask(priority=HIGH))
        with anyio.fail_after(3600):
            second = await gw.request(ask(priority=HIGH))
    assert second.queue_wait_ms == pytest.approx(5_000, abs=1)


@pytest.mark.anyio
@pytest.mark.parametrize(("rpm", "window_s"), [(60, 1.0), (119, 1.0), (120, 0.5)])
async def test_a_short_window_sends_the_configured_rate(rpm: int, window_s: float) -> None:
    # Before: rpm=60 over 1-s windows sent 48 a minute (0.25 s skew on a 1-s window), and
    # rpm=119 sent 60 (a share of 1.98 a window rounded down to 1).
    config = limited(
        max_requests_per_minute=rpm,
        rate_limit=RateLimitPolicy(window_s=window_s),
        timeout_s=None,
    )
    rec = Recorded({"m": config}, latency=lambda r: 0.2)
    minutes = 3
    async with rec.gateway as gw, anyio.create_task_group() as tg:
        tg.start_soon(gw.batch, [ask(priority=HIGH) for _ in range(rpm * minutes + rpm)])
        await anyio.sleep(60 * minutes)
        tg.cancel_scope.cancel()
    starts = rec.starts
    sent = bisect_left(starts, 60.0 * minutes)
    assert sent >= 0.95 * rpm * minutes
    for i, t in enumerate(starts):
        assert bisect_left(starts, t + 60) - i <= rpm
        assert bisect_left(starts, t + window_s) - i <= math.ceil(rpm * window_s / 60)


# -- properties ------------------------------------------------------------------------------


@attrs.frozen
class Load:
    rpm: int | None
    tpm: int | None
    window_s: float
    arrivals: list[tuple[float, RequestPriority, int, float]]  # gap, priority, max_tokens, used


loads = st.builds(
    Load,
    rpm=st.one_of(st.none(), st.integers(1, 200)),
    tpm=st.one_of(st.none(), st.integers(2000, 80_000)),
    window_s=st.sampled_from([60.0, 60.0, 10.0, 1.0, 0.5]),
    arrivals=st.lists(
        st.tuples(
            st.integers(0, 20_000).map(lambda ms: ms / 1000),
            st.sampled_from(list(RequestPriority)),
            st.integers(1, 1500),
            st.floats(0, 1),  # the share of max_tokens the answer really uses
        ),
        max_size=30,
    ),
)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=100)
@given(load=loads)
def test_every_sliding_window_stays_within_the_limits(backend: str, load: Load) -> None:
    try:
        config = limited(
            max_requests_per_minute=load.rpm,
            max_tokens_per_minute=load.tpm,
            timeout_s=None,
            rate_limit=RateLimitPolicy(window_s=load.window_s),
        )
    except ConfigError:  # a window's share of less than one (tested above)
        assume(False)
        raise
    count = token_counter("heuristic", "m")
    shares = {f"r{i}": a[3] for i, a in enumerate(load.arrivals)}

    def usage(request: LLMRequest) -> Usage:
        # The real input is what the estimate counts; the output at most max_tokens.
        assert request.max_tokens is not None
        prompt = estimate_tokens(request, count, 0) - request.max_tokens
        return Usage(prompt, math.floor(shares[request.request_id] * request.max_tokens))

    rec = Recorded({"m": config}, latency=lambda r: 0.5, usage=usage)

    async def main() -> None:
        async with rec.gateway as gw:
            for i, (gap, priority, max_tokens, _) in enumerate(load.arrivals):
                await anyio.sleep(gap)
                request = ask(priority=priority, request_id=f"r{i}", max_tokens=max_tokens)
                try:
                    gw.submit_nowait(request)
                except RequestValidationError:  # could never fit the token budget
                    assert load.tpm is not None
                    share = math.ceil(load.tpm * load.window_s / 60)
                    assert estimate_tokens(request, count, 0) > share

    run(backend, main)
    calls = sorted(rec.calls, key=lambda c: c.started)
    times = [c.started for c in calls]
    tokens = [usage(c.request).total_tokens for c in calls]
    for span, rpm, tpm in [
        (60.0, load.rpm, load.tpm),
        (
            load.window_s,
            None if load.rpm is None else math.ceil(load.rpm * load.window_s / 60 - 1e-9),
            None if load.tpm is None else math.ceil(load.tpm * load.window_s / 60 - 1e-9),
        ),
    ]:
        for i, t in enumerate(times):
            # Every span starting at a call holds at most the limits: the started requests,
            # and the tokens the provider reports for them.
            j = bisect_left(times, t + span)
            assert rpm is None or j - i <= rpm
            assert tpm is None or sum(tokens[i:j]) <= tpm


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=60)
@given(rpm=st.integers(1, 20), windows=st.integers(2, 5), latency=st.integers(1, 5000))
def test_excess_demand_uses_the_whole_limit(
    backend: str, rpm: int, windows: int, latency: int
) -> None:
    config = limited(max_requests_per_minute=rpm, timeout_s=None)
    rec = Recorded({"m": config}, latency=lambda r: latency / 1000)

    async def main() -> None:
        async with rec.gateway as gw:
            await gw.batch([ask(priority=NORMAL) for _ in range(rpm * windows)])

    run(backend, main)
    # No needless idling: the m-th request starts as soon as its window opens, so the
    # throughput is rpm per (60 + 0.25) s: 99.6% of the limit.
    for m, t in enumerate(rec.starts):
        assert t <= (m // rpm) * SPAN + config.batch_timeout_ms / 1000 + 1e-3
