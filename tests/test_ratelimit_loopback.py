"""Over a real 127.0.0.1 socket: pacing to the server's own limit sees no 429.

Real time, so the server counts over a window a fifth of the gateway's: a request may reach it
up to 0.8 s later than the gateway booked it (a loaded machine, a client's first connection)
without turning into a 429, and the control shows such a server refuses the same load unpaced.
The exact version, where the server's limit is the gateway's own, runs on virtual time in
test_ratelimit_server.py.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
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
from llm_gateway.testing import FakeLLMApi, open_fake_llm_server
from llm_gateway.testing._fake_server import FakeReply, ReceivedRequest

pytestmark = pytest.mark.anyio

LIMIT_PER_WINDOW = 5
WINDOW_S = 1.0
RPM = int(LIMIT_PER_WINDOW * 60 / WINDOW_S)  # the gateway paces 5 per 1-s window
PROVIDERS = ["gpt-4o-mini", "claude-haiku"]


def enforce_limit(
    api: FakeLLMApi, window_s: float, clock: Callable[[], float], seen_429: list[float]
) -> None:
    """Make ``api`` answer 429 past LIMIT_PER_WINDOW requests in any ``window_s`` span."""
    answer = api.respond
    received: deque[float] = deque()

    def respond(request: ReceivedRequest) -> FakeReply:
        now = clock()
        while received and received[0] <= now - window_s:
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

    api.respond = respond  # type: ignore[method-assign]


def model(provider: str, endpoint: str, **fields: Any) -> ModelConfig:
    return ModelConfig(
        provider=provider,
        model_name="m",
        endpoint=endpoint,
        api_key="test-key",
        max_concurrency=50,
        **fields,
    )


def paced(provider: str, endpoint: str) -> ModelConfig:
    return model(
        provider,
        endpoint,
        max_requests_per_minute=RPM,
        rate_limit=RateLimitPolicy(window_s=WINDOW_S),
    )


def questions(n: int) -> list[LLMRequest]:
    return [
        LLMRequest(
            model="m",
            messages=[LLMMessage("user", f"question {i}")],
            max_tokens=16,
            priority=RequestPriority.HIGH,
        )
        for i in range(n)
    ]


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real time: the server and the gateway talk over a real socket."""
    return (request.param, {})


# The gateway admits LIMIT_PER_WINDOW per window, so each window's requests leave together: a
# server counting over a fifth of that window sees at most the limit at once, and a window's
# requests may reach it up to 0.8 s late before they meet the next window's.
SERVER_WINDOW_S = WINDOW_S / 5
# The control sends everything at once: a wider window still refuses it, however loaded.
CONTROL_WINDOW_S = WINDOW_S / 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_pacing_to_the_servers_limit_sees_no_429(provider: str) -> None:
    seen_429: list[float] = []
    async with open_fake_llm_server() as server:
        enforce_limit(server, SERVER_WINDOW_S, time.monotonic, seen_429)
        claude = provider.startswith("claude")
        config = paced(provider, server.base_url if claude else server.openai_base_url)
        requests = questions(3 * LIMIT_PER_WINDOW)
        start = time.monotonic()
        async with Gateway(models={"m": config}, log_dir=None) as gw:
            with anyio.fail_after(60):
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
        enforce_limit(server, CONTROL_WINDOW_S, time.monotonic, seen_429)
        config = model(
            "gpt-4o-mini",
            server.openai_base_url,
            retry=RetryPolicy(max_attempts=1),  # see the 429s, don't wait them out
        )
        async with Gateway(models={"m": config}, log_dir=None) as gw:
            with anyio.fail_after(30):
                await gw.batch(questions(3 * LIMIT_PER_WINDOW), return_exceptions=True)
            assert gw.get_stats().models["m"].rate_limited > 0
    assert seen_429
