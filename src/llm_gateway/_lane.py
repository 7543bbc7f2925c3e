"""One model's lane: its queue, its dispatcher, its attempts. The lane alone writes its requests.

The path of a request through a lane: :meth:`Lane.submit` checks it, takes a queue slot and
pushes its entry into the :class:`~llm_gateway._queue.PriorityQueue`. The dispatcher task
(:meth:`Lane.run`) decides when a batch leaves (at once while the model has free capacity and
budget, or, with ``batch_fill = "wait"``, when ``batch_size`` wait or the oldest reaches its
class's maximum wait), takes at most the free concurrency in priority order within the
rate-limit budget, and hands each entry to an attempt task (an idle one, or a new one). An
attempt is one provider call (``_attempt.py``) under its task's cancel scope, and its
request's deadline is kept by the lane's watch (:meth:`Lane._expire_overdue`); its outcome
comes back here, where :func:`~llm_gateway._retry.decide` chooses: answer, retry after a
backoff (holding no capacity, then back to the front of its line), fallback (handed to the
gateway, which gives the entry to another lane), or fail.

Every entry ends in :meth:`Lane._finish`, exactly once, whatever ends it: the answer, an error,
``cancel()``, the deadline, ``abort()``. Observers hear of it afterwards and cannot undo it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._attempt import Answered, Failed, call
from ._exceptions import (
    GatewayClosedError,
    ProviderError,
    QueueFullError,
    RequestCancelledError,
    RequestTimeoutError,
    RequestValidationError,
    RetriesExhaustedError,
)
from ._future import ResponseFuture
from ._logs import outcome_name
from ._models import LLMResponse, RequestPriority
from ._observe import (
    AttemptFailed,
    BatchFinished,
    CooldownStarted,
    Dispatched,
    FellBack,
    Finished,
    Observers,
    Queued,
    RateLimited,
    Throttled,
)
from ._queue import BACKOFF, DONE, QUEUED, RUNNING, Entry, PriorityQueue
from ._retry import Breaker, Decision, decide, describe_attempts, is_retryable, jitter
from ._stats import LiveFigures
from ._stream import call_stream
from ._tokens import estimate_tokens, token_counter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._batch_lane import BatchLane
    from ._config import ModelConfig
    from ._models import LLMRequest
    from ._ratelimit import Budget
    from ._stream import StreamSink
    from .providers._base import Provider

__all__ = ["Lane", "Router"]

_PRIORITIES = tuple(RequestPriority)
_PHASES = {QUEUED: "queued", RUNNING: "in_flight", BACKOFF: "backoff"}


class Router(Protocol):
    """What a lane asks of the gateway: where fallbacks go, and when everything is quiet."""

    def fall_back(self, entry: Entry) -> str | None:
        """Give ``entry`` to its next fallback model that takes it; return its id, or None."""

    def lane_changed(self) -> None:
        """A lane may have become quiet (nothing queued, in flight or waiting to retry)."""


class _Batch:
    """The entries that left the queue together, until each one's attempt has ended."""

    __slots__ = ("dispatched_at", "entries", "outcomes", "remaining")

    def __init__(self, entries: list[Entry], dispatched_at: float) -> None:
        self.entries = entries
        self.dispatched_at = dispatched_at
        self.remaining = len(entries)
        self.outcomes: dict[Entry, str] = {}


class _Handoff:
    """An idle attempt task's mailbox: the dispatcher puts the next attempt here and wakes it."""

    __slots__ = ("batch", "entry", "given")

    def __init__(self) -> None:
        self.given = anyio.Event()
        self.entry: Entry | None = None
        self.batch: _Batch | None = None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


