"""The contract every SDK adapter keeps, run against each (Anthropic, OpenAI) over a MockTransport.

What differs between the wire protocols lives in ``_provider_support.Protocol``; what only one
adapter does (Anthropic's system and tool_result mapping, OpenAI's local-llama key rules and
content parts) is in ``test_provider_anthropic.py`` and ``test_provider_openai.py``.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest

from llm_gateway import (
    AuthenticationError,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
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

from ._provider_support import (
    FULL_BATCHES,
    PROTOCOLS,
    Protocol,
    ScriptedApi,
    ScriptedGateway,
    json_response,
    open_scripted,
    set_path,
    user,
)

pytestmark = pytest.mark.anyio

WEATHER = LLMTool(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture(params=PROTOCOLS, ids=str)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    result: Protocol = request.param
    return result


@pytest.fixture
def wire() -> str:
    """The adapters' HTTP client here: the MockTransport (``test_provider_wires.py`` runs
    these tests again over loopback sockets, on each HTTP client)."""
    return "mock"


async def answer(
    protocol: Protocol, reply: Any, request: LLMRequest | None = None, *, wire: str
) -> LLMResponse:
    """The adapter's response to ``reply`` (a response, exception, or handler)."""
    scripted = protocol.api()
    scripted.reply(reply)
    async with scripted.serving(wire), open_scripted("m", protocol.config(), scripted, wire) as p:
        response = await p.complete(request or user("hi"))
    assert len(scripted.requests) == 1
    return response


async def fail_with(protocol: Protocol, reply: Any, *, wire: str) -> ProviderError:
    scripted = protocol.api()
    scripted.reply(reply)
    async with scripted.serving(wire), open_scripted("m", protocol.config(), scripted, wire) as p:
        with pytest.raises(ProviderError) as caught:
            await p.complete(user("hi"))
    # One HTTP call per attempt: the SDK's own retries are off, on every wire.
    assert len(scripted.requests) == 1
    return caught.value


# -- what is sent --------------------------------------------------------------------------


async def test_headers_carry_the_key_and_extra_headers_with_sdk_retries_off(
    protocol: Protocol, wire: str
) -> None:
    scripted = protocol.api()
    config = protocol.config(provider_options={"extra_headers": {"x-team": "agents"}})
    async with scripted.serving(wire), open_scripted("m", config, scripted, wire) as provider:
        await provider.complete(user("hi"))
    (sent,) = scripted.requests
    expected = httpx2.URL(protocol.url)
    if wire != "mock":  # the same path on the loopback server
        expected = expected.copy_with(scheme="http", host="127.0.0.1", port=sent.url.port)
    assert sent.url == expected
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.headers["x-team"] == "agents"
    assert sent.headers["x-stainless-retry-count"] == "0"


# -- what comes back -----------------------------------------------------------------------


async def test_text_tool_calls_finish_and_request_id_are_normalised(
    protocol: Protocol, wire: str
) -> None:
    calls = [ToolCall("call_1", "get_weather", {"city": "Paris"}), ToolCall("call_2", "now", {})]
    body = protocol.answer("Checking both.", calls, protocol.finish_reasons[0][0], None)
    reply = json_response(200, body, {protocol.request_id_header: "req_42"})
    request = user("weather?", model="the-id", tools=[WEATHER])
    scripted = protocol.api()
    scripted.reply(reply)
    config = protocol.config()
    async with scripted.serving(wire), open_scripted("the-id", config, scripted, wire) as p:
        response = await p.complete(request)
    assert response.request_id == request.request_id
    assert response.model == "the-id"
    assert response.content == "Checking both."
    assert response.tool_calls == tuple(calls)
    assert response.finish_reason == "stop"
    assert response.provider_request_id == "req_42"


async def test_usage_counts_are_read_from_their_fields(protocol: Protocol, wire: str) -> None:
    usage, expected = protocol.usage_example
    response = await answer(protocol, json_response(200, protocol.with_usage(usage)), wire=wire)
    assert response.usage == expected


