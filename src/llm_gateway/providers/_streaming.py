"""Streaming for the SDK adapters: server-sent events in, content deltas and one response out.

Both adapters open the stream with the SDK's documented low-level call (``client.post(...,
cast_to=httpx2.Response, stream=True)``: the SDK's auth, headers, connection pool and error
mapping for a non-2xx answer), then read the body here: an :class:`SseDecoder` splits it into
events, the adapter's :class:`StreamProtocol` turns each event into a content delta (sent to
the gateway's sink) or a piece of the final response, and :func:`relay` raises what broke the
stream as the gateway's own exceptions:

- an error event inside the 200 stream (Anthropic ``event: error``, an OpenAI ``{"error":
  ...}`` chunk) is a :class:`ProviderStatusError` classified by the error's *type*
  (``overloaded_error`` counts as HTTP 529, ``rate_limit_error`` as 429, ...), not by the 200;
- a connection that breaks or ends before the protocol's end event is a
  :class:`ProviderConnectionError` (a timeout reading it, :class:`ProviderTimeoutError`): a
  stream never ends as a silent success;
- a chunk that is not the protocol's JSON is a :class:`ProviderResponseError`.

Whether a failure is retried is the gateway's business (before the first delta it may be;
after it, never).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx2

from .._exceptions import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    status_error_type,
)
from .._models import LLMResponse, ToolCall, Usage
from .._stream import ToolCallDelta
from ._http import (
    PARSE_ERRORS,
    BodyError,
    SdkErrors,
    item_fields,
    kept_headers,
    list_field,
    mapping_field,
    optional_str_field,
    parsed_content,
    str_field,
    strict_json,
    token_count,
    tool_arguments,
)

if TYPE_CHECKING:
    from .._models import LLMRequest
    from .._stream import ChunkSink

Delta = tuple[str, tuple[ToolCallDelta, ...]]

__all__ = [
    "ERROR_STATUSES",
    "AnthropicEvents",
    "ChatCompletionChunks",
    "SseDecoder",
    "StreamProtocol",
    "ToolCallParts",
    "error_event",
    "relay",
]

ERROR_STATUSES = {
    # Anthropic's error types
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
    # OpenAI's (and compatible servers')
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "internal_error": 500,
    "service_unavailable": 503,
    "overloaded": 529,
}
"""The HTTP status an error event inside a 200 stream counts as, by the error's type (an
unknown type counts as 500: the server failed mid-answer)."""

CLOSE_TIMEOUT_S = 1.0
"""How long closing an abandoned stream's response may take (shielded from cancellation)."""


class SseDecoder:
    """Splits a server-sent-events body into ``(event, data)`` pairs, incrementally.

    Lines end with LF or CRLF; a blank line ends an event; ``data`` lines of one event join
    with newlines; comments (``:``) and other fields are skipped; an event with no data is
    dropped, as the SSE specification says.
    """

    __slots__ = ("_data", "_event", "_rest")

    def __init__(self) -> None:
        self._rest = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        """The events completed by ``chunk``.

        Raises:
            BodyError: A line is not UTF-8.
        """
        lines = (self._rest + chunk).split(b"\n") if self._rest else chunk.split(b"\n")
        self._rest = lines.pop()
        events: list[tuple[str | None, str]] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append((self._event, "\n".join(self._data)))
                    self._data = []
                self._event = None
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            try:
                if name == b"data":
                    self._data.append(value.decode("utf-8"))
                elif name == b"event":
                    self._event = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BodyError(f"an event is not UTF-8 (an invalid byte at {exc.start})") from None
        return events


class ToolCallParts:
    """One tool call being assembled from its streamed pieces."""

    __slots__ = ("arguments", "id", "name", "ordinal")

    def __init__(self, ordinal: int, call_id: str, name: str) -> None:
        self.ordinal = ordinal  # its place among the answer's tool calls
        self.id = call_id
        self.name = name
        self.arguments: list[str] = []

    def tool_call(self, where: str) -> ToolCall:
        """The assembled call; its arguments must be a JSON object (empty text: ``{}``).

        Raises:
            BodyError: The arguments are not a JSON object (the message never quotes them).
        """
        text = "".join(self.arguments)
        try:
            arguments = strict_json(text or "{}")
        except (ValueError, RecursionError) as exc:
            raise BodyError(
                f"tool call {self.name!r} (id {self.id}) has arguments that are not JSON: {exc}"
            ) from None
        if not isinstance(arguments, dict):
            raise BodyError(
                f"tool call {self.name!r} (id {self.id}) has arguments that are a JSON "
                f"{type(arguments).__name__}, not an object"
            )
        return ToolCall(self.id, self.name, tool_arguments(arguments, where))


