"""A request's private queue entry, and the per-model priority queue that holds entries.

The entry is the scheduler's record of one accepted request; the caller only ever sees its
:class:`~llm_gateway.ResponseFuture`. Exactly one lane owns an entry at a time (the one whose
model it is queued for or running on) and only that lane writes it.

The queue is synchronous and owned by one lane, so it needs no locking. Entries resolved while
queued (cancelled, expired) stay in their line until they reach its head and are skipped there:
removal from the middle of a deque would cost O(n) per cancel.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anyio

    from ._future import ResponseFuture
    from ._models import LLMRequest
    from ._ratelimit import Admission
    from ._stream import StreamSink

__all__ = ["Entry", "PriorityQueue", "State"]


class State(enum.Enum):
    QUEUED = "queued"  # accepted, waiting in its model's queue
    RUNNING = "running"  # taken off the queue; its provider call is under way
    BACKOFF = "backoff"  # a failed attempt will be retried; waiting, holding no capacity
    DONE = "done"  # has its response or its exception; never changes again


QUEUED, RUNNING, BACKOFF, DONE = State.QUEUED, State.RUNNING, State.BACKOFF, State.DONE


class Entry:
    """The scheduler's record of one accepted request (private; written by its owning lane)."""

    __slots__ = (
        "admission",
        "deadline",
        "dispatched_at",
        "enqueued_at",
        "estimate",
        "failures",
        "fallbacks_left",
        "future",
        "holds_slot",
        "in_queue",
        "model_id",
        "model_start",
        "rank",
        "rank_since",
        "request",
        "scope",
        "state",
        "stream",
    )

    def __init__(
        self,
        request: LLMRequest,
        future: ResponseFuture,
        model_id: str,
        enqueued_at: float,
        deadline: float,
        estimate: int,
        fallbacks: tuple[str, ...],
    ) -> None:
        self.request = request
        self.future = future
        self.model_id = model_id  # the model whose lane owns the entry now
        self.state = QUEUED
        self.enqueued_at = enqueued_at
        self.deadline = deadline
        self.estimate = estimate  # tokens the rate limits book for each attempt
        self.fallbacks_left = fallbacks  # models still to try after this one
        # Every failed attempt, on every model; a list from the first failure on (most requests
        # have none, and an empty list per request would be one more object to collect).
        self.failures: Sequence[BaseException] = ()
        self.model_start = 0  # index in `failures` where the current model's attempts begin
        self.dispatched_at = math.nan
        self.holds_slot = True  # a queue slot, until first dispatched (retries take none)
        self.in_queue = False  # in a line of the owning lane's queue
        self.rank = 0
        self.rank_since = 0.0
        self.scope: anyio.CancelScope | None = None  # the attempt's or the backoff's
        self.admission: Admission | None = None  # the attempt's entry in the rate-limit books
        self.stream: StreamSink | None = None  # a streamed request's sink (gw.stream())

    def describe(self, what: str) -> str:
        """``request 'id' to model 'm' <what>``, for error messages (never request text)."""
        return f"request {self.request.request_id!r} to model {self.request.model!r} {what}"


class PriorityQueue:
    """Entries ordered by (priority class, time they entered the class).

    Aging: a request that has waited ``aging_s`` in the NORMAL or LOW class is promoted one
    class, to the back of that class's line; so LOW work reaches HIGH after ``2 * aging_s``
    at most and cannot starve, while strict priority holds among requests younger than that.

    Args:
        max_wait_s: Per class (HIGH, NORMAL, LOW): how long a request may wait for its batch to
            fill, counted from when it entered the class.
        aging_s: How long a request waits in a class before it is promoted.
    """

    __slots__ = ("_aging_s", "_lines", "_max_wait_s", "live")

    def __init__(self, max_wait_s: Sequence[float], aging_s: float) -> None:
        self._lines: tuple[deque[Entry], ...] = (deque(), deque(), deque())
        self._max_wait_s = tuple(max_wait_s)
        self._aging_s = aging_s
        self.live = 0
        """How many queued (not yet resolved) entries are in the lines."""

    def push(self, entry: Entry, now: float) -> None:
        """Add an entry at the back of its priority's line."""
        entry.rank = rank = int(entry.request.priority) - 1
        entry.rank_since = now
        entry.in_queue = True
        self._lines[rank].append(entry)
        self.live += 1

    def push_front(self, entry: Entry) -> None:
        """Put an entry back at the front of its line, due at once (a retry or a fallback).

        It was taken ahead of everything still waiting in its class, so the front keeps the
        order; its class entry time stays its arrival, so no batch timer delays it again.
        """
        entry.rank = rank = int(entry.request.priority) - 1
        entry.rank_since = entry.enqueued_at
        entry.in_queue = True
        self._lines[rank].appendleft(entry)
        self.live += 1

    def remove(self, entry: Entry) -> None:
        """Take a queued entry out of its line (O(n): only for rare moves to another model)."""
        self._lines[entry.rank].remove(entry)
        entry.in_queue = False
        self.live -= 1

    def discard(self, entry: Entry) -> None:
        """Account for a queued entry that was resolved (it is skipped when reached)."""
        entry.in_queue = False
        self.live -= 1

    def queued(self) -> list[Entry]:
        """Every queued entry (a copy)."""
        return [e for line in self._lines for e in line if e.in_queue]

    def _head(self, rank: int) -> Entry | None:
        line = self._lines[rank]
        while line:
            head = line[0]
            if head.in_queue:
                return head
            line.popleft()
        return None

    def promote(self, now: float) -> None:
        """Promote every entry that has waited ``aging_s`` in its class."""
        aging_s = self._aging_s
        for rank in (1, 2):  # NORMAL first, so a LOW promoted now is not promoted twice
            line, upper = self._lines[rank], self._lines[rank - 1]
            while (head := self._head(rank)) is not None and head.rank_since + aging_s <= now:
                line.popleft()
                head.rank = rank - 1
                head.rank_since = now
                upper.append(head)

    def next_due(self) -> float:
        """The earliest time some queued entry reaches its class's maximum wait."""
        due = math.inf
        for rank in (0, 1, 2):
            head = self._head(rank)
            if head is not None:
                due = min(due, head.rank_since + self._max_wait_s[rank])
        return due

    def next_promotion(self) -> float:
        """The earliest time some queued entry is due for promotion."""
        when = math.inf
        for rank in (1, 2):
            head = self._head(rank)
            if head is not None:
                when = min(when, head.rank_since + self._aging_s)
        return when

    def peek(self) -> Entry | None:
        """The entry :meth:`take` would return first, without taking it."""
        for rank in (0, 1, 2):
            head = self._head(rank)
            if head is not None:
                return head
        return None

    def peek_many(self, n: int) -> list[Entry]:
        """The first ``n`` entries :meth:`take` would return, without taking them."""
        found: list[Entry] = []
        for line in self._lines:
            for entry in line:
                if len(found) == n:
                    return found
                if entry.in_queue:
                    found.append(entry)
        return found

    def take(self, n: int) -> list[Entry]:
        """Remove and return up to ``n`` queued entries in priority order, FIFO within a class."""
        taken: list[Entry] = []
        for line in self._lines:
            while line and len(taken) < n:
                entry = line.popleft()
                if entry.in_queue:
                    entry.in_queue = False
                    taken.append(entry)
        self.live -= len(taken)
        return taken

    def take_all(self) -> list[Entry]:
        """Remove and return every queued entry."""
        return self.take(self.live)
