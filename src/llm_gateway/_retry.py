"""Retry policy, cooldown policy, and the decision taken after a failed attempt.

The gateway owns retrying (the SDKs' own retries are off): after a failed provider call the
batcher asks :func:`decide` what to do. The request never holds a concurrency slot while it
waits out its backoff; it re-enters its model's queue, with its priority, when the wait ends.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import attrs

from ._exceptions import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)

__all__ = ["CooldownPolicy", "Decision", "RetryPolicy", "decide", "describe_attempt", "jitter"]

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok or value != value or value == float("inf"):
        raise ConfigError(
            f"{name} is {value!r}; use a finite number {'>=' if allow_zero else '>'} 0"
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how the gateway retries a failed provider call.

    Retryable: HTTP 408, 409, 429, 500, 502, 503, 504, 529, timeouts and connection errors, and
    any error whose response says ``x-should-retry: true``. Not retryable: everything else
    (400, 401, 403, 404, 413, 422, ...) and ``x-should-retry: false``.

    Attributes:
        max_attempts: The most calls per model for one request (1 turns retries off).
        backoff_base_s: The first backoff's upper bound; it doubles on each retry.
        backoff_max_s: The cap of the exponential backoff. The wait is drawn uniformly from
            ``[0, min(backoff_max_s, backoff_base_s * 2**(retry - 1))]`` (full jitter), and is
            never shorter than the provider's ``retry-after``.
        max_retry_after_s: A ``retry-after`` longer than this fails the request at once (with
            a clear error) instead of sleeping that long.
        retry_statuses: The HTTP statuses that are retried.
    """

    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigError(f"RetryPolicy.max_attempts is {self.max_attempts!r}; use an int >= 1")
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts is {self.max_attempts!r}; use an int >= 1")
        _positive("RetryPolicy.backoff_base_s", self.backoff_base_s, allow_zero=True)
        _positive("RetryPolicy.backoff_max_s", self.backoff_max_s, allow_zero=True)
        _positive("RetryPolicy.max_retry_after_s", self.max_retry_after_s, allow_zero=True)


@attrs.frozen(kw_only=True)
class CooldownPolicy:
    """When a model stops dispatching for a while (a circuit breaker).

    After ``failure_threshold`` retryable failures in a row that carry no ``retry-after``, or
    a rate-limit answer (429) with a ``retry-after`` (a pause of exactly that long), the model
    dispatches nothing until the cooldown ends. Queued requests wait
    (unless their deadline passes first, or they have a fallback model: then they move there).

    Attributes:
        failure_threshold: Consecutive retryable failures that start a cooldown.
        cooldown_s: How long a cooldown started by failures lasts.
    """

    failure_threshold: int = 5
    cooldown_s: float = 10.0

    def __attrs_post_init__(self) -> None:
        threshold = self.failure_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"CooldownPolicy.failure_threshold is {threshold!r}; use an int >= 1")
        _positive("CooldownPolicy.cooldown_s", self.cooldown_s, allow_zero=True)


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
