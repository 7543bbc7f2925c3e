"""The rate-limit books alone (no event loop): pacing accuracy, caps, provider headers, settling.

Time is a number these tests drive by hand, so a property can run a limiter for minutes of
backlog in milliseconds.
"""

from __future__ import annotations

import datetime
import heapq
import math
from bisect import bisect_left
from collections.abc import Sequence

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llm_gateway import ConfigError, RequestPriority
from llm_gateway._config import check_window
from llm_gateway._ratelimit import (
    SKEW_S,
    Admission,
    Budget,
    RateLimiter,
    parse_remaining,
    parse_reset,
    read_rate_limit_headers,
    skew_s,
)

HIGH, NORMAL, LOW = RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW
SPAN = 60.0 + SKEW_S  # how long an admission holds a 60-s window's budget
MAX_RESET_S = 60.0


def budget(
    rpm: int | None = None,
    tpm: int | None = None,
    window_s: float = 60.0,
    *,
    reserve: float = 0.0,
    max_reset_s: float = MAX_RESET_S,
) -> Budget:
    return Budget(
        (RateLimiter("model 'm'", rpm, tpm, window_s),),
        high_reserve=reserve,
        max_reset_s=max_reset_s,
    )


def per_window(limit: int, window_s: float) -> int:
    """The documented cap of any ``window_s`` span: the window's share, rounded up."""
    return max(1, math.ceil(limit * window_s / 60 - 1e-9))


# -- the books --------------------------------------------------------------------------------


def test_window_counts_requests_and_tokens() -> None:
    books = budget(rpm=3, tpm=100)
    assert books.ready_at(10, NORMAL, now=0.0) == 0.0
    books.admit(40, 0.0)
    books.admit(40, 1.0)
    assert books.ready_at(30, NORMAL, now=2.0) == pytest.approx(SPAN)  # tokens
    assert books.ready_at(20, NORMAL, now=2.0) == 2.0
    books.admit(20, 2.0)
    assert books.ready_at(0, NORMAL, now=3.0) == pytest.approx(SPAN)  # requests
    assert books.remaining(3.0) == (0, 0)
    assert books.remaining(SPAN + 0.5) == (1, 40)  # the first one left the window


def test_an_unlimited_budget_admits_at_once() -> None:
    books = Budget((), high_reserve=0.0, max_reset_s=MAX_RESET_S)
    assert not books.limited
    assert books.too_large(10**9, LOW) is None
    assert books.ready_at(10**9, LOW, now=5.0) == 5.0
    admission = books.admit(10, 5.0)
    books.settle(admission, 3, {"x-ratelimit-remaining-requests": "0"}, 6.0)
    assert books.remaining(6.0) == (None, None)


def test_high_reserve_keeps_a_share_for_high() -> None:
    books = budget(rpm=10, reserve=0.2)
    for i in range(8):
        books.admit(0, float(i))
    assert books.ready_at(0, NORMAL, now=8.0) > 8.0  # 8 of 10: NORMAL's 80% is used
    assert books.ready_at(0, HIGH, now=8.0) == 8.0


def test_a_fine_window_keeps_one_request_for_normal_and_the_minute_holds_the_reserve() -> None:
    # rpm=60 over 1-s windows: one request a second. NORMAL keeps its one a second (a share of
    # 0.8 of a request would stall it forever); the minute window stops it at 48.
    books = budget(rpm=60, window_s=1.0, reserve=0.2)
    now, starts = 0.0, []
    while (now := books.ready_at(0, NORMAL, now)) < 60:
        starts.append(now)
        books.admit(0, now)
    assert len(starts) == 48
    assert starts[-1] - starts[0] < 50  # one a second, then a stop
    assert books.ready_at(0, HIGH, 55.0) == 55.0  # HIGH's 20 % is still there


def test_a_share_of_nothing_is_refused_up_front() -> None:
    books = budget(rpm=1, reserve=0.5)
    reason = books.too_large(10, NORMAL)
    assert reason is not None
    assert "max_requests_per_minute=1" in reason and "high_reserve" in reason
    assert books.too_large(10, HIGH) is None


def test_too_large_names_the_estimate_and_the_limit() -> None:
    books = budget(tpm=6000, window_s=1.0)  # 100 tokens a second
    assert books.too_large(100, NORMAL) is None
    reason = books.too_large(101, NORMAL)
    assert reason is not None
    assert "estimated at 101 tokens" in reason
    assert "max_tokens_per_minute=6000" in reason and "(100)" in reason
    assert "max_tokens" in reason  # the fix
    assert math.isinf(books.ready_at(101, HIGH, 0.0))  # what it refuses could never be sent


