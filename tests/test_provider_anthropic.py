"""What only the Anthropic adapter does: system and tool_result mapping, content blocks, caches.

The behaviour both adapters share is in ``test_provider_contract.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from llm_gateway import (
    LLMMessage,
    LLMRequest,
    LLMTool,
    ProviderError,
    ProviderResponseError,
    ToolCall,
    Usage,
)
from llm_gateway.providers import open_provider

from ._provider_support import ANTHROPIC, anthropic_message, json_response, user

pytestmark = pytest.mark.anyio

WEATHER = LLMTool(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


async def test_system_messages_go_to_the_top_level_system_parameter() -> None:
    scripted = ANTHROPIC.api()
    request = LLMRequest(
        model="m",
        messages=[
            LLMMessage("system", "Be brief."),
            LLMMessage("user", "Hello"),
            LLMMessage("assistant", "Hi."),
            LLMMessage("system", "Answer in French."),
            LLMMessage("user", "Weather?"),
        ],
        temperature=0.7,
    )
    async with open_provider("m", ANTHROPIC.config(), http_client=scripted.client()) as provider:
        await provider.complete(request)
    assert scripted.bodies == [
        {
            "max_tokens": 4096,
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Weather?"},
            ],
            "model": "claude-haiku-4-5",
            "system": "Be brief.\n\nAnswer in French.",
        }
    ]  # no temperature: API version 2026-10-21 rejects sampling parameters


async def test_max_tokens_from_the_request_else_the_configured_default() -> None:
    scripted = ANTHROPIC.api()
    config = ANTHROPIC.config(provider_options={"default_max_tokens": 256})
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("a"))
        await provider.complete(user("b", max_tokens=17))
    assert [b["max_tokens"] for b in scripted.bodies] == [256, 17]
    assert "system" not in scripted.bodies[0]


async def test_tools_are_sent_with_input_schema() -> None:
    scripted = ANTHROPIC.api()
    bare = LLMTool("now", parameters={"type": "object", "properties": {}})
    async with open_provider("m", ANTHROPIC.config(), http_client=scripted.client()) as provider:
        await provider.complete(user("weather in Paris?", tools=[WEATHER, bare]))
    assert scripted.bodies[0]["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


async def test_tool_calls_and_results_go_back_as_tool_use_and_tool_result_blocks() -> None:
    scripted = ANTHROPIC.api()
    calls = [
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
        ToolCall("toolu_2", "get_weather", {"city": "Oslo"}),
    ]
    request = LLMRequest(
        model="m",
        messages=[
            LLMMessage("user", "Weather in Paris and Oslo?"),
            LLMMessage("assistant", "Let me check.", tool_calls=calls),
            LLMMessage("tool", "18 C", tool_call_id="toolu_1"),
            LLMMessage("tool", "4 C", tool_call_id="toolu_2"),
            LLMMessage("assistant", "", tool_calls=[ToolCall("toolu_3", "now", {})]),
            LLMMessage("tool", "noon", tool_call_id="toolu_3"),
            LLMMessage("user", "Thanks; and tomorrow?"),
        ],
        tools=[WEATHER],
    )
    async with open_provider("m", ANTHROPIC.config(), http_client=scripted.client()) as provider:
        await provider.complete(request)
    assert scripted.bodies[0]["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4 C"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_3", "content": "noon"}],
        },
        {"role": "user", "content": "Thanks; and tomorrow?"},
    ]


async def test_the_api_version_and_a_beta_header_are_sent() -> None:
    scripted = ANTHROPIC.api()
    config = ANTHROPIC.config(provider_options={"extra_headers": {"anthropic-beta": "x-2026"}})
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("hi"))
    (sent,) = scripted.requests
    assert sent.headers["anthropic-version"]
    assert sent.headers["anthropic-beta"] == "x-2026"


# -- answers -------------------------------------------------------------------------------


async def answer(body: Any) -> Any:
    scripted = ANTHROPIC.api()
    scripted.reply(json_response(200, body, {"request-id": "req_42"}))
    async with open_provider("m", ANTHROPIC.config(), http_client=scripted.client()) as provider:
        return await provider.complete(user("hi"))


async def failure(body: Any) -> ProviderError:
    with pytest.raises(ProviderResponseError) as caught:
        await answer(body)
    assert caught.value.status_code == 200
    return caught.value


async def test_text_blocks_join_tool_use_blocks_are_calls_other_blocks_are_skipped() -> None:
    body = anthropic_message(
        [
            {"type": "thinking", "thinking": "...", "signature": "s"},
            {"type": "text", "text": "Checking "},
            {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
            {"type": "text", "text": "both."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        stop_reason="tool_use",
        usage={
            "input_tokens": 10,
            "output_tokens": 7,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
    )
    response = await answer(body)
    assert response.content == "Checking both."
    assert response.tool_calls == (
        ToolCall("toolu_1", "get_weather", {"city": "P"}),
        ToolCall("toolu_2", "now", {}),
    )
    # Anthropic's input_tokens excludes cache reads and writes; the gateway's includes them.
    assert response.usage == Usage(
        input_tokens=130, output_tokens=7, cache_read_tokens=100, cache_write_tokens=20
    )
    assert response.usage.total_tokens == 137
    assert response.finish_reason == "tool_calls"


async def test_absent_optional_fields_are_tolerated() -> None:
    scripted = ANTHROPIC.api()
    scripted.reply(json_response(200, {"content": [{"type": "text", "text": "ok"}]}))
    async with open_provider("m", ANTHROPIC.config(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert (response.content, response.usage, response.finish_reason) == ("ok", Usage(), None)
    assert response.provider_request_id is None


async def test_an_empty_content_list_is_an_empty_answer() -> None:
    response = await answer(anthropic_message([], stop_reason="end_turn"))
    assert (response.content, response.tool_calls) == ("", ())


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        (["text"], "content[0] is a string; expected an object"),
        ([{"type": "text", "text": "a"}, None], "content[1] is null; expected an object"),
        ([{"text": "a"}], "content[0].type is missing; expected a string"),
        ([{"type": 3}], "content[0].type is an integer; expected a string"),
        ([{"type": "text"}], "content[0].text is missing; expected a string"),
        ([{"type": "text", "text": None}], "content[0].text is null; expected a string"),
        ([{"type": "text", "text": ["a"]}], "content[0].text is a list; expected a string"),
        (
            [{"type": "tool_use", "name": "f", "input": {}}],
            "content[0].id is missing; expected a string",
        ),
        (
            [{"type": "tool_use", "id": "t1", "name": {"n": 1}, "input": {}}],
            "content[0].name is an object; expected a string",
        ),
        (
            [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": "[1]"}],
            "tool_use block 'get_weather' (id t1) has an input that is a string; expected a "
            "JSON object",
        ),
        (
            [{"type": "tool_use", "id": "t1", "name": "f"}],
            "tool_use block 'f' (id t1) has no input; expected a JSON object",
        ),
    ],
)
async def test_malformed_blocks_are_provider_response_errors_naming_the_field(
    blocks: list[Any], problem: str
) -> None:
    error = await failure(anthropic_message(blocks))
    assert str(error) == (
        f"Anthropic answered HTTP 200 with an unusable body: {problem} (request id req_42)"
    )
