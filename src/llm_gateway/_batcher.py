"""One model's intake stream, priority queue, batcher task and in-flight requests.

The path of a request: ``submit`` takes a queue slot and sends the future into the model's
intake stream (an anyio memory object stream). The batcher task moves arrivals into the
:class:`PriorityQueue`, decides when a batch leaves (``batch_size`` waiting, or the oldest
request's class maximum wait reached, or shutdown), takes at most the free concurrency in
priority order, and starts one task per request in the gateway's task group.

A failed attempt is retried, moved to a fallback model, or failed (see ``_retry.py``). A
request waiting out its backoff holds no concurrency; when the wait ends it goes back to the
front of its priority's line. A request's future is resolved exactly once, by
:meth:`ModelBatcher.resolve`, whatever ends it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
    RequestValidationError,
    RetriesExhaustedError,
)
from ._future import BACKOFF, DONE, QUEUED, RUNNING, ResponseFuture
from ._logs import BATCHES, ERRORS, JsonlLog, utc_timestamp
from ._models import LLMRequest, LLMResponse, RequestPriority
from ._queue import PriorityQueue
from ._ratelimit import Admission, RateLimiter
from ._retry import Decision, decide, describe_attempts, is_retryable, jitter
from ._stats import ModelStats, StatsRecorder, summarise
from ._tokens import estimate_tokens, token_counter
from .providers._base import Provider

__all__ = ["ModelBatcher"]


class _Batch:
    __slots__ = ("dispatched_at", "futures", "outcomes", "remaining")

    def __init__(self, futures: list[ResponseFuture], dispatched_at: float) -> None:
        self.futures = futures
        self.dispatched_at = dispatched_at
        self.remaining = len(futures)
        self.outcomes: dict[ResponseFuture, str] = {}


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
        peers: Mapping[str, ModelBatcher],
        limiters: tuple[RateLimiter, ...] = (),
    ) -> None:
        self.model_id = model_id
        self.config = config
        self._provider = provider
        self._tg = task_group
        self._log = log
        self._peers = peers  # every model's batcher, by id: where fallbacks go
        self._send, self._receive = anyio.create_memory_object_stream[ResponseFuture](math.inf)
        # Slots bound what waits (intake + queue); released when a request leaves the queue.
        self._slots = anyio.Semaphore(config.queue_capacity)
        self._queue = PriorityQueue([config.max_wait_s(p) for p in RequestPriority], config.aging_s)
        self._running: set[ResponseFuture] = set()
        self._backoff: set[ResponseFuture] = set()
        self._capacity_freed: anyio.Event | None = None
        self._wait_scope: anyio.CancelScope | None = None
        self._intake_open = True
        self._batcher_done = False
        self._idle = anyio.Event()
        self._cooldown_until = -math.inf
        self._cooldown_scanned = -math.inf
        self._consecutive_failures = 0
        self._limiters = limiters  # this model's own budget, then its group's
        self._count_tokens = token_counter(config.rate_limit.tokenizer, config.model_name)
        for limiter in limiters:
            limiter.listeners.append(self._wake)
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

    def _estimate(self, request: LLMRequest) -> int:
        """The tokens each attempt is booked for; refuses what could never fit the budget."""
        if not self._limiters:
            return 0
        policy = self.config.rate_limit
        estimate = estimate_tokens(request, self._count_tokens, policy.default_output_tokens)
        for limiter in self._limiters:
            _, tpm = limiter.limits(request.priority, policy.high_reserve)
            if estimate > tpm:
                raise RequestValidationError(
                    f"request {request.request_id!r} is estimated at {estimate} tokens, more "
                    f"than {limiter.name}'s max_tokens_per_minute allows a "
                    f"{request.priority.name} request ({tpm:g}): it could never be sent; "
                    "lower LLMRequest.max_tokens or shorten the messages"
                )
        return estimate

    def _admit(self, request: LLMRequest, now: float, deadline: float) -> ResponseFuture:
        fut = ResponseFuture(request, self, now, deadline)
        fut.fallbacks_left = self.config.fallbacks
        self.queued += 1
        self._send.send_nowait(fut)
        return fut

    async def submit(self, request: LLMRequest) -> ResponseFuture:
        self._check_open()
        estimate = self._estimate(request)
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
        fut = self._admit(request, anyio.current_time(), deadline)
        fut.estimate = estimate
        return fut

    def submit_nowait(self, request: LLMRequest) -> ResponseFuture:
        self._check_open()
        estimate = self._estimate(request)
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            raise QueueFullError(
                f"model {self.model_id!r} has {self.config.queue_capacity} requests queued "
                "(its queue_capacity); await submit() to wait for room, or raise queue_capacity"
            ) from None
        now = anyio.current_time()
        fut = self._admit(request, now, self._deadline(request, now))
        fut.estimate = estimate
        return fut

    # -- resolution (the one place a future gets its outcome) ------------------------------

    def resolve(
        self,
        fut: ResponseFuture,
        *,
        value: LLMResponse | None = None,
        error: BaseException | None = None,
        log: bool = True,
    ) -> None:
        """Give ``fut`` its outcome, once; later calls are no-ops.

        ``log=False`` when the caller has already logged the failure (a failed attempt).
        """
        state = fut._state
        if state is DONE:
            return
        fut._state = DONE
        fut._value = value
        fut._error = error
        if state is QUEUED:
            self._leave_queue(fut)
            if fut.in_queue:
                self._queue.discard(fut)
        elif fut._scope is not None:  # its call or backoff is under way: stop it
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
            if log and self._log.enabled:
                self._log_failure(fut, error, _PHASES[state], "fail")
        if fut._event is not None:
            fut._event.set()

    def _leave_queue(self, fut: ResponseFuture) -> None:
        self.queued -= 1
        if fut.holds_slot:
            fut.holds_slot = False
            self._slots.release()

    def expire(self, fut: ResponseFuture) -> None:
        """Fail ``fut`` because its deadline passed."""
        timeout = fut.deadline - fut.enqueued_at
        where = {QUEUED: "in the queue", BACKOFF: "waiting to retry"}.get(fut._state, "in flight")
        what = f"timed out after {timeout:g} s ({where})"
        if fut.failures:
            what += f" after {_attempts(len(fut.failures))} that failed: "
            what += describe_attempts(fut.failures)
        self.resolve(fut, error=RequestTimeoutError(fut._describe(what)))

    def abort(self, reason: str) -> None:
        """Fail every request this model holds, now (synchronous: usable while cancelled)."""
        self.closing = True
        self._send.close()
        self._fail(self._take_queued(), reason)
        self._fail([*self._running, *self._backoff], reason)

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
        if self._batcher_done and not self._running and not self._backoff:
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
            self._wake_peers_if_closing()  # they may be waiting for this model to go quiet
            self._update_idle()

    def _arrive(self, fut: ResponseFuture, now: float) -> None:
        self._queue.push(fut, now)
        if now < self._cooldown_until and fut.deadline < self._cooldown_until:
            self._fall_back_from_cooldown(fut)

    def _drain_intake(self, now: float) -> None:
        """Move every arrival into the queue."""
        while self._intake_open:
            try:
                self._arrive(self._receive.receive_nowait(), now)
            except anyio.WouldBlock:
                return
            except anyio.EndOfStream:
                self._intake_open = False

    async def _wait(self, deadline: float) -> None:
        """Wait until an arrival, a :meth:`_wake`, or ``deadline``."""
        with anyio.CancelScope(deadline=deadline) as scope:
            self._wait_scope = scope
            try:
                if self._intake_open:
                    self._arrive(await self._receive.receive(), anyio.current_time())
                else:
                    await anyio.sleep_forever()
            except anyio.EndOfStream:
                self._intake_open = False
            finally:
                self._wait_scope = None

    def _quiet(self) -> bool:
        """Nothing queued, in flight or waiting to retry: nothing that could still need a model."""
        return not self.queued and not self._running and not self._backoff

    def _wake_peers_if_closing(self) -> None:
        """While shutting down, let every batcher re-check whether all models are quiet."""
        if not self._intake_open:
            for peer in self._peers.values():
                peer._wake()

    def _wake(self) -> None:
        """Make the batcher look at its queue again (a retry or a fallback arrived)."""
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def _batch_forever(self) -> None:
        queue, config = self._queue, self.config
        batch_size, max_concurrency = config.batch_size, config.max_concurrency
        while True:
            now = anyio.current_time()
            self._drain_intake(now)
            queue.promote(now)
            closing = not self._intake_open
            if not queue.live:
                # A request in flight may yet come back for a retry, or move here from another
                # model: stay until no model has anything left that could.
                if closing and all(peer._quiet() for peer in self._peers.values()):
                    return
                await self._wait(math.inf)
                continue
            if now < self._cooldown_until:
                if self._cooldown_scanned != self._cooldown_until:
                    self._cooldown_scanned = self._cooldown_until
                    for fut in queue.queued():
                        if fut.deadline < self._cooldown_until:
                            self._fall_back_from_cooldown(fut)
                await self._wait(self._cooldown_until)
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
            if closing or queue.live >= batch_size or queue.next_due() <= now:
                n = min(batch_size, free)
                taken = self._take_within_budget(n, now) if self._limiters else queue.take(n)
                if not taken:  # the best waiting request does not fit the budget yet
                    await self._throttle(now)
                    continue
                self._dispatch(taken, now)
                await anyio.lowlevel.checkpoint()  # let the batch start; never hog the loop
                continue
            await self._wait(min(queue.next_due(), queue.next_promotion()))

    def _take_within_budget(self, n: int, now: float) -> list[ResponseFuture]:
        """Take up to ``n`` in priority order while each fits every budget (head of line)."""
        queue, limiters = self._queue, self._limiters
        reserve = self.config.rate_limit.high_reserve
        taken: list[ResponseFuture] = []
        while len(taken) < n and (head := queue.peek()) is not None:
            priority = head.request.priority
            if any(lim.ready_at(head.estimate, priority, reserve, now) > now for lim in limiters):
                break
            head.admission = admission = Admission(now, head.estimate, limiters)
            for limiter in limiters:
                limiter.admit(admission)
            taken.extend(queue.take(1))
        return taken

    async def _throttle(self, now: float) -> None:
        """Wait until the head of the queue fits the budget (or something changes)."""
        head = self._queue.peek()
        assert head is not None
        reserve = self.config.rate_limit.high_reserve
        ready = max(
            lim.ready_at(head.estimate, head.request.priority, reserve, now)
            for lim in self._limiters
        )
        await self._wait(ready)
        waited = anyio.current_time() - now
        self.stats.throttled_s += waited
        for limiter in self._limiters:
            limiter.throttled_s += waited

    def _dispatch(self, futures: list[ResponseFuture], now: float) -> None:
        batch = _Batch(futures, now)
        stats = self.stats
        stats.batches += 1
        stats.batched += len(futures)
        for fut in futures:
            fut._state = RUNNING
            fut.dispatched_at = now
            self._leave_queue(fut)
            self._running.add(fut)
            stats.queue_wait_ms.append(_ms(now - fut.enqueued_at))
            self._tg.start_soon(self._run_one, fut, batch)

    # -- one attempt ------------------------------------------------------------------------

    async def _run_one(self, fut: ResponseFuture, batch: _Batch) -> None:
        decision: Decision | None = None
        try:
            if fut._state is not RUNNING:  # resolved before its task started
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
                    decision = self._after_failure(fut, exc)
                else:
                    fut._scope = None
                    self._consecutive_failures = 0
                    done_at = anyio.current_time()
                    if self._limiters:
                        self._settle_books(fut, response.rate_limit_headers, done_at, response)
                    self.resolve(
                        fut,
                        value=attrs.evolve(
                            response,
                            latency_ms=_ms(done_at - fut.dispatched_at),
                            queue_wait_ms=_ms(fut.dispatched_at - fut.enqueued_at),
                        ),
                    )
            if scope.cancelled_caught and fut._state is RUNNING:
                decision = None
                self.expire(fut)
        except BaseException:
            # Only the gateway's task group being cancelled gets here: fail what we hold.
            if fut._state is RUNNING:
                self._fail([fut], "the gateway's task group was cancelled")
            raise
        finally:
            fut._scope = None
            self._running.discard(fut)
            self.stats.latency_ms.append(_ms(anyio.current_time() - fut.dispatched_at))
            if self._capacity_freed is not None:
                self._capacity_freed.set()
            self._wake_peers_if_closing()  # a batcher may be waiting for the last request
            retried = decision is not None and decision.action != "fail"
            batch.outcomes[fut] = decision.action if decision and retried else _outcome(fut)
            batch.remaining -= 1
            if batch.remaining == 0 and self._log.enabled:
                self._log_batch(batch)
            self._update_idle()
        if decision is not None and fut._state is RUNNING:
            if decision.action == "retry":
                await self._back_off(fut, decision.delay_s)
            else:
                self._fall_back(fut)

    def _after_failure(self, fut: ResponseFuture, error: Exception) -> Decision:
        """Count a failed attempt and decide what follows; fail the request if that is it."""
        now = anyio.current_time()
        fut.failures.append(error)
        config = self.config
        if isinstance(error, ProviderError):
            if error.status_code == 429:
                self.stats.rate_limited += 1
                for limiter in self._limiters:
                    limiter.rate_limited += 1
            if self._limiters:
                self._settle_books(fut, error.headers, now, None)
        guided = isinstance(error, ProviderError) and error.retry_after_s is not None
        if is_retryable(error, config.retry) and not guided:
            # A failure with a retry-after says when to come back (a 429 pauses the model for
            # exactly that, below); the breaker is for failures that say nothing.
            self._consecutive_failures += 1
            if self._consecutive_failures >= config.cooldown.failure_threshold:
                self._consecutive_failures = 0
                self._start_cooldown(now + config.cooldown.cooldown_s)
        if isinstance(error, ProviderError) and error.status_code == 429 and error.retry_after_s:
            # The whole model is limited; but never paused longer than a request would wait.
            pause = min(error.retry_after_s, config.retry.max_retry_after_s)
            self._start_cooldown(now + pause)
        attempt = len(fut.failures) - fut.model_start  # attempts on this model
        decision = decide(
            error,
            attempt,
            config.retry,
            time_left_s=fut.deadline - now,
            has_fallback=bool(fut.fallbacks_left),
            jitter=jitter(fut.request.request_id, len(fut.failures)),
        )
        if decision.action == "retry":
            self.stats.retries += 1
        if self._log.enabled:
            self._log_failure(fut, error, "in_flight", decision.action)
        if decision.action == "fail":
            self.resolve(fut, error=self._final_error(fut, error, decision.reason), log=False)
        return decision

    def _settle_books(
        self,
        fut: ResponseFuture,
        headers: Mapping[str, str],
        now: float,
        response: LLMResponse | None,
    ) -> None:
        """Book what the attempt really used, and what the provider says remains."""
        admission, fut.admission = fut.admission, None
        if admission is not None:
            if response is not None:
                admission.reconcile(response.usage.total_tokens, now)
            else:  # an error answer: the provider generated nothing
                admission.reconcile(0, now)
        for limiter in self._limiters:
            limiter.observe(headers, now)

    def _final_error(self, fut: ResponseFuture, error: BaseException, reason: str) -> BaseException:
        if not is_retryable(error, self.config.retry):
            # Retrying cannot help: the caller gets the provider's own error (its class and
            # status say what to fix), with any earlier attempts noted.
            if len(fut.failures) > 1:
                error.add_note(f"earlier: {describe_attempts(fut.failures[:-1])}")
            return error
        final = RetriesExhaustedError(
            fut._describe(
                f"failed after {_attempts(len(fut.failures))} ({reason}): "
                f"{describe_attempts(fut.failures)}; the last said: {error}"
            ),
            fut.failures,
        )
        final.__cause__ = error
        return final

    def _start_cooldown(self, until: float) -> None:
        if until > self._cooldown_until:
            if self._cooldown_until < anyio.current_time():
                self.stats.cooldowns += 1
            self._cooldown_until = until
            self._wake()

    async def _back_off(self, fut: ResponseFuture, delay_s: float) -> None:
        fut._state = BACKOFF
        self._backoff.add(fut)
        try:
            with anyio.CancelScope() as scope:
                fut._scope = scope  # resolve() (cancel, abort) ends the wait early
                await anyio.sleep(delay_s)
            fut._scope = None
            if fut._state is BACKOFF:
                self._requeue(fut)
        except BaseException:
            if fut._state is BACKOFF:
                self._fail([fut], "the gateway's task group was cancelled")
            raise
        finally:
            fut._scope = None
            self._backoff.discard(fut)
            self._wake_peers_if_closing()  # a batcher may be waiting for the last backoff
            self._update_idle()

    def _requeue(self, fut: ResponseFuture) -> None:
        """Put ``fut`` back at the front of its line (a retry, or adopted from another model)."""
        fut._state = QUEUED
        self.queued += 1
        self._queue.push_front(fut)
        # Checked as for a new arrival: the cooldown's one scan of the queue may be over.
        until = self._cooldown_until
        if anyio.current_time() < until and fut.deadline < until:
            self._fall_back_from_cooldown(fut)
        self._wake()

    def _fall_back(self, fut: ResponseFuture) -> None:
        """Move ``fut`` to the next fallback model that still runs, or fail it."""
        while fut.fallbacks_left:
            target_id, fut.fallbacks_left = fut.fallbacks_left[0], fut.fallbacks_left[1:]
            target = self._peers.get(target_id)
            if target is not None and not target._batcher_done:
                self.stats.fallbacks += 1
                fut._batcher = target
                fut.model_start = len(fut.failures)
                target._requeue(fut)
                return
        last = fut.failures[-1] if fut.failures else None
        if last is None:
            self.resolve(fut, error=RequestTimeoutError(fut._describe("cannot meet its deadline")))
        else:
            self.resolve(fut, error=self._final_error(fut, last, "no fallback left"), log=False)

    def _fall_back_from_cooldown(self, fut: ResponseFuture) -> None:
        """``fut`` would pass its deadline waiting for this model's cooldown: move it on."""
        if fut._state is not QUEUED or not fut.fallbacks_left:
            return
        self._queue.remove(fut)
        self._leave_queue(fut)
        fut._state = RUNNING  # off the queue, as if taken: _fall_back moves or fails it
        if self._log.enabled:
            self._log_failure(fut, None, "queued", "fallback")
        self._fall_back(fut)

    # -- logs (metadata only) -------------------------------------------------------------

    def _log_batch(self, batch: _Batch) -> None:
        outcomes = [batch.outcomes[fut] for fut in batch.futures]
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

    def _log_failure(
        self, fut: ResponseFuture, error: BaseException | None, phase: str, decision: str
    ) -> None:
        request = fut.request
        record: dict[str, Any] = {
            "timestamp": utc_timestamp(),
            "model": self.model_id,
            "request_id": request.request_id,
            "agent_id": request.agent_id,
            "trace_id": request.trace_id,
            "priority": request.priority.name,
            "phase": phase,
            "attempt": len(fut.failures),
            "error": type(error).__name__ if error is not None else "CooldownPastDeadline",
            "decision": decision,
        }
        if isinstance(error, ProviderError):
            record["status_code"] = error.status_code
            record["provider_request_id"] = error.provider_request_id
            record["retry_after_s"] = error.retry_after_s
        self._log.write(ERRORS, record)

    def snapshot(self, now: float) -> ModelStats:
        remaining = max(0.0, self._cooldown_until - now)
        requests, tokens = math.inf, math.inf
        for limiter in self._limiters:
            left_r, left_t = limiter.remaining(now)
            requests, tokens = min(requests, left_r), min(tokens, left_t)
        return summarise(
            [self.stats],
            queued=self.queued,
            in_flight=len(self._running),
            retrying=len(self._backoff),
            cooldown_remaining_s=remaining,
            remaining_requests=None if requests == math.inf else int(requests),
            remaining_tokens=None if tokens == math.inf else int(tokens),
        )


_PHASES = {QUEUED: "queued", RUNNING: "in_flight", BACKOFF: "backoff"}


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _outcome(fut: ResponseFuture) -> str:
    error = fut._error
    if fut._state is not DONE:
        return "pending"
    if error is None:
        return "ok"
    if isinstance(error, RequestCancelledError):
        return "cancelled"
    if isinstance(error, RequestTimeoutError):
        return "timeout"
    return "error"