class StreamProtocol(Protocol):
    """One API's events: what each means, whether the stream ended, the final response."""

    @property
    def complete(self) -> bool:
        """Whether the protocol's end has been seen (nothing more is expected)."""

    @property
    def finished(self) -> bool:
        """Whether the answer is whole, should the connection end now."""

    def event(self, name: str | None, data: str) -> Delta | None:
        """The content delta an event carries (text, tool-call pieces), or ``None``.

        Raises:
            ProviderStatusError: The event is an error event.
            BodyError: The event is not the protocol's JSON.
        """

    def response(self, request: LLMRequest, headers: httpx2.Headers) -> LLMResponse:
        """The whole answer, once :attr:`complete`."""


def json_event(data: str, what: str) -> Mapping[str, Any]:
    """An event's data, decoded: a JSON object.

    Raises:
        BodyError: Not JSON, or not an object (the message never quotes it).
    """
    try:
        value = strict_json(data)
    except json.JSONDecodeError as exc:
        raise BodyError(f"{what} is not JSON ({exc.msg}: column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"{what} is not usable JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise BodyError(f"{what} is not a JSON object")
    return value


def error_event(errors: SdkErrors, headers: httpx2.Headers, error: object) -> ProviderError:
    """The exception for an error event inside a 200 stream, classified by the error's type.

    ``error`` is the event's ``error`` object (``{"type": ..., "message": ...}``). The message
    names the type, never the provider's text (kept in ``provider_message``).
    """
    fields = error if isinstance(error, Mapping) else {}
    error_type = fields.get("type")
    if not isinstance(error_type, str):
        code = fields.get("code")
        error_type = code if isinstance(code, str) else None
    message = fields.get("message")
    status = ERROR_STATUSES.get(error_type or "", 500)
    request_id = headers.get(errors.request_id_header)
    text = f"{errors.provider} sent an error event inside its 200 stream: {error_type or 'untyped'}"
    text += f" (counted as HTTP {status})"
    if request_id:
        text += f" (request id {request_id})"
    return status_error_type(status)(
        text,
        status_code=status,
        provider_request_id=request_id,
        headers=kept_headers(headers),
        error_type=error_type,
        provider_message=message if isinstance(message, str) else None,
    )


def _broken(errors: SdkErrors, exc: Exception) -> ProviderError:
    name = type(exc).__name__
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderTimeoutError(f"{errors.provider}'s stream stopped arriving ({name})")
    return ProviderConnectionError(f"the connection to {errors.provider} broke mid-stream ({name})")


async def relay(
    response: httpx2.Response,
    protocol: StreamProtocol,
    sink: ChunkSink,
    errors: SdkErrors,
    request: LLMRequest,
) -> LLMResponse:
    """Read ``response``'s events into ``sink``; return the whole answer; close the response.

    Raises:
        ProviderError: An error event, a broken or unfinished stream, or an unusable event.
    """
    decoder = SseDecoder()
    failure: ProviderError | None = None
    try:
        # Never leave the body's generators suspended (trio warns of each one left to the GC):
        # to stop early, cancel the read, so that the cancellation ends them from inside;
        # after the end event, read on to the end of the body (the connection is reused).
        with anyio.CancelScope() as reading:
            try:
                async with aclosing(response.aiter_bytes()) as body:
                    async for raw in body:
                        if failure is None and not protocol.complete:
                            failure = await _feed(decoder, protocol, raw, sink, errors, response)
                            if failure is not None:
                                reading.cancel()
                            elif protocol.complete:
                                reading.deadline = anyio.current_time() + CLOSE_TIMEOUT_S
            except httpx2.TransportError as exc:
                if failure is None and not protocol.complete:
                    failure = _broken(errors, exc)
        if failure is None and not protocol.finished:
            failure = ProviderConnectionError(
                f"{errors.provider}'s stream ended before its end event"
            )
        if failure is None:
            try:
                return protocol.response(request, response.headers)
            except PARSE_ERRORS as exc:
                failure = errors.unusable(response, exc)
    finally:
        # An abandoned stream (cancelled, failed) closes its connection now, even while
        # cancelled: the server must see the caller leave.
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await response.aclose()
    failure.__cause__ = None
    failure.__suppress_context__ = True
    raise failure


class ChatCompletionChunks:
    """OpenAI's chat-completion chunks (and compatible servers'): ``data: {...}`` to ``[DONE]``.

    Args:
        model_id: The configured model id (``LLMResponse.model``).
        errors: The adapter's error translator.
        headers: The stream's response headers.
        finish_reasons: OpenAI's ``finish_reason`` -> the gateway's, where they differ.
    """

    __slots__ = (
        "_calls",
        "_done",
        "_errors",
        "_finish_reason",
        "_finish_reasons",
        "_headers",
        "_model_id",
        "_refused",
        "_texts",
        "_usage",
    )

    def __init__(
        self,
        model_id: str,
        errors: SdkErrors,
        headers: httpx2.Headers,
        finish_reasons: Mapping[str, str],
    ) -> None:
        self._model_id = model_id
        self._errors = errors
        self._headers = headers
        self._finish_reasons = finish_reasons
        self._texts: list[str] = []
        self._calls: dict[int, ToolCallParts] = {}
        self._finish_reason: str | None = None
        self._refused = False
        self._usage: Mapping[str, Any] = {}
        self._done = False

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def finished(self) -> bool:
        # Some compatible servers end without [DONE]; a finish_reason says the answer is whole.
        return self._done or self._finish_reason is not None

    def event(self, name: str | None, data: str) -> Delta | None:
        if data == "[DONE]":
            self._done = True
            return None
        chunk = json_event(data, "a chat completion chunk")
        if name == "error" or chunk.get("error") is not None:
            raise error_event(self._errors, self._headers, chunk.get("error", chunk))
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = mapping_field(chunk, "usage")
        choices = list_field(chunk, "choices")
        if not choices:
            return None
        choice = item_fields(choices[0], "choices[0]")
        finish_reason = optional_str_field(choice, "finish_reason", "choices[0]")
        if finish_reason is not None:
            self._finish_reason = finish_reason
        delta = mapping_field(choice, "delta", "choices[0]")
        text = ""
        if delta.get("content") is not None:
            text = str_field(delta, "content", "choices[0].delta")
            self._texts.append(text)
        if delta.get("refusal") is not None:
            self._refused = True
        pieces: tuple[ToolCallDelta, ...] = ()
        for i, item in enumerate(list_field(delta, "tool_calls", "choices[0].delta")):
            pieces += (self._tool_piece(item, f"choices[0].delta.tool_calls[{i}]"),)
        return (text, pieces) if text or pieces else None

    def _tool_piece(self, item: object, where: str) -> ToolCallDelta:
        piece = item_fields(item, where)
        index = piece.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int):
            raise BodyError(f"{where}.index is not an integer")
        function = mapping_field(piece, "function", where)
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # lenient local servers send the object itself
            arguments = json.dumps(arguments)
        elif arguments is None:
            arguments = ""
        elif not isinstance(arguments, str):
            raise BodyError(f"{where}.function.arguments is not a string")
        parts = self._calls.get(index)
        if parts is None:
            parts = ToolCallParts(
                len(self._calls),
                str_field(piece, "id", where),
                str_field(function, "name", f"{where}.function"),
            )
            self._calls[index] = parts
            parts.arguments.append(arguments)
            return ToolCallDelta(parts.ordinal, parts.id, parts.name, arguments)
        parts.arguments.append(arguments)
        return ToolCallDelta(parts.ordinal, None, None, arguments)

    def response(self, request: LLMRequest, headers: httpx2.Headers) -> LLMResponse:
        content = "".join(self._texts)
        tool_calls = [
            parts.tool_call(f"choices[0].message.tool_calls[{parts.ordinal}].function.arguments")
            for parts in self._calls.values()
        ]
        finish_reason = self._finish_reason
        if finish_reason is not None:
            finish_reason = self._finish_reasons.get(finish_reason, finish_reason)
        if self._refused and not content:
            finish_reason = "content_filter"
        usage = self._usage
        details = mapping_field(usage, "prompt_tokens_details", "usage")
        return LLMResponse(
            request_id=request.request_id,
            content=content,
            parsed=parsed_content(request, content),
            model=self._model_id,
            tool_calls=tool_calls,
            usage=Usage(
                input_tokens=token_count(usage, "prompt_tokens"),
                output_tokens=token_count(usage, "completion_tokens"),
                cache_read_tokens=token_count(
                    details, "cached_tokens", "usage.prompt_tokens_details"
                ),
            ),
            finish_reason=finish_reason,
            provider_request_id=headers.get(self._errors.request_id_header),
            rate_limit_headers=kept_headers(headers),
        )


