"""Value types and configuration: validation names the field, both spec versions' names work."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llm_gateway import (
    ConfigError,
    GatewayConfig,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ModelProvider,
    RequestPriority,
    RequestValidationError,
    ToolCall,
    Usage,
    load_config,
)

USER = [LLMMessage("user", "hi")]


def untyped(cls: Callable[..., object]) -> Any:
    """``cls`` for a call that passes wrong types on purpose, as untyped callers and JSON do."""
    return cls


def test_request_defaults_and_generated_ids() -> None:
    a = LLMRequest(model="m", messages=USER)
    b = LLMRequest(model="m", messages=USER)
    assert a.priority is RequestPriority.NORMAL
    assert a.temperature == 0.0
    assert a.max_tokens is None
    assert a.tools == ()
    assert a.request_id and b.request_id and a.request_id != b.request_id
    assert isinstance(a.messages, tuple)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"messages": []}, "LLMRequest.messages"),
        ({"temperature": 2.5}, "LLMRequest.temperature"),
        ({"temperature": -0.1}, "LLMRequest.temperature"),
        ({"temperature": math.nan}, "LLMRequest.temperature"),
        ({"max_tokens": 0}, "LLMRequest.max_tokens"),
        ({"max_tokens": -5}, "LLMRequest.max_tokens"),
        ({"max_tokens": 1.5}, "LLMRequest.max_tokens"),
        ({"timeout_s": 0}, "LLMRequest.timeout_s"),
        ({"priority": 7}, "LLMRequest.priority"),
        ({"priority": "urgent"}, "LLMRequest.priority"),
        ({"model": ""}, "LLMRequest.model"),
        ({"request_id": ""}, "LLMRequest.request_id"),
        ({"messages": [{"role": "user", "content": "x"}]}, "LLMRequest.messages[0]"),
        ({"messages": "hello"}, "LLMRequest.messages"),
        ({"tools": [{"name": "t"}]}, "LLMRequest.tools[0]"),
    ],
)
def test_bad_request_fields_fail_at_construction_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    values: dict[str, Any] = {"model": "m", "messages": USER, **fields}
    with pytest.raises(RequestValidationError, match="^" + re.escape(named) + " "):
        LLMRequest(**values)


def test_priority_accepts_ints_and_names() -> None:
    assert LLMRequest(model="m", messages=USER, priority=1).priority is RequestPriority.HIGH
    assert LLMRequest(model="m", messages=USER, priority="low").priority is RequestPriority.LOW


def test_model_provider_as_model_becomes_its_value() -> None:
    request = LLMRequest(model=ModelProvider.CLAUDE_HAIKU, messages=USER)
    assert request.model == "claude-haiku"
    assert type(request.model) is str


SURROGATE = "ok \udc80 then"  # what errors="surrogateescape" makes of a stray byte


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        # Issue 10, defect class 6 (and 2: these crashed the JSONL writer after acceptance).
        ({"priority": True}, "LLMRequest.priority"),
        ({"priority": False}, "LLMRequest.priority"),
        ({"priority": 1.0}, "LLMRequest.priority"),
        ({"agent_id": uuid.uuid4()}, "LLMRequest.agent_id"),
        ({"agent_id": object()}, "LLMRequest.agent_id"),
        ({"agent_id": 7}, "LLMRequest.agent_id"),
        ({"agent_id": SURROGATE}, "LLMRequest.agent_id"),
        ({"trace_id": uuid.uuid4()}, "LLMRequest.trace_id"),
        ({"trace_id": SURROGATE}, "LLMRequest.trace_id"),
        ({"request_id": uuid.uuid4()}, "LLMRequest.request_id"),
        ({"request_id": object()}, "LLMRequest.request_id"),
        ({"request_id": SURROGATE}, "LLMRequest.request_id"),
        ({"model": SURROGATE}, "LLMRequest.model"),
        ({"model": 3}, "LLMRequest.model"),
        ({"max_tokens": True}, "LLMRequest.max_tokens"),
        ({"temperature": True}, "LLMRequest.temperature"),
        ({"temperature": math.inf}, "LLMRequest.temperature"),
        ({"temperature": "0.5"}, "LLMRequest.temperature"),
        ({"timeout_s": math.nan}, "LLMRequest.timeout_s"),
        ({"timeout_s": math.inf}, "LLMRequest.timeout_s"),
        ({"timeout_s": True}, "LLMRequest.timeout_s"),
        ({"tools": "weather"}, "LLMRequest.tools"),
        ({"messages": [LLMMessage("user", "hi"), "and more"]}, "LLMRequest.messages[1]"),
    ],
)
def test_validation_gaps_are_closed(fields: dict[str, Any], named: str) -> None:
    values: dict[str, Any] = {"model": "m", "messages": USER, **fields}
    with pytest.raises(RequestValidationError, match="^" + re.escape(named) + " must be "):
        LLMRequest(**values)


def test_type_errors_name_the_type_and_the_fix() -> None:
    with pytest.raises(RequestValidationError) as caught:
        LLMRequest(model="m", messages=USER, agent_id=7)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "LLMRequest.agent_id must be a str or None, got 7; pass a string id"
    )
    with pytest.raises(RequestValidationError) as caught:
        LLMRequest(model="m", messages=USER, priority=True)
    assert "RequestPriority.HIGH" in str(caught.value)


def test_a_lone_surrogate_is_named_with_its_index_and_the_fix() -> None:
    with pytest.raises(RequestValidationError) as caught:
        LLMMessage("user", SURROGATE)
    message = str(caught.value)
    assert message.startswith("LLMMessage.content must be text that UTF-8 can encode")
    assert "index 3" in message
    assert "errors='replace'" in message
    assert "then" not in message  # the text itself is never quoted


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: LLMMessage("user", SURROGATE), "LLMMessage.content"),
        (lambda: LLMMessage("tool", "r", tool_call_id=SURROGATE), "LLMMessage.tool_call_id"),
        (lambda: untyped(LLMMessage)("tool", "r", tool_call_id=5), "LLMMessage.tool_call_id"),
        (lambda: untyped(LLMMessage)("user", b"hi"), "LLMMessage.content"),
        (lambda: untyped(LLMMessage)(5, "hi"), "LLMMessage.role"),
        (lambda: untyped(LLMMessage)(["user"], "hi"), "LLMMessage.role"),
        (
            lambda: untyped(LLMMessage)("assistant", "", tool_calls=[{"id": "1"}]),
            "LLMMessage.tool_calls[0]",
        ),
        (lambda: LLMTool(SURROGATE), "LLMTool.name"),
        (lambda: untyped(LLMTool)(5), "LLMTool.name"),
        (lambda: untyped(LLMTool)("t", 123), "LLMTool.description"),
        (lambda: LLMTool("t", SURROGATE), "LLMTool.description"),
        (lambda: LLMTool("t", "", {"type": {"object", "array"}}), "LLMTool.input_schema"),
        (lambda: LLMTool("t", "", {"minimum": math.nan}), "LLMTool.input_schema"),
        (lambda: LLMTool("t", "", {"maximum": -math.inf}), "LLMTool.input_schema"),
        (lambda: untyped(LLMTool)("t", "", {1: "x"}), "LLMTool.input_schema"),
        (lambda: LLMTool("t", "", {"properties": {("a",): {}}}), "LLMTool.input_schema"),
        (lambda: LLMTool("t", "", {"description": SURROGATE}), "LLMTool.input_schema"),
        (lambda: LLMTool("t", "", {SURROGATE: 1}), "LLMTool.input_schema"),
        (lambda: LLMTool("t", "", {"default": b"x"}), "LLMTool.input_schema"),
        (
            lambda: untyped(LLMTool)("t", "", parameters=["not", "a", "dict"]),
            "LLMTool.input_schema",
        ),
        (lambda: ToolCall(SURROGATE, "f"), "ToolCall.id"),
        (lambda: untyped(ToolCall)(1, "f"), "ToolCall.id"),
        (lambda: untyped(ToolCall)("1", None), "ToolCall.name"),
        (lambda: ToolCall("1", "f", {"ids": {1, 2}}), "ToolCall.arguments"),
        (lambda: ToolCall("1", "f", {"x": [1.0, math.nan]}), "ToolCall.arguments"),
        (lambda: untyped(ToolCall)("1", "f", {2: "x"}), "ToolCall.arguments"),
        (lambda: ToolCall("1", "f", {"when": uuid.uuid4()}), "ToolCall.arguments"),
        (lambda: untyped(ToolCall)("1", "f", "{}"), "ToolCall.arguments"),
        (lambda: untyped(Usage)(input_tokens="7"), "Usage.input_tokens"),
        (lambda: Usage(output_tokens=-1), "Usage.output_tokens"),
        (lambda: untyped(Usage)(cache_read_tokens=1.5), "Usage.cache_read_tokens"),
        (lambda: Usage(cache_write_tokens=True), "Usage.cache_write_tokens"),
    ],
)
def test_bad_value_types_fail_at_construction_naming_the_field(
    build: Callable[[], object], named: str
) -> None:
    with pytest.raises(RequestValidationError, match="^" + re.escape(named)):
        build()


def test_json_nested_too_deep_or_cyclic_is_rejected_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(RequestValidationError, match="nested deeper"):
        ToolCall("1", "f", deep)
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(RequestValidationError, match="nested deeper"):
        LLMTool("t", "", cyclic)


GOOD_RESPONSE: dict[str, Any] = {"request_id": "r", "content": "c", "model": "m"}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"content": 5}, "LLMResponse.content"),
        ({"content": [{"type": "text", "text": "hi"}]}, "LLMResponse.content"),
        ({"content": None}, "LLMResponse.content"),
        ({"content": SURROGATE}, "LLMResponse.content"),
        ({"request_id": None}, "LLMResponse.request_id"),
        ({"model": 3}, "LLMResponse.model"),
        ({"tool_calls": [{"id": "1"}]}, "LLMResponse.tool_calls[0]"),
        ({"tool_calls": "calls"}, "LLMResponse.tool_calls"),
        ({"usage": {"input_tokens": 1}}, "LLMResponse.usage"),
        ({"finish_reason": 3}, "LLMResponse.finish_reason"),
        ({"latency_ms": math.nan}, "LLMResponse.latency_ms"),
        ({"latency_ms": -1.0}, "LLMResponse.latency_ms"),
        ({"queue_wait_ms": math.inf}, "LLMResponse.queue_wait_ms"),
        ({"provider_request_id": 5}, "LLMResponse.provider_request_id"),
        ({"rate_limit_headers": {"x-ratelimit-remaining-requests": 5}}, "LLMResponse.rate_limit"),
        ({"rate_limit_headers": [("a", "b")]}, "LLMResponse.rate_limit_headers"),
    ],
)
def test_bad_response_fields_fail_at_construction(fields: dict[str, Any], named: str) -> None:
    # Adapters build responses from what the provider sent; this error is a ValueError, which
    # they report as ProviderResponseError.
    with pytest.raises(RequestValidationError, match="^" + re.escape(named)) as caught:
        LLMResponse(**{**GOOD_RESPONSE, **fields})
    assert isinstance(caught.value, ValueError)


def test_messages_never_quote_the_text_they_reject() -> None:
    prompt = "my secret prompt"
    with pytest.raises(RequestValidationError) as caught:
        LLMMessage("user", prompt.encode())  # type: ignore[arg-type]
    assert "secret" not in str(caught.value)
    assert str(caught.value) == "LLMMessage.content must be a str, got bytes"
    with pytest.raises(RequestValidationError) as caught:
        LLMRequest(model="m", messages=[LLMMessage("user", "hi"), prompt])  # type: ignore[list-item]
    assert "secret" not in str(caught.value)
    with pytest.raises(RequestValidationError) as caught:
        ToolCall("1", "f", {"q": {prompt}})
    assert "secret" not in str(caught.value)


def test_what_was_valid_stays_valid() -> None:
    assert LLMRequest(model="m", messages=USER, priority="HIGH").priority is RequestPriority.HIGH
    assert LLMRequest(model="m", messages=USER, priority="normal").priority is (
        RequestPriority.NORMAL
    )
    assert LLMRequest(model="m", messages=USER, priority=RequestPriority.LOW).priority is (
        RequestPriority.LOW
    )
    assert LLMRequest(model="m", messages=USER, priority=3).priority is RequestPriority.LOW
    # Messages as any iterable: a generator, a tuple, a dict's values.
    request = LLMRequest(model="m", messages=(m for m in USER), temperature=2, max_tokens=10**9)
    assert request.messages == tuple(USER)
    assert LLMRequest(model="m", messages=tuple(USER)).messages == tuple(USER)
    assert LLMRequest(model="m", messages={"a": USER[0]}.values()).messages == tuple(USER)
    request = LLMRequest(
        model="m",
        messages=[LLMMessage("user", "naïve 🙂 \u2028 text")],
        agent_id="",
        trace_id=uuid.uuid4().hex,
        timeout_s=0.001,
    )
    assert request.agent_id == ""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": (1, 2)}}}
    assert LLMTool("t", "", schema).input_schema == schema
    call = ToolCall("", "", {"a": [None, True, 1, 2.5, "x", {"b": []}], "big": 10**30})
    assert call.arguments["big"] == 10**30
    assert LLMResponse(**GOOD_RESPONSE, finish_reason=None, latency_ms=3).latency_ms == 3
    assert Usage(1, 2, 3, 4).total_tokens == 3


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: LLMMessage("robot", "x"), "LLMMessage.role"),
        (lambda: LLMMessage("tool", "result"), "LLMMessage.tool_call_id"),
        (lambda: LLMMessage("user", 3), "LLMMessage.content"),  # type: ignore[arg-type]
        (lambda: LLMMessage("user", "x", tool_calls=[ToolCall("1", "f")]), "LLMMessage.tool_calls"),
    ],
)
def test_bad_messages_name_the_field(build: Any, named: str) -> None:
    with pytest.raises(RequestValidationError, match=rf"^{named} "):
        build()


def test_tool_accepts_input_schema_or_parameters() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    a = LLMTool("weather", "Get the weather", input_schema=schema)
    b = LLMTool("weather", "Get the weather", parameters=schema)
    assert a == b
    assert b.parameters == schema
    with pytest.raises(RequestValidationError, match=r"LLMTool\.parameters"):
        LLMTool("weather", "", input_schema=schema, parameters=schema)


def test_response_accepts_both_usage_names() -> None:
    response = LLMResponse(request_id="r", content="c", model="m", usage=Usage(3, 4))
    assert response.tokens_used is response.usage
    assert response.usage.total_tokens == 7


def test_model_config_defaults_match_the_specification() -> None:
    config = ModelConfig(provider="claude-haiku", model_name="claude-haiku-4-5")
    assert config.provider is ModelProvider.CLAUDE_HAIKU
    assert config.batch_size == 10
    assert config.batch_timeout_ms == 100
    assert config.max_wait_s(RequestPriority.HIGH) == 0.0
    assert config.max_wait_s(RequestPriority.NORMAL) == pytest.approx(0.1)
    assert config.max_wait_s(RequestPriority.LOW) > config.max_wait_s(RequestPriority.NORMAL)


def test_model_config_repr_hides_the_key() -> None:
    config = ModelConfig(provider="gpt-4o", model_name="gpt-4o", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(config)
    assert "***" in repr(config)
    assert "sk-very-secret" not in repr(GatewayConfig(models={"a": config}))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"queue_capacity": 0}, "queue_capacity"),
        ({"batch_timeout_ms": -1}, "batch_timeout_ms"),
        ({"low_max_wait_s": math.inf}, "low_max_wait_s"),
        ({"aging_s": 0}, "aging_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"max_requests_per_minute": 0}, "max_requests_per_minute"),
        ({"provider": "gpt-5-turbo-max"}, "provider"),
        ({"model_name": ""}, "model_name"),
    ],
)
def test_bad_model_config_names_the_field(fields: dict[str, Any], named: str) -> None:
    values: dict[str, Any] = {"provider": "mock", "model_name": "m", **fields}
    with pytest.raises(ConfigError, match=rf"^ModelConfig\.{named} must be "):
        ModelConfig(**values)


def test_config_from_dict() -> None:
    config = load_config(
        {
            "models": {"fast": {"provider": "mock", "model_name": "m", "batch_size": 4}},
            "log_dir": None,
        }
    )
    assert config.log_dir is None
    assert config.models["fast"].batch_size == 4


def test_config_from_spec_v1_mapping_of_model_configs() -> None:
    model = ModelConfig(provider="mock", model_name="m")
    config = load_config({"a": model})
    assert config.models == {"a": model}
    assert config.log_dir == "04_logs"


def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'log_dir = "logs"\n\n[models.fast]\nprovider = "mock"\nmodel_name = "m"\n'
        "max_concurrency = 3\n"
    )
    config = load_config(path)
    assert config.log_dir == "logs"
    assert config.models["fast"].max_concurrency == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"models": {"a": {"provider": "mock", "model_name": "m", "batch_size": 0}}}, "batch_size"),
        ({"models": {"a": {"provider": "mock", "model_name": "m", "batchsize": 3}}}, "batchsize"),
        (
            {"models": {"a": {"provider": "nope", "model_name": "m"}}},
            r"models\.a\.provider must be one of",
        ),
        ({"models": {"a": {"provider": "mock"}}}, r"models\.a\.model_name is required"),
        ({"models": {}}, "models is empty"),
        ({"modles": {}}, "modles"),
    ],
)
def test_bad_config_dict_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_bad_toml_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[models.a\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_a_str_enum_stop_sequence_becomes_the_plain_str_the_sdks_send() -> None:
    # A str subclass is a str, but it would reach the SDKs as itself (its repr, its hash):
    # the request keeps the plain text.
    request = LLMRequest(
        model="m", messages=[LLMMessage("user", "x")], stop=[ModelProvider.ANTHROPIC, "END"]
    )
    assert request.stop == ("anthropic", "END")
    assert all(type(s) is str for s in request.stop)
