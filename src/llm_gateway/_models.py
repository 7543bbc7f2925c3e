"""Value types: providers, priorities, messages, tools, requests and responses.

All are immutable (``attrs.frozen``) and validate on construction through the shared checks of
:mod:`._validators`, so a bad request fails at the line that built it with a
``RequestValidationError`` naming the field and the fix, never later inside a batch, a log
write or a provider call. Every text field is a ``str`` that UTF-8 can encode (no lone
surrogates); tool schemas and tool-call arguments are JSON.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._validators import REQUEST as V
from ._validators import check_fields, checked, did_you_mean, plain_text, to_tuple, tuple_of

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
    """The kinds of provider the gateway can reach.

    The generic kinds take any model name (``ModelConfig.model_name``):

    - ``anthropic``: Anthropic's Messages API (key from ``ANTHROPIC_API_KEY``).
    - ``openai``: OpenAI's chat-completions API (key from ``OPENAI_API_KEY``).
    - ``openai-compatible``: any server speaking OpenAI's chat-completions API (vLLM, Ollama,
      llama.cpp server, LM Studio, a proxy) at the model's ``endpoint``, which is required;
      the key is optional and never read from ``OPENAI_API_KEY``.
    - ``mock``: the deterministic built-in provider.

    The original names stay as aliases with the same adapters: ``claude-haiku``,
    ``claude-sonnet`` and ``claude-opus`` are ``anthropic``; ``gpt-4o-mini`` and ``gpt-4o`` are
    ``openai``; ``local-llama`` is ``openai-compatible``.
    """

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai-compatible"
    MOCK = "mock"
    CLAUDE_HAIKU = "claude-haiku"
    CLAUDE_SONNET = "claude-sonnet"
    CLAUDE_OPUS = "claude-opus"
    GPT_4O_MINI = "gpt-4o-mini"
    GPT_4O = "gpt-4o"
    LOCAL_LLAMA = "local-llama"

    @property
    def kind(self) -> ModelProvider:
        """The generic kind this provider is (itself for a generic kind or ``mock``)."""
        return _KINDS.get(self, self)


class RequestPriority(enum.IntEnum):
    """How urgent a request is. Lower values go first."""

    HIGH = 1
    """A user is waiting."""
    NORMAL = 2
    """Ordinary agent work."""
    LOW = 3
    """Background work."""


_KINDS = {
    ModelProvider.CLAUDE_HAIKU: ModelProvider.ANTHROPIC,
    ModelProvider.CLAUDE_SONNET: ModelProvider.ANTHROPIC,
    ModelProvider.CLAUDE_OPUS: ModelProvider.ANTHROPIC,
    ModelProvider.GPT_4O_MINI: ModelProvider.OPENAI,
    ModelProvider.GPT_4O: ModelProvider.OPENAI,
    ModelProvider.LOCAL_LLAMA: ModelProvider.OPENAI_COMPATIBLE,
}

ROLES = frozenset({"system", "user", "assistant", "tool"})

_TEXT = V.text()
_ID = V.text(non_empty=True)
_OPTIONAL_ID = V.optional(V.text(), fix="pass a string id")
_JSON_OBJECT = V.json_object(fix="use dicts, lists, str, finite numbers, bools and None only")


def _tool_calls(value: Iterable[ToolCall] | None) -> tuple[ToolCall, ...]:
    result: tuple[ToolCall, ...] = to_tuple(value)
    return result


@attrs.frozen
class ToolCall:
    """A tool call the model asked for.

    Attributes:
        id: The provider's id for the call; send it back as ``LLMMessage.tool_call_id``.
        name: The tool's name.
        arguments: The call's arguments, parsed into a dict (a JSON object).
    """

    id: str = attrs.field(validator=_TEXT)
    name: str = attrs.field(validator=_TEXT)
    arguments: Mapping[str, Any] = attrs.field(factory=dict, validator=_JSON_OBJECT)


def _plain_message(m: LLMMessage) -> bool:
    """Whether every field of ``m`` holds a value its check accepts, in one pass (see
    :func:`_plain_request`)."""
    return (
        type(m.role) is str
        and m.role in ROLES
        and plain_text(m.content)
        and (m.tool_call_id is None or plain_text(m.tool_call_id))
        and tuple_of(m.tool_calls, ToolCall)
    )


@attrs.frozen
class LLMMessage:
    """One chat message.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: The message text.
        tool_call_id: For ``role="tool"``: the id of the tool call this message answers.
        tool_calls: For ``role="assistant"``: the tool calls the model made on that turn.
    """

    # Built once per request or more: the fields' checks run only when the one-pass test of the
    # common values fails (see _validators.checked).
    role: str = attrs.field(metadata=checked(V.one_of(*sorted(ROLES))))
    content: str = attrs.field(default="", metadata=checked(_TEXT))
    tool_call_id: str | None = attrs.field(
        default=None, kw_only=True, metadata=checked(_OPTIONAL_ID)
    )
    tool_calls: tuple[ToolCall, ...] = attrs.field(
        default=(), kw_only=True, converter=_tool_calls, metadata=checked(V.tuple_of(ToolCall))
    )

    def __attrs_post_init__(self) -> None:
        if not _plain_message(self):
            check_fields(self)
        if self.role == "tool" and not self.tool_call_id:
            raise V.fail(
                self,
                "tool_call_id",
                "is required when role='tool'; set it to the id of the ToolCall this message "
                "answers",
            )
        if self.tool_calls and self.role != "assistant":
            raise V.fail(self, "tool_calls", "is only allowed on role='assistant'; remove it")


@attrs.frozen(init=False)
class LLMTool:
    """A tool the model may call.

    Attributes:
        name: The tool's name.
        description: What the tool does, for the model.
        input_schema: JSON Schema of the tool's arguments (a JSON object). ``parameters=`` is
            accepted as a synonym (the OpenAI name).
    """

    name: str = attrs.field(validator=_ID)
    description: str = attrs.field(validator=_TEXT)
    input_schema: Mapping[str, Any] = attrs.field(validator=_JSON_OBJECT)

    def __init__(
        self,
        name: str,
        description: str = "",
        input_schema: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if input_schema is not None and parameters is not None:
            raise V.fail(self, "parameters", "and input_schema were both given; give only one")
        schema = input_schema if input_schema is not None else parameters
        if schema is None:
            schema = {"type": "object", "properties": {}}
        self.__attrs_init__(name, description, schema)

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The same as :attr:`input_schema` (the OpenAI name)."""
        return self.input_schema


