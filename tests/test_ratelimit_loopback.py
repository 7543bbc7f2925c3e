"""End to end over a real 127.0.0.1 socket: pacing to the server's own limit sees no 429."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import anyio
import pytest

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    RateLimitPolicy,
    RequestPriority,
    RetryPolicy,
)
from llm_gateway.testing import FakeLLMServer, open_fake_llm_server
from llm_gateway.testing._fake_server import FakeReply, ReceivedRequest

pytestmark = pytest.mark.anyio

LIMIT_PER_WINDOW = 5
WINDOW_S = 1.0


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real time: the server and the gateway talk over a real socket."""
    return (request.param, {})


def enforce_limit(server: FakeLLMServer, seen_429: list[float]) -> None:
    """Make the server answer 429 past LIMIT_PER_WINDOW requests in any WINDOW_S span."""
    answer = server.respond
    received: deque[float] = deque()

    def respond(request: ReceivedRequest) -> FakeReply:
        now = time.monotonic()
        while received and received[0] <= now - WINDOW_S:
            received.popleft()
        if len(received) >= LIMIT_PER_WINDOW:
            seen_429.append(now)
            return FakeReply(
                429,
                {"error": {"type": "rate_limit_error", "message": "slow down"}},
                {"retry-after": "1"},
            )
        received.append(now)
        return answer(request)

    server.respond = respond  # type: ignore[method-assign]


@pytest.mark.parametrize("provider", ["gpt-4o-mini", "claude-haiku"])
async def test_pacing_to_the_servers_limit_sees_no_429(provider: str) -> None:
    seen_429: list[float] = []
    async with open_fake_llm_server() as server:
        enforce_limit(server, seen_429)
        claude = provider.startswith("claude")
        model = ModelConfig(
            provider=provider,
            model_name="m",
            endpoint=server.base_url if claude else server.openai_base_url,
            api_key="test-key",
            max_requests_per_minute=int(LIMIT_PER_WINDOW * 60 / WINDOW_S),
            rate_limit=RateLimitPolicy(window_s=WINDOW_S),
            max_concurrency=50,
        )
        requests = [
            LLMRequest(
                model="m",
                messages=[LLMMessage("user", f"question {i}")],
                max_tokens=16,
                priority=RequestPriority.HIGH,
            )
            for i in range(3 * LIMIT_PER_WINDOW)
        ]
        start = time.monotonic()
        async with Gateway(models={"m": model}, log_dir=None) as gw:
            responses = await gw.batch(requests)
            stats = gw.get_stats().models["m"]
        elapsed = time.monotonic() - start
    assert len(responses) == len(requests)
    assert seen_429 == []
    assert stats.rate_limited == 0
    assert stats.retries == 0
    assert stats.throttled_s > 0  # it did have to pace: 15 requests at 5 per second
    assert elapsed >= 2 * WINDOW_S
    assert len(server.received) == len(requests)


async def test_without_pacing_the_same_load_is_refused() -> None:
    """The control: the server's limit is real, so the test above can fail."""
    seen_429: list[float] = []
    async with open_fake_llm_server() as server:
        enforce_limit(server, seen_429)
        model = ModelConfig(
            provider="gpt-4o-mini",
            model_name="m",
            endpoint=server.openai_base_url,
            api_key="test-key",
            max_concurrency=50,
            retry=RetryPolicy(max_attempts=1),  # see the 429s, don't wait them out
        )
        async with Gateway(models={"m": model}, log_dir=None) as gw:
            requests = [
                LLMRequest(model="m", messages=[LLMMessage("user", "q")], max_tokens=16)
                for _ in range(3 * LIMIT_PER_WINDOW)
            ]
            with anyio.fail_after(30):
                await gw.batch(requests, return_exceptions=True)
            assert gw.get_stats().models["m"].rate_limited > 0
    assert seen_429
