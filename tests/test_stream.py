"""gw.stream(): admission, the commit point, cancellation and misuse, on virtual time.

The provider here is a scripted streamer (or the mock provider): each call plays a list of steps
(a text chunk, a pause, an exception), so every test says exactly when each chunk and failure
happens. Provider-level streaming (SSE over HTTP) is tested in test_stream_providers.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from llm_gateway import (
    Gateway,
    GatewayClosedError,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ProviderConnectionError,
    RequestPriority,
    RequestTimeoutError,
    RetryPolicy,
    StreamChunk,
    StreamInterruptedError,
    ToolCall,
    Usage,
)
from llm_gateway._stream import ChunkSink
from llm_gateway.providers import Provider
from llm_gateway.testing import MockError, MockLLMGateway

from ._support import mock_model

pytestmark = pytest.mark.anyio

HIGH, NORMAL, LOW = RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW

Step = str | float | BaseException
"""A chunk of text to send, seconds to pause, or an exception to raise."""


@attrs.define
class StreamCall:
    request_id: str
    model_id: str
    started: float
    ended: float | None = None
    cancelled: bool = False


@attrs.define
class Streamer:
    """A provider that streams each call's scripted steps, and records every call."""

    model_id: str
    script: Callable[[LLMRequest, int], Sequence[Step]]
    calls: list[StreamCall]

    async def complete(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError("streams never call complete()")

    async def stream(self, request: LLMRequest, sink: ChunkSink) -> LLMResponse:
        attempt = sum(c.request_id == request.request_id for c in self.calls) + 1
        call = StreamCall(request.request_id, self.model_id, anyio.current_time())
        self.calls.append(call)
        texts: list[str] = []
        try:
            # The script sees the request as addressed to this model (a fallback's too).
            for step in self.script(attrs.evolve(request, model=self.model_id), attempt):
                if isinstance(step, str):
                    texts.append(step)
                    await sink.send(step)
                elif isinstance(step, BaseException):
                    raise step
                else:
                    await anyio.sleep(step)
        except anyio.get_cancelled_exc_class():
            call.cancelled = True
            raise
        finally:
            call.ended = anyio.current_time()
        return LLMResponse(
            request_id=request.request_id,
            content="".join(texts),
            model=self.model_id,
            usage=Usage(input_tokens=3, output_tokens=len(texts)),
        )


class StreamGateway(Gateway):
    """A real Gateway whose every model is a :class:`Streamer` playing ``script``."""

    def __init__(
        self,
        models: dict[str, ModelConfig],
        script: Callable[[LLMRequest, int], Sequence[Step]],
        **options: Any,
    ) -> None:
        super().__init__(models=models, provider_factory=self._open, **options)
        self.calls: list[StreamCall] = []
        self._script = script

    def _open(self, model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        return _yielding(Streamer(model_id, self._script, self.calls))

    def started(self) -> list[str]:
        return [c.request_id for c in self.calls]


@asynccontextmanager
async def _yielding(provider: Any) -> AsyncGenerator[Provider]:
    yield provider


def ask(request_id: str, model: str = "m", **fields: Any) -> LLMRequest:
    return LLMRequest(
        model=model, messages=[LLMMessage("user", "hello")], request_id=request_id, **fields
    )


def slow(n: int, pause: float = 1.0) -> list[Step]:
    """``n`` chunks, ``pause`` seconds apart (the first after one pause)."""
    steps: list[Step] = []
    for i in range(n):
        steps += [pause, f"c{i} "]
    return steps


async def read_all(gw: Gateway, request: LLMRequest) -> tuple[list[StreamChunk], LLMResponse]:
    async with gw.stream(request) as stream:
        chunks = [chunk async for chunk in stream]
    return chunks, stream.response


# -- what a stream delivers -----------------------------------------------------------------


async def test_a_stream_assembles_what_request_returns() -> None:
    lookup = LLMTool("lookup", "Look it up", {"type": "object"})
    answer = LLMResponse(
        request_id="x",
        content="Two calls follow.",
        model="mock",
        tool_calls=[ToolCall("c1", "lookup", {"q": "a"}), ToolCall("c2", "lookup", {"q": "b"})],
        usage=Usage(input_tokens=7, output_tokens=11),
        finish_reason="tool_calls",
    )
    async with MockLLMGateway() as gw:
        for request in [
            LLMRequest(model="mock", messages=[LLMMessage("user", "plain text, please")]),
            LLMRequest(model="mock", messages=[LLMMessage("user", "tools")], tools=[lookup]),
        ]:
            if request.tools:
                gw.answer_next(answer, answer)
            expected = await gw.request(request)
            chunks, response = await read_all(gw, request)
            assert [c.index for c in chunks] == list(range(len(chunks)))
            assert "".join(c.text for c in chunks) == expected.content
            for field in ("content", "tool_calls", "usage", "finish_reason", "model"):
                assert getattr(response, field) == getattr(expected, field), field
            deltas = [d for c in chunks for d in c.tool_call_deltas]
            assert [(d.index, d.id, d.name) for d in deltas] == [
                (i, call.id, call.name) for i, call in enumerate(expected.tool_calls)
            ]
            assert [json.loads(d.arguments) for d in deltas] == [
                dict(call.arguments) for call in expected.tool_calls
            ]
        assert len(chunks) > 2  # the text came in several chunks


async def test_failures_before_the_first_chunk_are_retried_unseen() -> None:
    async with MockLLMGateway() as gw:
        gw.fail_next(2, error=MockError(status_code=529))
        request = LLMRequest(model="mock", messages=[LLMMessage("user", "retry me")])
        chunks, response = await read_all(gw, request)
        stats = gw.get_stats().models["mock"]
    assert len(gw.received) == 3  # two failed attempts, then the stream
    assert "".join(c.text for c in chunks) == response.content
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert (stats.retries, stats.completed, stats.failed, stats.streams) == (2, 1, 0, 1)


async def test_a_failure_after_the_first_chunk_interrupts_with_the_partial_text() -> None:
    dropped = ProviderConnectionError("the connection broke")

    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return ["Hel", "lo", 1.0, dropped]

    async with StreamGateway({"m": mock_model()}, script) as gw:
        seen: list[str] = []
        with pytest.raises(StreamInterruptedError) as caught:
            async with gw.stream(ask("r")) as stream:
                async for chunk in stream:
                    seen.append(chunk.text)
        stats = gw.get_stats().models["m"]
    assert seen == ["Hel", "lo"]
    assert caught.value.partial == "Hello"
    assert caught.value.cause is dropped
    assert caught.value.__cause__ is dropped
    assert caught.value.chunks == 2
    assert gw.started() == ["r"]  # never retried: the caller had seen content
    assert (stats.failed, stats.retries, stats.fallbacks, stats.in_flight) == (1, 0, 0, 0)


async def test_no_first_token_within_first_token_timeout_falls_back() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return [1000.0] if request.model == "a" else ["from b"]

    models = {
        "a": mock_model(
            first_token_timeout_s=2.0, retry=RetryPolicy(max_attempts=2), fallbacks=["b"]
        ),
        "b": mock_model(),
    }
    async with StreamGateway(models, script) as gw:
        chunks, response = await read_all(gw, ask("r", model="a"))
        took = anyio.current_time()
        stats = gw.get_stats()
    assert [c.text for c in chunks] == ["from b"]
    assert response.model == "b"
    assert [c.model_id for c in gw.calls] == ["a", "a", "b"]
    assert all(c.cancelled for c in gw.calls[:2])
    # Two stalled attempts of 2 s each, plus the backoff between them (<= 0.5 s).
    assert 4.0 <= took <= 4.5 + 1e-3
    assert (stats.models["a"].retries, stats.models["a"].fallbacks) == (1, 1)


async def test_a_request_overrides_the_models_first_token_timeout() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return [3.0, "late"] if attempt == 1 else ["on time"]

    models = {"m": mock_model(first_token_timeout_s=10.0)}
    async with StreamGateway(models, script) as gw:
        started = anyio.current_time()
        chunks, _ = await read_all(gw, ask("r", first_token_timeout_s=1.0))
    assert [c.text for c in chunks] == ["on time"]
    assert gw.calls[0].ended == pytest.approx(started + 1.0, abs=1e-3)
    assert len(gw.calls) == 2


# -- admission: the same queue, priorities and slots as request() ----------------------------


async def test_a_high_stream_starts_before_queued_low_streams() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return slow(3)

    async with (
        StreamGateway({"m": mock_model(max_concurrency=2)}, script) as gw,
        anyio.create_task_group() as tg,
    ):
        for i in range(5):
            tg.start_soon(read_all, gw, ask(f"low{i}", priority=LOW))
            await anyio.sleep(0.01)
        tg.start_soon(read_all, gw, ask("high", priority=HIGH))
    assert gw.started() == ["low0", "low1", "high", "low2", "low3", "low4"]


async def test_leaving_early_cancels_and_a_queued_high_stream_takes_the_slot() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return slow(10)

    got: list[str] = []

    async def leave_after_two() -> None:
        async with gw.stream(ask("first")) as stream:
            async for chunk in stream:
                got.append(chunk.text)
                if len(got) == 2:
                    break

    async with StreamGateway({"m": mock_model(max_concurrency=1)}, script) as gw:
        async with anyio.create_task_group() as tg:
            tg.start_soon(leave_after_two)
            await anyio.sleep(0.1)
            tg.start_soon(read_all, gw, ask("low", priority=LOW))
            await anyio.sleep(0.1)
            tg.start_soon(read_all, gw, ask("high", priority=HIGH))
        stats = gw.get_stats().models["m"]
    first, high = gw.calls[0], gw.calls[1]
    assert got == ["c0 ", "c1 "]
    assert first.cancelled
    assert first.ended == pytest.approx(2.0, abs=1e-3)  # closed when the caller left
    assert gw.started() == ["first", "high", "low"]
    assert high.started == pytest.approx(2.0, abs=1e-3)  # the freed slot, at once
    assert (stats.cancelled, stats.completed, stats.in_flight, stats.streams) == (1, 2, 0, 3)


async def test_cancelling_the_caller_mid_stream_frees_the_slot() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return slow(10)

    async with StreamGateway({"m": mock_model(max_concurrency=1)}, script) as gw:
        with anyio.move_on_after(2.5):
            async with gw.stream(ask("cut")) as stream:
                async for _ in stream:
                    pass
        started = anyio.current_time()
        await read_all(gw, ask("next"))
        stats = gw.get_stats().models["m"]
    assert gw.calls[0].cancelled
    assert gw.calls[0].ended == pytest.approx(2.5, abs=1e-3)
    assert gw.calls[1].started == pytest.approx(started, abs=1e-3)
    assert (stats.cancelled, stats.completed, stats.in_flight) == (1, 1, 0)


async def test_a_stream_closed_from_another_task_gives_its_slot_back() -> None:
    # pydantic-ai's CVE: a concurrency slot taken in one task and left held when a stream's
    # cleanup ran in another. Here the lane's task takes and gives back the slot, whoever
    # leaves the stream.
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return slow(10)

    async with StreamGateway({"m": mock_model(max_concurrency=1)}, script) as gw:
        stack = AsyncExitStack()
        stream = await stack.enter_async_context(gw.stream(ask("opened")))
        first = await stream.__anext__()
        async with anyio.create_task_group() as tg:
            tg.start_soon(stack.aclose)  # left by another task
        closed = anyio.current_time()
        await read_all(gw, ask("next"))
        stats = gw.get_stats().models["m"]
    assert first.text == "c0 "
    assert gw.calls[0].cancelled
    assert gw.calls[0].ended == pytest.approx(closed, abs=1e-3)
    assert gw.calls[1].started == pytest.approx(closed, abs=1e-3)
    assert (stats.cancelled, stats.completed, stats.in_flight) == (1, 1, 0)


async def test_a_queued_stream_times_out_at_its_deadline() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return slow(10)

    async with (
        StreamGateway({"m": mock_model(max_concurrency=1)}, script) as gw,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(read_all, gw, ask("busy"))
        await anyio.sleep(0.1)
        with pytest.raises(RequestTimeoutError):
            await read_all(gw, ask("late", timeout_s=1.0))
        assert anyio.current_time() == pytest.approx(1.1, abs=1e-3)
    assert gw.started() == ["busy"]


async def test_a_stream_books_its_estimate_and_settles_with_the_reported_usage() -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        return ["a", 1.0, "b"]

    model = mock_model(max_tokens_per_minute=10_000)
    async with StreamGateway({"m": model}, script) as gw:
        async with gw.stream(ask("r", max_tokens=500)) as stream:
            async for chunk in stream:
                if chunk.index == 0:
                    during = gw.get_stats().models["m"].remaining_tokens
        after = gw.get_stats().models["m"].remaining_tokens
    assert during is not None
    assert during <= 10_000 - 500  # the input estimate plus max_tokens is booked
    assert after == 10_000 - stream.response.usage.total_tokens  # settled: 3 + 2 tokens


# -- misuse ------------------------------------------------------------------------------------


async def test_misuse_gets_errors_that_name_the_fix() -> None:
    request = LLMRequest(model="mock", messages=[LLMMessage("user", "hi")])
    gw = MockLLMGateway()
    with pytest.raises(GatewayClosedError, match="inside `async with Gateway"):
        gw.stream(request)
    async with gw:
        stream = gw.stream(request)
        with pytest.raises(RuntimeError, match=r"async with gw\.stream"):
            stream.__aiter__()
        async with stream:
            with pytest.raises(RuntimeError, match="after `async for chunk in stream"):
                _ = stream.response
            async for _ in stream:
                pass
            with pytest.raises(RuntimeError, match="iterated once"):
                async for _ in stream:
                    pass
        assert stream.response.content
        with pytest.raises(RuntimeError, match="already entered"):
            async with stream:
                pass
    with pytest.raises(GatewayClosedError, match="closed"):
        gw.stream(request)


# -- observability -----------------------------------------------------------------------------


async def test_time_to_first_token_in_stats_and_stream_figures_in_logs(tmp_path: Path) -> None:
    def script(request: LLMRequest, attempt: int) -> list[Step]:
        if request.request_id == "bad":
            return [0.5, "x", ProviderConnectionError("dropped")]
        return [0.25 if request.request_id == "fast" else 0.75, "a", "b", "c"]

    async with StreamGateway({"m": mock_model()}, script, log_dir=str(tmp_path)) as gw:
        await read_all(gw, ask("fast"))
        await read_all(gw, ask("slow"))
        with pytest.raises(StreamInterruptedError):
            await read_all(gw, ask("bad"))
        stats = gw.get_stats().models["m"]
    assert stats.time_to_first_token_ms.p50 == pytest.approx(500, abs=1)
    assert stats.time_to_first_token_ms.p99 == pytest.approx(750, abs=1)
    assert (stats.streams, stats.completed, stats.failed) == (3, 2, 1)
    logs = tmp_path / "gateway"
    batches = [json.loads(line) for line in (logs / "batches.jsonl").read_text().splitlines()]
    assert [(b["stream"], b["chunks"]) for b in batches] == [
        ([True], [3]),
        ([True], [3]),
        ([True], [1]),
    ]
    assert batches[0]["ttft_ms"] == [pytest.approx(250, abs=1)]
    (error,) = [json.loads(line) for line in (logs / "errors.jsonl").read_text().splitlines()]
    assert (error["error"], error["stream"], error["chunks"]) == ("StreamInterruptedError", True, 1)
    assert error["ttft_ms"] == pytest.approx(500, abs=1)
    text = (logs / "batches.jsonl").read_text() + (logs / "errors.jsonl").read_text()
    assert '"a"' not in text and "dropped" not in text  # metadata only
