"""Value types: providers, priorities, messages, tools, requests and responses.

All are immutable (``attrs.frozen``) and validate on construction, so a bad request fails at the
line that built it, never inside a batch.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._exceptions import RequestValidationError

__all__ = [
    "LLMMessage",
    "LLMRequest",
    "LLMResponse",
    "LLMTool",
    "ModelProvider",
    "RequestPriority",
    "ToolCall",
    "Usage",
]


class ModelProvider(enum.StrEnum):
    """The kinds of model the gateway can reach.

    ``claude-*`` go to Anthropic, ``gpt-*`` to OpenAI, ``local-llama`` to an OpenAI-compatible
    server at the model's ``endpoint``, ``mock`` to the deterministic built-in provider.
    """

    CLAUDE_HAIKU = "claude-haiku"
    CLAUDE_SONNET = "claude-sonnet"
    CLAUDE_OPUS = "claude-opus"
    GPT_4O_MINI = "gpt-4o-mini"
    GPT_4O = "gpt-4o"
    LOCAL_LLAMA = "local-llama"
    MOCK = "mock"


class RequestPriority(enum.IntEnum):
    """How urgent a request is. Lower values go first."""

    HIGH = 1
    """A user is waiting."""
    NORMAL = 2
    """Ordinary agent work."""
    LOW = 3
    """Background work."""


ROLES = frozenset({"system", "user", "assistant", "tool"})


def _fail(cls: str, field: str, problem: str, fix: str) -> RequestValidationError:
    return RequestValidationError(f"{cls}.{field} {problem}; {fix}")


@attrs.frozen
class ToolCall:
    """A tool call the model asked for.

    Attributes:
        id: The provider's id for the call; send it back as ``LLMMessage.tool_call_id``.
        name: The tool's name.
        arguments: The call's arguments, parsed into a dict.
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)


def _tuple_of(value: Iterable[Any] | None, kind: type[Any], cls: str, field: str) -> Any:
    if value is None:
        return ()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise _fail(cls, field, f"must be a list of {kind.__name__}", f"got {type(value).__name__}")
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise _fail(
                cls,
                f"{field}[{i}]",
                f"must be a {kind.__name__}",
                f"got {type(item).__name__}; build it with {kind.__name__}(...)",
            )
    return items


def _message_tool_calls(value: Iterable[ToolCall] | None) -> tuple[ToolCall, ...]:
    result: tuple[ToolCall, ...] = _tuple_of(value, ToolCall, "LLMMessage", "tool_calls")
    return result


@attrs.frozen
class LLMMessage:
    """One chat message.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: The message text.
        tool_call_id: For ``role="tool"``: the id of the tool call this message answers.
        tool_calls: For ``role="assistant"``: the tool calls the model made on that turn.
    """

    role: str
    content: str = ""
    tool_call_id: str | None = attrs.field(default=None, kw_only=True)
    tool_calls: tuple[ToolCall, ...] = attrs.field(
        default=(), kw_only=True, converter=_message_tool_calls
    )

    def __attrs_post_init__(self) -> None:
        if self.role not in ROLES:
            raise _fail(
                "LLMMessage", "role", f"is {self.role!r}", f"use one of {', '.join(sorted(ROLES))}"
            )
        if not isinstance(self.content, str):
            raise _fail(
                "LLMMessage", "content", "must be a str", f"got {type(self.content).__name__}"
            )
        if self.role == "tool" and not self.tool_call_id:
            raise _fail(
                "LLMMessage",
                "tool_call_id",
                "is required when role='tool'",
                "set it to the id of the ToolCall this message answers",
            )
        if self.tool_calls and self.role != "assistant":
            raise _fail(
                "LLMMessage", "tool_calls", "is only allowed on role='assistant'", "remove it"
            )


@attrs.frozen(init=False)
class LLMTool:
    """A tool the model may call.

    Attributes:
        name: The tool's name.
        description: What the tool does, for the model.
        input_schema: JSON Schema of the tool's arguments. ``parameters=`` is accepted as a
            synonym (the OpenAI name).
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]

    def __init__(
        self,
        name: str,
        description: str = "",
        input_schema: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if input_schema is not None and parameters is not None:
            raise _fail(
                "LLMTool", "parameters", "and input_schema were both given", "give only one"
            )
        schema = input_schema if input_schema is not None else parameters
        if schema is None:
            schema = {"type": "object", "properties": {}}
        if not isinstance(schema, Mapping):
            raise _fail("LLMTool", "input_schema", "must be a JSON Schema dict", "pass a dict")
        if not name or not isinstance(name, str):
            raise _fail("LLMTool", "name", "must be a non-empty str", f"got {name!r}")
        self.__attrs_init__(name, description, schema)

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The same as :attr:`input_schema` (the OpenAI name)."""
        return self.input_schema


def _request_messages(value: Iterable[LLMMessage]) -> tuple[LLMMessage, ...]:
    result: tuple[LLMMessage, ...] = _tuple_of(value, LLMMessage, "LLMRequest", "messages")
    return result


