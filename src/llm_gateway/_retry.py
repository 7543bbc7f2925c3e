"""What follows a failed attempt, and when a model pauses: pure logic, no I/O, no clock.

The gateway owns retrying (the SDKs' own retries are off): after a failed provider call the
lane asks :func:`decide` what to do (retry after a backoff, move to a fallback model, or fail)
and tells the model's :class:`Breaker`, which says when the model must pause. The request never
holds a concurrency slot while it waits out its backoff; it re-enters its model's queue, with
its priority, when the wait ends.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import attrs

from ._config import CooldownPolicy, RetryPolicy
from ._exceptions import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)

__all__ = [
    "Breaker",
    "Decision",
    "decide",
    "describe_attempt",
    "describe_attempts",
    "is_retryable",
    "jitter",
]


@attrs.frozen
class Decision:
    """What to do after a failed attempt.

    Attributes:
        action: ``"retry"`` (after ``delay_s``), ``"fallback"`` (to the next model) or ``"fail"``.
        delay_s: The backoff before the retry.
        reason: Why, for the error message when the request fails.
    """

    action: str
    delay_s: float = 0.0
    reason: str = ""


def is_retryable(error: BaseException, policy: RetryPolicy) -> bool:
    """Whether a failed attempt may be retried (see :class:`RetryPolicy`)."""
    if not isinstance(error, ProviderError):
        return False
    should_retry = error.headers.get("x-should-retry")
    if should_retry == "true":
        return True
    if should_retry == "false":
        return False
    if isinstance(error, ProviderTimeoutError | ProviderConnectionError):
        return True
    return error.status_code is not None and error.status_code in policy.retry_statuses


def jitter(request_id: str, attempt: int) -> float:
    """A fraction in [0, 1) that differs between requests but is the same on every run.

    Full jitter only needs retries of different requests to be decorrelated; deriving it from
    the request keeps runs reproducible (tests, incident replays) without a shared RNG.
    """
    return zlib.crc32(f"{request_id}:{attempt}".encode()) / 2**32


def decide(
    error: BaseException,
    attempt: int,
    policy: RetryPolicy,
    *,
    time_left_s: float,
    has_fallback: bool,
    jitter: float,
) -> Decision:
    """Decide what follows failed attempt number ``attempt`` (1-based) on this model.

    ``jitter`` is a fraction in [0, 1) that places the backoff within its range.
    """
    if not is_retryable(error, policy):
        return Decision("fail", reason="the error is not retryable")
    retry_after = error.retry_after_s if isinstance(error, ProviderError) else None
    if retry_after is not None and retry_after > policy.max_retry_after_s:
        reason = (
            f"the provider asked to retry after {retry_after:g} s, more than "
            f"max_retry_after_s={policy.max_retry_after_s:g}"
        )
        return Decision("fallback" if has_fallback else "fail", reason=reason)
    if attempt >= policy.max_attempts:
        reason = f"max_attempts={policy.max_attempts} reached"
        return Decision("fallback" if has_fallback else "fail", reason=reason)
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    delay = max(jitter * ceiling, retry_after or 0.0)
    if delay >= time_left_s:
        reason = f"the next retry (in {delay:.3g} s) would pass the request's deadline"
        return Decision("fallback" if has_fallback else "fail", reason=reason)
    return Decision("retry", delay_s=delay)


def describe_attempt(error: BaseException) -> str:
    """One failed attempt, for error messages: class and status, never provider text."""
    if isinstance(error, ProviderError) and error.status_code is not None:
        return f"HTTP {error.status_code} {type(error).__name__}"
    return type(error).__name__


def describe_attempts(errors: Sequence[BaseException]) -> str:
    return "; ".join(f"attempt {i}: {describe_attempt(e)}" for i, e in enumerate(errors, 1))


class Breaker:
    """One model's circuit breaker: when it must stop dispatching, and until when.

    After ``failure_threshold`` retryable failures in a row that carry no ``retry-after``, the
    model pauses for ``cooldown_s``; a rate-limit answer (429) with a ``retry-after`` pauses it
    for exactly that long (never longer than ``max_retry_after_s``). A success resets the count.
    Failures with a ``retry-after`` do not count: the pause they ask for covers them.

    Args:
        cooldown: The model's cooldown policy.
        retry: The model's retry policy (what is retryable, the cap on a pause).
    """

    __slots__ = ("_consecutive", "_cooldown", "_retry", "until")

    def __init__(self, cooldown: CooldownPolicy, retry: RetryPolicy) -> None:
        self._cooldown, self._retry = cooldown, retry
        self._consecutive = 0
        self.until = -math.inf
        """The end of the current (or last) pause, on the event loop's clock."""

    def succeeded(self) -> None:
        """A call answered: the run of failures is over."""
        self._consecutive = 0

    def failed(self, error: BaseException, now: float) -> bool:
        """Count a failed call; return whether a pause started where none was in force.

        A pause in force may also grow (a longer ``retry-after``): read :attr:`until`.
        """
        retry_after = error.retry_after_s if isinstance(error, ProviderError) else None
        until = self.until
        if is_retryable(error, self._retry) and retry_after is None:
            self._consecutive += 1
            if self._consecutive >= self._cooldown.failure_threshold:
                self._consecutive = 0
                until = max(until, now + self._cooldown.cooldown_s)
        if isinstance(error, ProviderError) and error.status_code == 429 and retry_after:
            # The whole model is limited; but never paused longer than a request would wait.
            until = max(until, now + min(retry_after, self._retry.max_retry_after_s))
        started = until > self.until and self.until <= now
        self.until = until
        return started
