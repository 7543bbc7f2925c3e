"""Rate limits shared through a real Redis (``GatewayConfig.shared_state``), on trio and asyncio.

Several gateways in one test stand for several processes: each has its own Redis client and
its own books, and they share only what goes through the server. Real time (the server's clock
drives the books); the limits are set so the properties are exact counts, or carry margins of
a window that survive a loaded machine. The multi-process version is test_shared_soak.py.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import coredis
import pytest

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
    Usage,
)
from llm_gateway._shared_limits import SharedBooks
from llm_gateway.providers import Provider
from tests._redis_server import RedisServer, free_port, running_redis
from tests._support import Call, RecordingProvider, ask, mock_model

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (the test may stop and restart it)."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends on real time: the books run on the Redis server's clock."""
    return str(request.param)


def prefix() -> str:
    return "test-" + secrets.token_hex(4)


class Shared:
    """A gateway on the shared books whose model ``m`` is a :class:`RecordingProvider`."""

    def __init__(
        self,
        url: str,
        key_prefix: str,
        model: ModelConfig,
        *,
        limit_groups: Mapping[str, LimitGroup] | None = None,
        latency: float = 0.01,
        usage: Callable[[LLMRequest], Usage] = lambda r: Usage(input_tokens=3, output_tokens=5),
        headers: Callable[[LLMRequest], Mapping[str, str]] = lambda r: {},
        fail: Callable[[LLMRequest], BaseException | None] = lambda r: None,
        expected_processes: int | None = None,
    ) -> None:
        self.calls: list[Call] = []
        self.provider = RecordingProvider("m", lambda r: latency, fail, self.calls, usage, headers)
        config = GatewayConfig(
            models={"m": model},
            log_dir=None,
            limit_groups=limit_groups or {},
            shared_state=url,
            shared_prefix=key_prefix,
            expected_processes=expected_processes,
        )
        self.gateway = Gateway(config, provider_factory=self._open)

    def _open(self, model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        return _yielding(self.provider)

    @property
    def books(self) -> SharedBooks:
        books = self.gateway._shared
        assert books is not None
        return books

    def started(self) -> list[float]:
        return [c.started for c in self.calls]


@asynccontextmanager
async def _yielding(provider: Provider) -> AsyncGenerator[Provider]:
    yield provider


async def submit_all(gw: Gateway, requests: list[LLMRequest]) -> list[Any]:
    return [await gw.submit(r) for r in requests]


# -- configuration ----------------------------------------------------------------------------


def test_the_url_is_validated_and_its_password_never_shown() -> None:
    models = {"m": mock_model()}
    config = GatewayConfig(models=models, shared_state="redis://:hunter2@localhost:6379/3")
    assert "hunter2" not in repr(config)
    assert "redis://***@localhost:6379/3" in repr(config)
    for bad in ["http://localhost:6379", "redis://:hunter2@localhost:99999/0", "redis://"]:
        with pytest.raises(ConfigError, match=r"GatewayConfig\.shared_state must be") as info:
            GatewayConfig(models=models, shared_state=bad)
        assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="database 'x' that is not a number"):
        GatewayConfig(models=models, shared_state="redis://localhost/x")
    with pytest.raises(ConfigError, match=r"GatewayConfig\.shared_prefix must be"):
        GatewayConfig(models=models, shared_state="redis://localhost", shared_prefix="a b")
    with pytest.raises(ConfigError, match=r"GatewayConfig\.expected_processes must be"):
        GatewayConfig(models=models, expected_processes=0)
    loaded = Gateway(
        {"models": {"m": {"provider": "mock", "model_name": "x"}}, "shared_state": "redis://h"}
    ).config
    assert loaded.shared_state == "redis://h"
    assert loaded.shared_prefix == "llm_gateway"


def test_without_redis_server_the_tests_fail_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A missing binary is a failure, never a skip: the properties need a real server."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with (
        pytest.raises(
            pytest.fail.Exception,
            match=r"pip install -e '\.\[test\]'.*apt-get install -y redis-server",
        ),
        running_redis(tmp_path),
    ):
        pass


# -- the same books in every gateway ----------------------------------------------------------


