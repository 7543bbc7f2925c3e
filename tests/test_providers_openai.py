"""The OpenAI adapter (gpt-* and local-llama) over a MockTransport: bodies, responses, errors."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import openai
import pytest

from llm_gateway import (
    AuthenticationError,
    LLMMessage,
    LLMRequest,
    LLMTool,
    ModelConfig,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    RequestTimeoutError,
    ToolCall,
    Usage,
)
from llm_gateway.providers import open_provider

from ._provider_support import ScriptedApi, ScriptedGateway, json_response, user

pytestmark = pytest.mark.anyio

WEATHER = LLMTool(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
LOCAL_ENDPOINT = "http://localhost:11434/v1"


def gpt(**overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {"provider": "gpt-4o", "model_name": "gpt-4o", "api_key": "test-key"}
    return ModelConfig(**(fields | overrides))


def local(**overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {
        "provider": "local-llama",
        "model_name": "llama3.3",
        "endpoint": LOCAL_ENDPOINT,
    }
    return ModelConfig(**(fields | overrides))


def completion(
    message: dict[str, Any] | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A chat-completions answer."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"} if message is None else message,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if usage is None
        else usage,
    }


def echo(request: httpx2.Request) -> httpx2.Response:
    """Answers with the text of the last message, so answers can be matched to requests."""
    last = json.loads(request.content)["messages"][-1]["content"]
    message = {"role": "assistant", "content": f"echo {last}"}
    return json_response(200, completion(message), {"x-request-id": "req_echo"})


def api(default: Any = echo) -> ScriptedApi:
    return ScriptedApi(default)


def error_body(error_type: str, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": "secret prompt fragment",
            "type": error_type,
            "param": None,
            "code": code,
        }
    }


async def test_messages_temperature_and_max_completion_tokens_are_sent() -> None:
    scripted = api()
    request = LLMRequest(
        model="m",
        messages=[LLMMessage("system", "Be brief."), LLMMessage("user", "Hello")],
        temperature=0.7,
        max_tokens=50,
    )
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
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
    scripted = api()
    bare = LLMTool("now")
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
        await provider.complete(user("weather?", tools=[WEATHER, bare]))
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
    scripted = api()
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
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
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


async def test_headers_carry_the_key_organization_project_and_extra_headers() -> None:
    scripted = api()
    config = gpt(
        provider_options={
            "organization": "org-1",
            "project": "proj-1",
            "extra_headers": {"x-team": "agents"},
        }
    )
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("hi"))
    (sent,) = scripted.requests
    assert sent.url == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.headers["openai-project"] == "proj-1"
    assert sent.headers["x-team"] == "agents"
    assert sent.headers["x-stainless-retry-count"] == "0"


async def test_response_text_tool_calls_usage_and_request_id_are_normalised() -> None:
    body = completion(
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
            ],
        },
        finish_reason="tool_calls",
        usage={
            "prompt_tokens": 120,
            "completion_tokens": 7,
            "total_tokens": 127,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    )
    scripted = api(lambda r: json_response(200, body, {"x-request-id": "req_42"}))
    request = user("weather?", model="gpt-id", tools=[WEATHER])
    async with open_provider("gpt-id", gpt(), http_client=scripted.client()) as provider:
        response = await provider.complete(request)
    assert response.request_id == request.request_id
    assert response.model == "gpt-id"
    assert response.content == ""
    assert response.tool_calls == (
        ToolCall("call_1", "get_weather", {"city": "Paris"}),
        ToolCall("call_2", "now", {}),
    )
    assert response.usage == Usage(input_tokens=120, output_tokens=7, cache_read_tokens=100)
    assert response.finish_reason == "tool_calls"
    assert response.provider_request_id == "req_42"


@pytest.mark.parametrize(
    ("finish_reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("something_new", "something_new"),
        (None, None),
    ],
)
async def test_finish_reasons_are_normalised(finish_reason: str | None, expected: str) -> None:
    scripted = api(lambda r: json_response(200, completion(finish_reason=finish_reason)))
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert response.finish_reason == expected


async def test_a_refusal_is_a_content_filter_finish() -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    scripted = api(lambda r: json_response(200, completion(message)))
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert (response.content, response.finish_reason) == ("", "content_filter")


async def test_absent_optional_fields_are_tolerated() -> None:
    body = {"choices": [{"message": {"content": "ok"}}]}
    scripted = api(lambda r: json_response(200, body))
    async with open_provider("m", local(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert (response.content, response.usage, response.finish_reason) == ("ok", Usage(), None)
    assert response.provider_request_id is None


# -- local-llama ---------------------------------------------------------------------------


async def test_local_llama_uses_its_endpoint_max_tokens_and_no_openai_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    scripted = api()
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


async def test_local_llama_sends_a_configured_key() -> None:
    scripted = api()
    config = local(api_key="vllm-secret")
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("hi"))
    assert scripted.requests[0].headers["authorization"] == "Bearer vllm-secret"


# -- errors --------------------------------------------------------------------------------


async def fail_with(reply: Any) -> ProviderError:
    scripted = api()
    scripted.reply(reply)
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(user("hi"))
    return caught.value


async def test_429_is_a_rate_limit_error_with_retry_after_and_rate_limit_headers() -> None:
    headers = {
        "retry-after": "20",
        "x-request-id": "req_429",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "1000",
        "openai-processing-ms": "12",
    }
    body = error_body("requests", "rate_limit_exceeded")
    error = await fail_with(json_response(429, body, headers))
    assert type(error) is RateLimitError
    assert error.status_code == 429
    assert error.retry_after_s == 20.0
    assert error.provider_request_id == "req_429"
    assert error.error_type == "requests"
    assert error.provider_message == "secret prompt fragment"
    assert error.headers == {
        "retry-after": "20",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "1000",
    }
    assert str(error) == "OpenAI answered HTTP 429 requests (request id req_429); retry after 20 s"
    assert error.__cause__ is None


async def test_retry_after_ms_is_read_before_retry_after() -> None:
    headers = {"retry-after-ms": "250", "retry-after": "1"}
    error = await fail_with(json_response(429, error_body("tokens"), headers))
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 0.25


async def test_retry_after_as_an_http_date() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}  # long past: retry now
    error = await fail_with(json_response(429, error_body("tokens"), headers))
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 0.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, ProviderStatusError),
        (500, ProviderStatusError),
        (529, ProviderStatusError),
    ],
)
async def test_http_errors_are_classified_by_status(
    status: int, kind: type[ProviderStatusError]
) -> None:
    body = error_body("invalid_request_error", code="invalid_api_key")
    error = await fail_with(json_response(status, body, {"x-request-id": "r1"}))
    assert type(error) is kind
    assert error.status_code == status
    assert error.error_type == "invalid_request_error"
    assert str(error) == f"OpenAI answered HTTP {status} invalid_request_error (request id r1)"


async def test_error_code_stands_in_for_a_missing_type() -> None:
    body = {"error": {"message": "m", "type": None, "code": "model_not_found"}}
    error = await fail_with(json_response(404, body))
    assert isinstance(error, ProviderStatusError)
    assert error.error_type == "model_not_found"


async def test_sdk_timeout_is_a_provider_timeout_error() -> None:
    error = await fail_with(httpx2.ConnectTimeout("connect timed out"))
    assert type(error) is ProviderTimeoutError


async def test_connection_failure_is_a_provider_connection_error() -> None:
    error = await fail_with(httpx2.RemoteProtocolError("peer closed connection"))
    assert type(error) is ProviderConnectionError
    assert str(error) == "could not reach OpenAI (RemoteProtocolError)"


def tool_call_with(arguments: str) -> httpx2.Response:
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": arguments}}
    body = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    return json_response(200, body, {"x-request-id": "req_bad"})


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (
            tool_call_with('{"city": "Par'),
            "tool call 'f' (id call_9) has arguments that are not JSON: Unterminated string",
        ),
        (
            tool_call_with("[1, 2]"),
            "tool call 'f' (id call_9) has arguments that are a JSON list, not an object",
        ),
        (httpx2.Response(200, text="<html>"), "not a chat completion (JSONDecodeError"),
        (json_response(200, {"choices": []}), "not a chat completion (IndexError"),
        (json_response(200, {"object": "error"}), "not a chat completion (KeyError: 'choices')"),
    ],
)
async def test_malformed_bodies_are_provider_response_errors(
    reply: httpx2.Response, problem: str
) -> None:
    error = await fail_with(reply)
    assert type(error) is ProviderResponseError
    assert error.status_code == 200
    assert problem in str(error)
    assert "Par" not in str(error)  # the arguments themselves may quote the prompt


async def test_malformed_tool_json_names_the_request_id() -> None:
    error = await fail_with(tool_call_with("{"))
    assert isinstance(error, ProviderResponseError)
    assert error.provider_request_id == "req_bad"
    assert str(error).endswith("(request id req_bad)")


# -- the raw path sends what chat.completions.create sends ----------------------------------

SAME_AS_CREATE = [
    pytest.param(
        user("Hello"),
        {"messages": [{"role": "user", "content": "Hello"}], "temperature": 0.0},
        id="plain",
    ),
    pytest.param(
        LLMRequest(
            model="m",
            messages=[LLMMessage("system", "Be brief."), LLMMessage("user", "Weather?")],
            tools=[WEATHER],
            max_tokens=300,
            temperature=1.0,
        ),
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
            ],
            "max_completion_tokens": 300,
            "temperature": 1.0,
            "tools": [
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
                }
            ],
        },
        id="system-and-tools",
    ),
    pytest.param(
        LLMRequest(
            model="m",
            messages=[
                LLMMessage("user", "Weather?"),
                LLMMessage("assistant", "", tool_calls=[ToolCall("call_1", "f", {"x": 1})]),
                LLMMessage("tool", "done", tool_call_id="call_1"),
            ],
        ),
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "done"},
            ],
            "temperature": 0.0,
        },
        id="tool-result",
    ),
]


@pytest.mark.parametrize(("request_", "create_kwargs"), SAME_AS_CREATE)
async def test_the_raw_call_sends_the_bytes_chat_completions_create_sends(
    request_: LLMRequest, create_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An admin key in the environment must not ride along on the raw path either.
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "admin-secret")
    scripted = api()
    async with open_provider("m", gpt(), http_client=scripted.client()) as provider:
        await provider.complete(request_)
        sdk = openai.AsyncOpenAI(
            api_key="test-key", max_retries=0, timeout=600.0, http_client=scripted.client()
        )
        async with sdk:
            await sdk.chat.completions.create(model="gpt-4o", **create_kwargs)
    ours, theirs = scripted.requests
    assert ours.content == theirs.content
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert ours.headers.multi_items() == theirs.headers.multi_items()


# -- through a real Gateway ----------------------------------------------------------------


# The openai SDK detects the platform in a worker thread on a client's first request; virtual
# clocks jump ahead while a thread works, so these tests set no deadline where that could fire.


@pytest.mark.parametrize("config", [gpt, local], ids=["gpt", "local-llama"])
async def test_a_gateway_batches_requests_and_matches_answers(config: Any) -> None:
    scripted = api()
    models = {"m": config(batch_size=3, batch_timeout_ms=50, max_concurrency=6, timeout_s=None)}
    async with ScriptedGateway(models, scripted) as gw:
        requests = [user(f"question {i}") for i in range(7)]
        responses = await gw.batch(requests)
        stats = gw.get_stats().models["m"]
    assert [r.content for r in responses] == [f"echo question {i}" for i in range(7)]
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert stats.batches == 3
    assert len(scripted.requests) == 7


async def test_a_gateway_delivers_provider_errors_as_they_are() -> None:
    scripted = api()
    scripted.reply(json_response(401, error_body("invalid_request_error", "invalid_api_key")))
    async with ScriptedGateway({"m": gpt(timeout_s=None)}, scripted) as gw:
        with pytest.raises(AuthenticationError):
            await gw.request(user("hi"))
        assert (await gw.request(user("again"))).content == "echo again"


async def test_the_gateway_deadline_cancels_a_slow_sdk_call() -> None:
    scripted = api()
    async with ScriptedGateway({"m": gpt(timeout_s=None)}, scripted) as gw:
        await gw.request(user("warm up"))  # the platform-detection thread, before the clock counts
        scripted.delay_s = 30.0
        start = anyio.current_time()
        with pytest.raises(RequestTimeoutError):
            await gw.request(user("slow", timeout_s=2.0))
        assert anyio.current_time() - start == pytest.approx(2.0, abs=1e-3)
        scripted.delay_s = 0.0
        assert (await gw.request(user("next"))).content == "echo next"
