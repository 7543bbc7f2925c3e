"""Rate-limit pacing: sliding-window books, priority-aware admission, provider feedback."""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llm_gateway import (
    ConfigError,
    LimitGroup,
    LLMRequest,
    ModelConfig,
    ProviderError,
    RateLimitPolicy,
    RequestPriority,
    RequestValidationError,
    Usage,
    load_config,
)
from llm_gateway._ratelimit import (
    SKEW_S,
    Admission,
    RateLimiter,
    _reset_seconds,
)
from llm_gateway._tokens import estimate_tokens, token_counter

from ._support import RecordingGateway, ask, mock_model
from .conftest import run_on_virtual_time as run

HIGH, NORMAL, LOW = RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW
SPAN = 60.0 + SKEW_S


def book(limiter: RateLimiter, at: float, tokens: int) -> Admission:
    admission = Admission(at, tokens, (limiter,))
    limiter.admit(admission)
    return admission


def test_window_counts_requests_and_tokens() -> None:
    limiter = RateLimiter("m", rpm=3, tpm=100)
    assert limiter.ready_at(10, NORMAL, 0.0, now=0.0) == 0.0
    book(limiter, 0.0, 40)
    book(limiter, 1.0, 40)
    assert limiter.ready_at(30, NORMAL, 0.0, now=2.0) == pytest.approx(SPAN)  # tokens
    assert limiter.ready_at(20, NORMAL, 0.0, now=2.0) == 2.0
    book(limiter, 2.0, 20)
    assert limiter.ready_at(0, NORMAL, 0.0, now=3.0) == pytest.approx(SPAN)  # requests
    assert limiter.remaining(3.0) == (0, 0)
    assert limiter.remaining(SPAN + 0.5) == (1, 40)  # the first one left the window


def test_high_reserve_keeps_a_share_for_high() -> None:
    limiter = RateLimiter("m", rpm=10, tpm=None)
    for i in range(8):
        book(limiter, float(i), 0)
    assert limiter.ready_at(0, NORMAL, 0.2, now=8.0) > 8.0  # 8 of 10: NORMAL's 80% is used
    assert limiter.ready_at(0, HIGH, 0.2, now=8.0) == 8.0


def test_a_window_must_split_the_minute_evenly() -> None:
    with pytest.raises(ConfigError, match="divisor of 60"):
        limited(max_requests_per_minute=60, rate_limit=RateLimitPolicy(window_s=25))
    with pytest.raises(ConfigError, match="less than one per window"):
        limited(max_requests_per_minute=2, rate_limit=RateLimitPolicy(window_s=10))
    with pytest.raises(ConfigError, match="less than one per window"):
        LimitGroup(max_requests_per_minute=5, window_s=6)


def test_shorter_window_paces_the_same_rate_more_evenly() -> None:
    limiter = RateLimiter("m", rpm=60, tpm=None, window_s=2.0)
    book(limiter, 0.0, 0)
    book(limiter, 0.0, 0)
    assert limiter.ready_at(0, NORMAL, 0.0, now=0.0) == pytest.approx(2.0 + SKEW_S)


def test_reconciliation_returns_unused_tokens() -> None:
    limiter = RateLimiter("m", rpm=None, tpm=100)
    woken: list[bool] = []
    limiter.listeners.append(lambda: woken.append(True))
    admission = book(limiter, 0.0, 90)
    assert limiter.ready_at(50, NORMAL, 0.0, now=1.0) > 1.0
    admission.reconcile(30, now=1.0)
    assert limiter.window(1.0) == (1, 30)
    assert limiter.ready_at(50, NORMAL, 0.0, now=1.0) == 1.0
    assert woken == [True]
    admission.reconcile(30, now=SPAN + 1)  # out of the window: nothing to correct
    assert limiter.window(SPAN + 1) == (0, 0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("6m0s", 360.0), ("12ms", 0.012), ("1s", 1.0), ("1h2m3.5s", 3723.5), ("7", 7.0)],
)
def test_reset_durations(value: str, seconds: float) -> None:
    assert _reset_seconds(value) == pytest.approx(seconds)


