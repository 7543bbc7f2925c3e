"""Recording a gateway to a cassette and replaying it; determinism of the mock across backends.

Virtual time on both backends. The round trip through real SDK adapters and sockets is in
test_cassette_loopback.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_gateway import (
    ConfigError,
    Gateway,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ProviderError,
    RequestPriority,
    ToolCall,
)
from llm_gateway.providers import Provider, open_provider
from llm_gateway.testing import (
    CassetteMissError,
    MockError,
    MockFixture,
    MockFixtures,
    MockLLMGateway,
    MockMatch,
    request_digest,
)

from ._support import ask
from .conftest import virtual_time_backend

pytestmark = pytest.mark.anyio

HIGH = RequestPriority.HIGH
SECRET = "sk-test-0123456789-do-not-write-me"
LOOKUP = LLMTool("lookup", "Look a term up", {"type": "object", "properties": {}})


def recorded_models(tmp_path: Path) -> dict[str, ModelConfig]:
    """Two mock models with secrets set; "fast" answers "hello" and fails "fail" by fixture."""
    failing = tmp_path / "failing.json"
    MockFixtures(
        fixtures=[
            MockFixture(
                match=MockMatch(last_user_message="fail"), error=MockError(status_code=503)
            ),
            MockFixture(match=MockMatch(last_user_message="hello"), content="Hi, recorded."),
        ]
    ).dump(failing)
    return {
        "fast": ModelConfig(
            provider="mock",
            model_name="fast-model",
            api_key=SECRET,
            endpoint=f"https://user:{SECRET}@llm.invalid/v1",
            provider_options={"fixtures": str(failing), "latency_s": 0.25},
        ),
        "smart": ModelConfig(provider="claude-opus", model_name="opus-x", api_key=SECRET),
    }


def smart_is_mock(model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
    """The provider factory of a real Gateway whose claude-opus model is served by the mock."""
    if config.provider.value == "claude-opus":
        config = ModelConfig(provider="mock", model_name=config.model_name)
    return open_provider(model_id, config)


def answer(response: LLMResponse) -> tuple[Any, ...]:
    """What a cassette records of a response, and replay must give back."""
    return (
        response.content,
        response.tool_calls,
        response.usage,
        response.finish_reason,
        response.provider_request_id,
    )


def tool_turn() -> LLMRequest:
    return LLMRequest(
        model="fast",
        messages=[
            LLMMessage("user", "what is trio?"),
            LLMMessage("assistant", "", tool_calls=[ToolCall("c1", "lookup", {"q": "trio"})]),
            LLMMessage("tool", "an async library", tool_call_id="c1"),
        ],
        tools=[LOOKUP],
        priority=HIGH,
        temperature=0.7,
        max_tokens=64,
    )


async def record(tmp_path: Path, cassette: Path) -> list[LLMResponse]:
    requests = [
        ask("fast", "hello", priority=HIGH),
        tool_turn(),
        ask("claude-opus", "plan", priority=HIGH),
    ]
    async with Gateway(
        models=recorded_models(tmp_path),
        log_dir=None,
        record_to=cassette,
        provider_factory=smart_is_mock,
    ) as gw:
        responses = [await gw.request(r) for r in requests]
        await gw.request(ask("fast", "hello", priority=HIGH))  # a repeat: recorded once
        with pytest.raises(ProviderError):
            await gw.request(ask("fast", "fail", priority=HIGH))  # failures are not recorded
        assert not cassette.exists()  # written when the gateway closes
    return responses


async def test_recording_writes_content_answers_and_metadata_never_secrets(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "cassettes" / "session.json"
    responses = await record(tmp_path, cassette)
    text = cassette.read_text(encoding="utf-8")
    assert SECRET not in text and "llm.invalid" not in text
    assert "api_key" not in text.lower() and "authorization" not in text.lower()
    data = json.loads(text)
    assert data["version"] == 1
    entries = data["fixtures"]
    assert len(entries) == 3
    hello, tool, smart = entries
    assert hello["match"] == {"request_hash": request_digest(ask("fast", "hello"))}
    assert hello["request"] == {
        "model": "fast",
        "messages": [{"role": "user", "content": "hello"}],
    }
    assert tool["request"]["messages"][1]["tool_calls"] == [
        {"id": "c1", "name": "lookup", "arguments": {"q": "trio"}}
    ]
    assert (tool["request"]["temperature"], tool["request"]["max_tokens"]) == (0.7, 64)
    assert tool["request"]["tools"][0]["name"] == "lookup"
    assert hello["content"] == responses[0].content
    assert hello["provider_request_id"] == responses[0].provider_request_id
    assert hello["usage"]["input_tokens"] == responses[0].usage.input_tokens
    assert hello["finish_reason"] == "stop"
    recorded = hello["recorded"]
    assert recorded["model"] == "fast" and recorded["model_name"] == "fast-model"
    assert recorded["provider"] == "mock" and recorded["request_id"]
    assert recorded["latency_ms"] == pytest.approx(250, abs=1)
    assert recorded["recorded_at"].endswith("+00:00")
    assert smart["recorded"]["provider"] == "claude-opus"


async def test_replay_gives_the_recorded_answers_with_the_recorded_models(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "session.json"
    recorded = await record(tmp_path, cassette)
    requests = [
        ask("fast", "hello", priority=HIGH),
        tool_turn(),
        ask("claude-opus", "plan", priority=HIGH),
    ]
    async with MockLLMGateway(cassette=cassette) as gw:
        assert set(gw.config.models) == {"fast", "smart"}
        assert gw.config.models["smart"].model_name == "opus-x"
        # The last request names its model by provider ("claude-opus"), as it did when
        # recording: the derived models keep each model's provider, so the alias still works.
        replayed = [await gw.request(r) for r in requests]
        with pytest.raises(CassetteMissError) as miss:
            await gw.request(ask("fast", "never recorded", priority=HIGH, request_id="r-9"))
    assert [answer(r) for r in replayed] == [answer(r) for r in recorded]
    assert replayed[0].content == "Hi, recorded."  # not the mock's default answer
    assert replayed[2].model == "smart"
    assert miss.value.request_id == "r-9" and str(cassette) in str(miss.value)


async def test_a_miss_may_fall_through_and_fixtures_override_the_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "session.json"
    await record(tmp_path, cassette)
    overload = {
        "fixtures": [
            {
                "match": {"last_user_message": "hello"},
                "error": {"status_code": 429, "retry_after_s": 3},
            }
        ]
    }
    async with MockLLMGateway(cassette=cassette, on_missing="default", fixtures=overload) as gw:
        with pytest.raises(ProviderError) as info:
            await gw.request(ask("fast", "hello", priority=HIGH))
        fallback = await gw.request(ask("fast", "never recorded", priority=HIGH))
    assert (info.value.status_code, info.value.retry_after_s) == (429, 3.0)
    assert fallback.content.startswith("Mock answer ")
    assert gw.misses == []


async def test_a_block_that_fails_leaves_the_previous_cassette_as_it_was(tmp_path: Path) -> None:
    cassette = tmp_path / "good.json"
    models = {"m": ModelConfig(provider="mock", model_name="x")}
    async with Gateway(models=models, log_dir=None, record_to=cassette) as gw:
        await gw.request(ask("m", "good", priority=HIGH))
    good = cassette.read_bytes()
    with pytest.raises(RuntimeError, match="agent crashed"):
        async with Gateway(models=models, log_dir=None, record_to=cassette) as gw:
            await gw.request(ask("m", "one", priority=HIGH))
            raise RuntimeError("agent crashed")
    assert cassette.read_bytes() == good
    with anyio.move_on_after(1):  # a cancelled recording is not kept either
        async with Gateway(models=models, log_dir=None, record_to=cassette) as gw:
            await gw.request(ask("m", "two", priority=HIGH))
            await anyio.sleep_forever()
    assert cassette.read_bytes() == good


# -- determinism across backends -------------------------------------------------------------


def outcome(result: LLMResponse | BaseException) -> Any:
    if isinstance(result, BaseException):
        return (type(result).__name__, str(result))
    return (*answer(result), round(result.latency_ms, 1))


async def mixed_workload(cassette: Path) -> list[Any]:
    fixtures = [
        MockFixture(match=MockMatch(last_user_regex="slow"), content="slowly", latency_s=1.5),
        MockFixture(
            match=MockMatch(last_user_regex="tool"),
            tool_calls=(ToolCall("c9", "lookup", {"q": 1}),),
        ),
        MockFixture(match=MockMatch(last_user_regex="busy"), error=MockError(status_code=429)),
    ]
    requests = [
        ask("fast", text, priority=priority, request_id=f"r{i}")
        for i, (text, priority) in enumerate(
            [
                ("hello", RequestPriority.NORMAL),
                ("slow one", RequestPriority.LOW),
                ("use a tool", RequestPriority.HIGH),
                ("busy now", RequestPriority.NORMAL),
                ("something new", RequestPriority.HIGH),
            ]
        )
    ]
    async with MockLLMGateway(
        cassette=cassette, fixtures=fixtures, on_missing="default", latency_s=0.1
    ) as gw:
        results = await gw.batch(requests, return_exceptions=True)
    return [outcome(r) for r in results]


def test_the_same_requests_get_the_same_answers_on_both_backends_and_every_run(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "session.json"
    name, options = virtual_time_backend("trio")
    anyio.run(partial(record, tmp_path, cassette), backend=name, backend_options=options)

    def run(backend: str) -> list[Any]:
        name, options = virtual_time_backend(backend)
        fn: Callable[[], Any] = partial(mixed_workload, cassette)
        result: list[Any] = anyio.run(fn, backend=name, backend_options=options)
        return result

    trio_first, asyncio_first, trio_again = run("trio"), run("asyncio"), run("trio")
    assert trio_first == asyncio_first == trio_again
    assert trio_first[1][0] == "slowly" and trio_first[2][3] == "tool_calls"
    assert trio_first[3][0].endswith("Error") and "429" in trio_first[3][1]


async def test_recording_a_real_provider_on_a_virtual_clock_is_refused(tmp_path: Path) -> None:
    # The anyio_backend fixture runs this on trio's MockClock and on looptime.
    models = {
        "m": ModelConfig(
            provider="gpt-4o-mini",
            model_name="gpt-4o-mini",
            api_key="sk-test-key-0123456789",
            endpoint="http://127.0.0.1:9/v1",
        )
    }
    cassette = tmp_path / "c.json"
    with pytest.raises(ConfigError, match="recording needs real time"):
        async with Gateway(models=models, log_dir=None, record_to=cassette):
            pass
    assert not cassette.exists()
