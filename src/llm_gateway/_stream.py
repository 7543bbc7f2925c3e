"""Streaming: ``Gateway.stream()``'s caller-facing object, and the attempt that feeds it.

A stream is a request like any other: the same lane, queue, priorities, concurrency slots and
rate limits. What differs is how its attempt runs. The lane's attempt task owns the provider's
stream: it calls ``provider.stream(request, sink)``, and the provider hands each content delta
to the :class:`StreamSink`, which forwards it to the caller through a bounded memory object
stream. So the concurrency slot is taken and given back in the lane's own task, on every path;
the caller's side only reads chunks and, when it leaves early, asks the lane to cancel.

The commit point is the first content delta. Before it, a failure (an HTTP error, a dropped
connection, an error event inside a 200 stream, no first delta within
``first_token_timeout_s``) is an ordinary failed attempt: the lane retries, cools down or falls
back exactly as for ``request()``, and the caller sees nothing. After it, the gateway cannot
start again without repeating what the caller read: the failure becomes a
:class:`StreamInterruptedError` carrying the partial text, and the iteration ends with it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel
import attrs

from ._attempt import INTERRUPTED, Answered, Failed, Outcome
from ._exceptions import (
    ProviderResponseError,
    ProviderTimeoutError,
    RequestValidationError,
    StreamInterruptedError,
)
from ._models import LLMResponse

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._future import ResponseFuture
    from ._lane import Lane
    from ._models import LLMRequest
    from ._queue import Entry

__all__ = ["ChunkSink", "LLMStream", "StreamChunk", "StreamSink", "ToolCallDelta", "call_stream"]

BUFFER = 32
"""Chunks the lane may send ahead of a caller that reads slowly (then it waits: backpressure)."""


@attrs.frozen
class ToolCallDelta:
    """A piece of a tool call, as it arrives in a stream.

    The pieces with the same ``index`` make one tool call: ``id`` and ``name`` come in its
    first piece, ``arguments`` is a fragment of its JSON arguments (join the fragments in
    order). ``stream.response.tool_calls`` holds the assembled calls.

    Attributes:
        index: Which tool call of the answer (0, 1, ...).
        id: The call's id (first piece only, else ``None``).
        name: The tool's name (first piece only, else ``None``).
        arguments: The next fragment of the arguments' JSON text (may be ``""``).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class StreamChunk:
    """One piece of a streamed answer.

    Attributes:
        text: The new text (may be ``""`` when the chunk carries only tool-call pieces).
        tool_call_deltas: Pieces of tool calls (see :class:`ToolCallDelta`).
        index: The chunk's position in the stream: 0, 1, 2, ...
    """

    text: str
    tool_call_deltas: tuple[ToolCallDelta, ...] = ()
    index: int = 0


class ChunkSink(Protocol):
    """Where a provider's ``stream()`` sends each content delta (the gateway supplies it)."""

    async def send(self, text: str, tool_call_deltas: tuple[ToolCallDelta, ...] = ()) -> None:
        """Forward one content delta to the caller (waits while the caller is behind)."""


