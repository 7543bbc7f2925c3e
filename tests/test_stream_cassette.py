"""Streams are recorded to cassettes and replayed from them.

Recording: the real SDK adapters stream from the fake LLM server over loopback (real time, both
backends). Replay: ``MockLLMGateway(cassette=...)`` streams the recorded answers in the mock's
deterministic chunks, with no server, and gives the same final responses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_gateway import Gateway, LLMMessage, LLMRequest, LLMResponse, LLMTool, ModelConfig
from llm_gateway.testing import MockLLMGateway, open_fake_llm_server

pytestmark = pytest.mark.anyio

LOOKUP = LLMTool(
    "lookup", "Look a term up", {"type": "object", "properties": {"query": {"type": "string"}}}
)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real time: recording talks over sockets."""
    return (request.param, {})


async def streamed(gw: Gateway, request: LLMRequest) -> tuple[list[str], LLMResponse]:
    async with gw.stream(request) as stream:
        texts = [chunk.text async for chunk in stream]
    return texts, stream.response


async def test_a_recorded_stream_replays_as_a_stream(tmp_path: Path) -> None:
    cassette = tmp_path / "streams.json"
    requests = [
        LLMRequest(model="claude", messages=[LLMMessage("user", "stream this answer")]),
        LLMRequest(model="gpt", messages=[LLMMessage("user", "find it")], tools=[LOOKUP]),
    ]
    async with open_fake_llm_server() as server:
        models = {
            "claude": ModelConfig(
                provider="anthropic", model_name="c", endpoint=server.base_url, api_key="k-a-1234"
            ),
            "gpt": ModelConfig(
                provider="openai",
                model_name="g",
                endpoint=server.openai_base_url,
                api_key="k-o-1234",
            ),
        }
        async with Gateway(models=models, record_to=cassette) as gw:
            recorded = [await streamed(gw, request) for request in requests]
    assert all(r.get("stream") for r in (q.json() for q in server.received))
    written = json.loads(cassette.read_text())
    assert len(written["fixtures"]) == 2
    assert "k-a-1234" not in cassette.read_text()

    async with MockLLMGateway(cassette=cassette) as mock:
        replayed = [await streamed(mock, request) for request in requests]
    for (texts, original), (again, response) in zip(recorded, replayed, strict=True):
        assert "".join(again) == "".join(texts) == response.content == original.content
        for field in ("tool_calls", "usage", "finish_reason", "model"):
            assert getattr(response, field) == getattr(original, field), field
    assert len(replayed[0][0]) > 1  # replayed in several chunks
