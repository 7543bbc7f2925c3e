"""Request parameters (stop, top_p, seed, tool_choice, response_format) in both adapters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ProviderResponseError,
    RequestValidationError,
)
from llm_gateway.providers import open_provider
from llm_gateway.providers._mock import (
    CassetteMissError,
    MockFixture,
    MockFixtures,
    MockProvider,
    MockScript,
    RequestContent,
    request_digest,
)

from ._provider_support import ScriptedApi, json_response

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TOOLS = [LLMTool("lookup")]


def ask(**fields: Any) -> LLMRequest:
    return LLMRequest(model="m", messages=[LLMMessage("user", "hi")], **fields)


def anthropic_answer(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "usage": {}}


def openai_answer(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {}}


async def sent_body(provider: str, request: LLMRequest, answer: dict[str, Any]) -> Any:
    scripted = ScriptedApi(lambda r: json_response(200, answer))
    model = ModelConfig(provider=provider, model_name="x", api_key="k")
    async with open_provider("m", model, http_client=scripted.client()) as opened:
        response = await opened.complete(request)
    return scripted.bodies[0], response


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "LLMRequest.stop has 5 sequences"),
        ({"stop": "end"}, "LLMRequest.stop must be"),
        ({"top_p": 0}, "LLMRequest.top_p must be a finite number in (0, 1]"),
        ({"top_p": 1.5}, "LLMRequest.top_p must be"),
        ({"seed": 1.0}, "LLMRequest.seed must be an int"),
        ({"seed": True}, "LLMRequest.seed must be an int"),
        ({"tool_choice": "lookpu", "tools": TOOLS}, "(did you mean 'lookup'?)"),
        ({"tool_choice": "any"}, "LLMRequest.tool_choice is 'any'"),
        ({"response_format": "json"}, "LLMRequest.response_format must be a JSON object"),
    ],
)
def test_bad_parameters_fail_at_construction(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        ask(**fields)
    assert error in str(caught.value)


async def test_openai_gets_every_parameter() -> None:
    request = ask(
        stop=["END"], top_p=0.5, seed=7, tools=TOOLS, tool_choice="lookup", response_format=SCHEMA
    )
    body, response = await sent_body("openai", request, openai_answer('{"n": 3}'))
    assert body["stop"] == ["END"]
    assert body["top_p"] == 0.5
    assert body["seed"] == 7
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA, "strict": True},
    }
    assert response.parsed == {"n": 3}


@pytest.mark.parametrize(
    ("choice", "anthropic", "openai"),
    [
        ("auto", {"type": "auto"}, "auto"),
        ("none", {"type": "none"}, "none"),
        ("required", {"type": "any"}, "required"),
        ("lookup", {"type": "tool", "name": "lookup"}, None),
    ],
)
async def test_tool_choice_in_each_providers_shape(
    choice: str, anthropic: dict[str, str], openai: str | None
) -> None:
    request = ask(tools=TOOLS, tool_choice=choice)
    body, _ = await sent_body("anthropic", request, anthropic_answer("x"))
    assert body["tool_choice"] == anthropic
    if openai is not None:
        body, _ = await sent_body("openai", request, openai_answer("x"))
        assert body["tool_choice"] == openai


async def test_anthropic_gets_stop_sequences_and_structured_output() -> None:
    body, response = await sent_body(
        "anthropic", ask(stop=["END"], response_format=SCHEMA), anthropic_answer('{"n": 1}')
    )
    assert body["stop_sequences"] == ["END"]
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert response.parsed == {"n": 1}


@pytest.mark.parametrize("fields", [{"top_p": 0.5}, {"seed": 1}])
async def test_anthropic_refuses_what_it_cannot_honour(fields: dict[str, Any]) -> None:
    field = next(iter(fields))
    with pytest.raises(RequestValidationError, match=rf"LLMRequest\.{field} .*Anthropic"):
        await sent_body("anthropic", ask(**fields), anthropic_answer("x"))


@pytest.mark.parametrize(
    ("provider", "answer"), [("anthropic", anthropic_answer), ("openai", openai_answer)]
)
async def test_an_answer_that_is_not_json_fails_when_json_was_asked(
    provider: str, answer: Any
) -> None:
    with pytest.raises(ProviderResponseError, match="not the JSON that response_format"):
        await sent_body(provider, ask(response_format=SCHEMA), answer("sure! {n: 1"))
    _, plain = await sent_body(provider, ask(), answer("sure! {n: 1"))
    assert plain.parsed is None


def test_the_digest_sees_each_parameter_and_keeps_old_digests() -> None:
    plain = request_digest(ask())
    variants = [
        ask(stop=["x"]),
        ask(top_p=0.5),
        ask(seed=1),
        ask(tool_choice="none"),
        ask(response_format=SCHEMA),
    ]
    digests = {request_digest(r) for r in variants}
    assert len(digests) == len(variants)
    assert plain not in digests
    assert request_digest(ask(stop=[], seed=None)) == plain


# -- the mock provider ---------------------------------------------------------------------


def mock(script: MockScript | None = None) -> MockProvider:
    return MockProvider("m", "mock", script or MockScript())


async def test_the_mock_answers_structured_requests_with_json() -> None:
    default = await mock().complete(ask(response_format=SCHEMA))
    assert default.parsed == json.loads(default.content)
    assert default.parsed["mock_answer"].startswith("Mock answer ")
    assert (await mock().complete(ask())).parsed is None
    script = MockScript()
    script.answer_next('{"n": 5}', "not json")
    provider = mock(script)
    assert (await provider.complete(ask(response_format=SCHEMA))).parsed == {"n": 5}
    with pytest.raises(ProviderResponseError, match="not the JSON that response_format"):
        await provider.complete(ask(response_format=SCHEMA))


async def test_a_recorded_request_with_parameters_round_trips_through_a_cassette(
    tmp_path: Path,
) -> None:
    request = ask(
        stop=["END"], top_p=0.5, seed=7, tools=TOOLS, tool_choice="lookup", response_format=SCHEMA
    )
    answer = LLMResponse(request_id="r", content='{"n": 2}', model="m")
    fixture = MockFixture.from_response(answer, request=RequestContent.of(request))
    fixtures = MockFixtures(fixtures=[fixture])
    path = tmp_path / "cassette.json"
    fixtures.dump(path)
    loaded = MockFixtures.load(path)
    provider = mock(MockScript(fixtures=loaded, on_missing="error"))
    replayed = await provider.complete(request)
    assert replayed.parsed == {"n": 2}
    # The same request without its parameters is another request.
    with pytest.raises(CassetteMissError):
        await provider.complete(ask(tools=TOOLS))


async def test_a_gateway_fails_an_unhonourable_request_at_once_without_calling_anthropic() -> None:
    scripted = ScriptedApi(lambda r: json_response(200, anthropic_answer("x")))
    # No deadline: on trio's autojump clock the SDK's worker-thread work lets time jump.
    model = ModelConfig(provider="anthropic", model_name="x", api_key="k", timeout_s=None)

    def factory(model_id: str, config: ModelConfig) -> Any:
        return open_provider(model_id, config, http_client=scripted.client())

    async with Gateway(models={"m": model}, log_dir=None, provider_factory=factory) as gw:
        with pytest.raises(RequestValidationError, match=r"LLMRequest\.seed is 1"):
            await gw.request(ask(seed=1))
        assert (await gw.request(ask())).content == "x"
        stats = gw.get_stats().models["m"]
    assert len(scripted.requests) == 1  # only the valid request was sent; no retries
    assert stats.failed == 1
