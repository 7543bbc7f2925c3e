"""The fixtures format and its matching rules: what MockLLMGateway answers, and when it refuses.

Async tests run on both backends on virtual time (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    ConfigError,
    GatewayError,
    LLMMessage,
    LLMRequest,
    LLMTool,
    ProviderError,
    RateLimitError,
    RequestPriority,
    ToolCall,
    Usage,
)
from llm_gateway.testing import (
    CassetteMissError,
    MockError,
    MockFixture,
    MockFixtures,
    MockLLMGateway,
    MockMatch,
    RequestContent,
    request_digest,
)
from llm_gateway.testing import strategies as gst

from ._support import ask, mock_model

pytestmark = pytest.mark.anyio

HIGH = RequestPriority.HIGH
# request_digest of the request in test_request_hash_is_stable_across_runs_and_versions.
GOLDEN = "09937766c2598176d497309fbc598528d7a194de370ba5ea2a9aeedb7a898378"
LOOKUP = LLMTool("lookup", "Look a term up", {"type": "object", "properties": {}})


def conversation(*messages: LLMMessage, model: str = "mock", **fields: Any) -> LLMRequest:
    return LLMRequest(model=model, messages=messages, priority=HIGH, **fields)


# -- the request hash ----------------------------------------------------------------------


def test_request_hash_is_stable_across_runs_and_versions() -> None:
    # A golden value: cassettes recorded today must match tomorrow. If this changes, every
    # recorded cassette stops matching; bump the fixtures format version instead.
    request = LLMRequest(
        model="m",
        messages=[
            LLMMessage("system", "Be brief."),
            LLMMessage("user", "hi"),
            LLMMessage("assistant", "", tool_calls=[ToolCall("c1", "lookup", {"q": [1, 2.5]})]),
            LLMMessage("tool", "found", tool_call_id="c1"),
        ],
        tools=[LOOKUP],
        temperature=0.5,
        max_tokens=100,
    )
    assert request_digest(request) == GOLDEN


def test_request_hash_ignores_id_priority_and_tracing_but_not_content() -> None:
    base = ask("m", "hi")
    same = [
        attrs.evolve(base, request_id="other", priority=HIGH),
        attrs.evolve(base, agent_id="a", trace_id="t", timeout_s=3.0),
        attrs.evolve(base, temperature=0),  # the int 0 is the float 0.0
    ]
    different = [
        attrs.evolve(base, model="n"),
        attrs.evolve(base, messages=[LLMMessage("user", "hi!")]),
        attrs.evolve(base, tools=[LOOKUP]),
        attrs.evolve(base, temperature=0.1),
        attrs.evolve(base, max_tokens=5),
    ]
    assert {request_digest(r) for r in same} == {request_digest(base)}
    assert len({request_digest(r) for r in [base, *different]}) == 6


@settings(max_examples=150, deadline=None)
@given(request=gst.requests(["a", "b"]), data=st.data())
def test_a_fixture_survives_the_json_round_trip_and_keeps_its_hash(
    request: LLMRequest, data: st.DataObject
) -> None:
    response = data.draw(gst.responses(request))
    fixture = MockFixture.from_response(response, request=RequestContent.of(request))
    text = json.dumps(MockFixtures(fixtures=[fixture]).to_dict(), ensure_ascii=False)
    (loaded,) = MockFixtures.from_dict(json.loads(text)).fixtures
    assert loaded.match.request_hash == request_digest(request)
    assert loaded.request is not None and loaded.request.digest() == request_digest(request)
    assert (loaded.content, loaded.tool_calls, loaded.usage, loaded.finish_reason) == (
        response.content,
        response.tool_calls,
        response.usage,
        response.finish_reason,
    )
    assert loaded.match.matches(request.model, request)


# -- matching rules ------------------------------------------------------------------------


def test_each_match_field_alone() -> None:
    request = conversation(
        LLMMessage("user", "What is trio?"),
        LLMMessage("assistant", "", tool_calls=[ToolCall("c1", "lookup", {})]),
        LLMMessage("tool", "a library", tool_call_id="c1"),
    )
    digest = request_digest(request)
    assert MockMatch().matches("mock", request)
    assert MockMatch(request_hash=digest).matches("mock", request)
    assert not MockMatch(request_hash="0" * 64).matches("mock", request)
    assert MockMatch(model="mock").matches("mock", request)
    assert not MockMatch(model="other").matches("other-id", request)
    assert MockMatch(last_role="tool").matches("mock", request)
    assert not MockMatch(last_role="user").matches("mock", request)
    # The last *user* message, even when tool results follow it.
    assert MockMatch(last_user_message="What is trio?").matches("mock", request)
    assert not MockMatch(last_user_message="What is trio").matches("mock", request)
    assert MockMatch(last_user_regex=r"\btrio\b").matches("mock", request)
    assert not MockMatch(last_user_regex="^trio").matches("mock", request)


def test_every_given_field_must_match() -> None:
    request = ask("fast", "weather in Oslo")
    match = MockMatch(model="fast", last_user_regex="Oslo", last_role="user")
    assert match.matches("fast", request)
    assert not attrs.evolve(match, model="smart").matches("fast", request)
    assert not attrs.evolve(match, last_user_regex="Bergen").matches("fast", request)
    assert not attrs.evolve(match, last_role="tool").matches("fast", request)


async def test_first_matching_fixture_wins_and_the_rest_fall_through_to_the_default() -> None:
    fixtures = {
        "version": 1,
        "fixtures": [
            {"match": {"last_user_regex": "capital"}, "content": "first"},
            {"match": {"last_user_regex": "France"}, "content": "second"},
            {"match": {"model": "smart"}, "content": "smart default"},
        ],
    }
    models = {"fast": mock_model(), "smart": mock_model()}
    async with MockLLMGateway(models=models, fixtures=fixtures) as gw:
        both = await gw.request(ask("fast", "capital of France?", priority=HIGH))
        second = await gw.request(ask("fast", "France?", priority=HIGH))
        smart = await gw.request(ask("smart", "anything", priority=HIGH))
        default = await gw.request(ask("fast", "anything", priority=HIGH))
        again = await gw.request(ask("fast", "anything", priority=HIGH))
    assert (both.content, second.content, smart.content) == ("first", "second", "smart default")
    digest = request_digest(ask("fast", "anything"))
    assert default.content == f"Mock answer {digest[:12]} from mock-model."
    assert (again.content, again.provider_request_id) == (
        default.content,
        default.provider_request_id,
    )


async def test_a_fixture_answers_with_text_tool_calls_usage_and_latency() -> None:
    fixture = {
        "match": {"last_user_regex": "trio"},
        "tool_calls": [{"id": "call_1", "name": "lookup", "arguments": {"query": "trio"}}],
        "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_tokens": 2},
        "provider_request_id": "req_123",
        "latency_s": 1.5,
    }
    async with MockLLMGateway(fixtures={"fixtures": [fixture]}) as gw:
        start = anyio.current_time()
        response = await gw.request(ask("mock", "what is trio?", priority=HIGH))
        elapsed = anyio.current_time() - start
    assert elapsed == pytest.approx(1.5, abs=1e-3)
    assert response.tool_calls == (ToolCall("call_1", "lookup", {"query": "trio"}),)
    assert response.finish_reason == "tool_calls"  # derived from the tool calls
    assert response.usage == Usage(7, 3, cache_read_tokens=2)
    assert response.provider_request_id == "req_123"
    assert response.content == ""


async def test_a_scripted_429_carries_its_retry_after() -> None:
    fixture = {
        "match": {"last_user_message": "busy?"},
        "error": {"status_code": 429, "message": "slow down", "retry_after_s": 7},
    }
    async with MockLLMGateway(fixtures={"fixtures": [fixture]}) as gw:
        with pytest.raises(ProviderError, match="slow down") as info:
            await gw.request(ask("mock", "busy?", priority=HIGH))
    # The gateway may retry it; the caller ends up with the rate-limit error, as in production.
    error = info.value
    rate_limited = error if isinstance(error, RateLimitError) else error.__cause__
    assert isinstance(rate_limited, RateLimitError)
    assert (rate_limited.status_code, rate_limited.retry_after_s) == (429, 7.0)
    assert rate_limited.headers == {"retry-after": "7"}


async def test_answer_next_scripts_turns_in_order_before_any_fixture() -> None:
    fixtures = [MockFixture(content="from the fixture")]
    models = {"a": mock_model(), "b": mock_model()}
    async with MockLLMGateway(models=models, fixtures=fixtures) as gw:
        gw.answer_next("for b", model="b")
        gw.answer_next(
            MockFixture(tool_calls=(ToolCall("c1", "lookup", {}),)),
            "plain text",
        )
        first = await gw.request(ask("a", "x", priority=HIGH))
        b = await gw.request(ask("b", "x", priority=HIGH))
        second = await gw.request(ask("a", "x", priority=HIGH))
        after = await gw.request(ask("a", "x", priority=HIGH))
    assert first.finish_reason == "tool_calls" and first.tool_calls[0].id == "c1"
    assert (b.content, second.content, after.content) == ("for b", "plain text", "from the fixture")


async def test_on_missing_error_names_the_request_and_never_its_text() -> None:
    fixtures = [MockFixture(match=MockMatch(last_user_message="known"), content="ok")]
    async with MockLLMGateway(fixtures=fixtures, on_missing="error") as gw:
        assert (await gw.request(ask("mock", "known", priority=HIGH))).content == "ok"
        request = ask("mock", "a secret prompt", priority=HIGH, request_id="req-42")
        with pytest.raises(CassetteMissError) as info:
            await gw.request(request)
    error = info.value
    assert isinstance(error, GatewayError) and not isinstance(error, ProviderError)
    assert (error.request_id, error.model, error.request_hash) == (
        "req-42",
        "mock",
        request_digest(request),
    )
    message = str(error)
    assert "'req-42'" in message and "'mock'" in message and error.request_hash in message
    assert "secret" not in message
    assert gw.misses == [error]


def test_mock_gateway_rejects_a_bad_on_missing_latency_or_keep_history() -> None:
    with pytest.raises(ConfigError, match="on_missing"):
        MockLLMGateway(on_missing="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="latency_s"):
        MockLLMGateway(latency_s=-1)
    with pytest.raises(ConfigError, match="keep_history is 'no'; use True or False"):
        MockLLMGateway(keep_history="no")  # type: ignore[arg-type]


# -- the file format -----------------------------------------------------------------------


def test_a_request_entry_fills_in_its_hash() -> None:
    request = ask("mock", "hi")
    entry = {
        "request": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
        "content": "hello",
    }
    (fixture,) = MockFixtures.from_dict({"version": 1, "fixtures": [entry]}).fixtures
    assert fixture.match.request_hash == request_digest(request)
    # Built in Python, the same happens.
    (built,) = MockFixtures(fixtures=[MockFixture(request=RequestContent.of(request))]).fixtures
    assert built.match.request_hash == request_digest(request)


def test_load_and_dump_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "fixtures.json"
    fixtures = MockFixtures(
        fixtures=[
            MockFixture(match=MockMatch(last_user_regex="x"), content="a", latency_s=0.5),
            MockFixture(error=MockError(status_code=529, retry_after_s=1.0)),
        ]
    )
    fixtures.dump(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert data["fixtures"][1] == {"error": {"status_code": 529, "retry_after_s": 1.0}}
    assert MockFixtures.load(path) == fixtures


BAD_DOCUMENTS: list[tuple[Any, str]] = [
    ([], "expected a JSON object"),
    ({"version": 2, "fixtures": []}, "version is 2"),
    (
        {"fixtures": [{"match": {"modle": "x"}}]},
        r"extra fields found \(modle\) @ \$\.fixtures\[0\]\.match",
    ),
    ({"fixtures": [{"contnet": "x"}]}, r"extra fields found \(contnet\) @ \$\.fixtures\[0\]"),
    ({"fixtures": [{"latency_s": "slow"}]}, r"\$\.fixtures\[0\]\.latency_s"),
    ({"fixtures": [{"latency_s": -1}]}, r"fixtures\[0\]\.latency_s is -1"),
    ({"fixtures": [{"match": {"last_user_regex": "("}}]}, r"fixtures\[0\]\.match\.last_user_regex"),
    ({"fixtures": [{"match": {"request_hash": "abc"}}]}, r"fixtures\[0\]\.match\.request_hash"),
    ({"fixtures": [{"match": {"last_role": "bot"}}]}, r"fixtures\[0\]\.match\.last_role"),
    ({"fixtures": [{}, {"error": {"status_code": 42}}]}, r"fixtures\[1\]\.error\.status_code"),
    (
        {"fixtures": [{"usage": {"input_tokens": -3}}]},
        # The mock's own check, or Usage's validator (which names its class, and cattrs the path).
        r"fixtures\[0\]\.usage\.input_tokens is -3"
        r"|Usage\.input_tokens .* -3 @ \$\.fixtures\[0\]\.usage$",
    ),
    (
        {"fixtures": [{"request": {"model": "m", "messages": [{"role": "tool"}]}}]},
        r"tool_call_id is required",
    ),
    (
        {
            "fixtures": [
                {
                    "match": {"request_hash": "0" * 64},
                    "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                }
            ]
        },
        r"fixtures\[0\]\.match\.request_hash .* differs from the hash of this entry's request",
    ),
]


@pytest.mark.parametrize(("document", "problem"), BAD_DOCUMENTS)
def test_an_invalid_document_is_a_config_error_naming_the_field(
    document: Any, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        MockFixtures.from_dict(document)


def test_an_unreadable_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json"):
        MockFixtures.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        MockLLMGateway(fixtures=broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"fixtures": [{"latency_s": -2}]}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wrong\.json.*latency_s"):
        MockLLMGateway(cassette=wrong)