def finish_cases() -> list[Any]:
    return [
        pytest.param(p, raw, expected, id=f"{p.name}-{raw}")
        for p in PROTOCOLS
        for raw, expected in p.finish_reasons
    ]


@pytest.mark.parametrize(("protocol", "raw", "expected"), finish_cases())
async def test_finish_reasons_are_normalised(
    protocol: Protocol, raw: str | None, expected: str | None, wire: str
) -> None:
    response = await answer(protocol, json_response(200, protocol.with_finish(raw)), wire=wire)
    assert response.finish_reason == expected


async def test_rate_limit_headers_of_a_success_are_kept_and_no_others(
    protocol: Protocol, wire: str
) -> None:
    headers = {**protocol.rate_limit_headers, "set-cookie": "secret", "x-unrelated": "dropped"}
    response = await answer(protocol, protocol.reply(headers=headers), wire=wire)
    assert response.rate_limit_headers == protocol.rate_limit_headers


# -- errors --------------------------------------------------------------------------------


async def test_429_is_a_rate_limit_error_with_retry_after_and_rate_limit_headers(
    protocol: Protocol, wire: str
) -> None:
    headers = {
        "retry-after": "7",
        protocol.request_id_header: "req_429",
        **protocol.rate_limit_headers,
        "x-unrelated": "dropped",
    }
    body = protocol.error_body("rate_limit_error")
    error = await fail_with(protocol, json_response(429, body, headers), wire=wire)
    assert type(error) is RateLimitError
    assert error.status_code == 429
    assert error.retry_after_s == 7.0
    assert error.provider_request_id == "req_429"
    assert error.error_type == "rate_limit_error"
    assert error.provider_message == "secret prompt fragment"
    assert error.headers == {"retry-after": "7", **protocol.rate_limit_headers}
    assert str(error) == (
        f"{protocol.display} answered HTTP 429 rate_limit_error (request id req_429); "
        "retry after 7 s"
    )
    assert "secret" not in str(error)
    # The SDK's exception quotes the whole error body: it is not chained.
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # long past: retry now
    ],
)
async def test_retry_after_ms_first_then_retry_after_as_seconds_or_date(
    protocol: Protocol, headers: dict[str, str], seconds: float, wire: str
) -> None:
    body = protocol.error_body("rate_limit_error")
    error = await fail_with(protocol, json_response(429, body, headers), wire=wire)
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == seconds


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ProviderStatusError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, ProviderStatusError),
        (500, ProviderStatusError),
        (503, ProviderStatusError),
        (529, ProviderStatusError),
    ],
)
async def test_http_errors_are_classified_by_status(
    protocol: Protocol, status: int, kind: type[ProviderStatusError], wire: str
) -> None:
    body = protocol.error_body("some_error")
    reply = json_response(status, body, {protocol.request_id_header: "r1"})
    error = await fail_with(protocol, reply, wire=wire)
    assert type(error) is kind
    assert error.status_code == status
    assert error.error_type == "some_error"
    assert error.provider_request_id == "r1"
    assert error.retry_after_s is None
    assert str(error) == f"{protocol.display} answered HTTP {status} some_error (request id r1)"


async def test_non_json_error_body_still_gives_the_status(protocol: Protocol, wire: str) -> None:
    reply = httpx2.Response(502, text="<html>Bad gateway</html>")
    error = await fail_with(protocol, reply, wire=wire)
    assert type(error) is ProviderStatusError
    assert (error.status_code, error.error_type) == (502, None)
    assert str(error) == f"{protocol.display} answered HTTP 502"


