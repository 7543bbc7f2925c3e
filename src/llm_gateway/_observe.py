"""What the lanes report, and the fan-out that keeps a failing observer away from requests.

A lane reports each thing that happens to a request as an event value; observers (the stats,
the JSON Lines log, and later telemetry) turn events into figures and records. Observers only
watch: an observer that raises is counted and reported once through :mod:`logging`, and the
request, the lane and the other observers carry on as if nothing happened.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from ._models import LLMResponse
    from ._queue import Entry

__all__ = [
    "AttemptFailed",
    "BatchFinished",
    "CooldownStarted",
    "Dispatched",
    "Event",
    "FellBack",
    "Finished",
    "Observer",
    "Observers",
    "Queued",
    "RateLimited",
    "Throttled",
]

logger = logging.getLogger("llm_gateway")


@attrs.frozen
class Queued:
    """An entry entered the model's queue.

    ``retry`` is false when the request was just accepted (emitted in the caller's task, so an
    observer may read the caller's context then), true when it came back after a retry's
    backoff or was adopted as a fallback (or left the batch lane for realtime).
    ``batch_api``: the accepted request went to the model's batch lane (it gathers there for
    the provider's batch API, in no line of the queue).
    """

    model_id: str
    entry: Entry
    at: float
    retry: bool = False
    batch_api: bool = False


@attrs.frozen
class Dispatched:
    """A batch left the queue: each entry's attempt starts now."""

    model_id: str
    entries: Sequence[Entry]
    at: float


@attrs.frozen
class AttemptFailed:
    """An attempt failed (or a queued request left a cooling model); ``decision`` follows.

    ``error`` is ``None`` when a queued request moves on because the model's pause outlasts
    its deadline. ``phase`` is ``"in_flight"`` or ``"queued"``; ``decision`` is ``"retry"``,
    ``"fallback"`` or ``"fail"``; ``delay_s`` is the backoff before a retry (``None``
    otherwise).
    """

    model_id: str
    entry: Entry
    error: BaseException | None
    phase: str
    decision: str
    delay_s: float | None = None


@attrs.frozen
class Finished:
    """A request ended: with ``response``, or with ``error``.

    ``phase`` is where it was (``"queued"``, ``"in_flight"``, ``"backoff"``); ``reported``
    says an :class:`AttemptFailed` event (decision ``"fail"``) already described the error.
    """

    model_id: str
    entry: Entry
    response: LLMResponse | None
    error: BaseException | None
    phase: str
    at: float
    reported: bool = False


@attrs.frozen
class BatchFinished:
    """Every attempt of a batch ended; ``outcomes`` per entry, in the batch's order."""

    model_id: str
    entries: Sequence[Entry]
    outcomes: Sequence[str]
    dispatched_at: float
    at: float


@attrs.frozen
class FellBack:
    """A request moved from ``model_id`` to the fallback ``to_model_id``."""

    model_id: str
    entry: Entry
    to_model_id: str


@attrs.frozen
class CooldownStarted:
    """The model stopped dispatching until ``until``."""

    model_id: str
    until: float


@attrs.frozen
class RateLimited:
    """The provider answered 429."""

    model_id: str


@attrs.frozen
class Throttled:
    """The model's queue waited ``seconds`` for rate-limit budget."""

    model_id: str
    seconds: float


Event = (
    Queued
    | Dispatched
    | AttemptFailed
    | Finished
    | BatchFinished
    | FellBack
    | CooldownStarted
    | RateLimited
    | Throttled
)


class Observer(Protocol):
    """Something that watches the gateway's events. It must not block or await."""

    name: str
    """A short name for reports (``get_stats().observer_errors``)."""

    def observe(self, event: Event) -> None:
        """Take one event (synchronously, on the event loop's thread)."""


class Observers:
    """The fan-out: every event to every observer, each failure contained and counted."""

    __slots__ = ("_observers", "errors")

    def __init__(self, observers: Sequence[Observer], *, names: Sequence[str] = ()) -> None:
        self._observers: tuple[Observer, ...] = ()
        self.errors: dict[str, int] = dict.fromkeys(names, 0)
        """Failures per observer, by name (``names`` are counted from the start)."""
        self.set(observers)

    def set(self, observers: Sequence[Observer]) -> None:
        """Watch with ``observers`` from now on."""
        self._observers = tuple(observers)
        for observer in observers:
            self.errors.setdefault(observer.name, 0)

    def emit(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer.observe(event)
            except Exception:
                self.report(observer.name, exc_info=True)

    def report(self, name: str, *, exc_info: bool = False) -> None:
        """Count a failure of observer ``name``; say so through logging the first time."""
        count = self.errors.get(name, 0)
        self.errors[name] = count + 1
        if count == 0:
            # A broken logging handler is one more thing not to pass on.
            with contextlib.suppress(Exception):
                logger.warning(
                    "llm_gateway: the %s observer failed; requests are unaffected, and its "
                    "failures are counted in get_stats().observer_errors",
                    name,
                    exc_info=exc_info,
                )
