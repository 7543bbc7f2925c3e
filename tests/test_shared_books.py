"""The shared books decide as the in-memory ones do: one property, a real Redis, both backends.

Hypothesis draws limits (requests, tokens, a window, the HIGH reserve) and a run of steps: time
passing, a lane's batch of wanted admissions (tokens, priority), and settlements of earlier
admissions with real usage. The same steps go to the in-memory books (``_ratelimit.Budget``, asked
entry by entry as the lane asks them) and to the shared books (one ``_shared_books.lua`` decision
per batch), with the server's clock driven by the test (``SharedBooks.now_override``). Each
decision must agree: how many of the batch are admitted, and when the first refused one fits.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_gateway import RequestPriority
from llm_gateway._ratelimit import Admission, Budget, RateLimiter
from llm_gateway._shared_limits import SharedBooks, SharedBudget
from tests._redis_server import RedisServer, running_redis

START = 1_000_000.0  # the server's clock, driven by the test


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


limits = st.fixed_dictionaries(
    {
        "rpm": st.one_of(st.none(), st.integers(2, 120)),
        "tpm": st.one_of(st.none(), st.integers(600, 3000)),
        "window_s": st.sampled_from([60.0, 10.0, 5.0]),
        "reserve": st.sampled_from([0.0, 0.25, 0.5]),
    }
).filter(lambda d: d["rpm"] is not None or d["tpm"] is not None)

priorities = st.sampled_from(list(RequestPriority))
steps = st.lists(
    st.one_of(
        # Quarter seconds: no admission lands exactly on a window's edge (the windows' stays,
        # 60.25 s and 10.2 s or 5.1 s, are off that grid), where rounding could tip a tie.
        st.tuples(st.just("wait"), st.integers(0, 60).map(lambda q: q / 4)),
        st.tuples(
            st.just("batch"),
            st.lists(st.tuples(st.integers(0, 300), priorities), min_size=1, max_size=8),
        ),
        st.tuples(st.just("settle"), st.integers(0, 10**6), st.integers(0, 150)),
    ),
    min_size=1,
    max_size=40,
)


def rank(priority: RequestPriority) -> int:
    return list(RequestPriority).index(priority)


async def check(url: str, spec: dict[str, Any], run: list[tuple[Any, ...]]) -> None:
    rpm, tpm, window_s, reserve = spec["rpm"], spec["tpm"], spec["window_s"], spec["reserve"]
    memory = Budget(
        (RateLimiter("model 'm'", rpm, tpm, window_s),), high_reserve=reserve, max_reset_s=60
    )
    books = SharedBooks(url, "prop-" + secrets.token_hex(4), None)
    books.now_override = now = START
    limiter = books.limiter("model 'm'", "model 'm'", rpm, tpm, window_s)
    shared = books.budget("m", [limiter], high_reserve=reserve, max_reset_s=60)
    assert isinstance(shared, SharedBudget)
    booked: list[tuple[Admission, Admission]] = []
    async with books.connect():
        for step in run:
            if step[0] == "wait":
                now += step[1]
                books.now_override = now
            elif step[0] == "settle":
                if booked:
                    mine, theirs = booked[step[1] % len(booked)]
                    memory.settle(mine, step[2], {}, now)
                    shared.settle(theirs, step[2], {}, now)
            else:
                wanted = [
                    (tokens, priority, rank(priority))
                    for tokens, priority in step[1]
                    if memory.too_large(tokens, priority) is None
                ]
                if not wanted:
                    continue
                # The in-memory books, asked as the lane asks them.
                expected_ready = None
                mine_list = []
                for tokens, priority, _ in wanted:
                    ready = memory.ready_at(tokens, priority, now)
                    if ready > now:
                        expected_ready = ready
                        break
                    mine_list.append(memory.admit(tokens, now))
                theirs = await shared.admit_many(wanted, now)
                assert books.connected
                assert len(theirs) == len(mine_list), (wanted, len(theirs), len(mine_list))
                booked += zip(mine_list, theirs, strict=True)
                got_ready = shared._ready_at
                if expected_ready is None:
                    assert got_ready is None
                else:
                    assert got_ready is not None
                    # The shared answer is on the local clock: compare the delays.
                    delay = got_ready - anyio.current_time()
                    assert delay == pytest.approx(expected_ready - now, abs=0.05)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=limits, run=steps)
def test_shared_books_decide_as_the_in_memory_books(
    backend: str, redis_server: RedisServer, spec: dict[str, Any], run: list[tuple[Any, ...]]
) -> None:
    anyio.run(check, redis_server.url, spec, run, backend=backend)
