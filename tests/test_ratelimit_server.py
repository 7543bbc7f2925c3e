"""Pacing to a server's own limit sees no 429: the real adapters, on virtual time.

The server behind a MockTransport enforces exactly the gateway's limit, and each request
reaches it after a random delay below the books' skew margin. Exact, and immune to machine
load (the loopback version, on real time, needs a wider margin: test_ratelimit_loopback.py).
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from llm_gateway import Gateway, LLMResponse, ModelConfig, RetryPolicy
from llm_gateway.providers import Provider, open_provider
from llm_gateway.testing import FakeLLMApi

from .test_ratelimit_loopback import (
    LIMIT_PER_WINDOW,
    PROVIDERS,
    WINDOW_S,
    enforce_limit,
    model,
    paced,
    questions,
)

pytestmark = pytest.mark.anyio


def endpoint(provider: str) -> str:
    return "http://fake.test" if provider.startswith("claude") else "http://fake.test/v1"


class JitteredApi(FakeLLMApi):
    """The fake API behind a MockTransport; each request reaches it after a random delay."""

    def __init__(self, jitter_s: float, seed: int) -> None:
        super().__init__()
        self._jitter_s = jitter_s
        self._random = random.Random(seed)
        self._warming = False
        self._warmup_api = FakeLLMApi()

    async def arrive(self, request: httpx2.Request) -> httpx2.Response:
        if self._warming:
            return await self._warmup_api.handle(request)
        await anyio.sleep(self._random.uniform(0, self._jitter_s))
        return await self.handle(request)

    @asynccontextmanager
    async def open(self, model_id: str, config: ModelConfig) -> AsyncGenerator[Provider]:
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(self.arrive))
        async with open_provider(model_id, config, http_client=client) as provider:
            # An SDK client's first call reads the platform in a worker thread, and a virtual
            # clock jumps ahead while a thread runs: make that call here, off the clock under
            # test (and off the server's books).
            self._warming = True
            try:
                await provider.complete(questions(1)[0])
            finally:
                self._warming = False
            yield provider


async def run_virtual(
    config: ModelConfig, api: JitteredApi, n: int
) -> tuple[list[LLMResponse | BaseException], Any]:
    async with Gateway(models={"m": config}, log_dir=None, provider_factory=api.open) as gw:
        with anyio.fail_after(600):
            results = await gw.batch(questions(n), return_exceptions=True)
        return results, gw.get_stats().models["m"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("seed", range(3))
async def test_pacing_to_the_limit_sees_no_429_with_jitter_below_the_margin(
    provider: str, seed: int
) -> None:
    seen_429: list[float] = []
    # The books hold an admission 2 % of the window (20 ms) past it: a request reaching the
    # server up to 15 ms late still lands in the next window.
    api = JitteredApi(jitter_s=0.015, seed=seed)
    enforce_limit(api, WINDOW_S, anyio.current_time, seen_429)
    n = 6 * LIMIT_PER_WINDOW
    start = anyio.current_time()
    results, stats = await run_virtual(paced(provider, endpoint(provider)), api, n)
    elapsed = anyio.current_time() - start
    assert all(isinstance(r, LLMResponse) for r in results), results
    assert seen_429 == []
    assert stats.rate_limited == 0 and stats.retries == 0
    assert len(api.received) == n
    # Paced, and at the whole rate: 6 windows' worth leaves in 5 windows (plus the margins).
    assert stats.throttled_s > 0
    assert 5 * WINDOW_S <= elapsed <= 5 * (WINDOW_S + 0.02) + 0.1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_without_pacing_the_virtual_server_refuses(provider: str) -> None:
    """The control: the MockTransport server's limit is real, so the test above can fail."""
    seen_429: list[float] = []
    api = JitteredApi(jitter_s=0.015, seed=0)
    enforce_limit(api, WINDOW_S, anyio.current_time, seen_429)
    config = model(provider, endpoint(provider), retry=RetryPolicy(max_attempts=1))
    results, stats = await run_virtual(config, api, 3 * LIMIT_PER_WINDOW)
    assert seen_429 and stats.rate_limited > 0
    assert any(isinstance(r, BaseException) for r in results)
