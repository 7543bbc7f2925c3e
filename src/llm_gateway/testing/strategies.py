"""Hypothesis strategies for the gateway's values: messages, tools, requests, responses.

Every value they generate is valid: a gateway configured with the given models accepts every
generated request (roles, ``tool_call_id`` rules, temperature in [0, 2], ``max_tokens`` > 0,
any priority), and conversations are well formed the way providers require (a tool result
answers a tool call of the assistant message before it; tool calls name offered tools).

Example::

    from hypothesis import given
    from llm_gateway.testing import strategies as gst

    @given(gst.requests(models=["fast", "smart"]))
    def test_my_router(request): ...

This module imports Hypothesis; ``import llm_gateway.testing`` does not.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from .._config import GatewayConfig, load_config
from .._models import LLMMessage, LLMRequest, LLMResponse, LLMTool, RequestPriority, ToolCall, Usage
from ..providers._mock import MockError, MockFixture

__all__ = [
    "conversations",
    "json_objects",
    "messages",
    "mock_answers",
    "model_ids",
    "requests",
    "responses",
    "texts",
    "tool_calls",
    "tool_names",
    "tools",
]

FINISH_REASONS = ("stop", "length", "content_filter")
"""Finish reasons of an answer without tool calls."""

ModelsSpec = GatewayConfig | Mapping[str, Any] | str | os.PathLike[str] | Iterable[str]


def model_ids(models: ModelsSpec) -> list[str]:
    """The model ids of ``models``: a :class:`GatewayConfig`, a configuration dict or TOML
    path (anything :class:`~llm_gateway.Gateway` takes), or the ids themselves.
    """
    if isinstance(models, GatewayConfig | Mapping | str | os.PathLike):
        ids = list(load_config(models).models)
    else:
        ids = list(models)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError(f"give at least one model id (non-empty strings), got {ids!r}")
    return ids


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
# Text draws from a fixed, broad alphabet (ASCII, whitespace and control characters, accents,
# Greek, Cyrillic, CJK, right-to-left, combining marks, emoji and other astral characters,
# zero-width and BOM) rather than all of Unicode: Hypothesis builds its Unicode table on the
# first unrestricted draw (about a second), which trips the too_slow health check on a new
# project's first run.
_TEXT = (
    _LETTERS
    + _DIGITS
    + " \t\n\r\x00\x0b\x1b\x7f!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    + "éüßñçøåÉÜ€£¥©°±µ¿¡"
    + "αβγΩЖщЯ"
    + "中文日本語한국어"
    + "عربيעברית"
    + "e\u0301\u0308\u200b\u200d\u2028\ufeff\ufffd"
    + "😀🙂🚀👍🏽𝄞𐍈"
)


# Building a strategy is slow and drawing from a built one is not: the helpers below cache
# theirs (the public functions stay plain, so type checkers see their signatures).
@functools.cache
def _word(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    # Like st.from_regex(f"[{first}][{rest}]{{0,{max_rest}}}"), several times faster.
    return st.builds(
        lambda a, b: a + b, st.sampled_from(first), st.text(alphabet=rest, max_size=max_rest)
    )


@functools.cache
def _ids(prefix: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=_LETTERS + _DIGITS, min_size=1, max_size=12).map(
        lambda suffix: prefix + suffix
    )


def texts(*, min_size: int = 1, max_size: int = 200) -> st.SearchStrategy[str]:
    """Message text, ``min_size`` to ``max_size`` characters, from a broad fixed alphabet.

    ASCII (control characters included), accents, Greek, Cyrillic, CJK, right-to-left
    scripts, combining marks, zero-width characters, BOM and emoji: what real prompts hold,
    without Hypothesis's slow first build of its whole-Unicode table.
    """
    return _texts(min_size, max_size)


@functools.cache
def _texts(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_TEXT, min_size=min_size, max_size=max_size)


def tool_names() -> st.SearchStrategy[str]:
    """Tool names every provider accepts (``[A-Za-z_][A-Za-z0-9_-]{0,63}``)."""
    return _word(_LETTERS + "_", _LETTERS + _DIGITS + "_-", 63)


_any_tool_name = tool_names  # for functions whose parameter is called tool_names


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=_TEXT, max_size=20)
)


def json_objects(*, max_leaves: int = 8) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects (what tool-call arguments are): finite numbers, nested lists and objects."""
    return _json_objects(max_leaves)


@functools.cache
def _json_objects(max_leaves: int) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        _json_scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet=_TEXT, max_size=10), children, max_size=3)
        ),
        max_leaves=max_leaves,
    )
    return st.dictionaries(st.text(alphabet=_TEXT, max_size=10), values, max_size=4)