class AnthropicEvents:
    """Anthropic's Messages stream: ``message_start`` ... ``message_stop``.

    Args:
        model_id: The configured model id (``LLMResponse.model``).
        errors: The adapter's error translator.
        headers: The stream's response headers.
        finish_reasons: Anthropic's ``stop_reason`` -> the gateway's ``finish_reason``.
        usage: The adapter's reading of a ``usage`` object.
    """

    __slots__ = (
        "_blocks",
        "_done",
        "_errors",
        "_finish_reasons",
        "_headers",
        "_model_id",
        "_read_usage",
        "_stop_reason",
        "_texts",
        "_usage",
    )

    def __init__(
        self,
        model_id: str,
        errors: SdkErrors,
        headers: httpx2.Headers,
        finish_reasons: Mapping[str, str],
        usage: Callable[[Mapping[str, Any]], Usage],
    ) -> None:
        self._model_id = model_id
        self._errors = errors
        self._headers = headers
        self._finish_reasons = finish_reasons
        self._read_usage = usage
        self._texts: list[str] = []
        self._blocks: dict[int, ToolCallParts] = {}  # content block index -> its tool call
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._done = False

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def finished(self) -> bool:
        return self._done

    def event(self, name: str | None, data: str) -> Delta | None:
        if name == "ping":
            return None
        event = json_event(data, f"a {name or 'stream'} event")
        kind = event.get("type")
        if kind == "error" or name == "error":
            raise error_event(self._errors, self._headers, event.get("error"))
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = mapping_field(event, "message", required=True)
            self._usage.update(mapping_field(message, "usage", "message"))
        elif kind == "message_delta":
            delta = mapping_field(event, "delta")
            stop_reason = optional_str_field(delta, "stop_reason", "delta")
            if stop_reason is not None:
                self._stop_reason = stop_reason
            # Counts in message_delta are cumulative: they replace message_start's.
            usage = mapping_field(event, "usage")
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            self._done = True
        return None

    def _block_start(self, event: Mapping[str, Any]) -> Delta | None:
        block = mapping_field(event, "content_block", required=True)
        kind = str_field(block, "type", "content_block")
        if kind == "text":
            text = str_field(block, "text", "content_block")
            if text:
                self._texts.append(text)
                return (text, ())
            return None
        if kind != "tool_use":
            return None  # thinking, server tools: nothing the gateway returns
        index = _block_index(event)
        parts = ToolCallParts(
            len(self._blocks),
            str_field(block, "id", "content_block"),
            str_field(block, "name", "content_block"),
        )
        self._blocks[index] = parts
        start = block.get("input")
        arguments = json.dumps(start) if isinstance(start, dict) and start else ""
        if arguments:
            parts.arguments.append(arguments)
        return ("", (ToolCallDelta(parts.ordinal, parts.id, parts.name, arguments),))

    def _delta(self, event: Mapping[str, Any]) -> Delta | None:
        delta = mapping_field(event, "delta", required=True)
        kind = delta.get("type")
        if kind == "text_delta":
            text = str_field(delta, "text", "delta")
            self._texts.append(text)
            return (text, ()) if text else None
        if kind == "input_json_delta":
            parts = self._blocks.get(_block_index(event))
            if parts is None:
                raise BodyError("an input_json_delta for a content block that is not a tool_use")
            piece = str_field(delta, "partial_json", "delta")
            parts.arguments.append(piece)
            return ("", (ToolCallDelta(parts.ordinal, None, None, piece),)) if piece else None
        return None  # thinking, signatures, citations

    def response(self, request: LLMRequest, headers: httpx2.Headers) -> LLMResponse:
        content = "".join(self._texts)
        stop_reason = self._stop_reason
        return LLMResponse(
            request_id=request.request_id,
            content=content,
            parsed=parsed_content(request, content),
            model=self._model_id,
            tool_calls=[
                parts.tool_call(f"content[{index}].input") for index, parts in self._blocks.items()
            ],
            usage=self._read_usage(self._usage),
            finish_reason=(
                None if stop_reason is None else self._finish_reasons.get(stop_reason, stop_reason)
            ),
            provider_request_id=headers.get(self._errors.request_id_header),
            rate_limit_headers=kept_headers(headers),
        )


def _block_index(event: Mapping[str, Any]) -> int:
    index = event.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise BodyError("a content block event has no integer index")
    return index


async def _feed(
    decoder: SseDecoder,
    protocol: StreamProtocol,
    raw: bytes,
    sink: ChunkSink,
    errors: SdkErrors,
    response: httpx2.Response,
) -> ProviderError | None:
    """Hand the events ``raw`` completes to ``protocol`` and their deltas to ``sink``.

    Returns what broke the stream (an error event, an unusable event), or ``None``.
    """
    try:
        for name, data in decoder.feed(raw):
            delta = protocol.event(name, data)
            if delta is not None:
                await sink.send(*delta)
    except ProviderError as exc:
        return exc
    except PARSE_ERRORS as exc:
        return errors.unusable(response, exc)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        # The caller's end is closed: the request has ended already; nothing reads this.
        return ProviderConnectionError("the stream's reader has gone")
    return None
