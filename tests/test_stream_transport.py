"""Streams through the SDK adapters over the fake API's MockTransport: virtual time, exact.

The same fake API as the loopback tests (test_stream_providers.py), without sockets, so the
clock can jump: first-token timeouts, stalls and backoffs are timed exactly, on both backends.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    RetryPolicy,
    StreamInterruptedError,
)
from llm_gateway.providers import Provider, open_provider
from llm_gateway.testing import FakeLLMApi, StreamFault

pytestmark = pytest.mark.anyio

RETRY = RetryPolicy(backoff_base_s=0.5, backoff_max_s=0.5)


class TransportGateway(Gateway):
    """A Gateway whose SDK adapters reach ``api`` through its MockTransport."""

    def __init__(self, api: FakeLLMApi, models: dict[str, ModelConfig]) -> None:
        super().__init__(models=models, provider_factory=self._open)
        self._api = api

    def _open(self, model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        return open_provider(model_id, config, http_client=self._api.mock_client())


def model(kind: str, **fields: Any) -> ModelConfig:
    # No default deadline: see warm_up().
    fields.setdefault("timeout_s", None)
    if kind == "anthropic":
        return ModelConfig(provider="anthropic", model_name="c", api_key="k-anthropic", **fields)
    return ModelConfig(
        provider="openai", model_name="g", endpoint="http://fake/v1", api_key="k-o", **fields
    )


def ask(text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(model="m", messages=[LLMMessage("user", text)], **fields)


async def warm_up(gw: Gateway) -> None:
    """One call first, with no deadline pending: an SDK's first call reads the platform in a
    worker thread, and a virtual clock jumps while a thread works (to the next deadline)."""
    await gw.request(ask("warm up"))


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_stalls_past_first_token_timeout_are_retried_at_exact_times(kind: str) -> None:
    api = FakeLLMApi()
    config = model(kind, first_token_timeout_s=2.0, retry=RETRY)
    async with TransportGateway(api, {"m": config}) as gw:
        await warm_up(gw)
        api.stream_faults += [StreamFault.stall(), StreamFault.stall(seconds=5.0), None]
        started = anyio.current_time()
        first_at = None
        async with gw.stream(ask("slowly")) as stream:
            async for _chunk in stream:
                if first_at is None:
                    first_at = anyio.current_time() - started
        stats = gw.get_stats().models["m"]
    assert stream.response.content == "Fake answer to: slowly"
    assert len(api.received) == 1 + 3
    assert [s.how for s in api.streams] == ["client_closed", "client_closed", "complete"]
    stalled = [(s.ended or 0) - s.started for s in api.streams[:2]]
    assert stalled == [pytest.approx(2.0, abs=1e-3)] * 2  # each attempt's first-token timeout
    assert first_at is not None
    assert 4.0 <= first_at <= 4.0 + 2 * RETRY.backoff_max_s + 1e-3  # plus two backoffs
    assert stats.retries == 2
    assert stats.time_to_first_token_ms.p50 == pytest.approx(first_at * 1000, abs=1)


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_stall_after_the_first_delta_is_bounded_by_the_deadline_only(kind: str) -> None:
    api = FakeLLMApi()
    config = model(kind, first_token_timeout_s=1.0, retry=RETRY)
    async with TransportGateway(api, {"m": config}) as gw:
        await warm_up(gw)
        api.stream_faults.append(StreamFault.stall(after=1, seconds=3.0))
        chunks = []
        started = anyio.current_time()
        async with gw.stream(ask("wait for it")) as stream:
            async for chunk in stream:
                chunks.append((chunk.text, anyio.current_time() - started))
        api.stream_faults.append(StreamFault.stall(after=1))
        with pytest.raises(StreamInterruptedError) as caught:
            async with gw.stream(ask("forever", timeout_s=10.0)) as stream:
                async for _ in stream:
                    pass
    # The first token timer stops at the first delta: a later stall is not a timeout.
    assert chunks[0][1] == pytest.approx(0.0, abs=1e-3)
    assert chunks[1][1] == pytest.approx(3.0, abs=1e-3)
    assert "".join(t for t, _ in chunks) == "Fake answer to: wait for it"
    # Past its deadline, a stream that has begun ends with what it had.
    assert caught.value.partial == "Fake "
    assert type(caught.value.cause).__name__ == "RequestTimeoutError"
    assert len(api.received) == 1 + 2
