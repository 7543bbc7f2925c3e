"""What only the OpenAI adapter does: chat messages, content parts, tool-call JSON, local-llama.

The behaviour both adapters share is in ``test_provider_contract.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from llm_gateway import (
    ConfigError,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ToolCall,
    Usage,
)
from llm_gateway.providers import open_provider

from ._provider_support import (
    FULL_BATCHES,
    OPENAI,
    ScriptedApi,
    ScriptedGateway,
    json_response,
    openai_completion,
    openai_tool_call,
    user,
)

pytestmark = pytest.mark.anyio

WEATHER = LLMTool(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
LOCAL_ENDPOINT = "http://localhost:11434/v1"


def local(**overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {
        "provider": "local-llama",
        "model_name": "llama3.3",
        "endpoint": LOCAL_ENDPOINT,
    }
    return ModelConfig(**(fields | overrides))


async def test_messages_temperature_and_max_completion_tokens_are_sent() -> None:
    scripted = OPENAI.api()
    request = LLMRequest(
        model="m",
        messages=[LLMMessage("system", "Be brief."), LLMMessage("user", "Hello")],
        temperature=0.7,
        max_tokens=50,
    )
    async with open_provider("m", OPENAI.config(), http_client=scripted.client()) as provider:
        await provider.complete(request)
        await provider.complete(user("no limit"))
    assert scripted.bodies == [
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"},
            ],
            "max_completion_tokens": 50,
            "temperature": 0.7,
        },
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "no limit"}],
            "temperature": 0.0,
        },
    ]


async def test_tools_are_sent_as_functions() -> None:
    scripted = OPENAI.api()
    async with open_provider("m", OPENAI.config(), http_client=scripted.client()) as provider:
        await provider.complete(user("weather?", tools=[WEATHER, LLMTool("now")]))
    assert scripted.bodies[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        },
    ]


async def test_tool_calls_and_results_go_back_on_the_next_turn() -> None:
    scripted = OPENAI.api()
    request = LLMRequest(
        model="m",
        messages=[
            LLMMessage("user", "Weather in Paris and Oslo?"),
            LLMMessage(
                "assistant",
                "",
                tool_calls=[
                    ToolCall("call_1", "get_weather", {"city": "Paris"}),
                    ToolCall("call_2", "get_weather", {"city": "Zürich"}),
                ],
            ),
            LLMMessage("tool", "18 C", tool_call_id="call_1"),
            LLMMessage("tool", "4 C", tool_call_id="call_2"),
            LLMMessage("assistant", "Checking.", tool_calls=[ToolCall("call_3", "now", {})]),
            LLMMessage("tool", "noon", tool_call_id="call_3"),
        ],
        tools=[WEATHER],
    )
    async with open_provider("m", OPENAI.config(), http_client=scripted.client()) as provider:
        await provider.complete(request)
    assert scripted.bodies[0]["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Zürich"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "4 C"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "now", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": "noon"},
    ]


async def test_organization_and_project_are_sent_as_headers() -> None:
    scripted = OPENAI.api()
    config = OPENAI.config(provider_options={"organization": "org-1", "project": "proj-1"})
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("hi"))
    (sent,) = scripted.requests
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.headers["openai-project"] == "proj-1"


# -- answers -------------------------------------------------------------------------------


async def answer(body: Any) -> LLMResponse:
    scripted = OPENAI.api()
    scripted.reply(json_response(200, body, {"x-request-id": "req_bad"}))
    async with open_provider("m", OPENAI.config(), http_client=scripted.client()) as provider:
        return await provider.complete(user("hi"))


async def failure(body: Any) -> ProviderError:
    with pytest.raises(ProviderResponseError) as caught:
        await answer(body)
    assert caught.value.status_code == 200
    assert caught.value.provider_request_id == "req_bad"
    assert str(caught.value).endswith("(request id req_bad)")
    return caught.value


async def test_null_content_empty_arguments_and_cached_tokens() -> None:
    body = openai_completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
                {"id": "call_3", "type": "function", "function": {"name": "x", "arguments": None}},
            ],
        },
        finish_reason="tool_calls",
    )
    response = await answer(body)
    assert response.content == ""
    assert response.tool_calls == (
        ToolCall("call_1", "get_weather", {"city": "Paris"}),
        ToolCall("call_2", "now", {}),
        ToolCall("call_3", "x", {}),
    )
    assert response.finish_reason == "tool_calls"


async def test_arguments_sent_as_an_object_by_a_lenient_local_server_are_accepted() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"x": [1]}}}
    body = openai_completion({"role": "assistant", "content": None, "tool_calls": [call]})
    assert (await answer(body)).tool_calls == (ToolCall("c", "f", {"x": [1]}),)


async def test_a_refusal_is_a_content_filter_finish() -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    response = await answer(openai_completion(message))
    assert (response.content, response.finish_reason) == ("", "content_filter")


@pytest.mark.parametrize(
    ("parts", "content", "finish_reason"),
    [
        (
            [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}],
            "Hello, world",
            "stop",
        ),
        (
            [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "a"}],
            "a",
            "stop",
        ),
        ([{"type": "refusal", "refusal": "No."}], "", "content_filter"),
        ([{"type": "refusal", "refusal": "No."}, {"type": "text", "text": "But"}], "But", "stop"),
        ([], "", "stop"),
    ],
)
async def test_content_parts_join_their_text(
    parts: list[Any], content: str, finish_reason: str
) -> None:
    response = await answer(openai_completion({"role": "assistant", "content": parts}))
    assert (response.content, response.finish_reason) == (content, finish_reason)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            {"content": 42},
            "choices[0].message.content is an integer; expected a string, null or a list of "
            "content parts",
        ),
        (
            {"content": {"text": "a"}},
            "choices[0].message.content is an object; expected a string, null or a list",
        ),
        ({"content": ["a"]}, "choices[0].message.content[0] is a string; expected an object"),
        (
            {"content": [{"text": "a"}]},
            "choices[0].message.content[0].type is missing; expected a string",
        ),
        (
            {"content": [{"type": "text", "text": 7}]},
            "choices[0].message.content[0].text is an integer; expected a string",
        ),
        ({"content": None, "refusal": 1}, "choices[0].message.refusal is an integer"),
        ({"content": "a", "tool_calls": {}}, "choices[0].message.tool_calls is an object"),
        (
            {"content": "a", "tool_calls": [{"id": "c", "function": "f"}]},
            "choices[0].message.tool_calls[0].function is a string; expected an object",
        ),
        ("text", "choices[0].message is a string; expected an object"),
    ],
)
async def test_malformed_messages_are_provider_response_errors_naming_the_field(
    message: Any, problem: str
) -> None:
    error = await failure(openai_completion(message))
    assert f"OpenAI answered HTTP 200 with an unusable body: {problem}" in str(error)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"city": "Par', "has arguments that are not JSON: Unterminated string"),
        ("[1, 2]", "has arguments that are a JSON list, not an object"),
        ('{"city": NaN}', "has arguments that are not JSON: NaN is not a JSON value"),
        ("[" * 100_000, "has arguments that are not JSON"),
        (12, "has arguments that are an integer, not a JSON string of an object"),
        (["Par"], "has arguments that are a list, not a JSON string of an object"),
    ],
)
async def test_arguments_that_are_not_a_json_object_are_provider_response_errors(
    arguments: Any, problem: str
) -> None:
    error = await failure(openai_tool_call("call_9", "f", arguments))
    assert f"tool call 'f' (id call_9) {problem}" in str(error)
    assert "Par" not in str(error)  # the arguments themselves may quote the prompt


async def test_arguments_with_a_lone_surrogate_are_a_provider_response_error() -> None:
    error = await failure(openai_tool_call("c", "f", '{"city": "\\udc80"}'))
    assert "tool_calls[0].function.arguments cannot be sent back as JSON" in str(error)


async def test_error_code_stands_in_for_a_missing_type() -> None:
    scripted = OPENAI.api()
    body = {"error": {"message": "m", "type": None, "code": "model_not_found"}}
    scripted.reply(json_response(404, body))
    async with open_provider("m", OPENAI.config(), http_client=scripted.client()) as provider:
        with pytest.raises(ProviderStatusError) as caught:
            await provider.complete(user("hi"))
    assert caught.value.error_type == "model_not_found"


# -- local-llama ---------------------------------------------------------------------------


async def test_local_llama_uses_its_endpoint_max_tokens_and_no_openai_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    scripted = OPENAI.api()
    async with open_provider("m", local(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi", max_tokens=64, temperature=0.2))
    (sent,) = scripted.requests
    assert sent.url == "http://localhost:11434/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer no-key"  # never the OpenAI key
    assert scripted.bodies == [
        {
            "model": "llama3.3",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 64,
            "temperature": 0.2,
        }
    ]
    assert response.content == "echo hi"


async def test_local_llama_ignores_a_bad_openai_key_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real\n")  # never read for a local model
    async with open_provider("m", local(), http_client=OPENAI.api().client()) as provider:
        assert (await provider.complete(user("hi"))).content == "echo hi"


async def test_local_llama_sends_a_configured_key() -> None:
    scripted = OPENAI.api()
    async with open_provider("m", local(api_key="vllm-secret"), http_client=scripted.client()) as p:
        await p.complete(user("hi"))
    assert scripted.requests[0].headers["authorization"] == "Bearer vllm-secret"


async def test_local_llama_refuses_a_configured_key_it_cannot_send() -> None:
    # Refused by ModelConfig itself, or when the adapter opens: either way before any request.
    with pytest.raises(ConfigError, match=r"api_key") as caught:
        config = local(api_key="vllm-secret\n")
        async with open_provider("m", config, http_client=ScriptedApi(OPENAI.echo).client()):
            pass
    assert "vllm-secret" not in str(caught.value)


async def test_absent_optional_fields_are_tolerated() -> None:
    scripted = OPENAI.api()
    scripted.reply(json_response(200, {"choices": [{"message": {"content": "ok"}}]}))
    async with open_provider("m", local(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert (response.content, response.usage, response.finish_reason) == ("ok", Usage(), None)
    assert response.provider_request_id is None


async def test_a_gateway_on_local_llama_batches_requests_and_matches_answers() -> None:
    scripted = OPENAI.api()
    config = local(
        batch_size=3, batch_timeout_ms=50, max_concurrency=16, timeout_s=None, **FULL_BATCHES
    )
    models = {"m": config}
    async with ScriptedGateway(models, scripted) as gw:
        requests = [user(f"question {i}") for i in range(7)]
        responses = await gw.batch(requests)
        stats = gw.get_stats().models["m"]
    assert [r.content for r in responses] == [f"echo question {i}" for i in range(7)]
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert stats.batches == 3
    assert len(scripted.requests) == 7
