"""A gateway on the built-in mock provider keeps nothing per request it served.

Tens of thousands of requests run on virtual time through a plain :class:`Gateway` whose model
is ``provider = "mock"``. Two checks: structurally, no request outlives its call (weak
references to every request are dead while the gateway is still open); and by measurement,
traced memory grows by well under the ~400 B a request the old mock kept.
``MockLLMGateway`` keeps its ``received`` history by default, and keeps none when told not to.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import pytest

from llm_gateway import ConfigError, Gateway, LLMMessage, LLMRequest, ModelConfig
from llm_gateway.testing import MockLLMGateway

pytestmark = pytest.mark.anyio

MODELS = {"m": ModelConfig(provider="mock", model_name="m", batch_size=50, max_concurrency=64)}
CHUNK = 500
MEASURED = 5_000  # requests served under tracemalloc (it slows them ~5x), twice


def numbered(start: int, count: int, model: str = "m") -> list[LLMRequest]:
    return [
        LLMRequest(model=model, messages=[LLMMessage("user", f"question {i}")], request_id=f"r{i}")
        for i in range(start, start + count)
    ]


async def serve(gw: Gateway, start: int, count: int) -> list[weakref.ref[LLMRequest]]:
    """Send ``count`` requests in chunks; weak references to every one of them."""
    refs = []
    for first in range(start, start + count, CHUNK):
        chunk = numbered(first, min(CHUNK, start + count - first))
        refs += [weakref.ref(r) for r in chunk]
        responses = await gw.batch(chunk)
        assert [r.request_id for r in responses] == [r.request_id for r in chunk]
        del chunk, responses
    return refs


async def test_no_request_outlives_its_call_on_a_plain_gateway_on_the_mock() -> None:
    async with Gateway(models=MODELS, log_dir=None) as gw:
        refs = await serve(gw, 0, 20_000)
        # The engine may hold its latest batch until the next one: send one more.
        await gw.request(numbered(20_000, 1)[0])
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        assert alive == 0, f"{alive} of {len(refs)} finished requests are still referenced"
        assert gw.get_stats().total.completed == 20_001


async def test_memory_does_not_grow_with_the_requests_served() -> None:
    async with Gateway(models=MODELS, log_dir=None) as gw:
        tracemalloc.start()
        try:
            # Warm up, traced: caches and bounded sample windows fill with traced objects, so
            # that replacing them later is not counted as growth.
            await serve(gw, 0, MEASURED)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            await serve(gw, MEASURED, MEASURED)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    # The old mock kept every request: ~380 B each. Allow 20 B a request of noise.
    assert grown < 20 * MEASURED, f"traced memory grew {grown / MEASURED:.0f} B per request"


async def test_mock_gateway_keeps_received_by_default_and_none_when_told() -> None:
    async with MockLLMGateway() as gw:
        await gw.batch(numbered(0, 3, model="mock"))
    assert sorted(r.request_id for r in gw.received) == ["r0", "r1", "r2"]
    assert gw.misses == []

    async with MockLLMGateway(keep_history=False) as gw:
        refs = await serve_mock(gw)
        await gw.request(numbered(200, 1, model="mock")[0])
        gc.collect()
        assert all(ref() is None for ref in refs)
    for name in ("received", "misses"):
        with pytest.raises(ConfigError, match="keep_history=True") as info:
            getattr(gw, name)
        assert name in str(info.value)


async def serve_mock(gw: MockLLMGateway) -> list[weakref.ref[LLMRequest]]:
    requests = numbered(0, 200, model="mock")
    refs = [weakref.ref(r) for r in requests]
    await gw.batch(requests)
    return refs
