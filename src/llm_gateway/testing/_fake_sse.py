"""Streamed answers for the fake LLM API: server-sent events in both protocols, with faults.

A request with ``"stream": true`` gets its normal answer as a stream: OpenAI chat-completion
chunks (``data: {...}`` ... ``data: [DONE]``, the usage in a last chunk) or Anthropic's Messages
events (``message_start`` ... ``message_stop``), the text split word by word and each tool
call's arguments in two pieces. A :class:`StreamFault` (queued on ``FakeLLMApi.stream_faults``)
breaks one streamed answer before or after its first content delta: an error event inside the
200 stream, a dropped connection, or a stall. Each streamed answer is recorded as a
:class:`StreamRecord` (``FakeLLMApi.streams``): when it started and ended, and how (the whole
stream sent, dropped by the server, or closed by the client).

This module imports no HTTP library (the MockTransport side imports httpx2 when used).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import attrs

if TYPE_CHECKING:
    import httpx2
    from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["StreamFault", "StreamRecord", "sse_steps"]

Step = bytes | float | Literal["drop", "hang"]
"""An SSE event's bytes to send, seconds to pause, or how the stream breaks."""

_WORD = re.compile(r"\s*\S+\s*|\s+")

DEFAULT_ERROR_TYPES = {"openai": "server_error", "anthropic": "overloaded_error"}


@attrs.frozen(kw_only=True)
class StreamFault:
    """How one streamed answer breaks. Queue it with ``server.stream_faults.append(...)``.

    Build one with :meth:`error_event`, :meth:`drop`, :meth:`cut` or :meth:`stall`.

    Attributes:
        kind: ``"error"``: an error event inside the 200 stream (Anthropic ``event: error``,
            an OpenAI ``{"error": ...}`` chunk), then the body ends. ``"drop"``: the server
            closes the connection mid-body. ``"stall"``: nothing more is sent for
            ``stall_s`` seconds (``None``: until the client leaves), then the rest.
            ``"cut"``: the body ends cleanly, without the rest of the answer nor the
            protocol's end event (a proxy that turns a broken stream into a success).
        after: How many content deltas are sent first (0: the fault comes before the first
            delta, where the gateway may still retry).
        error_type: The error event's type (``None``: ``overloaded_error`` for Anthropic,
            ``server_error`` for OpenAI).
        stall_s: How long a stall lasts.
    """

    kind: Literal["error", "drop", "cut", "stall"]
    after: int = 0
    error_type: str | None = None
    stall_s: float | None = None

    @classmethod
    def error_event(cls, *, after: int = 0, error_type: str | None = None) -> StreamFault:
        """An error event after ``after`` content deltas."""
        return cls(kind="error", after=after, error_type=error_type)

    @classmethod
    def drop(cls, *, after: int = 0) -> StreamFault:
        """The connection closed by the server after ``after`` content deltas."""
        return cls(kind="drop", after=after)

    @classmethod
    def cut(cls, *, after: int = 0) -> StreamFault:
        """A body that ends cleanly after ``after`` content deltas, the answer unfinished."""
        return cls(kind="cut", after=after)

    @classmethod
    def stall(cls, *, after: int = 0, seconds: float | None = None) -> StreamFault:
        """A stall after ``after`` content deltas: ``seconds`` long, or until the client leaves."""
        return cls(kind="stall", after=after, stall_s=seconds)


@attrs.define
class StreamRecord:
    """One streamed answer, as the server played it.

    Attributes:
        path: The request's path.
        started: When the server began sending it (the clock of the server's event loop).
        ended: When it ended (``None`` while it goes on).
        how: ``"complete"`` (all of it sent), ``"dropped"`` (by the server: a fault),
            ``"client_closed"`` (the client left first), or ``""`` while it goes on.
        sent: How many events were sent.
    """

    path: str
    started: float
    ended: float | None = None
    how: str = ""
    sent: int = 0

    def end(self, how: str) -> None:
        if self.ended is None:
            self.ended = anyio.current_time()
            self.how = how