@st.composite
def _input_schemas(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(_word(_LETTERS[26:], _LETTERS[26:] + _DIGITS + "_", 15), max_size=4, unique=True)
    )
    kinds = ("string", "integer", "number", "boolean")
    properties = {name: {"type": draw(st.sampled_from(kinds))} for name in names}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [name for name in names if draw(st.booleans())]
    if required:
        schema["required"] = required
    return schema


@st.composite
def tools(draw: st.DrawFn, *, min_size: int = 0, max_size: int = 3) -> list[LLMTool]:
    """Lists of tools with distinct names, descriptions and small JSON-Schema object inputs."""
    names = draw(st.lists(tool_names(), min_size=min_size, max_size=max_size, unique=True))
    return [
        LLMTool(name, draw(st.text(alphabet=_TEXT, max_size=60)), draw(_input_schemas()))
        for name in names
    ]


_tool_lists = tools  # for `requests`, whose parameter is called tools


@st.composite
def tool_calls(
    draw: st.DrawFn, *, names: Sequence[str] | None = None, id_prefix: str = "call"
) -> ToolCall:
    """A tool call: a name from ``names`` (any valid name when ``None``), JSON arguments."""
    name = draw(st.sampled_from(list(names)) if names else tool_names())
    return ToolCall(draw(_ids(f"{id_prefix}_")), name, draw(json_objects()))


@st.composite
def _tool_call_turn(draw: st.DrawFn, names: Sequence[str], turn: int) -> list[LLMMessage]:
    """An assistant message with tool calls, then one tool message answering each call."""
    calls = draw(
        st.lists(
            tool_calls(names=names, id_prefix=f"call{turn}"),
            min_size=1,
            max_size=3,
            unique_by=lambda c: c.id,
        )
    )
    assistant = LLMMessage("assistant", draw(texts(min_size=0, max_size=80)), tool_calls=calls)
    results = [LLMMessage("tool", draw(texts()), tool_call_id=c.id) for c in calls]
    return [assistant, *results]


@st.composite
def conversations(
    draw: st.DrawFn,
    *,
    tool_names: Sequence[str] = (),
    system: bool | None = None,
    max_turns: int = 4,
) -> list[LLMMessage]:
    """Well-formed conversations ending with a user message or tool results.

    An optional system message, then turns: a user message, optionally answered by the
    assistant (text, or tool calls followed by their results and maybe text). Tool calls
    appear only if ``tool_names`` is given, and name only those tools.

    Args:
        tool_names: The tools the conversation may call.
        system: Whether to start with a system message (``None``: sometimes).
        max_turns: The most user messages.
    """
    result: list[LLMMessage] = []
    if system if system is not None else draw(st.booleans()):
        result.append(LLMMessage("system", draw(texts())))
    turns = draw(st.integers(1, max(1, max_turns)))
    for turn in range(turns):
        result.append(LLMMessage("user", draw(texts())))
        last = turn == turns - 1
        choices = ["none", "tools"] if last else ["none", "text", "tools", "tools+text"]
        if not tool_names:
            choices = [c for c in choices if "tools" not in c]
        reply = draw(st.sampled_from(choices))
        if "tools" in reply:
            result.extend(draw(_tool_call_turn(tool_names, turn)))
        if "text" in reply:
            result.append(LLMMessage("assistant", draw(texts())))
    return result


def messages(
    *, roles: Sequence[str] = ("system", "user", "assistant")
) -> st.SearchStrategy[LLMMessage]:
    """Single messages of the given roles (``"tool"`` messages get a ``tool_call_id``).

    For a whole request use :func:`conversations`, which keeps tool calls and results paired.
    """

    @st.composite
    def build(draw: st.DrawFn) -> LLMMessage:
        role = draw(st.sampled_from(list(roles)))
        if role == "tool":
            call_id = draw(_ids("call_"))
            return LLMMessage("tool", draw(texts()), tool_call_id=call_id)
        if role == "assistant" and draw(st.booleans()):
            return LLMMessage("assistant", draw(texts(min_size=0)), tool_calls=[draw(tool_calls())])
        return LLMMessage(role, draw(texts()))

    return build()