class Lane:
    """Everything one model needs between ``submit`` and the provider.

    Args:
        model_id: The configured model id.
        config: The model's configuration.
        provider: The opened provider.
        budget: The rate-limit books the model draws on.
        observers: Where events go.
        router: The gateway (fallbacks, quiet).
        lanes: Every lane by model id (the futures' way back to their lane).
    """

    def __init__(
        self,
        model_id: str,
        config: ModelConfig,
        provider: Provider,
        budget: Budget,
        observers: Observers,
        router: Router,
        lanes: Mapping[str, Lane],
    ) -> None:
        self.model_id = model_id
        self.config = config
        self._provider = provider
        self._budget = budget
        self._observers = observers
        self._router = router
        self._lanes = lanes
        # Slots bound what waits in the queue; released when an entry first leaves it.
        self._slots = anyio.Semaphore(config.queue_capacity)
        self._queue = PriorityQueue([config.max_wait_s(p) for p in _PRIORITIES], config.aging_s)
        self._running: set[Entry] = set()
        self._backoff: set[Entry] = set()
        self._breaker = Breaker(config.cooldown, config.retry)
        self._cooldown_scanned = -math.inf
        self._gathering_since = math.inf  # when freed slots began waiting for a fuller batch
        self._eager = config.batch_fill == "eager"
        self._wakeup: anyio.Event | None = None
        self._watch_wakeup: anyio.Event | None = None  # wakes _expire_overdue
        self._watch_until = math.inf  # when _expire_overdue wakes at the latest
        self._tg: anyio.abc.TaskGroup | None = None
        # Attempt tasks that finished their attempt and wait for the next one: starting a task
        # per attempt costs more than handing an attempt to a task that is already there.
        self._idle: list[_Handoff] = []
        self._count_tokens: Callable[[str], int] | None = (
            token_counter(config.rate_limit.tokenizer, config.model_name)
            if budget.limited
            else None
        )
        budget.add_listener(self._wake)
        self.closing = False  # accepts no new requests; dispatches what waits without delay
        self.aborted = False  # fails everything it holds or is given
        self._batches: BatchLane | None = None  # the batch-API lane (_batch_lane.py), if any

    def use_batch_api(self, batches: BatchLane) -> None:
        """Send the LOW requests ``batches`` takes through the provider's batch API."""
        self._batches = batches

    # -- figures (derived from the structures that hold the entries) ----------------------

    @property
    def quiet(self) -> bool:
        """Nothing queued, in flight or waiting to retry."""
        return (
            not self._queue.live
            and not self._running
            and not self._backoff
            and (self._batches is None or self._batches.quiet)
        )

    def live(self, now: float) -> LiveFigures:
        requests, tokens = self._budget.remaining(now)
        return LiveFigures(
            queued=self._queue.live,
            in_flight=len(self._running),
            retrying=len(self._backoff),
            cooldown_remaining_s=max(0.0, self._breaker.until - now),
            remaining_requests=requests,
            remaining_tokens=tokens,
            batch_pending=0 if self._batches is None else self._batches.pending,
        )

    # -- intake (the caller's task) -------------------------------------------------------

    def _check_open(self) -> None:
        if self.closing:
            raise GatewayClosedError(
                f"the gateway is shutting down; model {self.model_id!r} accepts no new requests"
            )

    def _estimate(self, request: LLMRequest) -> int:
        """The tokens each attempt is booked for; refuses what could never fit the budget."""
        if self._count_tokens is None:
            return 0
        policy = self.config.rate_limit
        estimate = estimate_tokens(request, self._count_tokens, policy.default_output_tokens)
        problem = self._budget.too_large(estimate, request.priority)
        if problem is not None:
            raise RequestValidationError(
                f"request {request.request_id!r} is estimated at {estimate} tokens: {problem}; "
                "it could never be sent: lower LLMRequest.max_tokens or shorten the messages"
            )
        return estimate

    def _deadline(self, request: LLMRequest, now: float) -> float:
        timeout = request.timeout_s if request.timeout_s is not None else self.config.timeout_s
        return math.inf if timeout is None else now + timeout

    def _accept(
        self,
        request: LLMRequest,
        estimate: int,
        now: float,
        deadline: float,
        stream: StreamSink | None = None,
    ) -> Entry:
        future = ResponseFuture(self._lanes)
        entry = Entry(
            request, future, self.model_id, now, deadline, estimate, self.config.fallbacks
        )
        entry.stream = stream
        future._entry = entry
        if self._batches is not None and stream is None and self._batches.takes(request):
            self._batches.add(entry, now)
            self._observers.emit(Queued(self.model_id, entry, now, batch_api=True))
            return entry
        self._queue.push(entry, now)
        self._observers.emit(Queued(self.model_id, entry, now))  # in the caller's task
        self._arrived(entry, now)
        self._wake()
        return entry

    async def submit(
        self, request: LLMRequest, *, stream: StreamSink | None = None
    ) -> ResponseFuture:
        """Queue ``request``; wait for a queue slot while the queue is full.

        ``stream``: the request is streamed; its attempts feed this sink (``_stream.py``).
        """
        self._check_open()
        estimate = self._estimate(request)
        now = anyio.current_time()
        deadline = self._deadline(request, now)
        # Cancelled callers leave here, before a slot is taken: from the slot to the queue
        # nothing may be interrupted, or the slot would be lost.
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.CancelScope(deadline=deadline) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:
                raise RequestTimeoutError(
                    f"request {request.request_id!r} to model {self.model_id!r} timed out "
                    f"waiting for a queue slot (queue_capacity={self.config.queue_capacity})"
                ) from None
            if self.closing:  # shutdown began while we waited for the slot
                self._slots.release()
                self._check_open()
            now = anyio.current_time()
        future = self._accept(request, estimate, now, deadline, stream).future
        await anyio.lowlevel.cancel_shielded_checkpoint()
        return future

    def submit_nowait(self, request: LLMRequest) -> ResponseFuture:
        """Queue ``request`` now, or raise :class:`QueueFullError`."""
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
        return self._accept(request, estimate, now, self._deadline(request, now)).future

    # -- resolution: the one place an entry gets its outcome ------------------------------

    def _finish(
        self,
        entry: Entry,
        response: LLMResponse | None = None,
        error: BaseException | None = None,
        *,
        reported: bool = False,
    ) -> None:
        state = entry.state
        if state is DONE:
            return
        entry.state = DONE
        if state is QUEUED:
            self._leave_queue(entry)
        elif entry.scope is not None:  # its call or backoff is under way: stop it
            entry.scope.cancel()
        entry.future._resolve(response, error)
        if entry.stream is not None:
            entry.stream.close()  # the caller's iteration ends after the buffered chunks
        if self._batches is not None:
            self._batches.forget(entry)
        now = anyio.current_time()
        self._observers.emit(
            Finished(self.model_id, entry, response, error, _PHASES[state], now, reported)
        )
        if state is QUEUED:
            self._router.lane_changed()

    def _leave_queue(self, entry: Entry) -> None:
        if entry.in_queue:
            self._queue.discard(entry)
        if entry.holds_slot:
            entry.holds_slot = False
            self._slots.release()

    def cancel(self, entry: Entry) -> None:
        """Cancel ``entry``'s request wherever it is (its future raises the error)."""
        self._finish(entry, error=RequestCancelledError(entry.describe("was cancelled")))

    def expire(self, entry: Entry) -> None:
        """Fail ``entry`` because its deadline passed."""
        timeout = entry.deadline - entry.enqueued_at
        where = {QUEUED: "in the queue", BACKOFF: "waiting to retry"}.get(entry.state, "in flight")
        what = f"timed out after {timeout:g} s ({where})"
        if entry.failures:
            what += f" after {_attempts(len(entry.failures))} that failed: "
            what += describe_attempts(entry.failures)
        error: BaseException = RequestTimeoutError(entry.describe(what))
        if entry.stream is not None and entry.stream.committed:
            error = entry.stream.interrupted(error, f"the stream of {entry.request.request_id!r}")
        self._finish(entry, error=error)

    def close(self) -> None:
        """Accept nothing more; dispatch what waits without waiting for batches to fill."""
        self.closing = True
        self._wake()
        if self._batches is not None:
            self._batches.wake()

    def abort(self, reason: str) -> None:
        """Fail every request this lane holds, now (synchronous: usable while cancelled)."""
        self.closing = self.aborted = True
        if self._batches is not None:
            self._batches.abort(reason)
        for entry in [*self._queue.take_all(), *self._running, *self._backoff]:
            self._finish(entry, error=GatewayClosedError(entry.describe(f"was aborted: {reason}")))
        self._wake()

    # -- the dispatcher task ----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until cancelled (the gateway cancels its lanes once all are quiet)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self._batches is not None:
                    await tg.start(self._batches.run)
                tg.start_soon(self._expire_overdue)
                task_status.started()
                await self._dispatch_forever()
        finally:
            # Only an abnormal end leaves anything here; nothing may be left unresolved.
            self.abort("the gateway's task group was cancelled")

    def _wake(self) -> None:
        """Make the dispatcher look at its queue again."""
        if self._wakeup is not None:
            self._wakeup.set()

    async def _sleep(self, deadline: float) -> None:
        """Wait until :meth:`_wake` or ``deadline``."""
        self._wakeup = event = anyio.Event()
        try:
            if deadline == math.inf:
                await event.wait()
            else:
                with anyio.CancelScope(deadline=deadline):
                    await event.wait()
        finally:
            self._wakeup = None

    async def _dispatch_forever(self) -> None:
        queue, config, budget = self._queue, self.config, self._budget
        batch_size, max_concurrency = config.batch_size, config.max_concurrency
        gather_s = config.max_wait_s(RequestPriority.NORMAL)
        while True:
            now = anyio.current_time()
            queue.promote(now)
            if not queue.live:
                await self._sleep(math.inf)
                continue
            pause = self._breaker.until
            if now < pause:
                if self._cooldown_scanned != pause:
                    self._cooldown_scanned = pause
                    for entry in queue.queued():
                        self._arrived(entry, now)
                await self._sleep(pause)
                continue
            free = max_concurrency - len(self._running)
            if free <= 0:
                # Nothing leaves while the model is saturated: requests gather in the queue, and
                # a HIGH request that arrives meanwhile still goes first.
                await self._sleep(math.inf)
                continue
            if not (
                self._eager or self.closing or queue.live >= batch_size or queue.next_due() <= now
            ):
                await self._sleep(min(queue.next_due(), queue.next_promotion()))
                continue
            if self._eager and self._gather(free, now):
                await self._sleep(self._gathering_since + gather_s)
                continue
            self._gathering_since = math.inf
            n = min(batch_size, free)
            if budget.shared:  # the books live in Redis: one round trip for the whole batch
                taken = await self._take_shared(n, now)
                if not taken and queue.peek() is None:  # emptied meanwhile (cancel, abort)
                    continue
            else:
                taken = self._take_within_budget(n, now) if budget.limited else queue.take(n)
            if not taken:  # the best waiting request does not fit the budget yet
                await self._throttle(now)
                continue
            self._dispatch(taken, now)
            await anyio.lowlevel.checkpoint()  # let the batch start; never hog the loop

    def _capacity_freed(self) -> None:
        """An attempt ended: wake the dispatcher, unless it gathers a batch that still cannot
        leave (waking it would only have it find that out and sleep again).

        The test is :meth:`_gather`'s for a freed slot: the batch leaves once the free slots
        hold every waiting request or a whole batch, or a request due for promotion may have
        become HIGH. Everything else that ends gathering (an arrival, closing, the gathering's
        time limit) wakes it by itself.
        """
        if self._gathering_since != math.inf and not self.closing:
            queue, config = self._queue, self.config
            free = config.max_concurrency - len(self._running)
            if (
                free < min(config.batch_size, config.max_concurrency, queue.live)
                and queue.next_promotion() > anyio.current_time()
            ):
                return
        self._wake()

    def _gather(self, free: int, now: float) -> bool:
        """Whether a backlogged model holds its free slots a moment, to fill a batch.

        Work-conserving while the waiting requests fit the free capacity; once more wait than
        fit (the model is saturated), slots freed one at a time gather until a whole batch
        can leave, for at most a NORMAL request's maximum wait. A HIGH request at the head of
        the queue never waits for that.
        """
        queue = self._queue
        whole = min(self.config.batch_size, self.config.max_concurrency)
        if self.closing or queue.live <= free or free >= whole:
            return False
        head = queue.peek()
        if head is None or head.rank == 0:
            return False
        if self._gathering_since == math.inf:
            self._gathering_since = now
        return now < self._gathering_since + self.config.max_wait_s(RequestPriority.NORMAL)

    def _take_within_budget(self, n: int, now: float) -> list[Entry]:
        """Take up to ``n`` in priority order while each fits the budget (head of line)."""
        queue, budget = self._queue, self._budget
        taken: list[Entry] = []
        while len(taken) < n and (head := queue.peek()) is not None:
            if budget.ready_at(head.estimate, head.request.priority, now) > now:
                break
            head.admission = budget.admit(head.estimate, now)
            taken.extend(queue.take(1))
        return taken

    async def _take_shared(self, n: int, now: float) -> list[Entry]:
        """:meth:`_take_within_budget` on shared books: one decision for up to ``n`` entries.

        The queue may change while the decision travels (a cancel, a HIGH arrival): only
        entries still at the head in the same order are taken; the other admissions go back.
        """
        queue = self._queue
        wanted = queue.peek_many(n)
        admissions = await self._budget.admit_many(
            [(e.estimate, e.request.priority, e.rank) for e in wanted], now
        )
        taken: list[Entry] = []
        for entry, admission in zip(wanted, admissions, strict=False):
            if queue.peek() is not entry:
                break
            entry.admission = admission
            taken.extend(queue.take(1))
        self._budget.release(admissions[len(taken) :])
        return taken

    async def _throttle(self, now: float) -> None:
        """Wait until the head of the queue fits the budget (or something changes)."""
        head = self._queue.peek()
        assert head is not None
        await self._sleep(self._budget.ready_at(head.estimate, head.request.priority, now))
        waited = anyio.current_time() - now
        self._budget.record_throttled(waited)
        self._observers.emit(Throttled(self.model_id, waited))

    def _dispatch(self, entries: list[Entry], now: float) -> None:
        batch = _Batch(entries, now)
        assert self._tg is not None
        for entry in entries:
            entry.state = RUNNING
            entry.dispatched_at = now
            if entry.holds_slot:
                entry.holds_slot = False
                self._slots.release()
            self._running.add(entry)
            if self._idle:
                handoff = self._idle.pop()
                handoff.entry, handoff.batch = entry, batch
                handoff.given.set()
            else:
                self._tg.start_soon(self._attempt_task, entry, batch)
            if entry.deadline < self._watch_until and self._watch_wakeup is not None:
                self._watch_wakeup.set()  # the earliest deadline in flight: watch it
        self._observers.emit(Dispatched(self.model_id, entries, now))

    async def _attempt_task(self, entry: Entry | None, batch: _Batch | None) -> None:
        """Run ``entry``'s attempt, then, idle, the attempts the dispatcher hands over.

        The attempts share one cancel scope, not one each: a cancel scope around an SDK call
        costs the call 10-20 us. Stopping an attempt early (``cancel()``, its deadline,
        ``abort()``: each resolves the request first) cancels the shared scope, which ends that
        attempt; the task goes on under a new one. A task ends when the lane's task group is
        cancelled, or when it would be idle beside ``max_concurrency`` others (after a burst of
        retries, whose backoffs hold tasks).
        """
        while True:
            with anyio.CancelScope() as scope:
                while True:
                    if entry is None or batch is None:
                        if len(self._idle) >= self.config.max_concurrency:
                            return
                        handoff = _Handoff()
                        self._idle.append(handoff)
                        try:
                            await handoff.given.wait()
                        finally:
                            # Handed an attempt even if stopped meanwhile: a stale stop of the
                            # shared scope (asyncio delivers it late) leaves it to run under
                            # the next scope; a cancelled task group's abort() resolves it.
                            entry, batch = handoff.entry, handoff.batch
                            if entry is None:
                                self._idle.remove(handoff)
                        assert entry is not None
                        assert batch is not None
                    try:
                        await self._attempt(entry, batch, scope)
                    finally:
                        entry = batch = None  # an idle task holds nothing of what it served
            # An attempt was stopped early (its request is resolved): the lane may be quiet.
            self._router.lane_changed()

    async def _expire_overdue(self) -> None:
        """Fail each request in flight when its deadline passes, until cancelled.

        An attempt runs under its task's shared cancel scope (see :meth:`_attempt_task`), which
        has no deadline: one watch per lane, waking at the earliest deadline in flight, is
        cheaper than a deadline per attempt. ``expire()`` resolves the request and stops its
        call. A stream's attempt keeps a deadline of its own (``_stream.call_stream``).
        """
        while True:
            self._watch_until = until = self._expire_now(anyio.current_time())
            self._watch_wakeup = event = anyio.Event()
            with anyio.CancelScope(deadline=until):
                await event.wait()

    def _expire_now(self, now: float) -> float:
        """Expire the requests in flight past their deadline; return the next deadline."""
        until = math.inf
        for entry in list(self._running):
            if entry.state is not RUNNING or entry.stream is not None:
                continue
            if entry.deadline <= now:
                self.expire(entry)
            else:
                until = min(until, entry.deadline)
        return until

    # -- one attempt, and what follows it ---------------------------------------------------

    async def _attempt(self, entry: Entry, batch: _Batch, task_scope: anyio.CancelScope) -> None:
        """One attempt of ``entry``, in ``task_scope`` (which ends it if cancelled: see
        :meth:`_attempt_task`), and what follows it: the answer, a retry, a fallback."""
        decision: Decision | None = None
        try:
            if entry.state is RUNNING:  # else resolved before its task started
                if entry.deadline <= anyio.current_time():
                    self.expire(entry)
                elif entry.stream is None:
                    entry.scope = task_scope
                    outcome = await call(self._provider, entry.request)
                    entry.scope = None
                    if entry.state is RUNNING:
                        if isinstance(outcome, Answered):
                            self._answered(entry, outcome.response)
                        else:
                            decision = self._failed(entry, outcome.error)
                else:
                    entry.scope = scope = anyio.CancelScope(deadline=entry.deadline)
                    stream_outcome = await call_stream(
                        self._provider,
                        entry.request,
                        entry.stream,
                        scope,
                        self._first_token_timeout(entry.request),
                    )
                    entry.scope = None
                    if entry.state is RUNNING:
                        if isinstance(stream_outcome, Answered):
                            self._answered(entry, stream_outcome.response)
                        elif isinstance(stream_outcome, Failed) and not scope.cancel_called:
                            decision = self._failed(entry, stream_outcome.error)
                        else:  # the deadline passed during the call
                            self.expire(entry)
        except BaseException:
            # Stopped early (the request is resolved: this does nothing), or the gateway's task
            # group is cancelled (or worse): nothing may be left unresolved.
            decision = None
            self._finish(entry, error=GatewayClosedError(entry.describe("was aborted")))
            raise
        finally:
            entry.scope = None
            self._running.discard(entry)
            retried = decision is not None and decision.action != "fail"
            batch.outcomes[entry] = (
                decision.action if decision is not None and retried else self._outcome(entry)
            )
            batch.remaining -= 1
            if batch.remaining == 0:
                self._observers.emit(
                    BatchFinished(
                        self.model_id,
                        batch.entries,
                        [batch.outcomes[e] for e in batch.entries],
                        batch.dispatched_at,
                        anyio.current_time(),
                    )
                )
            self._capacity_freed()
        if decision is not None and entry.state is RUNNING:
            if decision.action == "retry":
                await self._back_off(entry, decision.delay_s)
            else:
                self._fall_back(entry)
        self._router.lane_changed()

    def _first_token_timeout(self, request: LLMRequest) -> float | None:
        if request.first_token_timeout_s is not None:
            return request.first_token_timeout_s
        return self.config.first_token_timeout_s

    @staticmethod
    def _outcome(entry: Entry) -> str:
        if entry.state is not DONE:
            return "pending"
        return outcome_name(entry.future._error)

    def _answered(self, entry: Entry, response: LLMResponse) -> None:
        self._breaker.succeeded()
        now = anyio.current_time()
        admission, entry.admission = entry.admission, None
        if admission is not None:
            self._budget.settle(
                admission, response.usage.total_tokens, response.rate_limit_headers, now
            )
        pricing = self.config.pricing
        self._finish(
            entry,
            response._timed(
                latency_ms=_ms(now - entry.dispatched_at),
                queue_wait_ms=_ms(entry.dispatched_at - entry.enqueued_at),
                cost_usd=None if pricing is None else pricing.cost_usd(response.usage),
            ),
        )

    def _failed(self, entry: Entry, error: Exception) -> Decision:
        """Count a failed attempt and decide what follows; fail the request if that is it."""
        now = anyio.current_time()
        entry.failures = [*entry.failures, error]
        config = self.config
        admission, entry.admission = entry.admission, None
        if isinstance(error, ProviderError):
            if error.status_code == 429:
                self._budget.record_rate_limited(error.retry_after_s)
                self._observers.emit(RateLimited(self.model_id))
            if admission is not None:  # an error answer: the provider generated nothing
                self._budget.settle(admission, 0, error.headers, now)
            else:
                self._budget.observe(error.headers, now)
        pause = self._breaker.until
        if self._breaker.failed(error, now):
            self._observers.emit(CooldownStarted(self.model_id, self._breaker.until))
        if self._breaker.until != pause:
            self._wake()
        decision = decide(
            error,
            len(entry.failures) - entry.model_start,  # attempts on this model
            config.retry,
            time_left_s=entry.deadline - now,
            has_fallback=bool(entry.fallbacks_left),
            jitter=jitter(entry.request.request_id, len(entry.failures)),
        )
        delay_s = decision.delay_s if decision.action == "retry" else None
        self._observers.emit(
            AttemptFailed(self.model_id, entry, error, "in_flight", decision.action, delay_s)
        )
        if decision.action == "fail":
            final = self._final_error(entry, error, decision.reason)
            self._finish(entry, error=final, reported=True)
        return decision

    def _final_error(self, entry: Entry, error: BaseException, reason: str) -> BaseException:
        if not is_retryable(error, self.config.retry):
            # Retrying cannot help: the caller gets the provider's own error (its class and
            # status say what to fix), with any earlier attempts noted.
            if len(entry.failures) > 1:
                error.add_note(f"earlier: {describe_attempts(entry.failures[:-1])}")
            return error
        final = RetriesExhaustedError(
            entry.describe(
                f"failed after {_attempts(len(entry.failures))} ({reason}): "
                f"{describe_attempts(entry.failures)}; the last said: {error}"
            ),
            entry.failures,
        )
        final.__cause__ = error
        return final

    async def _back_off(self, entry: Entry, delay_s: float) -> None:
        entry.state = BACKOFF
        self._backoff.add(entry)
        slept = False
        try:
            with anyio.CancelScope() as entry.scope:  # _finish() (cancel, abort) ends it early
                await anyio.sleep(delay_s)
                slept = True
        finally:
            entry.scope = None
            self._backoff.discard(entry)
            if entry.state is BACKOFF:
                if slept and not self.aborted:
                    self._requeue(entry)
                else:  # the gateway's task group was cancelled
                    self._finish(entry, error=GatewayClosedError(entry.describe("was aborted")))

    def _requeue(self, entry: Entry) -> None:
        """Put ``entry`` back at the front of its line (a retry, or adopted from another lane)."""
        entry.state = QUEUED
        self._queue.push_front(entry)
        now = anyio.current_time()
        self._observers.emit(Queued(self.model_id, entry, now, retry=True))
        self._arrived(entry, now)
        self._wake()

    def _arrived(self, entry: Entry, now: float) -> None:
        """A queued entry that would pass its deadline waiting out the pause moves on now."""
        until = self._breaker.until
        if now < until and entry.deadline < until and entry.fallbacks_left:
            self._queue.remove(entry)
            self._leave_queue(entry)
            entry.state = RUNNING  # off the queue, as if taken: _fall_back moves or fails it
            self._observers.emit(AttemptFailed(self.model_id, entry, None, "queued", "fallback"))
            self._fall_back(entry)

    def adopt(self, entry: Entry, fallbacks_left: tuple[str, ...]) -> bool:
        """Take over ``entry`` from another lane (a fallback); ``False`` if this lane cannot.

        ``fallbacks_left`` is what remains of the request's chain after this model.
        """
        if self.aborted:
            return False
        if self._count_tokens is not None:
            policy = self.config.rate_limit
            estimate = estimate_tokens(
                entry.request, self._count_tokens, policy.default_output_tokens
            )
            if self._budget.too_large(estimate, entry.request.priority) is not None:
                return False
            entry.estimate = estimate
        else:
            entry.estimate = 0
        entry.model_id = self.model_id
        entry.model_start = len(entry.failures)
        entry.fallbacks_left = fallbacks_left
        self._requeue(entry)
        return True

    def _fall_back(self, entry: Entry) -> None:
        """Move ``entry`` (off every structure of this lane) on, or fail it."""
        source = self.model_id
        target = self._router.fall_back(entry)
        if target is not None:
            self._observers.emit(FellBack(source, entry, target))
            return
        last = entry.failures[-1] if entry.failures else None
        if last is None:
            self._finish(
                entry, error=RequestTimeoutError(entry.describe("cannot meet its deadline"))
            )
        else:
            self._finish(
                entry, error=self._final_error(entry, last, "no fallback left"), reported=True
            )
