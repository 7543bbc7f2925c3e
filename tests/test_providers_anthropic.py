"""The Anthropic adapter over a MockTransport: bodies sent, responses and errors normalised."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import anyio
import httpx2
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


def claude(**overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {
        "provider": "claude-haiku",
        "model_name": "claude-haiku-4-5",
        "api_key": "test-key",
    }
    return ModelConfig(**(fields | overrides))


def message(
    content: list[dict[str, Any]] | None = None,
    stop_reason: str | None = "end_turn",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Messages API answer."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "hi"}] if content is None else content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2} if usage is None else usage,
    }


def echo(request: httpx2.Request) -> httpx2.Response:
    """Answers with the text of the last message, so answers can be matched to requests."""
    last = json.loads(request.content)["messages"][-1]["content"]
    return json_response(
        200, message([{"type": "text", "text": f"echo {last}"}]), {"request-id": "req_echo"}
    )


def api(default: Any = echo) -> ScriptedApi:
    return ScriptedApi(default)


def error_body(error_type: str, text: str = "secret prompt fragment") -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": text}}


async def test_system_messages_go_to_the_top_level_system_parameter() -> None:
    scripted = api()
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
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
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
    scripted = api()
    config = claude(provider_options={"default_max_tokens": 256})
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("a"))
        await provider.complete(user("b", max_tokens=17))
    assert [b["max_tokens"] for b in scripted.bodies] == [256, 17]
    assert "system" not in scripted.bodies[0]


async def test_tools_are_sent_with_input_schema() -> None:
    scripted = api()
    bare = LLMTool("now", parameters={"type": "object", "properties": {}})
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
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
    scripted = api()
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
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
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


async def test_headers_carry_the_key_the_api_version_and_extra_headers() -> None:
    scripted = api()
    config = claude(provider_options={"extra_headers": {"anthropic-beta": "x-2026"}})
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("hi"))
    (sent,) = scripted.requests
    assert sent.url == "https://api.anthropic.com/v1/messages"
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.headers["anthropic-version"]
    assert sent.headers["anthropic-beta"] == "x-2026"
    assert sent.headers["x-stainless-retry-count"] == "0"


async def test_response_text_tool_calls_usage_and_request_id_are_normalised() -> None:
    body = message(
        [
            {"type": "thinking", "thinking": "...", "signature": "s"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "both."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
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
    scripted = api(lambda r: json_response(200, body, {"request-id": "req_42"}))
    request = user("weather?", model="claude-id", tools=[WEATHER])
    async with open_provider("claude-id", claude(), http_client=scripted.client()) as provider:
        response = await provider.complete(request)
    assert response.request_id == request.request_id
    assert response.model == "claude-id"
    assert response.content == "Checking both."
    assert response.tool_calls == (
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
        ToolCall("toolu_2", "now", {}),
    )
    assert response.usage == Usage(
        input_tokens=130, output_tokens=7, cache_read_tokens=100, cache_write_tokens=20
    )
    assert response.usage.total_tokens == 137
    assert response.finish_reason == "tool_calls"
    assert response.provider_request_id == "req_42"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
        (None, None),
    ],
)
async def test_finish_reasons_are_normalised(stop_reason: str | None, finish_reason: str) -> None:
    scripted = api(lambda r: json_response(200, message(stop_reason=stop_reason)))
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert response.finish_reason == finish_reason


async def test_absent_optional_fields_are_tolerated() -> None:
    body = {"content": [{"type": "text", "text": "ok"}]}
    scripted = api(lambda r: json_response(200, body))
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
        response = await provider.complete(user("hi"))
    assert (response.content, response.usage, response.finish_reason) == ("ok", Usage(), None)
    assert response.provider_request_id is None


# -- errors --------------------------------------------------------------------------------


async def fail_with(reply: Any) -> ProviderError:
    scripted = api()
    scripted.reply(reply)
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(user("hi"))
    return caught.value


async def test_429_is_a_rate_limit_error_with_retry_after_and_rate_limit_headers() -> None:
    headers = {
        "retry-after": "7",
        "request-id": "req_429",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-11-20T10:00:07Z",
        "x-unrelated": "dropped",
    }
    error = await fail_with(json_response(429, error_body("rate_limit_error"), headers))
    assert type(error) is RateLimitError
    assert error.status_code == 429
    assert error.retry_after_s == 7.0
    assert error.provider_request_id == "req_429"
    assert error.error_type == "rate_limit_error"
    assert error.provider_message == "secret prompt fragment"
    assert error.headers == {
        "retry-after": "7",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-11-20T10:00:07Z",
    }
    assert str(error) == (
        "Anthropic answered HTTP 429 rate_limit_error (request id req_429); retry after 7 s"
    )
    assert "secret" not in str(error)
    # The SDK's exception quotes the whole error body: it is not chained.
    assert error.__cause__ is None
    assert error.__suppress_context__


async def test_retry_after_ms_is_read_before_retry_after() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "2"}
    error = await fail_with(json_response(429, error_body("rate_limit_error"), headers))
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 1.5


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (401, "authentication_error", AuthenticationError),
        (403, "permission_error", AuthenticationError),
        (400, "invalid_request_error", ProviderStatusError),
        (500, "api_error", ProviderStatusError),
        (503, "api_error", ProviderStatusError),
        (529, "overloaded_error", ProviderStatusError),
    ],
)
async def test_http_errors_are_classified_by_status(
    status: int, error_type: str, kind: type[ProviderStatusError]
) -> None:
    error = await fail_with(json_response(status, error_body(error_type), {"request-id": "r1"}))
    assert type(error) is kind
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.provider_request_id == "r1"
    assert error.retry_after_s is None
    assert str(error) == f"Anthropic answered HTTP {status} {error_type} (request id r1)"


async def test_non_json_error_body_still_gives_the_status() -> None:
    error = await fail_with(httpx2.Response(502, text="<html>Bad gateway</html>"))
    assert type(error) is ProviderStatusError
    assert (error.status_code, error.error_type) == (502, None)
    assert str(error) == "Anthropic answered HTTP 502"


async def test_sdk_timeout_is_a_provider_timeout_error() -> None:
    error = await fail_with(httpx2.ReadTimeout("read timed out"))
    assert type(error) is ProviderTimeoutError
    assert isinstance(error.__cause__, httpx2.ReadTimeout)


async def test_connection_failure_is_a_provider_connection_error() -> None:
    error = await fail_with(httpx2.ConnectError("connection refused"))
    assert type(error) is ProviderConnectionError
    assert str(error) == "could not reach Anthropic (ConnectError)"


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (httpx2.Response(200, text="not json"), "JSONDecodeError"),
        (json_response(200, {"id": "msg_1"}), "KeyError: 'content'"),
        (json_response(200, {"content": "text"}), "TypeError"),
        (
            json_response(
                200,
                message([{"type": "tool_use", "id": "t1", "name": "get_weather", "input": "[1]"}]),
            ),
            "tool_use block 'get_weather' (id t1) has an input that is not a JSON object",
        ),
    ],
)
async def test_malformed_bodies_are_provider_response_errors(
    reply: httpx2.Response, problem: str
) -> None:
    error = await fail_with(reply)
    assert type(error) is ProviderResponseError
    assert error.status_code == 200
    assert problem in str(error)


# -- the raw path sends what messages.create sends -----------------------------------------

SAME_AS_CREATE = [
    pytest.param(
        user("Hello"),
        {"max_tokens": 4096, "messages": [{"role": "user", "content": "Hello"}]},
        id="plain",
    ),
    pytest.param(
        LLMRequest(
            model="m",
            messages=[LLMMessage("system", "Be brief."), LLMMessage("user", "Weather in Paris?")],
            tools=[WEATHER],
            max_tokens=300,
        ),
        {
            "max_tokens": 300,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "system": "Be brief.",
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Current weather in a city",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
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
                LLMMessage("user", "Weather in Paris?"),
                LLMMessage(
                    "assistant",
                    "",
                    tool_calls=[ToolCall("toolu_1", "get_weather", {"city": "Paris"})],
                ),
                LLMMessage("tool", "18 C, sunny", tool_call_id="toolu_1"),
            ],
        ),
        {
            "max_tokens": 4096,
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C, sunny"}
                    ],
                },
            ],
        },
        id="tool-result",
    ),
]


@pytest.mark.parametrize(("request_", "create_kwargs"), SAME_AS_CREATE)
async def test_the_raw_call_sends_the_bytes_messages_create_sends(
    request_: LLMRequest, create_kwargs: dict[str, Any]
) -> None:
    scripted = api()
    async with open_provider("m", claude(), http_client=scripted.client()) as provider:
        await provider.complete(request_)
        sdk = anthropic.AsyncAnthropic(
            api_key="test-key", max_retries=0, timeout=600.0, http_client=scripted.client()
        )
        async with sdk:
            await sdk.messages.create(model="claude-haiku-4-5", **create_kwargs)
    ours, theirs = scripted.requests
    assert ours.content == theirs.content
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert ours.headers.multi_items() == theirs.headers.multi_items()


# -- through a real Gateway ----------------------------------------------------------------

# The SDK detects the platform in a worker thread on a client's first request; virtual clocks
# jump ahead while a thread works, so these tests set no deadline where that could fire.


async def test_a_gateway_batches_requests_to_anthropic_and_matches_answers() -> None:
    scripted = api()
    config = claude(batch_size=4, batch_timeout_ms=50, max_concurrency=8, timeout_s=None)
    async with ScriptedGateway({"claude": config}, scripted) as gw:
        requests = [user(f"question {i}", model="claude") for i in range(10)]
        responses = await gw.batch(requests)
        stats = gw.get_stats().models["claude"]
    assert [r.content for r in responses] == [f"echo question {i}" for i in range(10)]
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert all(r.provider_request_id == "req_echo" and r.model == "claude" for r in responses)
    assert stats.batches == 3
    assert len(scripted.requests) == 10


async def test_a_gateway_delivers_provider_errors_as_they_are() -> None:
    scripted = api()
    scripted.reply(json_response(401, error_body("authentication_error"), {"request-id": "r9"}))
    async with ScriptedGateway({"claude": claude(timeout_s=None)}, scripted) as gw:
        with pytest.raises(AuthenticationError) as caught:
            await gw.request(user("hi", model="claude"))
        assert (await gw.request(user("again", model="claude"))).content == "echo again"
    assert (caught.value.status_code, caught.value.provider_request_id) == (401, "r9")


async def test_the_gateway_deadline_cancels_a_slow_sdk_call() -> None:
    scripted = api()
    async with ScriptedGateway({"claude": claude(timeout_s=None)}, scripted) as gw:
        await gw.request(user("warm up", model="claude"))  # the platform thread, untimed
        scripted.delay_s = 30.0
        start = anyio.current_time()
        with pytest.raises(RequestTimeoutError):
            await gw.request(user("slow", model="claude", timeout_s=5.0))
        with pytest.raises(RequestTimeoutError):
            await gw.request(user("slower", model="claude", timeout_s=1.0))
        assert anyio.current_time() - start == pytest.approx(6.0, abs=1e-3)
        scripted.delay_s = 0.0
        assert (await gw.request(user("next", model="claude"))).content == "echo next"