@st.composite
def requests(
    draw: st.DrawFn,
    models: ModelsSpec,
    *,
    tools: st.SearchStrategy[list[LLMTool]] | None = None,
    priorities: Sequence[RequestPriority] = tuple(RequestPriority),
    timeouts: bool = False,
    max_turns: int = 4,
) -> LLMRequest:
    """Requests a gateway configured with ``models`` accepts.

    Args:
        models: The model ids to draw from: a :class:`GatewayConfig`, a configuration dict or
            TOML path, or a list of ids.
        tools: A strategy for the tools offered (default: :func:`tools`).
        priorities: The priorities to draw from (all of them by default).
        timeouts: Whether to draw a ``timeout_s`` (a short one may expire: the request is
            accepted, then fails with ``RequestTimeoutError``); ``None`` otherwise.
        max_turns: The most user messages in a conversation.
    """
    ids = model_ids(models)
    offered = draw(tools if tools is not None else _tool_lists())
    return LLMRequest(
        model=draw(st.sampled_from(ids)),
        messages=draw(conversations(tool_names=[t.name for t in offered], max_turns=max_turns)),
        tools=offered,
        request_id=draw(st.uuids()).hex,
        priority=draw(st.sampled_from(list(priorities))),
        temperature=draw(st.floats(0.0, 2.0)),
        max_tokens=draw(st.none() | st.integers(1, 32_768)),
        agent_id=draw(st.none() | _word(_LETTERS[26:], _LETTERS[26:] + _DIGITS + "-", 15)),
        trace_id=draw(st.none() | st.uuids().map(lambda u: u.hex)),
        timeout_s=draw(st.floats(0.001, 600.0)) if timeouts and draw(st.booleans()) else None,
    )


def _names_for(
    request: LLMRequest | None, tool_names: Sequence[str] | None
) -> Sequence[str] | None:
    if tool_names is not None:
        return tool_names
    if request is not None:
        return [t.name for t in request.tools]
    return None


@st.composite
def responses(
    draw: st.DrawFn,
    request: LLMRequest | None = None,
    *,
    model: str | None = None,
    tool_names: Sequence[str] | None = None,
    unknown_tools: bool = False,
) -> LLMResponse:
    """Responses, with or without tool calls, as a model might answer.

    Args:
        request: The request answered: the response takes its id and model, and its tool calls
            name the request's tools.
        model: The model id (when there is no ``request``; ``"mock"`` by default).
        tool_names: The tools calls may name (default: the request's; any name without one).
        unknown_tools: Also call tools not in ``tool_names`` (models do hallucinate).
    """
    names = _names_for(request, tool_names)
    call_names: st.SearchStrategy[str] | None
    if names:
        call_names = st.sampled_from(list(names))
        if unknown_tools:
            call_names = call_names | _any_tool_name()
    else:
        call_names = _any_tool_name() if (unknown_tools or names is None) else None
    calls: list[ToolCall] = []
    if call_names is not None and draw(st.booleans()):
        count = draw(st.integers(1, 3))
        for i in range(count):
            call_id = draw(_ids(f"call{i}_"))
            calls.append(ToolCall(call_id, draw(call_names), draw(json_objects())))
    content = draw(texts(min_size=0))
    finish = "tool_calls" if calls else draw(st.sampled_from(FINISH_REASONS))
    return LLMResponse(
        request_id=request.request_id if request is not None else draw(st.uuids()).hex,
        content=content,
        model=request.model if request is not None else (model or "mock"),
        tool_calls=calls,
        usage=Usage(
            input_tokens=draw(st.integers(0, 100_000)),
            output_tokens=draw(st.integers(0, 10_000)),
        ),
        finish_reason=finish,
        latency_ms=draw(st.floats(0.0, 60_000.0)),
        queue_wait_ms=draw(st.floats(0.0, 60_000.0)),
        provider_request_id=draw(st.none() | _ids("req_")),
    )


@st.composite
def mock_answers(
    draw: st.DrawFn,
    *,
    tool_names: Sequence[str] | None = None,
    unknown_tools: bool = False,
    errors: bool = True,
) -> MockFixture:
    """What a mock model may answer a turn with, for ``MockLLMGateway.answer_next``.

    An answer from :func:`responses` (text, or tool calls naming ``tool_names``), or, when
    ``errors``, a provider failure: 429 with a ``retry-after``, 500, 503 or 529.
    """
    if errors and draw(st.integers(0, 4)) == 0:
        status = draw(st.sampled_from([429, 500, 503, 529]))
        retry_after = draw(st.none() | st.integers(0, 30).map(float))
        return MockFixture(error=MockError(status_code=status, retry_after_s=retry_after))
    response = draw(responses(tool_names=tool_names or [], unknown_tools=unknown_tools))
    return MockFixture.from_response(response)