def _messages(value: Iterable[LLMMessage]) -> tuple[LLMMessage, ...]:
    result: tuple[LLMMessage, ...] = to_tuple(value)
    return result


def _tools(value: Iterable[LLMTool] | None) -> tuple[LLMTool, ...]:
    result: tuple[LLMTool, ...] = to_tuple(value)
    return result


def _stop(value: Iterable[str] | None) -> tuple[str, ...]:
    # A str subclass (a str enum) becomes the plain str it is, as the SDKs will send it; the
    # rest is the validator's.
    result = to_tuple(value)
    if isinstance(result, tuple):
        result = tuple(str.__str__(item) if isinstance(item, str) else item for item in result)
    return result  # type: ignore[no-any-return]


def _to_seed(value: int | None) -> int | None:
    # An int subclass (an IntEnum) becomes the plain int it is; the rest is the validator's.
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


MAX_STOP_SEQUENCES = 4
"""The most ``stop`` sequences a request may give (OpenAI's limit; Anthropic allows more)."""

TOOL_CHOICES = ("auto", "none", "required")
"""The ``tool_choice`` values that name no tool."""


def _to_model_id(value: str) -> str:
    # A ModelProvider is a str enum whose hash is its member name's, not its value's: turn it
    # into its plain value so it can be looked up among the configured model ids.
    return value.value if isinstance(value, ModelProvider) else value


# uuid4's version (4) and variant (RFC 4122) bits: what it clears, and what it sets.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _new_request_id() -> str:
    # uuid.uuid4().hex without building a UUID object (which costs as much as the rest of a
    # request's checks): the same 122 random bits and the same version and variant bits.
    n = (int.from_bytes(os.urandom(16)) & _UUID4_CLEAR) | _UUID4_SET
    return f"{n:032x}"