@pytest.mark.parametrize(
    "transport_error", [httpx2.ReadTimeout("read timed out"), httpx2.ConnectTimeout("connect")]
)
async def test_sdk_timeout_is_a_provider_timeout_error_chaining_the_transports(
    protocol: Protocol, transport_error: Exception, wire: str
) -> None:
    error = await fail_with(protocol, transport_error, wire=wire)
    assert type(error) is ProviderTimeoutError
    assert error.__cause__ is transport_error  # socket-level: safe to show, useful to debug


@pytest.mark.parametrize(
    "transport_error",
    [httpx2.ConnectError("connection refused"), httpx2.RemoteProtocolError("peer closed")],
)
async def test_connection_failure_is_a_provider_connection_error(
    protocol: Protocol, transport_error: Exception, wire: str
) -> None:
    error = await fail_with(protocol, transport_error, wire=wire)
    assert type(error) is ProviderConnectionError
    assert str(error) == f"could not reach {protocol.display} ({type(transport_error).__name__})"
    assert error.__cause__ is transport_error
    assert error.__suppress_context__


# -- success bodies that cannot be used ----------------------------------------------------


def malformed_cases() -> list[Any]:
    """(protocol, body, what the message says) for 200 answers the adapters refuse."""
    a, o = PROTOCOLS
    cases: list[tuple[Protocol, Any, str]] = [
        (a, httpx2.Response(200, text="not json"), "not JSON (JSONDecodeError: Expecting value"),
        (o, httpx2.Response(200, text="<html>"), "not JSON (JSONDecodeError: Expecting value"),
        (a, httpx2.Response(200, content=b'{"a": "\xff"}'), "not UTF-8"),
        (o, httpx2.Response(200, content=b'{"a": "\xff"}'), "not UTF-8"),
        (a, httpx2.Response(200, text='{"content": NaN}'), "not JSON (NaN is not a JSON value)"),
        (o, httpx2.Response(200, text="Infinity"), "not JSON (Infinity is not a JSON value)"),
        (a, json_response(200, [1, 2]), "not a Messages API message: the body is a list"),
        (o, httpx2.Response(200, text="null"), "not a chat completion: the body is null"),
        (o, json_response(200, 7), "not a chat completion: the body is an integer"),
        (a, json_response(200, {"id": "msg_1"}), "content is missing; expected a list"),
        (a, json_response(200, {"content": "text"}), "content is a string; expected a list"),
        (o, json_response(200, {"object": "error"}), "choices is missing; expected a list"),
        (o, json_response(200, {"choices": []}), "choices is an empty list"),
        (o, json_response(200, {"choices": ["x"]}), "choices[0] is a string; expected an object"),
        (o, json_response(200, {"choices": [{}]}), "choices[0].message is missing"),
    ]
    return [
        pytest.param(p, reply, problem, id=f"{p.name}-{problem}") for p, reply, problem in cases
    ]


@pytest.mark.parametrize(("protocol", "reply", "problem"), malformed_cases())
async def test_malformed_bodies_are_provider_response_errors(
    protocol: Protocol, reply: httpx2.Response, problem: str, wire: str
) -> None:
    error = await fail_with(protocol, reply, wire=wire)
    assert type(error) is ProviderResponseError
    assert error.status_code == 200
    assert f"{protocol.display} answered HTTP 200 with an unusable body: {problem}" in str(error)