def test_shorter_window_paces_the_same_rate_more_evenly() -> None:
    books = budget(rpm=60, window_s=2.0)
    books.admit(0, 0.0)
    books.admit(0, 0.0)
    assert books.ready_at(0, NORMAL, now=0.0) == pytest.approx(2.0 + skew_s(2.0))
    assert skew_s(2.0) == pytest.approx(0.04)  # 2 % of the window, not a fixed 0.25 s
    assert skew_s(60.0) == SKEW_S


def test_a_window_share_that_is_not_whole_is_rounded_up_and_spread() -> None:
    # rpm=119 over 1-s windows: a share of 1.98. Rounded down it would pace 60 a minute.
    books = budget(rpm=119, window_s=1.0)
    books.admit(0, 0.0)
    assert books.ready_at(0, HIGH, 0.0) == 0.0  # the second of the window's 2
    books.admit(0, 0.0)
    span = 2 * 60 / 119  # the time 2 take at 119 a minute
    assert books.ready_at(0, HIGH, 0.0) == pytest.approx(span + skew_s(span))


def test_settling_returns_unused_tokens_and_wakes_the_listeners() -> None:
    books = budget(tpm=100)
    woken: list[str] = []
    books.add_listener(lambda: woken.append("a"))
    admission = books.admit(90, 0.0)
    assert books.ready_at(50, NORMAL, now=1.0) > 1.0
    books.settle(admission, 30, {}, now=1.0)
    assert admission.settled and admission.tokens == 30
    assert books.remaining(1.0) == (None, 70)
    assert books.ready_at(50, NORMAL, now=1.0) == 1.0
    assert woken == ["a"]
    books.settle(admission, 0, {}, now=2.0)  # a second settle is a no-op
    assert admission.tokens == 30 and books.remaining(2.0) == (None, 70)
    assert woken == ["a"]


def test_settling_above_the_estimate_books_the_truth_without_waking() -> None:
    books = budget(tpm=1000)
    woken: list[bool] = []
    books.add_listener(lambda: woken.append(True))
    books.settle(books.admit(100, 0.0), 400, {}, now=1.0)
    assert books.remaining(1.0) == (None, 600)
    assert woken == []


def test_settling_after_the_window_changes_nothing() -> None:
    books = budget(tpm=100)
    admission = books.admit(90, 0.0)
    books.settle(admission, 30, {}, now=SPAN + 1)
    assert books.remaining(SPAN + 1) == (None, 100)


@pytest.mark.parametrize("used", [-1, math.nan, math.inf, "7", None, True, object(), -0.5])
def test_an_unusable_usage_keeps_the_estimate(used: object) -> None:
    books = budget(tpm=100)
    admission = books.admit(60, 0.0)
    books.settle(admission, used, {}, now=1.0)
    assert admission.settled and admission.tokens == 60
    assert books.remaining(1.0) == (None, 40)


def test_a_group_limiter_is_shared_by_its_models_budgets() -> None:
    group = RateLimiter("limit group 'org'", 3, None)
    a = Budget(
        (RateLimiter("model 'a'", 10, None), group), high_reserve=0.0, max_reset_s=MAX_RESET_S
    )
    b = Budget((group,), high_reserve=0.0, max_reset_s=MAX_RESET_S)
    woken: list[str] = []
    a.add_listener(lambda: woken.append("a"))
    b.add_listener(lambda: woken.append("b"))
    a.admit(0, 0.0)
    b.admit(0, 0.0)
    first = a.admit(50, 0.0)
    assert b.ready_at(0, HIGH, 0.0) == pytest.approx(SPAN)
    assert a.remaining(0.0) == (0, None) and b.remaining(0.0) == (0, None)
    a.record_throttled(2.0)
    b.record_throttled(3.0)
    b.record_throttled(math.nan)  # ignored, as are negative waits
    b.record_throttled(-1.0)
    a.record_rate_limited()
    assert (a.throttled_s, b.throttled_s, group.throttled_s) == (2.0, 3.0, 5.0)
    assert (a.rate_limited, b.rate_limited, group.rate_limited) == (1, 0, 1)
    a.settle(first, 0, {}, 1.0)  # no token limit: nothing to free, nobody to wake
    assert woken == []


def test_the_counters_are_read_only() -> None:
    limiter = RateLimiter("m", 1, 1)
    books = Budget((limiter,), high_reserve=0.0, max_reset_s=1.0)
    admission = books.admit(1, 0.0)
    for obj, name in [
        (limiter, "throttled_s"),
        (limiter, "rate_limited"),
        (books, "throttled_s"),
        (books, "rate_limited"),
        (admission, "tokens"),
        (admission, "settled"),
    ]:
        with pytest.raises(AttributeError):
            setattr(obj, name, 0)


