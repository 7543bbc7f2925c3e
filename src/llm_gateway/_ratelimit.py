"""Rate-limit pacing: requests and tokens per minute, ahead of the provider's limit.

The model of pacing is a **sliding 60-second window**: a request is admitted only if, counting
it, the requests admitted in the last 60 s stay within ``max_requests_per_minute`` and their
estimated tokens within ``max_tokens_per_minute``. Unlike a token bucket holding a minute's
worth of budget (which may admit twice the limit within one 60-s span: a full bucket, then its
refill), the window guarantees the limit over *every* 60-s span, which is what providers
enforce; under sustained demand it still admits the full limit per minute.

Admission happens in the batcher when a request is taken off its queue, in priority order and
head of line first: when the best waiting request does not fit, nothing behind it is admitted,
so a HIGH request never waits behind LOW ones for budget.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime

import attrs

from ._models import RequestPriority

__all__ = ["Admission", "RateLimiter"]

# The provider counts a call when it receives it, a little after we dispatch it: each
# admission stays in the books this much longer than the window, so the two never disagree.
SKEW_S = 0.25


@attrs.define(eq=False)
class Admission:
    """One admitted attempt in a limiter's books."""

    at: float
    tokens: int
    limiters: tuple[RateLimiter, ...]

    def reconcile(self, actual_tokens: int, now: float) -> None:
        """Replace the estimate with what the attempt really used."""
        for limiter in self.limiters:
            limiter.reconcile(self, actual_tokens, now)
        self.tokens = actual_tokens


@attrs.define(eq=False)
class _ProviderHint:
    remaining: int
    until: float


class RateLimiter:
    """The books of one budget (a model's own, or a limit group's)."""

    def __init__(self, name: str, rpm: int | None, tpm: int | None, window_s: float = 60.0) -> None:
        self.name = name
        self.rpm, self.tpm = rpm, tpm
        self.window_s = window_s
        self._span_s = window_s + SKEW_S  # how long an admission stays in the books
        self._log: deque[Admission] = deque()
        self._tokens = 0  # estimated (then reconciled) tokens of the admissions in the window
        self._requests_hint: _ProviderHint | None = None
        self._tokens_hint: _ProviderHint | None = None
        self.listeners: list[Callable[[], None]] = []  # woken when budget frees early
        self.throttled_s = 0.0
        self.rate_limited = 0

    def _expire(self, now: float) -> None:
        log, horizon = self._log, now - self._span_s
        while log and log[0].at <= horizon:
            self._tokens -= log.popleft().tokens
        for hint in ("_requests_hint", "_tokens_hint"):
            value = getattr(self, hint)
            if value is not None and value.until <= now:
                setattr(self, hint, None)

    def limits(self, priority: RequestPriority, reserve: float) -> tuple[float, float]:
        """The requests and tokens a ``priority`` request may fill each window up to."""
        share = (1.0 if priority is RequestPriority.HIGH else 1.0 - reserve) * self.window_s / 60
        # (+1e-9: 6 * (10 / 60) is 0.999..., and must count as the 1 it is)
        rpm = math.inf if self.rpm is None else math.floor(self.rpm * share + 1e-9)
        tpm = math.inf if self.tpm is None else math.floor(self.tpm * share + 1e-9)
        return rpm, tpm

    def ready_at(self, tokens: int, priority: RequestPriority, reserve: float, now: float) -> float:
        """The earliest time an attempt of ``tokens`` fits (``now`` if it fits now)."""
        self._expire(now)
        rpm, tpm = self.limits(priority, reserve)
        when = now
        log = self._log
        excess_requests = len(log) + 1 - rpm
        if excess_requests > 0:
            index = int(excess_requests) - 1
            when = max(when, log[index].at + self._span_s if index < len(log) else math.inf)
        excess_tokens = self._tokens + tokens - tpm
        if excess_tokens > 0:
            freed, at = 0, math.inf
            for entry in log:
                freed += entry.tokens
                if freed >= excess_tokens:
                    at = entry.at + self._span_s
                    break
            when = max(when, at)
        for hint, need in ((self._requests_hint, 1), (self._tokens_hint, tokens)):
            if hint is not None and hint.remaining < need:
                when = max(when, hint.until)
        return when

    def admit(self, admission: Admission) -> None:
        self._log.append(admission)
        self._tokens += admission.tokens
        if self._requests_hint is not None:
            self._requests_hint.remaining -= 1
        if self._tokens_hint is not None:
            self._tokens_hint.remaining -= admission.tokens

    def reconcile(self, admission: Admission, actual_tokens: int, now: float) -> None:
        self._expire(now)
        if admission.at > now - self._span_s:  # still in the books (the log is in time order)
            self._tokens += actual_tokens - admission.tokens
            if actual_tokens < admission.tokens:
                for wake in self.listeners:
                    wake()

    def observe(self, headers: Mapping[str, str], now: float) -> None:
        """Tighten the books to what the provider says remains until its reset."""
        for kind, attribute in (("requests", "_requests_hint"), ("tokens", "_tokens_hint")):
            remaining, reset_s = _read_remaining(headers, kind)
            if remaining is None or reset_s is None:
                continue
            hint = _ProviderHint(remaining, now + reset_s)
            current = getattr(self, attribute)
            if current is None or hint.remaining < current.remaining or current.until <= now:
                setattr(self, attribute, hint)

    def window(self, now: float) -> tuple[int, int]:
        """Requests and tokens counted in the current window."""
        self._expire(now)
        return len(self._log), self._tokens

    def remaining(self, now: float) -> tuple[float, float]:
        """Requests and tokens a HIGH request could still use now (``inf`` where unlimited)."""
        requests, tokens = self.window(now)
        rpm, tpm = self.limits(RequestPriority.HIGH, 0.0)
        left_r, left_t = rpm - requests, tpm - tokens
        if self._requests_hint is not None:
            left_r = min(left_r, self._requests_hint.remaining)
        if self._tokens_hint is not None:
            left_t = min(left_t, self._tokens_hint.remaining)
        return max(0.0, left_r), max(0.0, left_t)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _reset_seconds(value: str) -> float | None:
    """A reset as a duration (OpenAI: ``6m0s``, ``12ms``) or an RFC 3339 time (Anthropic)."""
    value = value.strip()
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _UNIT_S[u] for n, u in parts)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None
    return max(0.0, moment.timestamp() - time.time())


def _read_remaining(headers: Mapping[str, str], kind: str) -> tuple[int | None, float | None]:
    for remaining_key, reset_key in (
        (f"anthropic-ratelimit-{kind}-remaining", f"anthropic-ratelimit-{kind}-reset"),
        (f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}"),
    ):
        if remaining_key in headers and reset_key in headers:
            try:
                remaining = int(float(headers[remaining_key]))
            except ValueError:
                return None, None
            return remaining, _reset_seconds(headers[reset_key])
    return None, None