async def test_a_body_nested_too_deeply_is_a_provider_response_error(
    protocol: Protocol, wire: str
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    error = await fail_with(protocol, httpx2.Response(200, text=deep), wire=wire)
    assert type(error) is ProviderResponseError
    assert "nested too deeply" in str(error)


async def test_a_malformed_body_names_the_request_id(protocol: Protocol, wire: str) -> None:
    reply = httpx2.Response(200, text="{", headers={protocol.request_id_header: "req_bad"})
    error = await fail_with(protocol, reply, wire=wire)
    assert isinstance(error, ProviderResponseError)
    assert error.provider_request_id == "req_bad"
    assert str(error).endswith("(request id req_bad)")


# Defect class 3 of issue 10: "one provider reply crashes the gateway". Usage counts sent as
# strings were returned as strings and crashed the gateway's arithmetic later; OpenAI returned
# a number or a list as LLMResponse.content.

BAD_COUNTS = [
    pytest.param("7", "a string", id="str"),
    pytest.param(7.0, "a number with a fraction", id="float"),
    pytest.param(True, "a boolean", id="bool"),
    pytest.param([7], "a list", id="list"),
    pytest.param({"n": 7}, "an object", id="object"),
    pytest.param(-1, "an integer out of range", id="negative"),
    pytest.param(2**53, "an integer out of range", id="huge"),
]


def usage_path_cases() -> list[Any]:
    return [
        pytest.param(p, path, id=f"{p.name}-{path}") for p in PROTOCOLS for path in p.usage_paths
    ]


@pytest.mark.parametrize(("protocol", "path"), usage_path_cases())
@pytest.mark.parametrize(("value", "kind"), BAD_COUNTS)
async def test_a_usage_count_that_is_not_an_int_is_a_provider_response_error(
    protocol: Protocol, path: str, value: Any, kind: str, wire: str
) -> None:
    body = set_path(protocol.with_usage({}), path, value)
    error = await fail_with(protocol, json_response(200, body), wire=wire)
    assert type(error) is ProviderResponseError
    assert f"unusable body: {path} is {kind}; expected" in str(error)
    assert repr(value) not in str(error)  # named, never quoted


async def test_missing_or_null_usage_counts_are_zero(protocol: Protocol, wire: str) -> None:
    body = protocol.with_usage({})
    for path in protocol.usage_paths:
        set_path(body, path, None)
    assert (await answer(protocol, json_response(200, body), wire=wire)).usage == Usage()


@pytest.mark.parametrize("usage", [None, {}, "lots", [1, 2], 3])
async def test_usage_itself_must_be_an_object_or_null(
    protocol: Protocol, usage: Any, wire: str
) -> None:
    body = protocol.with_usage(usage)
    if isinstance(usage, dict) or usage is None:
        response = await answer(protocol, json_response(200, body), wire=wire)
        assert response.usage == Usage()
    else:
        error = await fail_with(protocol, json_response(200, body), wire=wire)
        assert type(error) is ProviderResponseError
        assert "usage is " in str(error)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param(7, "an integer", id="int"),
        pytest.param(1.5, "a number with a fraction", id="float"),
        pytest.param(True, "a boolean", id="bool"),
        pytest.param({"text": "hi"}, "an object", id="object"),
    ],
)
async def test_answer_text_that_is_not_a_string_is_a_provider_response_error(
    protocol: Protocol, value: Any, kind: str, wire: str
) -> None:
    error = await fail_with(protocol, json_response(200, protocol.with_text(value)), wire=wire)
    assert type(error) is ProviderResponseError
    assert f"unusable body: {protocol.text_path} is {kind}; expected a string" in str(error)


async def test_answer_text_with_a_lone_surrogate_is_a_provider_response_error(
    protocol: Protocol, wire: str
) -> None:
    # A JSON "\ud800" escape decodes to a str that cannot be encoded (nor logged) as UTF-8.
    text = json_response(200, protocol.with_text("X")).text.replace('"X"', '"a\\ud800b"')
    error = await fail_with(protocol, httpx2.Response(200, text=text), wire=wire)
    assert type(error) is ProviderResponseError
    assert f"{protocol.text_path} is a string with a lone surrogate" in str(error)


async def test_a_surrogate_pair_escape_is_text(protocol: Protocol, wire: str) -> None:
    text = json_response(200, protocol.with_text("X")).text.replace('"X"', '"ok \\ud83d\\ude00"')
    response = await answer(protocol, httpx2.Response(200, text=text), wire=wire)
    assert response.content == "ok \U0001f600"