def _request_tools(value: Iterable[LLMTool] | None) -> tuple[LLMTool, ...]:
    result: tuple[LLMTool, ...] = _tuple_of(value, LLMTool, "LLMRequest", "tools")
    return result


def _to_model_id(value: str) -> str:
    # A ModelProvider is a str enum whose hash is its member name's, not its value's: turn it
    # into its plain value so it can be looked up among the configured model ids.
    return value.value if isinstance(value, ModelProvider) else value


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _to_priority(value: RequestPriority | int | str) -> RequestPriority:
    try:
        if isinstance(value, str):
            return RequestPriority[value.upper()]
        return RequestPriority(value)
    except (KeyError, ValueError):
        raise _fail(
            "LLMRequest", "priority", f"is {value!r}", "use RequestPriority.HIGH, NORMAL or LOW"
        ) from None


@attrs.frozen(kw_only=True)
class LLMRequest:
    """A request to a model.

    Attributes:
        model: The id of a configured model (a key of the gateway's ``models``). A
            :class:`ModelProvider` works too when exactly one configured model uses it.
        messages: The conversation, at least one message.
        tools: Tools the model may call.
        request_id: For tracing; a fresh id when not given.
        priority: How urgent the request is.
        temperature: Sampling temperature, 0 to 2.
        max_tokens: The most tokens to generate; the model's default when ``None``.
        agent_id: Which agent sent the request (logged).
        trace_id: A trace id to correlate logs (logged).
        timeout_s: The whole request's deadline in seconds, counted from submission (queue
            wait included); the model's ``timeout_s`` when ``None``.
    """

    model: str = attrs.field(converter=_to_model_id)
    messages: tuple[LLMMessage, ...] = attrs.field(converter=_request_messages)
    tools: tuple[LLMTool, ...] = attrs.field(default=(), converter=_request_tools)
    request_id: str = attrs.field(factory=_new_request_id)
    priority: RequestPriority = attrs.field(default=RequestPriority.NORMAL, converter=_to_priority)
    temperature: float = 0.0
    max_tokens: int | None = None
    agent_id: str | None = None
    trace_id: str | None = None
    timeout_s: float | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise _fail(
                "LLMRequest", "model", "must be a configured model id", f"got {self.model!r}"
            )
        if not self.messages:
            raise _fail("LLMRequest", "messages", "is empty", "give at least one LLMMessage")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, int | float)
            or not 0.0 <= self.temperature <= 2.0
        ):
            raise _fail(
                "LLMRequest", "temperature", f"is {self.temperature!r}", "use a number from 0 to 2"
            )
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens <= 0
        ):
            raise _fail(
                "LLMRequest",
                "max_tokens",
                f"is {self.max_tokens!r}",
                "use a positive int, or None for the model's default",
            )
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, int | float)
            or not self.timeout_s > 0
            or math.isnan(self.timeout_s)
        ):
            raise _fail(
                "LLMRequest",
                "timeout_s",
                f"is {self.timeout_s!r}",
                "use a positive number of seconds, or None for the model's default",
            )
        if not isinstance(self.request_id, str) or not self.request_id:
            raise _fail("LLMRequest", "request_id", "must be a non-empty str", "or leave it out")


@attrs.frozen
class Usage:
    """Tokens a request used.

    Attributes:
        input_tokens: Prompt tokens billed (cache reads and writes included).
        output_tokens: Completion tokens.
        cache_read_tokens: Prompt tokens served from the provider's cache, where reported.
        cache_write_tokens: Prompt tokens written to the provider's cache, where reported.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@attrs.frozen(kw_only=True)
class LLMResponse:
    """A model's answer to one request.

    Attributes:
        request_id: The id of the request this answers.
        content: The text the model produced.
        model: The id of the configured model that answered.
        tool_calls: Tool calls the model asked for.
        usage: Tokens used. ``tokens_used`` is the same object.
        finish_reason: Why generation stopped: ``"stop"``, ``"length"``, ``"tool_calls"``,
            ``"content_filter"`` or another provider value.
        latency_ms: The answering attempt's time, from its dispatch to the response, in ms.
        queue_wait_ms: Time from submission until the answering attempt was dispatched, in ms
            (earlier failed attempts and their backoff included): the caller waited
            ``queue_wait_ms + latency_ms`` in all.
        provider_request_id: The provider's own id for the call, when given.
        rate_limit_headers: The provider's rate-limit headers on this answer (lower-case
            names), which the gateway uses to pace the model.
    """

    request_id: str
    content: str
    model: str
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_message_tool_calls)
    usage: Usage = attrs.field(factory=Usage)
    finish_reason: str | None = "stop"
    latency_ms: float = 0.0
    queue_wait_ms: float = 0.0
    provider_request_id: str | None = None
    rate_limit_headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def tokens_used(self) -> Usage:
        """The same as :attr:`usage` (the name in the second version of the specification)."""
        return self.usage
