"""Properties of the input boundary: any value either builds a valid object or is refused.

Whatever a caller (or a provider's reply, through an adapter) passes to a public value type, the
constructor either returns an object the gateway can send and log, or raises the type's own
error: ``RequestValidationError`` for requests and responses, ``ConfigError`` for configuration.
Never a ``TypeError``, ``AttributeError``, ``UnicodeError`` or ``RecursionError``, and never an
object that fails later (a lone surrogate in a log line, NaN in a JSON body).
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    ConfigError,
    CooldownPolicy,
    GatewayError,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ModelProvider,
    RateLimitPolicy,
    RequestPriority,
    RequestValidationError,
    RetryPolicy,
    ToolCall,
    Usage,
)
from llm_gateway.testing import strategies as gst

# Text that includes lone surrogates (category Cs), which Hypothesis leaves out by default.
_wild_text = st.text(st.characters(categories=["Cs", "L", "N", "P", "Zs", "Cc"]), max_size=8)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    _wild_text,
    st.binary(max_size=4),
    st.uuids(),
    st.builds(object),
    st.sampled_from(list(RequestPriority)),
    st.sampled_from(list(ModelProvider)),
)

ANYTHING = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.frozensets(st.integers(), max_size=3),
        st.dictionaries(st.one_of(_wild_text, st.integers(), st.none()), children, max_size=3),
    ),
    max_leaves=6,
)
"""Any Python value a caller might pass by mistake (issue 10: a UUID, an object, a bool, NaN,
a lone surrogate, a set in JSON...)."""


_texts = gst.texts(min_size=0, max_size=12)
_ids = gst.texts(min_size=1, max_size=12)
_messages = st.lists(gst.messages(roles=("system", "user", "assistant", "tool")), max_size=3)

MESSAGE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "role": st.sampled_from(["system", "user", "assistant", "tool"]),
    "content": _texts,
    "tool_call_id": st.none() | _ids,
    "tool_calls": st.lists(gst.tool_calls(), max_size=2),
}
TOOL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": gst.tool_names(),
    "description": _texts,
    "input_schema": gst.json_objects(),
}
TOOL_CALL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": _ids,
    "name": gst.tool_names(),
    "arguments": gst.json_objects(),
}
REQUEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["m", ModelProvider.MOCK]),
    "messages": _messages | _messages.map(tuple) | _messages.map(iter),
    "tools": st.lists(gst.tools(), max_size=1).map(lambda ts: [t for x in ts for t in x]),
    "request_id": _ids,
    "priority": st.sampled_from([*RequestPriority, 1, 2, 3, "high", "LOW", "Normal"]),
    "temperature": st.floats(0, 2) | st.integers(0, 2),
    "max_tokens": st.none() | st.integers(1, 10**12),
    "agent_id": st.none() | _texts,
    "trace_id": st.none() | st.uuids().map(lambda u: u.hex),
    "timeout_s": st.none() | st.floats(0.001, 1e6),
    "stop": st.lists(_ids, max_size=4) | st.lists(_ids, max_size=4).map(tuple),
    "top_p": st.none() | st.floats(0.001, 1) | st.just(1),
    "seed": st.none() | st.integers(-(2**63), 2**63 - 1),
    "tool_choice": st.none() | st.sampled_from(["auto", "none", "required"]),
    "response_format": st.none() | gst.json_objects(),
}
USAGE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    name: st.integers(0, 10**9)
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
}
RESPONSE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "request_id": _ids,
    "content": _texts,
    "model": _ids,
    "tool_calls": st.lists(gst.tool_calls(), max_size=2),
    "usage": st.builds(Usage, st.integers(0, 100), st.integers(0, 100)),
    "finish_reason": st.none() | st.sampled_from(["stop", "length"]),
    "latency_ms": st.floats(0, 1e6),
    "queue_wait_ms": st.floats(0, 1e6),
    "provider_request_id": st.none() | _ids,
    "rate_limit_headers": st.dictionaries(_ids, _ids, max_size=2),
}


REQUIRED = {
    LLMRequest: ("model", "messages"),
    LLMMessage: ("role",),
    LLMTool: ("name",),
    ToolCall: ("id", "name"),
    LLMResponse: ("request_id", "content", "model"),
    ModelConfig: ("provider", "model_name"),
}


def fields_of(
    cls: type[Any], valid: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """Fields for ``cls``: valid values (the required ones and some others), then up to two
    fields replaced by anything at all (one bad field among good ones is the hard case).
    """
    required = REQUIRED.get(cls, ())
    good = st.fixed_dictionaries(
        {name: valid[name] for name in required},
        optional={name: s for name, s in valid.items() if name not in required},
    )
    bad = st.dictionaries(st.sampled_from(sorted(valid)), ANYTHING, max_size=2)
    return st.builds(lambda g, b: {**g, **b}, good, bad)


def build_or_refuse(cls: type[Any], fields: dict[str, Any], error: type[GatewayError]) -> Any:
    """``cls(**fields)``, or ``None`` when it refused with ``error`` (never another error)."""
    try:
        return cls(**fields)
    except error as exc:
        refused: GatewayError = exc
    assert type(refused) is error
    str(refused).encode("utf-8")  # the message itself can always be printed and logged
    return None


def encodes(payload: object) -> None:
    """What the gateway does with a value's text: JSON for the wire and the logs, UTF-8."""
    json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")


