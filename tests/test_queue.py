"""The per-model priority queue: order, lazy removal, deadlines and aging (synchronous)."""

from __future__ import annotations

import math

from llm_gateway import RequestPriority
from llm_gateway._future import ResponseFuture
from llm_gateway._queue import Entry, PriorityQueue

from ._support import ask

HIGH, NORMAL, LOW = RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW


def entry(priority: RequestPriority, name: str) -> Entry:
    request = ask(priority=priority, request_id=name)
    return Entry(request, ResponseFuture({}), "m", 0.0, math.inf, 0, ())


def names(entries: list[Entry]) -> list[str]:
    return [e.request.request_id for e in entries]


def test_take_is_priority_then_fifo() -> None:
    queue = PriorityQueue([0.0, 0.1, 1.0], aging_s=10.0)
    for i, priority in enumerate([LOW, NORMAL, HIGH, NORMAL, HIGH, LOW]):
        queue.push(entry(priority, f"{priority.name}{i}"), now=float(i))
    assert queue.live == 6
    assert names(queue.take(4)) == ["HIGH2", "HIGH4", "NORMAL1", "NORMAL3"]
    assert names(queue.take(10)) == ["LOW0", "LOW5"]
    assert queue.live == 0


def test_resolved_entries_are_skipped_and_uncounted() -> None:
    queue = PriorityQueue([0.0, 0.1, 1.0], aging_s=10.0)
    a, b, c = entry(NORMAL, "a"), entry(NORMAL, "b"), entry(NORMAL, "c")
    for f in (a, b, c):
        queue.push(f, now=0.0)
    queue.discard(a)
    assert queue.live == 2
    assert names(queue.take(5)) == ["b", "c"]
    assert queue.live == 0


def test_next_due_is_the_oldest_requests_class_deadline() -> None:
    queue = PriorityQueue([0.5, 0.1, 2.0], aging_s=10.0)
    assert queue.next_due() == math.inf
    queue.push(entry(LOW, "low"), now=1.0)
    assert queue.next_due() == 3.0
    queue.push(entry(NORMAL, "normal"), now=2.0)
    assert queue.next_due() == 2.1
    queue.push(entry(HIGH, "high"), now=2.5)
    assert queue.next_due() == 2.1


def test_aging_promotes_one_class_per_period_to_the_back_of_the_line() -> None:
    queue = PriorityQueue([0.0, 0.1, 1.0], aging_s=10.0)
    queue.push(entry(LOW, "old-low"), now=0.0)
    queue.push(entry(NORMAL, "normal"), now=5.0)
    assert queue.next_promotion() == 10.0
    queue.promote(now=10.0)  # old-low -> NORMAL, behind "normal"
    queue.push(entry(HIGH, "high"), now=10.0)
    assert [names(list(line)) for line in queue._lines] == [["high"], ["normal", "old-low"], []]
    queue.promote(now=15.0)  # "normal" has waited 10 s in NORMAL
    queue.promote(now=20.0)  # old-low has waited 10 s in NORMAL
    assert names(queue.take(3)) == ["high", "normal", "old-low"]


def test_aged_low_overtakes_fresh_high_work() -> None:
    queue = PriorityQueue([0.0, 0.1, 1.0], aging_s=10.0)
    queue.push(entry(LOW, "starved"), now=0.0)
    queue.promote(now=10.0)
    queue.promote(now=20.0)  # LOW -> NORMAL -> HIGH
    queue.push(entry(HIGH, "fresh"), now=20.0)
    assert names(queue.take(1)) == ["starved"]