def test_anthropic_reset_is_an_rfc3339_time() -> None:
    import datetime

    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert _reset_seconds(later.isoformat().replace("+00:00", "Z")) == pytest.approx(30, abs=1)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "20s"},
        {
            "anthropic-ratelimit-requests-remaining": "1",
            "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
        },
    ],
)
def test_provider_headers_tighten_the_books(headers: dict[str, str]) -> None:
    limiter = RateLimiter("m", rpm=1000, tpm=None)
    limiter.observe(headers, now=0.0)
    assert limiter.ready_at(0, HIGH, 0.0, now=0.0) == 0.0
    book(limiter, 0.0, 0)
    assert limiter.ready_at(0, HIGH, 0.0, now=0.0) > 10.0  # none left until the reset
    assert limiter.remaining(0.0)[0] == 0


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

pytestmark_anyio = pytest.mark.anyio


def limited(**fields: Any) -> ModelConfig:
    return mock_model(max_concurrency=100, **fields)


@pytestmark_anyio
async def test_requests_per_minute_pace_the_model() -> None:
    config = limited(max_requests_per_minute=5)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.5) as gw:
        await gw.batch([ask(priority=HIGH) for _ in range(12)])
        stats = gw.get_stats().models["m"]
    starts = sorted(c.started for c in gw.calls)
    assert starts == pytest.approx([0.0] * 5 + [SPAN] * 5 + [2 * SPAN] * 2, abs=1e-3)
    assert stats.throttled_s == pytest.approx(2 * SPAN, abs=1e-3)
    assert stats.remaining_requests == 3


@pytestmark_anyio
async def test_a_request_that_could_never_fit_fails_at_submit() -> None:
    config = limited(max_tokens_per_minute=1000)
    async with RecordingGateway({"m": config}) as gw:
        with pytest.raises(RequestValidationError, match=r"estimated at \d+ tokens.*max_tokens"):
            gw.submit_nowait(ask(max_tokens=5000))
        with pytest.raises(RequestValidationError):
            await gw.submit(ask())  # max_tokens unset: the default 1024 output tokens
        assert (await gw.request(ask(max_tokens=500, priority=HIGH))).content


@pytestmark_anyio
async def test_high_gets_the_budget_before_low_that_waited_longer() -> None:
    config = limited(max_requests_per_minute=2, low_max_wait_s=0.0)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.1) as gw:
        first = [gw.submit_nowait(ask(priority=HIGH)) for _ in range(2)]
        await anyio.sleep(1)  # the window is now full until SPAN
        lows = [gw.submit_nowait(ask(priority=LOW, request_id=f"low{i}")) for i in range(2)]
        await anyio.sleep(1)
        high = gw.submit_nowait(ask(priority=HIGH, request_id="high"))
        await high
        for fut in first + lows:
            await fut
    # The first batch after the window frees: HIGH first, though the LOWs waited longer.
    after = next(b for b in gw.batches if b.at > 2)
    assert [f.request.request_id for f in after.taken] == ["high", "low0"]
    assert after.at == pytest.approx(SPAN, abs=1e-3)


@pytestmark_anyio
async def test_reconciled_usage_frees_budget_for_waiting_requests() -> None:
    # Estimates are ~1k tokens each; the provider reports 10: the books follow the truth.
    config = limited(max_tokens_per_minute=2100)
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0) as gw:
        await gw.batch([ask(priority=HIGH) for _ in range(6)])
    starts = sorted(c.started for c in gw.calls)
    assert starts == pytest.approx([0, 0, 1, 1, 2, 2], abs=1e-3)


@pytestmark_anyio
async def test_provider_headers_lower_the_pace() -> None:
    config = limited(max_requests_per_minute=1000)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    async with RecordingGateway(
        {"m": config}, latency=lambda r: 0.1, headers=lambda r: headers
    ) as gw:
        await gw.request(ask(priority=HIGH))
        second = await gw.request(ask(priority=HIGH))
    # The provider said none remain for 30 s (from the first answer, at 0.1 s).
    assert second.queue_wait_ms == pytest.approx(30_000, abs=1)


@pytestmark_anyio
async def test_a_limit_group_is_shared_by_its_models() -> None:
    models = {"a": limited(limit_group="org"), "b": limited(limit_group="org")}
    groups = {"org": LimitGroup(max_requests_per_minute=3)}
    async with RecordingGateway(models, latency=lambda r: 0.1, limit_groups=groups) as gw:
        await gw.batch([ask(m, priority=HIGH) for m in "abab"])
        stats = gw.get_stats()
    starts = sorted(c.started for c in gw.calls)
    assert starts == pytest.approx([0, 0, 0, SPAN], abs=1e-3)
    assert stats.limit_groups["org"].throttled_s == pytest.approx(SPAN, abs=1e-3)
    assert stats.limit_groups["org"].remaining_requests == 2


