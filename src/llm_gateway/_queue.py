"""The per-model priority queue: one FIFO line per priority class, with aging.

It is synchronous and owned by one batcher task, so it needs no locking. Futures resolved while
queued (cancelled, expired) stay in their line until they reach its head and are skipped there:
removal from the middle of a deque would cost O(n) per cancel.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from ._future import QUEUED, ResponseFuture

__all__ = ["PriorityQueue"]


class PriorityQueue:
    """Requests ordered by (priority class, time they entered the class).

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
        self._lines: tuple[deque[ResponseFuture], ...] = (deque(), deque(), deque())
        self._max_wait_s = tuple(max_wait_s)
        self._aging_s = aging_s
        self.live = 0
        """How many queued (not yet resolved) requests are in the lines."""

    def push(self, fut: ResponseFuture, now: float) -> None:
        """Add a request at the back of its priority's line (ignored if already resolved)."""
        if fut._state is not QUEUED:
            return
        fut.rank = rank = int(fut.request.priority) - 1
        fut.rank_since = now
        fut.in_queue = True
        self._lines[rank].append(fut)
        self.live += 1

    def push_front(self, fut: ResponseFuture) -> None:
        """Put a request back at the front of its line, due at once (a retry or a fallback).

        It was taken ahead of everything still waiting in its class, so the front keeps the
        order; its class entry time stays its arrival, so no batch timer delays it again.
        """
        fut.rank = rank = int(fut.request.priority) - 1
        fut.rank_since = fut.enqueued_at
        fut.in_queue = True
        self._lines[rank].appendleft(fut)
        self.live += 1

    def remove(self, fut: ResponseFuture) -> None:
        """Take a queued request out of its line (O(n): only for rare moves to another model)."""
        self._lines[fut.rank].remove(fut)
        fut.in_queue = False
        self.live -= 1

    def queued(self) -> list[ResponseFuture]:
        """Every queued request (a copy)."""
        return [f for line in self._lines for f in line if f._state is QUEUED]

    def discard(self, fut: ResponseFuture) -> None:
        """Account for a queued request that was resolved (it is skipped when reached)."""
        fut.in_queue = False
        self.live -= 1

    def _head(self, rank: int) -> ResponseFuture | None:
        line = self._lines[rank]
        while line:
            head = line[0]
            if head._state is QUEUED:
                return head
            line.popleft()
        return None

    def promote(self, now: float) -> None:
        """Promote every request that has waited ``aging_s`` in its class."""
        aging_s = self._aging_s
        for rank in (1, 2):  # NORMAL first, so a LOW promoted now is not promoted twice
            line, upper = self._lines[rank], self._lines[rank - 1]
            while (head := self._head(rank)) is not None and head.rank_since + aging_s <= now:
                line.popleft()
                head.rank = rank - 1
                head.rank_since = now
                upper.append(head)

    def next_due(self) -> float:
        """The earliest time some queued request reaches its class's maximum wait."""
        due = math.inf
        for rank in (0, 1, 2):
            head = self._head(rank)
            if head is not None:
                due = min(due, head.rank_since + self._max_wait_s[rank])
        return due

    def next_promotion(self) -> float:
        """The earliest time some queued request is due for promotion."""
        when = math.inf
        for rank in (1, 2):
            head = self._head(rank)
            if head is not None:
                when = min(when, head.rank_since + self._aging_s)
        return when

    def peek(self) -> ResponseFuture | None:
        """The request :meth:`take` would return first, without taking it."""
        for rank in (0, 1, 2):
            head = self._head(rank)
            if head is not None:
                return head
        return None

    def take(self, n: int) -> list[ResponseFuture]:
        """Remove and return up to ``n`` queued requests in priority order, FIFO within a class."""
        taken: list[ResponseFuture] = []
        for line in self._lines:
            while line and len(taken) < n:
                fut = line.popleft()
                if fut._state is QUEUED:
                    fut.in_queue = False
                    taken.append(fut)
        self.live -= len(taken)
        return taken

    def take_all(self) -> list[ResponseFuture]:
        """Remove and return every queued request."""
        return self.take(self.live)