@pytest.mark.parametrize("value", [7, ["stop"], {"reason": "stop"}, True])
async def test_a_finish_reason_that_is_not_a_string_is_a_provider_response_error(
    protocol: Protocol, value: Any, wire: str
) -> None:
    error = await fail_with(protocol, json_response(200, protocol.with_finish(value)), wire=wire)
    assert type(error) is ProviderResponseError
    assert "unusable body:" in str(error)
    assert "expected a string" in str(error)


@pytest.mark.parametrize(
    ("call_id", "name", "arguments", "problem"),
    [
        (7, "f", {}, ".id is an integer; expected a string"),
        (None, "f", {}, ".id is null; expected a string"),
        ("c1", ["f"], {}, ".name is a list; expected a string"),
        ("c1", "f", [1], "'f' (id c1) has"),
        ("c1", "f", 5, "'f' (id c1) has"),
    ],
)
async def test_malformed_tool_calls_are_provider_response_errors(
    protocol: Protocol, call_id: Any, name: Any, arguments: Any, problem: str, wire: str
) -> None:
    body = protocol.with_tool_call(call_id, name, arguments)
    error = await fail_with(protocol, json_response(200, body), wire=wire)
    assert type(error) is ProviderResponseError
    assert problem in str(error)
    assert "object" in str(error) or "string" in str(error)


async def test_a_tool_call_is_read_into_a_tool_call(protocol: Protocol, wire: str) -> None:
    body = protocol.with_tool_call("c1", "f", {"city": "Zürich", "n": [1, {"x": None}]})
    response = await answer(protocol, json_response(200, body), wire=wire)
    assert response.tool_calls == (ToolCall("c1", "f", {"city": "Zürich", "n": [1, {"x": None}]}),)


# -- the raw path sends what the SDK's create() sends ---------------------------------------


def same_as_create_cases() -> list[Any]:
    a, o = PROTOCOLS
    paris = [ToolCall("call_1", "get_weather", {"city": "Paris"})]
    schema = WEATHER.input_schema
    cases: list[tuple[Protocol, str, LLMRequest, dict[str, Any]]] = [
        (
            a,
            "plain",
            user("Hello"),
            {"max_tokens": 4096, "messages": [{"role": "user", "content": "Hello"}]},
        ),
        (
            o,
            "plain",
            user("Hello"),
            {"messages": [{"role": "user", "content": "Hello"}], "temperature": 0.0},
        ),
        (
            a,
            "system-and-tools",
            LLMRequest(
                model="m",
                messages=[LLMMessage("system", "Be brief."), LLMMessage("user", "Weather?")],
                tools=[WEATHER],
                max_tokens=300,
            ),
            {
                "max_tokens": 300,
                "messages": [{"role": "user", "content": "Weather?"}],
                "system": "Be brief.",
                "tools": [
                    {
                        "name": "get_weather",
                        "description": "Current weather in a city",
                        "input_schema": schema,
                    }
                ],
            },
        ),
        (
            o,
            "system-and-tools",
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
                            "parameters": schema,
                        },
                    }
                ],
            },
        ),
        (
            a,
            "tool-result",
            LLMRequest(
                model="m",
                messages=[
                    LLMMessage("user", "Weather in Paris?"),
                    LLMMessage("assistant", "", tool_calls=paris),
                    LLMMessage("tool", "18 C, sunny", tool_call_id="call_1"),
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
                                "id": "call_1",
                                "name": "get_weather",
                                "input": {"city": "Paris"},
                            }
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "call_1",
                                "content": "18 C, sunny",
                            }
                        ],
                    },
                ],
            },
        ),
        (
            o,
            "tool-result",
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
        ),
    ]
    return [pytest.param(p, r, k, id=f"{p.name}-{name}") for p, name, r, k in cases]