@pytestmark_anyio
async def test_429s_are_counted() -> None:
    calls = {"n": 0}

    def fail(request: LLMRequest) -> BaseException | None:
        calls["n"] += 1
        return (
            ProviderError("limited", status_code=429, retry_after_s=1) if calls["n"] == 1 else None
        )

    config = limited(max_requests_per_minute=100)
    async with RecordingGateway({"m": config}, latency=lambda r: 0.1, fail=fail) as gw:
        await gw.request(ask(priority=HIGH))
        assert gw.get_stats().models["m"].rate_limited == 1


# -- properties ------------------------------------------------------------------------------


@attrs.frozen
class Load:
    rpm: int | None
    tpm: int | None
    window_s: float
    arrivals: list[tuple[float, RequestPriority, int, float]]  # gap, priority, max_tokens, used


loads = st.builds(
    Load,
    rpm=st.one_of(st.none(), st.integers(1, 15)),
    tpm=st.one_of(st.none(), st.integers(2000, 8000)),
    window_s=st.sampled_from([60.0, 60.0, 10.0]),
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
@settings(deadline=None, max_examples=120)
@given(load=loads)
def test_every_sliding_window_stays_within_the_limits(backend: str, load: Load) -> None:
    assume(load.rpm is None or load.rpm >= 60 / load.window_s)  # else a ConfigError (above)
    config = limited(
        max_requests_per_minute=load.rpm,
        max_tokens_per_minute=load.tpm,
        timeout_s=None,
        rate_limit=RateLimitPolicy(window_s=load.window_s),
    )
    count = token_counter("heuristic", "m")
    shares = {f"r{i}": a[3] for i, a in enumerate(load.arrivals)}

    def usage(request: LLMRequest) -> Usage:
        # The real input is what the estimate counts; the output at most max_tokens.
        assert request.max_tokens is not None
        prompt = estimate_tokens(request, count, 0) - request.max_tokens
        return Usage(prompt, math.floor(shares[request.request_id] * request.max_tokens))

    gateway = RecordingGateway({"m": config}, latency=lambda r: 0.5, usage=usage)

    async def main() -> None:
        async with gateway:
            for i, (gap, priority, max_tokens, _) in enumerate(load.arrivals):
                await anyio.sleep(gap)
                request = ask(priority=priority, request_id=f"r{i}", max_tokens=max_tokens)
                try:
                    gateway.submit_nowait(request)
                except RequestValidationError:  # could never fit the token budget
                    assert load.tpm is not None
                    assert estimate_tokens(request, count, 0) > load.tpm * load.window_s / 60

    run(backend, main)
    calls = sorted(gateway.calls, key=lambda c: c.started)
    times = [c.started for c in calls]
    tokens = [usage(c.request).total_tokens for c in calls]
    share = load.window_s / 60
    rpm = math.inf if load.rpm is None else math.floor(load.rpm * share)
    tpm = math.inf if load.tpm is None else math.floor(load.tpm * share)
    for i, t in enumerate(times):
        # Every window_s span starting at a call (so every 60 s span too) holds at most the
        # limits: the started requests, and the tokens the provider reports for them.
        j = bisect_left(times, t + load.window_s)
        assert j - i <= rpm
        assert sum(tokens[i:j]) <= tpm


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=60)
@given(rpm=st.integers(1, 20), windows=st.integers(2, 5), latency=st.integers(1, 5000))
def test_excess_demand_uses_the_whole_limit(
    backend: str, rpm: int, windows: int, latency: int
) -> None:
    config = limited(max_requests_per_minute=rpm, timeout_s=None)
    gateway = RecordingGateway({"m": config}, latency=lambda r: latency / 1000)

    async def main() -> None:
        async with gateway:
            await gateway.batch([ask(priority=NORMAL) for _ in range(rpm * windows)])

    run(backend, main)
    times = sorted(c.started for c in gateway.calls)
    # No needless idling: the m-th request starts as soon as its window opens, so the
    # throughput is rpm per (60 + SKEW_S) s: 99.6% of the limit.
    for m, t in enumerate(times):
        assert t <= (m // rpm) * SPAN + config.batch_timeout_ms / 1000 + 1e-3
    assert len(times) / (times[-1] + SPAN) * 60 >= 0.95 * rpm * windows / (windows)