def test_admissions_stay_in_time_order_when_a_clock_reads_earlier() -> None:
    books = budget(rpm=2)
    books.admit(0, 10.0)
    late = books.admit(0, 9.0)  # another lane's reading, a little behind
    assert late.at == 10.0
    assert books.ready_at(0, HIGH, 10.0) == pytest.approx(10.0 + SPAN)


# -- provider headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("6m0s", 360.0), ("12ms", 0.012), ("1s", 1.0), ("1h2m3.5s", 3723.5), ("7", 7.0)],
)
def test_reset_durations(value: str, seconds: float) -> None:
    assert parse_reset(value) == pytest.approx(seconds)


def test_anthropic_reset_is_an_rfc3339_time() -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert parse_reset(later.isoformat().replace("+00:00", "Z")) == pytest.approx(30, abs=1)
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=30)
    assert parse_reset(earlier.isoformat()) == 0.0  # already past


@pytest.mark.parametrize(
    ("value", "remaining"),
    [
        ("12", 12),
        (" 12.7 ", 12),
        ("-3", 0),  # negative: none left
        ("1e300", 2**53),  # absurd: clamped (it tightens nothing)
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("1e309", None),
        ("", None),
        ("twelve", None),
        ("9" * 5000, None),
    ],
)
def test_remaining_is_read_defensively(value: str, remaining: int | None) -> None:
    assert parse_remaining(value) == remaining


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1000000h", 3.6e9),  # for the caller to cap
        ("1e309", math.inf),
        ("9999-12-31T23:59:59Z", None),  # far: a large number, checked below
        ("-5", 0.0),
        ("nan", None),
        ("soon", None),
        ("", None),
        ("0001-01-01T00:00:00+14:00", 0.0),
    ],
)
def test_reset_is_read_defensively(value: str, seconds: float | None) -> None:
    parsed = parse_reset(value)
    if value.startswith("9999"):
        assert parsed is not None and parsed > 1e11
    else:
        assert parsed == seconds


def test_provider_headers_tighten_the_books() -> None:
    for headers in [
        {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "20s"},
        {
            "anthropic-ratelimit-requests-remaining": "1",
            "anthropic-ratelimit-requests-reset": (
                datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)
            ).isoformat(),
        },
        {"X-RateLimit-Remaining-Requests": "1", "X-RateLimit-Reset-Requests": "20s"},
    ]:
        books = budget(rpm=1000)
        books.observe(headers, now=0.0)
        assert books.ready_at(0, HIGH, now=0.0) == 0.0
        books.admit(0, 0.0)
        assert books.ready_at(0, HIGH, now=0.0) == pytest.approx(20.0, abs=1)  # until the reset
        assert books.remaining(0.0)[0] == 0


def test_token_headers_hold_a_request_that_needs_more() -> None:
    books = budget(tpm=100_000)
    books.observe({"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "3s"}, 1.0)
    assert books.ready_at(400, HIGH, 1.0) == 1.0
    assert books.ready_at(600, HIGH, 1.0) == pytest.approx(4.0)
    assert books.remaining(1.0) == (None, 500)
    assert books.remaining(4.0) == (None, 100_000)  # the reset came: the hint is gone


@pytest.mark.parametrize(
    "reset", ["1000000h", "9999-12-31T23:59:59Z", "1e309", "99999999999999999999s"]
)
def test_a_far_reset_is_capped(reset: str) -> None:
    books = budget(rpm=1000, max_reset_s=5.0)
    books.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset}, 2.0)
    assert books.ready_at(0, HIGH, 2.0) == pytest.approx(7.0)


@pytest.mark.parametrize("remaining", ["inf", "nan", "-inf", "1e309", "garbage"])
def test_an_unusable_remaining_is_ignored(remaining: str) -> None:
    books = budget(rpm=1000)
    books.observe(
        {"x-ratelimit-remaining-requests": remaining, "x-ratelimit-reset-requests": "30s"}, 0.0
    )
    assert books.ready_at(0, HIGH, 0.0) == 0.0
    assert books.remaining(0.0) == (1000, None)


def test_a_negative_remaining_means_none_left() -> None:
    books = budget(rpm=1000)
    books.observe({"x-ratelimit-remaining-requests": "-4", "x-ratelimit-reset-requests": "3s"}, 0.0)
    assert books.ready_at(0, HIGH, 0.0) == pytest.approx(3.0)