def _to_priority(value: RequestPriority | int | str) -> RequestPriority:
    # A name in any case, or a value; anything else (a bool included: True is not HIGH) is
    # left for the validator to reject.
    if type(value) is RequestPriority:
        return value
    if isinstance(value, str) and value.upper() in RequestPriority.__members__:
        return RequestPriority[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return RequestPriority(value)
        except ValueError:
            pass
    return value  # type: ignore[return-value]


def _number_in(value: object, low: float, high: float) -> bool:
    """Whether ``value`` is an ``int`` or ``float`` (not a bool) in ``[low, high]``."""
    if type(value) is float or type(value) is int:
        return low <= value <= high
    return False


def _seconds(value: object) -> bool:
    """Whether ``value`` is ``None`` or a finite number of seconds > 0."""
    return value is None or (_number_in(value, 0, math.inf) and value != 0 and value != math.inf)


def _plain_request(r: LLMRequest) -> bool:
    """Whether every field of ``r`` holds a common value its check accepts (never one it
    refuses): one pass instead of a check per field. Rarer values (a response format, stop
    sequences, str subclasses) are left to the fields' checks."""
    return (
        plain_text(r.model)
        and r.model != ""
        and tuple_of(r.messages, LLMMessage)
        and r.messages != ()
        and tuple_of(r.tools, LLMTool)
        and plain_text(r.request_id)
        and r.request_id != ""
        and type(r.priority) is RequestPriority
        and _number_in(r.temperature, 0, 2)
        and (r.max_tokens is None or (type(r.max_tokens) is int and r.max_tokens >= 1))
        and (r.agent_id is None or plain_text(r.agent_id))
        and (r.trace_id is None or plain_text(r.trace_id))
        and _seconds(r.timeout_s)
        and type(r.stop) is tuple
        and not r.stop
        and (r.top_p is None or (_number_in(r.top_p, 0, 1) and r.top_p != 0))
        and (r.seed is None or type(r.seed) is int)
        and (r.tool_choice is None or (plain_text(r.tool_choice) and r.tool_choice != ""))
        and r.response_format is None
        and _seconds(r.first_token_timeout_s)
    )


@attrs.frozen(kw_only=True)
class LLMRequest:
    """A request to a model.

    Attributes:
        model: The id of a configured model (a key of the gateway's ``models``). A
            :class:`ModelProvider` works too when exactly one configured model uses it.
        messages: The conversation, at least one message (any iterable of
            :class:`LLMMessage`; stored as a tuple).
        tools: Tools the model may call.
        request_id: For tracing; a fresh id when not given.
        priority: How urgent the request is: a :class:`RequestPriority`, its name in any case
            (``"high"``) or its value (``1``).
        temperature: Sampling temperature, 0 to 2.
        max_tokens: The most tokens to generate; the model's default when ``None``.
        agent_id: Which agent sent the request (logged).
        trace_id: A trace id to correlate logs (logged).
        timeout_s: The whole request's deadline in seconds, counted from submission (queue
            wait included); the model's ``timeout_s`` when ``None``.
        stop: Up to 4 sequences that end generation (Anthropic ``stop_sequences``, OpenAI
            ``stop``).
        top_p: Nucleus sampling, in (0, 1]; the provider's default when ``None``. Anthropic's
            current API version rejects sampling parameters: a request with ``top_p`` to an
            Anthropic model fails with ``RequestValidationError``.
        seed: For OpenAI's best-effort deterministic sampling; ``None`` for none. Anthropic
            has no seed: a request with one to an Anthropic model fails with
            ``RequestValidationError``.
        tool_choice: ``"auto"`` (the model decides), ``"none"`` (no tool call),
            ``"required"`` (some tool call), or the name of one of ``tools`` (that tool);
            the provider's default when ``None``.
        response_format: A JSON Schema (a JSON object) the answer must follow: structured
            output. The answer's :attr:`LLMResponse.parsed` holds the parsed JSON.
        first_token_timeout_s: Streams only: how long each attempt may wait for its first
            content delta (then it is retried or falls back); the model's
            ``first_token_timeout_s`` when ``None``.
    """

    # Built once per request: the fields' checks run only when the one-pass test of the common
    # values (_plain_request) fails (see _validators.checked).
    model: str = attrs.field(
        converter=_to_model_id,
        metadata=checked(V.text(non_empty=True, fix="use the id of a configured model")),
    )
    messages: tuple[LLMMessage, ...] = attrs.field(
        converter=_messages,
        metadata=checked(
            V.tuple_of(
                LLMMessage, non_empty=True, fix="give at least one LLMMessage(role, content)"
            )
        ),
    )
    tools: tuple[LLMTool, ...] = attrs.field(
        default=(), converter=_tools, metadata=checked(V.tuple_of(LLMTool))
    )
    request_id: str = attrs.field(
        factory=_new_request_id,
        metadata=checked(
            V.text(non_empty=True, fix="pass a string id, or leave it out for a fresh one")
        ),
    )
    priority: RequestPriority = attrs.field(
        default=RequestPriority.NORMAL,
        converter=_to_priority,
        metadata=checked(
            V.instance_of(
                RequestPriority, fix="use RequestPriority.HIGH, NORMAL or LOW (or 'high', 1, ...)"
            )
        ),
    )
    temperature: float = attrs.field(default=0.0, metadata=checked(V.finite_number(min=0, max=2)))
    max_tokens: int | None = attrs.field(
        default=None,
        metadata=checked(V.optional(V.positive_int, fix="None means the model's default")),
    )
    agent_id: str | None = attrs.field(default=None, metadata=checked(_OPTIONAL_ID))
    trace_id: str | None = attrs.field(default=None, metadata=checked(_OPTIONAL_ID))
    timeout_s: float | None = attrs.field(
        default=None,
        metadata=checked(
            V.optional(
                V.finite_number(min=0, allow_zero=False),
                fix="give seconds, or None for the model's default",
            )
        ),
    )
    stop: tuple[str, ...] = attrs.field(
        default=(), converter=_stop, metadata=checked(V.str_tuple(fix="give a list of strings"))
    )
    top_p: float | None = attrs.field(
        default=None,
        metadata=checked(
            V.optional(
                V.finite_number(min=0, max=1, allow_zero=False),
                fix="None means the provider's default",
            )
        ),
    )
    seed: int | None = attrs.field(
        default=None,
        converter=_to_seed,
        metadata=checked(
            V.optional(
                V.check("an int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
                fix="None means no seed",
            )
        ),
    )
    tool_choice: str | None = attrs.field(
        default=None, metadata=checked(V.optional(V.text(non_empty=True)))
    )
    response_format: Mapping[str, Any] | None = attrs.field(
        default=None,
        metadata=checked(V.optional(_JSON_OBJECT, fix="give a JSON Schema as a dict, or None")),
    )
    first_token_timeout_s: float | None = attrs.field(
        default=None,
        metadata=checked(
            V.optional(
                V.finite_number(min=0, allow_zero=False),
                fix="give seconds, or None for the model's default",
            )
        ),
    )

    def __attrs_post_init__(self) -> None:
        if not _plain_request(self):
            check_fields(self)
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise V.fail(
                self,
                "stop",
                f"has {len(self.stop)} sequences; give at most {MAX_STOP_SEQUENCES}",
            )
        if "" in self.stop:
            raise V.fail(self, "stop", "holds an empty string; remove it")
        choice = self.tool_choice
        if choice is not None and choice not in TOOL_CHOICES:
            names = [tool.name for tool in self.tools]
            if choice not in names:
                raise V.fail(
                    self,
                    "tool_choice",
                    f"is {choice!r}{did_you_mean(choice, [*TOOL_CHOICES, *names])}; use "
                    f"'auto', 'none', 'required' or the name of one of tools "
                    f"({', '.join(map(repr, names)) if names else 'there are none'})",
                )


_COUNT = V.non_negative_int


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def _plain_usage(u: Usage) -> bool:
    """Whether every count of ``u`` is an ``int`` >= 0, in one pass."""
    return (
        _count(u.input_tokens)
        and _count(u.output_tokens)
        and _count(u.cache_read_tokens)
        and _count(u.cache_write_tokens)
    )


@attrs.frozen
class Usage:
    """Tokens a request used.

    Attributes:
        input_tokens: Prompt tokens billed (cache reads and writes included).
        output_tokens: Completion tokens.
        cache_read_tokens: Prompt tokens served from the provider's cache, where reported.
        cache_write_tokens: Prompt tokens written to the provider's cache, where reported.
    """

    # Built once per response: the fields' checks run only when the one-pass test fails.
    input_tokens: int = attrs.field(default=0, metadata=checked(_COUNT))
    output_tokens: int = attrs.field(default=0, metadata=checked(_COUNT))
    cache_read_tokens: int = attrs.field(default=0, metadata=checked(_COUNT))
    cache_write_tokens: int = attrs.field(default=0, metadata=checked(_COUNT))

    def __attrs_post_init__(self) -> None:
        if not _plain_usage(self):
            check_fields(self)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


_MILLISECONDS = V.finite_number(min=0)


def _optional_text(value: object) -> bool:
    return value is None or plain_text(value)


def _text_dict(value: object) -> bool:
    """Whether ``value`` is a dict of ``str`` to ``str`` that UTF-8 can encode."""
    if type(value) is not dict:
        return False
    return all(plain_text(k) and plain_text(v) for k, v in value.items())


def _plain_response(r: LLMResponse) -> bool:
    """Whether every field of ``r`` holds a value its check accepts, in one pass (see
    :func:`_plain_request`)."""
    return (
        plain_text(r.request_id)
        and plain_text(r.content)
        and plain_text(r.model)
        and tuple_of(r.tool_calls, ToolCall)
        and type(r.usage) is Usage
        and _optional_text(r.finish_reason)
        and _number_in(r.latency_ms, 0, math.inf)
        and r.latency_ms != math.inf
        and _number_in(r.queue_wait_ms, 0, math.inf)
        and r.queue_wait_ms != math.inf
        and _optional_text(r.provider_request_id)
        and _text_dict(r.rate_limit_headers)
        and r.cost_usd is None
        and _optional_text(r.batch_id)
    )


@attrs.frozen(kw_only=True)
class LLMResponse:
    """A model's answer to one request.

    Provider adapters build these from what the provider sent; a field of the wrong type
    raises ``RequestValidationError``, which an adapter reports as ``ProviderResponseError``.

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
        parsed: When the request gave ``response_format``: the answer's content parsed as
            JSON (an answer that is not JSON fails with ``ProviderResponseError``; the schema
            itself is the provider's to enforce). ``None`` otherwise.
        cost_usd: What the answer cost in US dollars, from the model's
            ``ModelConfig.pricing`` and :attr:`usage` (batch discount applied); ``None`` when
            the model has no prices configured.
        batch_id: The provider batch's id when the batch lane answered the request (see
            ``docs/batch-api.md``); ``None`` for a realtime answer.
    """

    # Built once per response: the fields' checks run only when the one-pass test of the
    # common values (_plain_response) fails (see _validators.checked).
    request_id: str = attrs.field(metadata=checked(_TEXT))
    content: str = attrs.field(metadata=checked(_TEXT))
    model: str = attrs.field(metadata=checked(_TEXT))
    tool_calls: tuple[ToolCall, ...] = attrs.field(
        default=(), converter=_tool_calls, metadata=checked(V.tuple_of(ToolCall))
    )
    usage: Usage = attrs.field(factory=Usage, metadata=checked(V.instance_of(Usage)))
    finish_reason: str | None = attrs.field(default="stop", metadata=checked(V.optional(_TEXT)))
    latency_ms: float = attrs.field(default=0.0, metadata=checked(_MILLISECONDS))
    queue_wait_ms: float = attrs.field(default=0.0, metadata=checked(_MILLISECONDS))
    provider_request_id: str | None = attrs.field(default=None, metadata=checked(V.optional(_TEXT)))
    rate_limit_headers: Mapping[str, str] = attrs.field(
        factory=dict, repr=False, metadata=checked(V.str_mapping(values=_TEXT))
    )
    parsed: Any = attrs.field(default=None, repr=False)
    cost_usd: float | None = attrs.field(
        default=None, metadata=checked(V.optional(V.finite_number(min=0)))
    )
    batch_id: str | None = attrs.field(default=None, metadata=checked(V.optional(_TEXT)))

    def __attrs_post_init__(self) -> None:
        if not _plain_response(self):
            check_fields(self)

    @property
    def tokens_used(self) -> Usage:
        """The same as :attr:`usage` (the name in the second version of the specification)."""
        return self.usage

    def _timed(
        self, latency_ms: float, queue_wait_ms: float, cost_usd: float | None = None
    ) -> LLMResponse:
        """A copy carrying the gateway's timings (and its cost, when the model has prices).

        Every other field was validated when this response was built; re-running the
        validators (as ``attrs.evolve`` would) costs every request several microseconds.
        """
        timed: LLMResponse = object.__new__(LLMResponse)
        for name in _RESPONSE_FIELDS:
            object.__setattr__(timed, name, getattr(self, name))
        object.__setattr__(timed, "latency_ms", latency_ms)
        object.__setattr__(timed, "queue_wait_ms", queue_wait_ms)
        if cost_usd is not None:
            object.__setattr__(timed, "cost_usd", cost_usd)
        return timed


_RESPONSE_FIELDS = tuple(a.name for a in attrs.fields(LLMResponse))
