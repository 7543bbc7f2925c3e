"""Value types and configuration: validation names the field, both spec versions' names work."""

from __future__ import annotations

import math
import re
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
    with pytest.raises(ConfigError, match=rf"ModelConfig\.{named} is"):
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
        ({"models": {"a": {"provider": "nope", "model_name": "m"}}}, r"models\['a'\]\.provider"),
        ({"models": {"a": {"provider": "mock"}}}, r"models\['a'\]\.model_name"),
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