def _event(data: Mapping[str, Any] | str, name: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {text}\n\n".encode()


def _halves(text: str) -> list[str]:
    middle = len(text) // 2
    return [part for part in (text[:middle], text[middle:]) if part]


def _openai_events(body: Mapping[str, Any]) -> tuple[list[bytes], list[bool]]:
    """The chunks of a chat completion ``body``, and which of them carry content."""
    base = {k: body[k] for k in ("id", "created", "model") if k in body}
    base["object"] = "chat.completion.chunk"
    choice = body["choices"][0]
    message = choice["message"]

    def chunk(delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        return _event(
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        )

    events, content = [chunk({"role": "assistant", "content": ""})], [False]
    for word in _WORD.findall(message.get("content") or ""):
        events.append(chunk({"content": word}))
        content.append(True)
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        first = {"index": i, "id": call["id"], "type": "function"}
        events.append(
            chunk(
                {"tool_calls": [{**first, "function": {"name": function["name"], "arguments": ""}}]}
            )
        )
        content.append(True)
        for piece in _halves(function["arguments"]):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
            content.append(True)
    events.append(chunk({}, choice["finish_reason"]))
    events.append(_event({**base, "choices": [], "usage": body["usage"]}))
    events.append(_event("[DONE]"))
    content += [False, False, False]
    return events, content


def _anthropic_events(body: Mapping[str, Any]) -> tuple[list[bytes], list[bool]]:
    """The events of a Messages API ``body``, and which of them carry content."""
    usage = body["usage"]
    start = {k: v for k, v in body.items() if k not in ("content", "stop_reason", "usage")}
    start |= {"content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_event({"type": "message_start", "message": start}, "message_start")]
    events.append(_event({"type": "ping"}, "ping"))
    content = [False, False]
    for index, block in enumerate(body["content"]):
        opened: dict[str, Any]
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": w} for w in _WORD.findall(block["text"])]
        else:
            opened = {**block, "input": {}}
            arguments = json.dumps(block["input"])
            pieces = [{"type": "input_json_delta", "partial_json": p} for p in _halves(arguments)]
        events.append(
            _event(
                {"type": "content_block_start", "index": index, "content_block": opened},
                "content_block_start",
            )
        )
        content.append(block["type"] == "tool_use")  # a tool call's start is content
        for delta in pieces:
            events.append(
                _event(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
            )
            content.append(True)
        events.append(_event({"type": "content_block_stop", "index": index}, "content_block_stop"))
        content.append(False)
    events.append(
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            "message_delta",
        )
    )
    events.append(_event({"type": "message_stop"}, "message_stop"))
    content += [False, False]
    return events, content


def _error_event(protocol: str, error_type: str) -> bytes:
    error = {"type": error_type, "message": f"a scripted {error_type} inside the stream"}
    if protocol == "anthropic":
        return _event({"type": "error", "error": error}, "error")
    return _event({"error": {**error, "code": None}})


def sse_steps(path: str, body: Mapping[str, Any], fault: StreamFault | None) -> tuple[Step, ...]:
    """How the fake API streams the answer ``body`` to a request for ``path``, with ``fault``."""
    protocol = "anthropic" if path.endswith("/messages") else "openai"
    events, content = (_anthropic_events if protocol == "anthropic" else _openai_events)(body)
    if fault is None:
        return tuple(events)
    # The fault comes right before the content delta number `after` (or at the end).
    seen, at = 0, len(events)
    for i, is_content in enumerate(content):
        if is_content:
            if seen == fault.after:
                at = i
                break
            seen += 1
    steps: list[Step] = list(events[:at])
    if fault.kind == "error":
        error_type = fault.error_type or DEFAULT_ERROR_TYPES[protocol]
        return (*steps, _error_event(protocol, error_type))
    if fault.kind == "drop":
        return (*steps, "drop")
    if fault.kind == "cut":
        return tuple(steps)
    steps.append("hang" if fault.stall_s is None else fault.stall_s)
    return (*steps, *events[at:])


# -- playing a stream ------------------------------------------------------------------------


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} OK",
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "transfer-encoding: chunked",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def play_on_socket(
    stream: anyio.abc.SocketStream,
    reader: BufferedByteReceiveStream,
    steps: Sequence[Step],
    headers: Mapping[str, str],
    record: StreamRecord,
) -> bool:
    """Send ``steps`` as a chunked event stream; whether the connection stays open.

    While it streams, the server watches the connection: a client that closes it is noticed
    at once (``record.how == "client_closed"``), even during a stall.
    """

    async def watch(scope: anyio.CancelScope) -> None:
        try:
            while await reader.receive():
                pass  # a client sends nothing while it reads a response
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        record.end("client_closed")
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            await stream.send(_head(200, headers))
            for step in steps:
                if isinstance(step, bytes):
                    await stream.send(b"%x\r\n%s\r\n" % (len(step), step))
                    record.sent += 1
                elif step == "drop":
                    record.end("dropped")
                    tg.cancel_scope.cancel()
                    return False
                elif step == "hang":
                    await anyio.sleep_forever()
                else:
                    await anyio.sleep(step)
            await stream.send(b"0\r\n\r\n")
            record.end("complete")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            record.end("client_closed")
        tg.cancel_scope.cancel()
    return record.how == "complete"


def mock_response(
    steps: Sequence[Step], headers: Mapping[str, str], record: StreamRecord
) -> httpx2.Response:
    """The ``httpx2.MockTransport`` response that plays ``steps`` as its body."""
    import httpx2

    async def body() -> AsyncIterator[bytes]:
        try:
            for step in steps:
                if isinstance(step, bytes):
                    record.sent += 1
                    yield step
                elif step == "drop":
                    record.end("dropped")
                    raise httpx2.RemoteProtocolError(
                        "peer closed connection without sending complete message body "
                        "(incomplete chunked read)"
                    )
                elif step == "hang":
                    await anyio.sleep_forever()
                else:
                    await anyio.sleep(step)
            record.end("complete")
        finally:
            record.end("client_closed")  # no-op when it ended otherwise

    return httpx2.Response(
        200, headers={"content-type": "text/event-stream", **headers}, content=body()
    )