KNOWN_HEADERS = [
    f"{prefix}{kind}{suffix}"
    for kind in ("requests", "tokens")
    for prefix, suffix in [("x-ratelimit-remaining-", ""), ("x-ratelimit-reset-", "")]
] + [
    f"anthropic-ratelimit-{kind}-{what}"
    for kind in ("requests", "tokens")
    for what in ("remaining", "reset")
]
header_values = st.one_of(
    st.text(),
    st.sampled_from(["inf", "-inf", "nan", "-1", "1e309", "1000000h", "9999-12-31T23:59:59Z"]),
    st.sampled_from(["0001-01-01T00:00:00", "0", "12ms", "1h2m", "2099-01-01T00:00:00+14:00"]),
    st.floats().map(repr),
    st.integers().map(str),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
header_dicts = st.dictionaries(
    st.one_of(st.sampled_from(KNOWN_HEADERS), st.text(max_size=30)), header_values, max_size=8
)


@settings(max_examples=300)
@given(
    headers=st.lists(header_dicts, min_size=1, max_size=4),
    used=st.one_of(st.integers(), st.floats(), st.none(), st.text()),
    booked=st.integers(0, 5),
    max_reset_s=st.floats(0, 600),
    now=st.floats(0, 1e6),
)
def test_any_headers_are_read_without_raising_and_hold_the_books_boundedly(
    headers: list[dict[str, str]], used: object, booked: int, max_reset_s: float, now: float
) -> None:
    group = RateLimiter("limit group 'org'", 20, 50_000, 10.0)
    books = Budget(
        (RateLimiter("model 'm'", 10, 10_000), group), high_reserve=0.2, max_reset_s=max_reset_s
    )
    admissions = [books.admit(1000, now) for _ in range(booked)]
    for i, header in enumerate(headers):
        read_rate_limit_headers(header)
        if i < len(admissions):
            books.settle(admissions[i], used, header, now)
        else:
            books.observe(header, now)
    longest = max(max(limiter.spans_s) for limiter in books.limiters)
    bound = now + longest + skew_s(longest) + max_reset_s
    for priority in RequestPriority:
        assert now <= books.ready_at(1000, priority, now) <= bound + 1e-6
    left_r, left_t = books.remaining(now)
    assert left_r is not None and 0 <= left_r <= 10
    assert left_t is not None and 0 <= left_t <= 10_000


# -- pacing accuracy: a limiter with a backlog --------------------------------------------------


@attrs.frozen
class Run:
    """What a backlog was admitted: times, and tokens as finally booked."""

    times: list[float]
    tokens: list[int]


def run_backlog(
    books: Budget,
    sizes: Sequence[int],
    until: float,
    *,
    priority: RequestPriority = HIGH,
    used_share: Sequence[float] = (1.0,),
    latency_s: Sequence[float] = (0.0,),
    most: int = 20_000,
) -> Run:
    """Always one request waiting, admitted at ``ready_at``; each settled after its latency.

    Stops at ``until`` or after ``most`` admissions (settled at 0 tokens, a token limit alone
    admits without end).
    """
    times: list[float] = []
    admissions: list[Admission] = []
    pending: list[tuple[float, int, Admission, int]] = []  # (settle at, i, admission, usage)
    now, i = 0.0, 0
    while True:
        size = sizes[i % len(sizes)]
        ready = books.ready_at(size, priority, now)
        assert ready >= now
        if pending and pending[0][0] <= ready:  # an answer comes first: settle it
            at, _, admission, used = heapq.heappop(pending)
            now = max(now, at)
            books.settle(admission, used, {}, now)
            continue
        now = ready
        if now >= until or len(times) >= most:
            break
        admission = books.admit(size, now)
        times.append(now)
        admissions.append(admission)
        used = math.floor(size * used_share[i % len(used_share)])
        heapq.heappush(pending, (now + latency_s[i % len(latency_s)], i, admission, used))
        i += 1
    for at, _, admission, used in sorted(pending):
        books.settle(admission, used, {}, max(now, at))
    return Run(times, [a.tokens for a in admissions])


def most_in_any_span(run: Run, span_s: float) -> tuple[int, int]:
    """The most requests, and the most tokens, admitted in any ``span_s``-long span."""
    times, tokens = run.times, run.tokens
    prefix = [0]
    for used in tokens:
        prefix.append(prefix[-1] + used)
    most_r = most_t = 0
    for i, at in enumerate(times):
        j = bisect_left(times, at + span_s)
        most_r = max(most_r, j - i)
        most_t = max(most_t, prefix[j] - prefix[i])
    return most_r, most_t


windows = st.integers(1, 120).map(lambda k: 60 / k)  # what the config accepts: divisors of 60


@st.composite
def limits(draw: st.DrawFn) -> tuple[int | None, int | None, float, list[int]]:
    window_s = draw(windows)
    rpm = draw(st.one_of(st.none(), st.integers(1, 1200)))
    tpm = draw(st.one_of(st.none(), st.integers(1, 400_000)))
    assume(rpm is not None or tpm is not None)
    try:
        check_window("ModelConfig.rate_limit", window_s, rpm, tpm)
    except ConfigError:
        assume(False)
    # Requests small next to a window's token share, so a window's budget is not lost to
    # rounding (a request over half the budget leaves the rest of it unusable, under any
    # scheme that holds the cap over every span); and at most ~2,000 admissions a minute.
    if tpm is None:
        sizes = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=5))
    else:
        share = per_window(tpm, window_s)
        high = max(1, share // 40)
        low = min(high, max(1, math.ceil(tpm / 2000)))
        sizes = draw(st.lists(st.integers(low, high), min_size=1, max_size=5))
    return rpm, tpm, window_s, sizes


@settings(max_examples=150, deadline=None)
@given(case=limits())
def test_a_backlog_gets_its_whole_rate_and_never_more(
    case: tuple[int | None, int | None, float, list[int]],
) -> None:
    rpm, tpm, window_s, sizes = case
    minutes = 3
    # (Requests of one token under a small token limit: up to ~29,000 admissions in 3 minutes.)
    run = run_backlog(budget(rpm, tpm, window_s), sizes, until=60.0 * minutes, most=50_000)
    assert len(run.times) < 50_000  # not cut short: it ran the whole time it is rated on
    # Never above: every 60-s span, and every window_s span (at its share rounded up).
    most_r, most_t = most_in_any_span(run, 60.0)
    assert rpm is None or most_r <= rpm
    assert tpm is None or most_t <= tpm
    if window_s < 60:
        fine_r, fine_t = most_in_any_span(run, window_s)
        assert rpm is None or fine_r <= per_window(rpm, window_s)
        assert tpm is None or fine_t <= per_window(tpm, window_s)
    # Within 5 % of the rate: one of the limits binds, at 95 % or more.
    rates = []
    if rpm is not None:
        rates.append(len(run.times) / minutes / rpm)
    if tpm is not None:
        rates.append(sum(run.tokens) / minutes / tpm)
    assert max(rates) >= 0.95, rates


@settings(max_examples=80, deadline=None)
@given(
    case=limits(),
    used_share=st.lists(st.floats(0, 1), min_size=1, max_size=6),
    latency_s=st.lists(st.floats(0, 30), min_size=1, max_size=6),
    reserve=st.sampled_from([0.0, 0.0, 0.2, 0.5]),
    priority=st.sampled_from(list(RequestPriority)),
)
def test_settling_below_the_estimate_never_breaks_the_caps(
    case: tuple[int | None, int | None, float, list[int]],
    used_share: list[float],
    latency_s: list[float],
    reserve: float,
    priority: RequestPriority,
) -> None:
    rpm, tpm, window_s, sizes = case
    books = budget(rpm, tpm, window_s, reserve=reserve)
    assume(all(books.too_large(size, priority) is None for size in sizes))
    run = run_backlog(
        books,
        sizes,
        until=130.0,
        priority=priority,
        used_share=used_share,
        latency_s=latency_s,
        most=5000,
    )
    share = 1.0 if priority is HIGH else 1.0 - reserve
    most_r, most_t = most_in_any_span(run, 60.0)
    assert rpm is None or most_r <= math.floor(rpm * share + 1e-9)
    assert tpm is None or most_t <= math.floor(tpm * share + 1e-9)
    if window_s < 60:
        fine_r, fine_t = most_in_any_span(run, window_s)
        assert rpm is None or fine_r <= per_window(rpm, window_s)
        assert tpm is None or fine_t <= per_window(tpm, window_s)


@pytest.mark.parametrize(
    ("rpm", "window_s", "least_per_minute"),
    [(60, 1.0, 57), (119, 1.0, 114), (61, 1.0, 58), (300, 0.2, 285), (7, 10.0, 7)],
)
def test_known_cases_of_the_old_pacing_loss(
    rpm: int, window_s: float, least_per_minute: int
) -> None:
    # Before: rpm=60 over 1-s windows sent 48 a minute (0.25 s skew on a 1-s window), and
    # rpm=119 sent 60 (a share of 1.98 rounded down to 1).
    run = run_backlog(budget(rpm, None, window_s), [0], until=600.0)
    assert len(run.times) / 10 >= least_per_minute
    assert most_in_any_span(run, 60.0)[0] <= rpm