async def test_gateways_on_one_prefix_share_a_minute_of_requests(
    redis_server: RedisServer,
) -> None:
    """20 a minute between two gateways that want 15 each: exactly 20 go, not 30."""
    key = prefix()
    model = mock_model(max_requests_per_minute=20, max_concurrency=50)
    a, b = Shared(redis_server.url, key, model), Shared(redis_server.url, key, model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        await submit_all(gw_a, [ask() for _ in range(15)])
        await submit_all(gw_b, [ask() for _ in range(15)])
        await anyio.sleep(1.5)
        assert len(a.calls) + len(b.calls) == 20
        assert a.calls and b.calls
        # What a gateway that still waits for budget saw at its last decision (it asks again
        # at least every 0.25 s).
        waiting = gw_a if len(a.calls) < 15 else gw_b
        assert waiting.get_stats().models["m"].remaining_requests == 0
        await gw_a.shutdown(timeout=0)
        await gw_b.shutdown(timeout=0)


async def test_separate_prefixes_share_nothing(redis_server: RedisServer) -> None:
    """The control for the test above: each prefix has its own budget."""
    model = mock_model(max_requests_per_minute=20, max_concurrency=50)
    a, b = Shared(redis_server.url, prefix(), model), Shared(redis_server.url, prefix(), model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        await submit_all(gw_a, [ask() for _ in range(15)])
        await submit_all(gw_b, [ask() for _ in range(15)])
        await anyio.sleep(1.5)
        assert len(a.calls) + len(b.calls) == 30


async def test_a_limit_group_is_shared_across_models_and_gateways(
    redis_server: RedisServer,
) -> None:
    key = prefix()
    groups = {"org": LimitGroup(max_requests_per_minute=12)}
    model = mock_model(limit_group="org", max_concurrency=50)
    a = Shared(redis_server.url, key, model, limit_groups=groups)
    b = Shared(redis_server.url, key, model, limit_groups=groups)
    async with a.gateway as gw_a, b.gateway as gw_b:
        await submit_all(gw_a, [ask() for _ in range(10)])
        await submit_all(gw_b, [ask() for _ in range(10)])
        await anyio.sleep(1.5)
        assert len(a.calls) + len(b.calls) == 12
        waiting = gw_a if len(a.calls) < 10 else gw_b  # it asked last (see above)
        assert waiting.get_stats().limit_groups["org"].remaining_requests == 0
        await gw_a.shutdown(timeout=0)
        await gw_b.shutdown(timeout=0)


async def test_the_high_reserve_holds_across_gateways(redis_server: RedisServer) -> None:
    """high_reserve=0.5 of 10 a minute: NORMAL requests of both gateways get 5; HIGH the rest."""
    key = prefix()
    model = mock_model(
        max_requests_per_minute=10, max_concurrency=50, rate_limit=RateLimitPolicy(high_reserve=0.5)
    )
    a, b = Shared(redis_server.url, key, model), Shared(redis_server.url, key, model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        await submit_all(gw_a, [ask() for _ in range(8)])
        await submit_all(gw_b, [ask() for _ in range(8)])
        await anyio.sleep(1.0)
        assert len(a.calls) + len(b.calls) == 5
        await submit_all(gw_b, [ask(priority=RequestPriority.HIGH) for _ in range(3)])
        await anyio.sleep(1.0)
        highs = [c for c in b.calls if c.request.priority is RequestPriority.HIGH]
        assert len(highs) == 3
        assert len(a.calls) + len(b.calls) == 8
        await gw_a.shutdown(timeout=0)
        await gw_b.shutdown(timeout=0)


async def test_a_high_request_goes_before_low_ones_queued_in_another_gateway(
    redis_server: RedisServer,
) -> None:
    """One a second: A keeps a backlog of LOW; B's HIGH takes the next slot, not A's LOW."""
    key = prefix()
    model = mock_model(
        max_requests_per_minute=60, max_concurrency=50, rate_limit=RateLimitPolicy(window_s=1)
    )
    a, b = Shared(redis_server.url, key, model), Shared(redis_server.url, key, model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        await submit_all(gw_a, [ask(priority=RequestPriority.LOW) for _ in range(20)])
        await anyio.sleep(1.5)  # A's first slots are taken; its backlog waits for budget
        for i in range(3):  # three times: a race won by luck would not win them all
            await anyio.sleep(0.4 * i)  # at different moments of the second
            sent = anyio.current_time()
            await gw_b.request(ask(priority=RequestPriority.HIGH))
            high_start = b.calls[i].started
            # The HIGH request went within about one window of its arrival ...
            assert high_start - sent < 1.5
            # ... and no LOW request of A started between its arrival and its start (0.3 s
            # for a decision already on its way when it arrived, or a start delayed by a busy
            # machine: A's next slot is a second later).
            lows_between = [t for t in a.started() if sent + 0.3 < t < high_start]
            assert lows_between == []
        await gw_a.shutdown(timeout=0)


async def test_token_estimates_are_reserved_and_settled_across_gateways(
    redis_server: RedisServer,
) -> None:
    """A's reservations fill the token budget; its real usage is small, so B goes at once."""
    key = prefix()
    model = mock_model(max_tokens_per_minute=1000, max_concurrency=50)

    def request(**fields: Any) -> LLMRequest:
        return ask(max_tokens=300, **fields)

    a = Shared(redis_server.url, key, model, latency=0.5, usage=lambda r: Usage(2, 3))
    b = Shared(redis_server.url, key, model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        first = await submit_all(gw_a, [request() for _ in range(3)])
        await anyio.sleep(0.2)  # A's three are in flight, reserving ~3 x 310 tokens
        assert len(a.calls) == 3
        waiting = await gw_b.submit(request())
        await anyio.sleep(0.1)
        assert b.calls == []  # the estimates leave no room for a fourth
        for fut in first:
            await fut
        with anyio.fail_after(2):  # settled at 5 tokens each: room now, not in a minute
            await waiting
        left = gw_b.get_stats().models["m"].remaining_tokens
        assert left is not None and 1000 - 4 * 5 - 310 <= left <= 1000 - 20


async def test_a_429_pause_is_shared(redis_server: RedisServer) -> None:
    key = prefix()
    model = mock_model(max_requests_per_minute=600, max_concurrency=50)
    once: list[LLMRequest] = []

    def limited(request: LLMRequest) -> BaseException | None:
        if once:
            return None
        once.append(request)
        return ProviderError("slow down", status_code=429, retry_after_s=1.0)

    a = Shared(redis_server.url, key, model, fail=limited)
    b = Shared(redis_server.url, key, model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        fut = await gw_a.submit(ask())
        await anyio.sleep(0.2)  # the 429 is back, the pause on its way to the server
        sent = anyio.current_time()
        await gw_b.request(ask())
        assert b.calls[0].started - sent >= 0.6
        await fut
        assert gw_a.get_stats().models["m"].rate_limited == 1


async def test_provider_header_hints_are_shared(redis_server: RedisServer) -> None:
    key = prefix()
    model = mock_model(max_requests_per_minute=600, max_concurrency=50)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
    a = Shared(redis_server.url, key, model, headers=lambda r: headers)
    b = Shared(redis_server.url, key, model)
    async with a.gateway as gw_a, b.gateway as gw_b:
        await gw_a.request(ask())
        await anyio.sleep(0.1)
        sent = anyio.current_time()
        await gw_b.request(ask())
        assert b.calls[0].started - sent >= 0.6


async def test_a_gateway_that_dies_holds_its_reservations_one_window_at_most(
    redis_server: RedisServer,
) -> None:
    """A books the whole minute and dies; B goes once the server's clock passes the window."""
    key = prefix()
    model = mock_model(max_requests_per_minute=5, max_concurrency=50)
    a, b = Shared(redis_server.url, key, model), Shared(redis_server.url, key, model)
    clock = 1_000_000.0
    a.books.now_override = b.books.now_override = clock
    with pytest.raises(RuntimeError):
        async with a.gateway as gw_a:
            await submit_all(gw_a, [ask() for _ in range(5)])
            await anyio.sleep(0.2)
            assert len(a.calls) == 5
            raise RuntimeError("the process dies; its requests never settle")
    async with b.gateway as gw_b:
        fut = await gw_b.submit(ask())
        b.books.now_override = clock + 60.0  # still inside the window (and its margin)
        await anyio.sleep(0.6)
        assert b.calls == []
        b.books.now_override = clock + 60.3  # one window (60 s + 0.25 s margin) later
        with anyio.fail_after(2):
            await fut


# -- Redis unreachable ------------------------------------------------------------------------


async def test_redis_stopped_mid_run_keeps_serving_then_rejoins(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = prefix()
    model = mock_model(max_requests_per_minute=6000, max_concurrency=20)
    a = Shared(redis_server.url, key, model, expected_processes=2)
    caplog.set_level(logging.WARNING, logger="llm_gateway")
    async with a.gateway as gw:
        await gw.batch([ask() for _ in range(10)])
        assert gw.get_stats().shared_state == _stats(True, 0, 0, 0)
        redis_server.stop()
        for _ in range(3):  # requests keep completing, paced by the local books
            await gw.batch([ask() for _ in range(10)])
        stats = gw.get_stats().shared_state
        assert stats is not None
        assert not stats.connected and stats.outages == 1 and stats.errors >= 1
        assert stats.local_admissions == 30
        assert gw.get_stats().models["m"].completed == 40
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not once per call
        assert redis_server.url.split("/")[2] in warnings[0].getMessage()
        redis_server.start()
        await anyio.sleep(1.2)  # the next try comes at most a second after the last
        await gw.batch([ask() for _ in range(10)])
        stats = gw.get_stats().shared_state
        assert stats is not None and stats.connected and stats.outages == 1
        assert stats.local_admissions <= 40
        async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
            booked = await client.zcard(f"{{{key}}}:model 'm':a")
        assert booked >= 1  # sharing resumed: the admissions are in the server's books
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_server_at_start_paces_locally_and_never_shows_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    model = mock_model(max_requests_per_minute=4, max_concurrency=50)
    a = Shared(url, prefix(), model, expected_processes=2)
    caplog.set_level(logging.WARNING, logger="llm_gateway")
    async with a.gateway as gw:
        await submit_all(gw, [ask() for _ in range(4)])
        await anyio.sleep(0.5)
        assert len(a.calls) == 2  # 4 a minute over 2 expected processes
        stats = gw.get_stats()
        assert stats.shared_state is not None and not stats.shared_state.connected
        assert stats.models["m"].remaining_requests == 0
        await gw.shutdown(timeout=0)
    text = " ".join(r.getMessage() for r in caplog.records) + repr(a.books) + repr(gw.config)
    assert "unreachable" in text
    assert "hunter2" not in text


def _stats(connected: bool, errors: int, outages: int, local: int) -> Any:
    from llm_gateway import SharedStateStats

    return SharedStateStats(
        connected=connected, errors=errors, outages=outages, local_admissions=local
    )
