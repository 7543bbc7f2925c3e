"""Retry policy, cooldown policy, and the decision taken after a failed attempt.

The gateway owns retrying (the SDKs' own retries are off): after a failed provider call the
batcher asks :func:`decide` what to do. The request never holds a concurrency slot while it
waits out its backoff; it re-enters its model's queue, with its priority, when the wait ends.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import attrs

from ._config import RetryPolicy
from ._exceptions import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)

__all__ = ["Decision", "decide", "describe_attempt", "describe_attempts", "is_retryable", "jitter"]


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