class StreamSink:
    """The lane's end of one stream: forwards deltas, marks the commit point, keeps figures.

    Written only by the attempt task that runs the provider's stream (a task of the lane that
    owns the request); closed by ``Lane._finish`` when the request ends.
    """

    __slots__ = ("_channel", "_first_scope", "chunks", "committed_at", "texts")

    def __init__(self, channel: MemoryObjectSendStream[StreamChunk]) -> None:
        self._channel = channel
        self._first_scope: anyio.CancelScope | None = None  # the first-token timer
        self.chunks = 0
        self.committed_at = math.nan  # when the first content delta went to the caller
        self.texts: list[str] = []

    @property
    def committed(self) -> bool:
        """Whether the caller has been sent content (no retry or fallback is possible now)."""
        return self.chunks > 0

    @property
    def partial(self) -> str:
        """The text sent so far."""
        return "".join(self.texts)

    async def send(self, text: str, tool_call_deltas: tuple[ToolCallDelta, ...] = ()) -> None:
        if not text and not tool_call_deltas:
            await anyio.lowlevel.checkpoint()
            return
        index = self.chunks
        if index == 0:
            self.committed_at = anyio.current_time()
            if self._first_scope is not None:
                self._first_scope.deadline = math.inf  # the first token is in: timer off
        self.chunks = index + 1
        if text:
            self.texts.append(text)
        chunk = StreamChunk(text, tool_call_deltas, index)
        # Without a checkpoint while the buffer has room: the provider's next read yields
        # anyway, and a scheduling round per chunk would double the CPU a chunk costs.
        try:
            self._channel.send_nowait(chunk)
        except anyio.WouldBlock:
            await self._channel.send(chunk)

    def close(self) -> None:
        """No more chunks: the caller's iteration ends once it has read what is buffered."""
        self._channel.close()

    def interrupted(self, cause: BaseException, what: str) -> StreamInterruptedError:
        """The error that ends a committed stream because of ``cause``."""
        return StreamInterruptedError(
            f"{what} broke after {self.chunks} chunks ({type(cause).__name__}: {cause}); "
            "the caller has the partial answer (.partial), which the gateway cannot resume",
            partial=self.partial,
            cause=cause,
            chunks=self.chunks,
        )


async def call_stream(
    provider: Any,
    request: LLMRequest,
    sink: StreamSink,
    scope: anyio.CancelScope,
    first_token_timeout_s: float | None,
) -> Outcome:
    """One streaming attempt: ``provider.stream(request, sink)`` inside ``scope``.

    Like ``_attempt.call``: it returns ``Answered``, ``Failed`` or ``INTERRUPTED`` and decides
    nothing. A failure before the first delta is the provider's error as it is (the lane may
    retry it); a missing first delta within ``first_token_timeout_s`` is a
    :class:`ProviderTimeoutError`; a failure after it is a :class:`StreamInterruptedError`.
    """
    stream = getattr(provider, "stream", None)
    if stream is None:
        return Failed(
            RequestValidationError(
                f"model {request.model!r}'s provider ({type(provider).__name__}) cannot stream "
                "(it has no stream() method); use gw.request() for this model"
            )
        )
    with scope:
        deadline = math.inf
        if first_token_timeout_s is not None:
            deadline = anyio.current_time() + first_token_timeout_s
        with anyio.CancelScope(deadline=deadline) as first:
            sink._first_scope = first
            try:
                response = await stream(request, sink)
            except Exception as error:
                if sink.committed:
                    return Failed(sink.interrupted(error, f"the stream of {request.request_id!r}"))
                return Failed(error)
            finally:
                sink._first_scope = None
        if first.cancelled_caught:
            return Failed(
                ProviderTimeoutError(
                    f"model {request.model!r} sent no first token within "
                    f"first_token_timeout_s={first_token_timeout_s:g} s"
                )
            )
        if not isinstance(response, LLMResponse):
            bad = ProviderResponseError(
                f"the provider of model {request.model!r} ended a stream with a "
                f"{type(response).__name__}, not an LLMResponse"
            )
            return Failed(sink.interrupted(bad, "the stream") if sink.committed else bad)
        return Answered(response)
    return INTERRUPTED


