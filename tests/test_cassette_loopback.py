"""Record -> replay round trip: record real SDK adapters talking to the fake LLM server over
loopback sockets, then replay the cassette with no server running.

Real time (sockets do not run on virtual clocks), both backends. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    RequestPriority,
)
from llm_gateway.testing import (
    CassetteMissError,
    MockLLMGateway,
    fake_answer,
    open_fake_llm_server,
)

from .test_cassette import answer

pytestmark = pytest.mark.anyio

KEYS = {"claude": "sk-ant-test-secret-123", "gpt": "sk-openai-test-secret-456"}
LOOKUP = LLMTool(
    "lookup", "Look a term up", {"type": "object", "properties": {"query": {"type": "string"}}}
)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real time: recording talks over sockets."""
    return (request.param, {})


async def tiny_agent(gw: Gateway, model: str, question: str) -> list[LLMResponse]:
    """Ask with a tool; answer the tool call; return both responses."""
    messages = [LLMMessage("system", "Be brief."), LLMMessage("user", question)]
    first = await gw.request(
        LLMRequest(model=model, messages=messages, tools=[LOOKUP], priority=RequestPriority.HIGH)
    )
    (call,) = first.tool_calls
    messages += [
        LLMMessage("assistant", first.content, tool_calls=first.tool_calls),
        LLMMessage("tool", f"notes on {call.arguments['query']}", tool_call_id=call.id),
    ]
    second = await gw.request(
        LLMRequest(model=model, messages=messages, tools=[LOOKUP], priority=RequestPriority.HIGH)
    )
    return [first, second]


async def test_record_against_a_loopback_server_then_replay_without_it(tmp_path: Path) -> None:
    cassette = tmp_path / "loopback.json"
    async with open_fake_llm_server() as server:
        models = {
            "claude": ModelConfig(
                provider="claude-haiku",
                model_name="claude-haiku-4-5",
                endpoint=server.base_url,
                api_key=KEYS["claude"],
            ),
            "gpt": ModelConfig(
                provider="gpt-4o-mini",
                model_name="gpt-4o-mini",
                endpoint=server.openai_base_url,
                api_key=KEYS["gpt"],
            ),
        }
        async with Gateway(models=models, log_dir=None, record_to=cassette) as gw:
            with anyio.fail_after(30):
                recorded = {m: await tiny_agent(gw, m, f"what is {m}?") for m in models}
        base_url = server.base_url
        sent = len(server.received)
    assert sent == 4  # the recording really went over the wire
    assert recorded["gpt"][1].content == fake_answer("notes on what is gpt?")

    text = cassette.read_text(encoding="utf-8")
    for secret in [*KEYS.values(), base_url, "Bearer", "x-api-key"]:
        assert secret not in text

    # No server now: anything not replayed from the cassette would fail to connect.
    async with MockLLMGateway(cassette=cassette) as mock:
        with anyio.fail_after(30):
            replayed = {m: await tiny_agent(mock, m, f"what is {m}?") for m in recorded}
        with pytest.raises(CassetteMissError, match="'gpt'"):
            await mock.request(
                LLMRequest(model="gpt", messages=[LLMMessage("user", "a new question")])
            )
    for model, responses in recorded.items():
        assert [answer(r) for r in replayed[model]] == [answer(r) for r in responses]
        assert {r.model for r in replayed[model]} == {model}
    assert len(mock.received) == 5
