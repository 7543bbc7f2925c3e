"""Test doubles for the core tests: a provider that records what reaches it and when."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Self

import anyio
import attrs

from llm_gateway import (
    Gateway,
    GatewayConfig,
    LimitGroup,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    ModelConfig,
    ModelProvider,
    Usage,
)
from llm_gateway._lane import Lane
from llm_gateway._queue import Entry
from llm_gateway._stream import ChunkSink
from llm_gateway.providers import Provider


@attrs.define
class Call:
    request: LLMRequest
    model_id: str
    started: float
    ended: float | None = None
    cancelled: bool = False


@attrs.define
class RecordingProvider:
    """Answers after ``latency(request)`` seconds; records every call and peak concurrency."""

    model_id: str
    latency: Callable[[LLMRequest], float]
    fail: Callable[[LLMRequest], BaseException | None]
    calls: list[Call]
    usage: Callable[[LLMRequest], Usage] = lambda r: Usage(input_tokens=3, output_tokens=5)
    headers: Callable[[LLMRequest], Mapping[str, str]] = lambda r: {}
    in_flight: int = 0
    peak: int = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        call = Call(request, self.model_id, anyio.current_time())
        self.calls.append(call)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.latency(request))
        except BaseException:
            call.cancelled = True
            raise
        finally:
            self.in_flight -= 1
            call.ended = anyio.current_time()
        error = self.fail(request)
        if error is not None:
            raise error
        return LLMResponse(
            request_id=request.request_id,
            content=f"answer to {request.request_id}",
            model=self.model_id,
            usage=self.usage(request),
            rate_limit_headers=self.headers(request),
        )

    async def stream(self, request: LLMRequest, sink: ChunkSink) -> LLMResponse:
        """As :meth:`complete`, streamed: a scripted failure comes before the first chunk,
        ``"answer to "`` at half the latency, the request id at the end."""
        call = Call(request, self.model_id, anyio.current_time())
        self.calls.append(call)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        latency = self.latency(request)
        try:
            await anyio.sleep(latency / 2)
            error = self.fail(request)
            if error is not None:
                raise error
            await sink.send("answer to ")
            await anyio.sleep(latency / 2)
            await sink.send(request.request_id)
        except anyio.get_cancelled_exc_class():
            call.cancelled = True
            raise
        finally:
            self.in_flight -= 1
            call.ended = anyio.current_time()
        return LLMResponse(
            request_id=request.request_id,
            content=f"answer to {request.request_id}",
            model=self.model_id,
            usage=self.usage(request),
            rate_limit_headers=self.headers(request),
        )


@attrs.define
class BatchRecord:
    model_id: str
    at: float
    taken: list[Entry]
    waiting: list[Entry]  # still queued after the take
    free: int  # free concurrency before the take
    failures_before: list[int]  # failed attempts each taken request had already made
    owners: list[str]  # the model each taken request belonged to when taken


class RecordingGateway(Gateway):
    """A real Gateway whose models are all answered by :class:`RecordingProvider`.

    It also records every batch the lanes dispatch, with what stayed queued.
    """

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        *,
        latency: Callable[[LLMRequest], float] = lambda r: 1.0,
        fail: Callable[[LLMRequest], BaseException | None] = lambda r: None,
        log_dir: str | None = None,
        limit_groups: Mapping[str, LimitGroup] | None = None,
        usage: Callable[[LLMRequest], Usage] = lambda r: Usage(input_tokens=3, output_tokens=5),
        headers: Callable[[LLMRequest], Mapping[str, str]] = lambda r: {},
    ) -> None:
        super().__init__(
            GatewayConfig(models=models, log_dir=log_dir, limit_groups=limit_groups or {}),
            provider_factory=self._open,
        )
        self.calls: list[Call] = []
        self.providers: dict[str, RecordingProvider] = {}
        self.batches: list[BatchRecord] = []
        self.closing_started = math.inf  # when a test started shutting the gateway down
        self._latency, self._fail = latency, fail
        self._usage, self._headers = usage, headers

    def _open(self, model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        provider = RecordingProvider(
            model_id, self._latency, self._fail, self.calls, self._usage, self._headers
        )
        self.providers[model_id] = provider
        return _yielding(provider)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        async with super().__asynccontextmanager__():
            for lane in self._lanes.values():
                self._record_batches(lane)
            yield self

    def _record_batches(self, lane: Lane) -> None:
        dispatch = lane._dispatch

        def recording_dispatch(entries: list[Entry], now: float) -> None:
            waiting = lane._queue.queued()
            free = lane.config.max_concurrency - len(lane._running)
            failures = [len(e.failures) for e in entries]
            owners = [e.model_id for e in entries]
            self.batches.append(
                BatchRecord(lane.model_id, now, list(entries), waiting, free, failures, owners)
            )
            dispatch(entries, now)

        lane._dispatch = recording_dispatch  # type: ignore[method-assign]


@asynccontextmanager
async def _yielding(provider: Provider) -> AsyncGenerator[Provider]:
    yield provider


def mock_model(**overrides: Any) -> ModelConfig:
    """A mock-provider ModelConfig with the given overrides."""
    return ModelConfig(provider=ModelProvider.MOCK, model_name="mock-model", **overrides)


def ask(model: str = "m", text: str = "hello", **fields: Any) -> LLMRequest:
    """A one-message request."""
    return LLMRequest(model=model, messages=[LLMMessage("user", text)], **fields)