@pytest.mark.parametrize(("protocol", "request_", "create_kwargs"), same_as_create_cases())
async def test_the_raw_call_sends_the_bytes_the_sdks_create_sends(
    protocol: Protocol,
    request_: LLMRequest,
    create_kwargs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An admin key in the environment must not ride along on the raw path either (OpenAI).
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "admin-secret")
    scripted = protocol.api()
    async with open_provider("m", protocol.config(), http_client=scripted.client()) as provider:
        await provider.complete(request_)
        await protocol.create(scripted.client(), create_kwargs)
    ours, theirs = scripted.requests
    assert ours.content == theirs.content
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert ours.headers.multi_items() == theirs.headers.multi_items()


# -- through a real Gateway ----------------------------------------------------------------

# The SDKs detect the platform in a worker thread on a client's first request; virtual clocks
# jump ahead while a thread works, so these tests set no deadline where that could fire.


async def test_a_gateway_batches_requests_and_matches_answers(
    protocol: Protocol, wire: str
) -> None:
    scripted = protocol.api()
    config = protocol.config(
        batch_size=4, batch_timeout_ms=50, max_concurrency=16, timeout_s=None, **FULL_BATCHES
    )
    async with scripted.serving(wire), ScriptedGateway({"model": config}, scripted, wire) as gw:
        requests = [user(f"question {i}", model="model") for i in range(10)]
        responses = await gw.batch(requests)
        stats = gw.get_stats().models["model"]
    assert [r.content for r in responses] == [f"echo question {i}" for i in range(10)]
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert all(r.provider_request_id == "req_echo" and r.model == "model" for r in responses)
    assert stats.batches == 3
    assert len(scripted.requests) == 10


async def test_a_gateway_delivers_provider_errors_as_they_are(
    protocol: Protocol, wire: str
) -> None:
    scripted = protocol.api()
    body = protocol.error_body("authentication_error")
    scripted.reply(json_response(401, body, {protocol.request_id_header: "r9"}))
    config = protocol.config(timeout_s=None)
    async with scripted.serving(wire), ScriptedGateway({"m": config}, scripted, wire) as gw:
        with pytest.raises(AuthenticationError) as caught:
            await gw.request(user("hi"))
        assert (await gw.request(user("again"))).content == "echo again"
    assert (caught.value.status_code, caught.value.provider_request_id) == (401, "r9")


async def test_a_gateway_survives_a_reply_with_string_usage(protocol: Protocol, wire: str) -> None:
    """Defect class 3 through the gateway: the bad reply fails its request, and only it."""
    scripted = protocol.api()
    path = next(iter(protocol.usage_paths))
    bad = set_path(protocol.with_usage({}), path, "7")
    scripted.reply(json_response(200, bad))
    config = protocol.config(timeout_s=None)
    async with scripted.serving(wire), ScriptedGateway({"m": config}, scripted, wire) as gw:
        with pytest.raises(ProviderResponseError):
            await gw.request(user("bad"))
        assert (await gw.request(user("next"))).content == "echo next"
        assert gw.get_stats().models["m"].completed == 1


async def test_the_gateway_deadline_cancels_a_slow_sdk_call(protocol: Protocol) -> None:
    scripted = protocol.api()
    async with ScriptedGateway({"m": protocol.config(timeout_s=None)}, scripted) as gw:
        await gw.request(user("warm up"))  # the platform-detection thread, untimed
        scripted.delay_s = 30.0
        start = anyio.current_time()
        with pytest.raises(RequestTimeoutError):
            await gw.request(user("slow", timeout_s=5.0))
        with pytest.raises(RequestTimeoutError):
            await gw.request(user("slower", timeout_s=1.0))
        assert anyio.current_time() - start == pytest.approx(6.0, abs=1e-3)
        scripted.delay_s = 0.0
        assert (await gw.request(user("next"))).content == "echo next"


def test_protocol_objects_cover_both_adapters() -> None:
    assert {p.provider for p in PROTOCOLS} == {"claude-haiku", "gpt-4o"}
    assert isinstance(PROTOCOLS[0].api(), ScriptedApi)