class LLMStream:
    """A streamed request: what ``async with gw.stream(request) as stream:`` gives.

    Iterate it (once) for :class:`StreamChunk` values; when the loop ends,
    :attr:`response` holds the whole :class:`LLMResponse`, exactly as ``gw.request()`` would
    have returned it. A failure before the first chunk is retried or sent to a fallback as for
    ``request()`` and never shows; if all of that fails, the loop raises the request's error
    before any chunk. A failure after the first chunk raises :class:`StreamInterruptedError`
    (with ``.partial``). Leaving the block before the end (``break``, an exception, a
    cancellation) cancels the request: the provider's connection is closed at once and the
    request counts as cancelled.
    """

    __slots__ = ("_deadline", "_future", "_iterated", "_lane", "_receive", "_request", "_response")

    def __init__(self, lane: Lane, request: LLMRequest) -> None:
        self._lane = lane
        self._request = request
        self._future: ResponseFuture | None = None
        self._receive: MemoryObjectReceiveStream[StreamChunk] | None = None
        self._iterated = False
        self._response: LLMResponse | None = None
        self._deadline = math.inf  # enforced here until the first chunk

    def __repr__(self) -> str:
        state = "new" if self._future is None else "done" if self._response is not None else "open"
        return f"<LLMStream request_id={self._request.request_id!r} {state}>"

    @property
    def request(self) -> LLMRequest:
        """The request being streamed."""
        return self._request

    @property
    def response(self) -> LLMResponse:
        """The whole answer: content, tool calls, usage, finish reason.

        Raises:
            RuntimeError: The stream has not been iterated to its end yet.
        """
        if self._response is None:
            raise RuntimeError(
                f"{self!r}: stream.response is ready once the stream has ended; read it after "
                "`async for chunk in stream: ...` has finished"
            )
        return self._response

    async def __aenter__(self) -> LLMStream:
        if self._future is not None:
            raise RuntimeError(
                f"{self!r} was already entered; call gw.stream(request) again for a new stream"
            )
        send, receive = anyio.create_memory_object_stream[StreamChunk](BUFFER)
        try:
            self._future = await self._lane.submit(self._request, stream=StreamSink(send))
        except BaseException:
            send.close()
            receive.close()
            raise
        self._receive = receive
        entry = self._future._entry
        assert entry is not None
        self._deadline = entry.deadline
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        future, receive = self._future, self._receive
        assert future is not None
        assert receive is not None
        receive.close()
        # Left before the end: the lane cancels the request (closing the provider's stream in
        # its own task, which also gives back the concurrency slot).
        future.cancel()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    def __aiter__(self) -> LLMStream:
        if self._receive is None:
            raise RuntimeError(
                f"{self!r} is not open: use `async with gw.stream(request) as stream:` and "
                "iterate inside the block"
            )
        if self._iterated:
            raise RuntimeError(
                f"{self!r} can be iterated once; keep the chunks you need, or read "
                "stream.response for the whole answer"
            )
        self._iterated = True
        return self

    async def __anext__(self) -> StreamChunk:
        receive = self._receive
        assert receive is not None
        try:
            # What is buffered is taken without a scheduling round (the lane yields between
            # network reads anyway); the buffer bounds how long a loop can run without one.
            try:
                chunk = receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            else:
                self._deadline = math.inf  # under way: its attempt's scope has the deadline
                return chunk
            if self._deadline == math.inf:
                chunk = await receive.receive()
            else:
                chunk = await self._first_chunk(receive)
        except anyio.EndOfStream:
            future = self._future
            assert future is not None
            self._response = future.result()  # or raise the request's error
            raise StopAsyncIteration from None
        except anyio.ClosedResourceError:
            raise RuntimeError(
                f"{self!r} was closed: iterate it inside its `async with` block"
            ) from None
        return chunk

    async def _first_chunk(self, receive: MemoryObjectReceiveStream[StreamChunk]) -> StreamChunk:
        """Wait for the first chunk within the request's deadline (queued, or retrying)."""
        with anyio.CancelScope(deadline=self._deadline):
            chunk = await receive.receive()
            self._deadline = math.inf  # running now: its attempt's scope has the deadline
            return chunk
        future = self._future
        assert future is not None
        entry: Entry | None = future._entry
        if not future.done() and entry is not None:
            future._lanes[entry.model_id].expire(entry)
        self._deadline = math.inf
        return await receive.receive()  # EndOfStream: the lane closed the stream