def message_payload(message: LLMMessage) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "tool_call_id": message.tool_call_id,
        "tool_calls": [attrs.asdict(c) for c in message.tool_calls],
    }


@settings(max_examples=300)
@given(fields_of(LLMRequest, REQUEST_FIELDS))
def test_any_request_fields_build_a_sendable_request_or_a_validation_error(
    fields: dict[str, Any],
) -> None:
    request = build_or_refuse(LLMRequest, fields, RequestValidationError)
    if request is None:
        return
    assert isinstance(request.priority, RequestPriority)
    assert all(isinstance(m, LLMMessage) for m in request.messages) and request.messages
    assert type(request.model) is str
    encodes(
        {
            "model": request.model,
            "request_id": request.request_id,
            "agent_id": request.agent_id,
            "trace_id": request.trace_id,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout_s": request.timeout_s,
            "messages": [message_payload(m) for m in request.messages],
            "tools": [attrs.asdict(t) for t in request.tools],
            "stop": list(request.stop),
            "top_p": request.top_p,
            "seed": request.seed,
            "tool_choice": request.tool_choice,
            "response_format": request.response_format,
        }
    )
    assert len(request.stop) <= 4 and all(type(s) is str and s for s in request.stop)
    assert request.top_p is None or 0 < request.top_p <= 1
    assert request.seed is None or type(request.seed) is int
    assert request.tool_choice in (
        None,
        "auto",
        "none",
        "required",
        *(t.name for t in request.tools),
    )


@settings(max_examples=200)
@given(
    fields_of(LLMMessage, MESSAGE_FIELDS),
    fields_of(LLMTool, TOOL_FIELDS),
    fields_of(ToolCall, TOOL_CALL_FIELDS),
)
def test_any_message_tool_or_tool_call_fields_build_or_are_refused(
    message: dict[str, Any], tool: dict[str, Any], call: dict[str, Any]
) -> None:
    built = build_or_refuse(LLMMessage, message, RequestValidationError)
    if built is not None:
        encodes(message_payload(built))
    built = build_or_refuse(LLMTool, tool, RequestValidationError)
    if built is not None:
        encodes(attrs.asdict(built))
    built = build_or_refuse(ToolCall, call, RequestValidationError)
    if built is not None:
        encodes(attrs.asdict(built))


@settings(max_examples=200)
@given(fields_of(LLMResponse, RESPONSE_FIELDS), fields_of(Usage, USAGE_FIELDS))
def test_any_response_fields_build_a_loggable_response_or_are_refused(
    response: dict[str, Any], usage: dict[str, Any]
) -> None:
    built = build_or_refuse(Usage, usage, RequestValidationError)
    if built is not None:
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in attrs.astuple(built))
        assert min(attrs.astuple(built)) >= 0
    built = build_or_refuse(LLMResponse, response, RequestValidationError)
    if built is not None:
        assert math.isfinite(built.latency_ms) and math.isfinite(built.queue_wait_ms)
        encodes(attrs.asdict(built, recurse=True, value_serializer=None))


# Keys that cannot be mistaken for another field's value; some are valid, some are not.
_KEYS = st.text(st.characters(categories=["L", "N", "P", "Zs", "Cc", "Cs"]), max_size=20).map(
    lambda tail: "sk-SECRET-" + tail
)

MODEL_CONFIG_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "provider": st.sampled_from([*ModelProvider, "mock", "gpt-4o"]),
    "model_name": _ids,
    "endpoint": st.none() | st.just("http://127.0.0.1:8000/v1"),
    "max_requests_per_minute": st.none() | st.integers(60, 10**6),
    "max_tokens_per_minute": st.none() | st.integers(60, 10**6),
    "batch_size": st.integers(1, 100),
    "batch_fill": st.sampled_from(["eager", "wait"]),
    "batch_timeout_ms": st.floats(0, 1e4),
    "high_max_wait_s": st.floats(0, 10),
    "low_max_wait_s": st.floats(0, 10),
    "aging_s": st.floats(0.1, 100),
    "max_concurrency": st.integers(1, 100),
    "queue_capacity": st.integers(1, 100),
    "timeout_s": st.none() | st.floats(0.1, 1e4),
    "provider_options": st.dictionaries(_ids, ANYTHING, max_size=2),
    "retry": st.builds(RetryPolicy),
    "cooldown": st.builds(CooldownPolicy),
    "fallbacks": st.lists(_ids, max_size=2),
    "rate_limit": st.builds(RateLimitPolicy),
    "limit_group": st.none() | _ids,
}


@settings(max_examples=300)
@given(fields_of(ModelConfig, MODEL_CONFIG_FIELDS), st.none() | _KEYS | ANYTHING)
def test_any_model_config_fields_build_or_are_refused_and_never_show_the_key(
    fields: dict[str, Any], key: Any
) -> None:
    refused: ConfigError | None = None
    try:
        shown = repr(ModelConfig(**fields, api_key=key))
    except ConfigError as exc:
        refused = exc
        shown = f"{exc} {exc!r}"
    assert refused is None or type(refused) is ConfigError
    if isinstance(key, str) and key.startswith("sk-SECRET-"):
        assert "SECRET" not in shown
