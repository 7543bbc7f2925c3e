"""One model's intake stream, priority queue, batcher task and in-flight requests.

The path of a request: ``submit`` takes a queue slot and sends the future into the model's
intake stream (an anyio memory object stream). The batcher task moves arrivals into the
:class:`PriorityQueue`, decides when a batch leaves (``batch_size`` waiting, or the oldest
request's class maximum wait reached, or shutdown), takes at most the free concurrency in
priority order, and starts one task per request in the gateway's task group. A request's future
is resolved exactly once, by :meth:`ModelBatcher.resolve`, whatever ends it.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus

from ._config import ModelConfig
from ._exceptions import (
    GatewayClosedError,
    ProviderError,
    QueueFullError,
    RequestCancelledError,
    RequestTimeoutError,
)
from ._future import DONE, QUEUED, RUNNING, ResponseFuture
from ._logs import BATCHES, ERRORS, JsonlLog, utc_timestamp
from ._models import LLMRequest, LLMResponse, RequestPriority
from ._queue import PriorityQueue
from ._stats import ModelStats, StatsRecorder
from .providers._base import Provider

__all__ = ["ModelBatcher"]


class _Batch:
    __slots__ = ("dispatched_at", "futures", "remaining")

    def __init__(self, futures: list[ResponseFuture], dispatched_at: float) -> None:
        self.futures = futures
        self.dispatched_at = dispatched_at
        self.remaining = len(futures)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class ModelBatcher:
    """Everything one model needs between ``submit`` and the provider."""

    def __init__(
        self,
        model_id: str,
        config: ModelConfig,
        provider: Provider,
        task_group: anyio.abc.TaskGroup,
        log: JsonlLog,
    ) -> None:
        self.model_id = model_id
        self.config = config
        self._provider = provider
        self._tg = task_group
        self._log = log
        self._send, self._receive = anyio.create_memory_object_stream[ResponseFuture](math.inf)
        # Slots bound what waits (intake + queue); released when a request leaves the queue.
        self._slots = anyio.Semaphore(config.queue_capacity)
        self._queue = PriorityQueue([config.max_wait_s(p) for p in RequestPriority], config.aging_s)
        self._running: set[ResponseFuture] = set()
        self._capacity_freed: anyio.Event | None = None
        self._batcher_done = False
        self._idle = anyio.Event()
        self.closing = False
        self.queued = 0
        self.stats = StatsRecorder()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # -- intake (caller side) -------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closing:
            raise GatewayClosedError(
                f"the gateway is shutting down; model {self.model_id!r} accepts no new requests"
            )

    def _deadline(self, request: LLMRequest, now: float) -> float:
        timeout = request.timeout_s if request.timeout_s is not None else self.config.timeout_s
        return math.inf if timeout is None else now + timeout

    def _admit(self, request: LLMRequest, now: float, deadline: float) -> ResponseFuture:
        fut = ResponseFuture(request, self, now, deadline)
        self.queued += 1
        self._send.send_nowait(fut)
        return fut

    async def submit(self, request: LLMRequest) -> ResponseFuture:
        self._check_open()
        now = anyio.current_time()
        deadline = self._deadline(request, now)
        with anyio.CancelScope(deadline=deadline) as scope:
            await self._slots.acquire()
        if scope.cancelled_caught:
            raise RequestTimeoutError(
                f"request {request.request_id!r} to model {self.model_id!r} timed out waiting "
                f"for a queue slot (queue_capacity={self.config.queue_capacity})"
            )
        if self.closing:  # shutdown began while we waited for the slot
            self._slots.release()
            self._check_open()
        return self._admit(request, anyio.current_time(), deadline)

    def submit_nowait(self, request: LLMRequest) -> ResponseFuture:
        self._check_open()
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            raise QueueFullError(
                f"model {self.model_id!r} has {self.config.queue_capacity} requests queued "
                "(its queue_capacity); await submit() to wait for room, or raise queue_capacity"
            ) from None
        now = anyio.current_time()
        return self._admit(request, now, self._deadline(request, now))

    # -- resolution (the one place a future gets its outcome) ------------------------------

    def resolve(
        self,
        fut: ResponseFuture,
        *,
        value: LLMResponse | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Give ``fut`` its outcome, once; later calls are no-ops."""
        state = fut._state
        if state is DONE:
            return
        fut._state = DONE
        fut._value = value
        fut._error = error
        if state is QUEUED:
            self.queued -= 1
            self._slots.release()
            if fut.in_queue:
                self._queue.discard(fut)
        elif fut._scope is not None:  # resolved from outside while its call runs: stop it
            fut._scope.cancel()
        stats = self.stats
        if error is None:
            stats.completed += 1
            assert value is not None
            stats.input_tokens += value.usage.input_tokens
            stats.output_tokens += value.usage.output_tokens
        elif isinstance(error, RequestCancelledError):
            stats.cancelled += 1
        else:
            stats.failed += 1
            if self._log.enabled:
                self._log_error(fut, error, "queued" if state is QUEUED else "in_flight")
        if fut._event is not None:
            fut._event.set()

    def expire(self, fut: ResponseFuture) -> None:
        """Fail ``fut`` because its deadline passed."""
        timeout = fut.deadline - fut.enqueued_at
        where = "in the queue" if fut._state is QUEUED else "in flight"
        self.resolve(
            fut,
            error=RequestTimeoutError(fut._describe(f"timed out after {timeout:g} s ({where})")),
        )

    def abort(self, reason: str) -> None:
        """Fail every queued and in-flight request now (synchronous: usable while cancelled)."""
        self.closing = True
        self._send.close()
        self._fail(self._take_queued(), reason)
        self._fail(list(self._running), reason)

    def _take_queued(self) -> list[ResponseFuture]:
        pending = self._queue.take_all()
        while True:
            try:
                pending.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return pending

    def _fail(self, futures: list[ResponseFuture], reason: str) -> None:
        for fut in futures:
            self.resolve(fut, error=GatewayClosedError(fut._describe(f"was aborted: {reason}")))

    def close(self) -> None:
        """Accept nothing more; the batcher dispatches what waits, then stops."""
        self.closing = True
        self._send.close()

    async def wait_idle(self) -> None:
        """Wait until the batcher has stopped and nothing is in flight."""
        await self._idle.wait()

    def _update_idle(self) -> None:
        if self._batcher_done and not self._running:
            self._idle.set()

    # -- the batcher task -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._batch_forever()
        finally:
            # Normally nothing is left; if the task group was cancelled, nothing may be lost.
            self._fail(self._take_queued(), "the gateway's task group was cancelled")
            self._receive.close()
            self._batcher_done = True
            self._update_idle()

    def _drain_intake(self, now: float) -> bool:
        """Move every arrival into the queue; return whether the intake is closed and empty."""
        receive, queue = self._receive, self._queue
        while True:
            try:
                queue.push(receive.receive_nowait(), now)
            except anyio.WouldBlock:
                return False
            except anyio.EndOfStream:
                return True

    async def _receive_one(self, deadline: float) -> bool:
        """Wait (until ``deadline``) for one arrival; return whether the intake closed."""
        with anyio.CancelScope(deadline=deadline):
            try:
                fut = await self._receive.receive()
            except anyio.EndOfStream:
                return True
            self._queue.push(fut, anyio.current_time())
        return False

    async def _batch_forever(self) -> None:
        queue, config = self._queue, self.config
        batch_size, max_concurrency = config.batch_size, config.max_concurrency
        closing = False
        while True:
            now = anyio.current_time()
            if not closing:
                closing = self._drain_intake(now)
            queue.promote(now)
            if not queue.live:
                if closing:
                    return
                closing = await self._receive_one(math.inf)
                continue
            free = max_concurrency - len(self._running)
            if free <= 0:
                # Nothing can leave; arrivals stay in the intake until there is room. Taking
                # off the queue only when there is capacity is what lets a late HIGH go first.
                self._capacity_freed = event = anyio.Event()
                try:
                    await event.wait()
                finally:
                    self._capacity_freed = None
                continue
            due = queue.next_due()
            if closing or queue.live >= batch_size or due <= now:
                self._dispatch(queue.take(min(batch_size, free)), now)
                await anyio.lowlevel.checkpoint()  # let the batch start; never hog the loop
                continue
            closing = await self._receive_one(min(due, queue.next_promotion()))

    def _dispatch(self, futures: list[ResponseFuture], now: float) -> None:
        batch = _Batch(futures, now)
        stats = self.stats
        stats.batches += 1
        stats.batched += len(futures)
        for fut in futures:
            fut._state = RUNNING
            fut.dispatched_at = now
            self.queued -= 1
            self._slots.release()
            self._running.add(fut)
            stats.queue_wait_ms.append(_ms(now - fut.enqueued_at))
            self._tg.start_soon(self._run_one, fut, batch)

    async def _run_one(self, fut: ResponseFuture, batch: _Batch) -> None:
        try:
            if fut._state is not RUNNING:  # cancelled, expired or aborted before it started
                return
            if fut.deadline <= anyio.current_time():
                self.expire(fut)
                return
            with anyio.CancelScope(deadline=fut.deadline) as scope:
                fut._scope = scope
                try:
                    response = await self._provider.complete(fut.request)
                except Exception as exc:
                    fut._scope = None
                    self.resolve(fut, error=exc)
                else:
                    fut._scope = None
                    done_at = anyio.current_time()
                    self.resolve(
                        fut,
                        value=attrs.evolve(
                            response,
                            latency_ms=_ms(done_at - fut.dispatched_at),
                            queue_wait_ms=_ms(fut.dispatched_at - fut.enqueued_at),
                        ),
                    )
            if scope.cancelled_caught and fut._state is not DONE:
                self.expire(fut)
        finally:
            if fut._state is not DONE:  # only if the gateway's task group was cancelled
                self._fail([fut], "the gateway's task group was cancelled")
            fut._scope = None
            self._running.discard(fut)
            self.stats.latency_ms.append(_ms(anyio.current_time() - fut.dispatched_at))
            if self._capacity_freed is not None:
                self._capacity_freed.set()
            batch.remaining -= 1
            if batch.remaining == 0 and self._log.enabled:
                self._log_batch(batch)
            self._update_idle()

    # -- logs (metadata only) -------------------------------------------------------------

    def _log_batch(self, batch: _Batch) -> None:
        outcomes = [_outcome(fut) for fut in batch.futures]
        statuses = set(outcomes)
        status = statuses.pop() if len(statuses) == 1 else "partial"
        usage = [fut._value.usage for fut in batch.futures if fut._value is not None]
        requests = [fut.request for fut in batch.futures]
        record: dict[str, Any] = {
            "timestamp": utc_timestamp(),
            "model": self.model_id,
            "model_name": self.config.model_name,
            "batch_size": len(batch.futures),
            "request_ids": [r.request_id for r in requests],
            "priorities": [r.priority.name for r in requests],
            "agent_ids": [r.agent_id for r in requests],
            "trace_ids": [r.trace_id for r in requests],
            "queue_wait_ms": [_ms(batch.dispatched_at - f.enqueued_at) for f in batch.futures],
            "latency_ms": _ms(anyio.current_time() - batch.dispatched_at),
            "status": status,
            "outcomes": outcomes,
            "input_tokens": sum(u.input_tokens for u in usage),
            "output_tokens": sum(u.output_tokens for u in usage),
        }
        self._log.write(BATCHES, record)

    def _log_error(self, fut: ResponseFuture, error: BaseException, phase: str) -> None:
        request = fut.request
        record: dict[str, Any] = {
            "timestamp": utc_timestamp(),
            "model": self.model_id,
            "request_id": request.request_id,
            "agent_id": request.agent_id,
            "trace_id": request.trace_id,
            "priority": request.priority.name,
            "phase": phase,
            "error": type(error).__name__,
        }
        if isinstance(error, ProviderError):
            record["status_code"] = error.status_code
            record["provider_request_id"] = error.provider_request_id
            record["retry_after_s"] = error.retry_after_s
        self._log.write(ERRORS, record)

    def snapshot(self) -> ModelStats:
        return self.stats.snapshot(self.queued, len(self._running))


def _outcome(fut: ResponseFuture) -> str:
    error = fut._error
    if error is None:
        return "ok"
    if isinstance(error, RequestCancelledError):
        return "cancelled"
    if isinstance(error, RequestTimeoutError):
        return "timeout"
    return "error"
