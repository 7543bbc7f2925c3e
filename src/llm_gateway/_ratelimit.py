"""Rate-limit books: requests and tokens per minute, paced ahead of the provider's limit.

The model of pacing is a set of **sliding windows** over one log of admissions:

- The **minute window** admits a request only if, counting it, the requests admitted in the
  last 60 s stay within ``max_requests_per_minute`` and their tokens within
  ``max_tokens_per_minute``. It holds both limits over *every* 60-second span exactly. (A token
  bucket holding a minute's budget may let a full bucket and its refill through within one
  span: twice the limit.)
- With ``window_s < 60``, a **fine window** per limit spreads the same rate evenly. A window's
  share of a limit, ``limit * window_s / 60``, is rounded **up** to ``n`` units, and the fine
  window spans the time those ``n`` take at the configured rate, ``n * 60 / limit`` seconds
  (which is ``window_s`` when the share is whole). So every ``window_s`` span holds at most
  ``ceil(limit * window_s / 60)``, the long-run pace is the configured rate (a window of 1 s
  with ``rpm=119`` admits 2 per 1.008 s, not 1 per second), and the minute window still caps
  every 60-second span at the limit itself.

The provider counts a call when it receives it, a little after it is booked: each admission
stays in a window's books a margin longer than the window, ``min(0.25 s, 2 % of the window)``,
so the two never disagree and a backlog still gets at least 98 % of the rate.

A :class:`RateLimiter` holds one budget's books (a model's own, or a limit group's, shared by
the group's models). A model's lane draws on a :class:`Budget`: its limiters, its priority
reserve and the cap on provider resets. The books change only through their own methods:
``admit``, ``settle`` (real usage replaces the estimate), ``observe`` (provider headers),
``record_throttled`` and ``record_rate_limited``.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from ._models import RequestPriority

__all__ = ["Admission", "Budget", "RateLimiter"]

SKEW_S = 0.25
"""The most an admission stays in a window's books beyond the window (for a 60-s window)."""
SKEW_SHARE = 0.02
"""For shorter windows the margin is this share of the window, so a backlog keeps 98 % of it."""
MAX_COUNT = 2**53
"""Larger provider counts are clamped: a count that large tightens nothing."""
_EPS = 1e-9  # 6 * (10 / 60) is 0.999...: it must count as the 1 it is


def skew_s(span_s: float) -> float:
    """How much longer than ``span_s`` an admission stays in that window's books."""
    return min(SKEW_S, SKEW_SHARE * span_s)


class Admission:
    """One admitted attempt in the books: what the engine holds until it settles it.

    Opaque to the engine: only the books change it (:meth:`Budget.settle`).
    """

    __slots__ = ("_at", "_settled", "_tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self._at = at
        self._tokens = tokens
        self._settled = False

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"<Admission at={self._at:g} tokens={self._tokens} {state}>"

    @property
    def at(self) -> float:
        """When it was booked."""
        return self._at

    @property
    def tokens(self) -> int:
        """The tokens it holds in the books: the estimate, then the real usage once settled."""
        return self._tokens

    @property
    def settled(self) -> bool:
        """Whether real usage has replaced the estimate."""
        return self._settled


class _Window:
    """The admissions of the last ``span_s`` seconds (plus the skew margin) and their totals."""

    __slots__ = ("_log", "span_s", "stay_s", "tokens")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.stay_s = span_s + skew_s(span_s)  # how long an admission stays in the books
        self._log: deque[Admission] = deque()
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._log)

    def expire(self, now: float) -> None:
        # The same expression as in ready_at below: at the time it returns, the entry is gone.
        log, stay = self._log, self.stay_s
        while log and log[0].at + stay <= now:
            self.tokens -= log.popleft().tokens

    def add(self, admission: Admission) -> None:
        self._log.append(admission)
        self.tokens += admission.tokens

    def holds(self, admission: Admission, now: float) -> bool:
        return admission.at + self.stay_s > now  # (after expire: the log is in time order)

    def when_requests_fit(self, cap: int) -> float:
        """When one more request fits under ``cap`` (after ``expire``)."""
        excess = len(self._log) + 1 - cap
        if excess <= 0:
            return -math.inf
        if cap < 1:
            return math.inf
        return self._log[excess - 1].at + self.stay_s

    def when_tokens_fit(self, tokens: int, cap: int) -> float:
        """When ``tokens`` more fit under ``cap`` (after ``expire``)."""
        excess = self.tokens + tokens - cap
        if excess <= 0:
            return -math.inf
        freed = 0
        for entry in self._log:
            freed += entry.tokens
            if freed >= excess:
                return entry.at + self.stay_s
        return math.inf  # larger than the cap itself: never (Budget.too_large says so)


class _Constraint:
    """At most ``cap`` requests (or tokens) in ``window``: one limit at one grain."""

    __slots__ = ("cap", "fine", "kind", "window")

    def __init__(self, window: _Window, kind: str, cap: int, *, fine: bool) -> None:
        self.window, self.kind, self.cap, self.fine = window, kind, cap, fine

    def cap_for(self, priority: RequestPriority, reserve: float) -> int:
        """The cap a ``priority`` request may fill up to, ``reserve`` being HIGH's share."""
        if priority is RequestPriority.HIGH or reserve <= 0:
            return self.cap
        share = math.floor(self.cap * (1.0 - reserve) + _EPS)
        # A fine window's share of one unit stays one unit: the minute window holds the reserve.
        return max(1, share) if self.fine else share


class _Hint:
    """What the provider said remains of one limit, until its reset."""

    __slots__ = ("remaining", "until")

    def __init__(self, remaining: int, until: float) -> None:
        self.remaining, self.until = remaining, until


class RateLimiter:
    """The books of one budget: a model's own limits, or a limit group's (shared by its models).

    Args:
        name: How errors name the budget (``"model 'fast'"``, ``"limit group 'org'"``).
        rpm: Requests per minute, or None.
        tpm: Estimated tokens per minute, or None.
        window_s: The pacing grain in seconds, in (0, 60].
    """

    def __init__(self, name: str, rpm: int | None, tpm: int | None, window_s: float = 60.0) -> None:
        self._name = name
        self._rpm, self._tpm = rpm, tpm
        self._window_s = float(window_s)
        windows: dict[float, _Window] = {}

        def window(span_s: float) -> _Window:
            key = round(span_s, 9)
            return windows.setdefault(key, _Window(span_s))

        constraints: list[_Constraint] = []
        for kind, limit in (("requests", rpm), ("tokens", tpm)):
            if limit is None:
                continue
            constraints.append(_Constraint(window(60.0), kind, limit, fine=False))
            if self._window_s < 60:
                share = limit * self._window_s / 60
                units = max(1, math.ceil(share - _EPS))
                span = self._window_s if abs(units - share) <= _EPS else units * 60 / limit
                constraints.append(_Constraint(window(span), kind, units, fine=True))
        self._windows = tuple(windows.values())
        self._constraints = tuple(constraints)
        self._hints: dict[str, _Hint] = {}
        self._listeners: list[Callable[[], None]] = []
        self._throttled_s = 0.0
        self._rate_limited = 0
        self._last_at = -math.inf

    def __repr__(self) -> str:
        limits = f"rpm={self._rpm} tpm={self._tpm} window_s={self._window_s:g}"
        return f"<RateLimiter {self._name} {limits}>"

    @property
    def name(self) -> str:
        """How errors name this budget."""
        return self._name

    @property
    def rpm(self) -> int | None:
        """Requests per minute, or None."""
        return self._rpm

    @property
    def tpm(self) -> int | None:
        """Estimated tokens per minute, or None."""
        return self._tpm

    @property
    def window_s(self) -> float:
        """The pacing grain."""
        return self._window_s

    @property
    def throttled_s(self) -> float:
        """Seconds the queues drawing on this budget waited for it (summed over them)."""
        return self._throttled_s

    @property
    def rate_limited(self) -> int:
        """Rate-limit answers (HTTP 429) seen by the models drawing on this budget."""
        return self._rate_limited

    @property
    def spans_s(self) -> tuple[float, ...]:
        """The spans of the windows it keeps (the longest, 60, holds the per-minute limits)."""
        return tuple(w.span_s for w in self._windows)

    @property
    def last_at(self) -> float:
        """When the latest admission was booked (``-inf`` before the first)."""
        return self._last_at

    def _expire(self, now: float) -> None:
        for window in self._windows:
            window.expire(now)
        for kind in [k for k, hint in self._hints.items() if hint.until <= now]:
            del self._hints[kind]

    def too_large(self, tokens: int, priority: RequestPriority, reserve: float) -> str | None:
        """Why an attempt of ``tokens`` could never fit these books, or None if it can."""
        for constraint in self._constraints:
            cap = constraint.cap_for(priority, reserve)
            span = constraint.window.span_s
            if constraint.kind == "requests" and cap < 1:
                return (
                    f"{self._name}'s max_requests_per_minute={self._rpm} leaves a "
                    f"{priority.name} request no share with high_reserve={reserve:g}; raise the "
                    "limit, lower RateLimitPolicy.high_reserve, or send it as HIGH"
                )
            if constraint.kind == "tokens" and tokens > cap:
                return (
                    f"estimated at {tokens} tokens, more than {self._name}'s "
                    f"max_tokens_per_minute={self._tpm} lets a {priority.name} request use in "
                    f"{span:g} s ({cap}): it could never be sent; lower LLMRequest.max_tokens "
                    "or shorten the messages"
                )
        return None

    def ready_at(
        self, tokens: int, priority: RequestPriority, now: float, reserve: float = 0.0
    ) -> float:
        """The earliest time an attempt of ``tokens`` fits (``now`` if it fits now)."""
        self._expire(now)
        when = now
        for constraint in self._constraints:
            cap = constraint.cap_for(priority, reserve)
            if constraint.kind == "requests":
                when = max(when, constraint.window.when_requests_fit(cap))
            else:
                when = max(when, constraint.window.when_tokens_fit(tokens, cap))
        for kind, need in (("requests", 1), ("tokens", tokens)):
            hint = self._hints.get(kind)
            if hint is not None and hint.remaining < need:
                when = max(when, hint.until)
        return when

    def book(self, admission: Admission, now: float) -> None:
        """Count an admission (made by :meth:`Budget.admit`) in every window."""
        self._expire(now)
        self._last_at = max(self._last_at, admission.at)
        for window in self._windows:
            window.add(admission)
        for kind, used in (("requests", 1), ("tokens", admission.tokens)):
            hint = self._hints.get(kind)
            if hint is not None:
                hint.remaining = max(0, hint.remaining - used)

    def reconcile(self, admission: Admission, tokens: int, now: float) -> None:
        """Replace ``admission``'s tokens with ``tokens`` where it is still in the books.

        Wakes the listeners when that frees budget.
        """
        self._expire(now)
        change = tokens - admission.tokens
        freed = False
        for window in self._windows:
            if window.holds(admission, now):
                window.tokens += change
                freed = freed or (change < 0 and self._tpm is not None)
        if freed:
            for wake in tuple(self._listeners):
                wake()

    def observe(self, headers: Mapping[str, str], now: float, max_reset_s: float) -> None:
        """Tighten the books to what the provider says remains until its reset.

        Unusable values are ignored; a negative remaining counts as 0; a reset is capped at
        ``max_reset_s``. Never raises.
        """
        for kind, (remaining, reset_s) in read_rate_limit_headers(headers).items():
            until = now + min(reset_s, max_reset_s)
            if until <= now:
                continue
            current = self._hints.get(kind)
            if current is None or current.until <= now or remaining < current.remaining:
                self._hints[kind] = _Hint(remaining, until)

    def record_throttled(self, seconds: float) -> None:
        """Add ``seconds`` a queue waited for this budget (ignored unless finite and > 0)."""
        if math.isfinite(seconds) and seconds > 0:
            self._throttled_s += seconds

    def record_rate_limited(self) -> None:
        """Count a rate-limit answer (HTTP 429)."""
        self._rate_limited += 1

    def add_listener(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (which must not raise) whenever budget frees before its time."""
        self._listeners.append(wake)

    def caps(self, reserve: float) -> tuple[tuple[str, float, int, int], ...]:
        """Each window's limit as ``(kind, stay_s, cap for HIGH, cap for the others)``.

        What a shared copy of these books needs to decide the same way (``_shared_limits``).
        """
        return tuple(
            (
                c.kind,
                c.window.stay_s,
                c.cap_for(RequestPriority.HIGH, reserve),
                c.cap_for(RequestPriority.NORMAL, reserve),
            )
            for c in self._constraints
        )

    def remaining(self, now: float) -> tuple[int | None, int | None]:
        """Requests and tokens a HIGH request could use now (None where there is no limit)."""
        self._expire(now)
        left: dict[str, int] = {}
        for constraint in self._constraints:
            window = constraint.window
            used = len(window) if constraint.kind == "requests" else window.tokens
            free = max(0, constraint.cap - used)
            left[constraint.kind] = min(left.get(constraint.kind, free), free)
        for kind, hint in self._hints.items():
            if kind in left:
                left[kind] = min(left[kind], hint.remaining)
        return left.get("requests"), left.get("tokens")


class Budget:
    """The books one model's lane draws on: its own limiter, then its limit group's.

    Args:
        limiters: The budgets that all apply (a group's limiter is shared by its models).
        high_reserve: The share of each budget only HIGH requests may use.
        max_reset_s: The longest a provider's reset header may hold the books (the model's
            ``RetryPolicy.max_retry_after_s``).
    """

    def __init__(
        self, limiters: tuple[RateLimiter, ...], *, high_reserve: float, max_reset_s: float
    ) -> None:
        if not 0 <= high_reserve < 1:
            raise ValueError(f"high_reserve is {high_reserve!r}; use a share in [0, 1)")
        if not (math.isfinite(max_reset_s) and max_reset_s >= 0):
            raise ValueError(f"max_reset_s is {max_reset_s!r}; use finite seconds >= 0")
        self._limiters = tuple(limiters)
        self._reserve = float(high_reserve)
        self._max_reset_s = float(max_reset_s)
        self._throttled_s = 0.0
        self._rate_limited = 0

    def __repr__(self) -> str:
        names = ", ".join(limiter.name for limiter in self._limiters) or "unlimited"
        return f"<Budget {names}>"

    @property
    def limited(self) -> bool:
        """Whether any limit applies at all."""
        return bool(self._limiters)

    @property
    def limiters(self) -> tuple[RateLimiter, ...]:
        """The budgets drawn on."""
        return self._limiters

    @property
    def throttled_s(self) -> float:
        """Seconds this lane's queue waited for budget."""
        return self._throttled_s

    @property
    def rate_limited(self) -> int:
        """Rate-limit answers (HTTP 429) this lane saw."""
        return self._rate_limited

    def too_large(self, tokens: int, priority: RequestPriority) -> str | None:
        """None, or why an attempt of ``tokens`` could never fit some limiter for ``priority``."""
        for limiter in self._limiters:
            reason = limiter.too_large(tokens, priority, self._reserve)
            if reason is not None:
                return reason
        return None

    def ready_at(self, tokens: int, priority: RequestPriority, now: float) -> float:
        """The earliest time an attempt of ``tokens`` fits every budget (``now`` if it fits now).

        ``inf`` only for what :meth:`too_large` refuses.
        """
        return max(
            (lim.ready_at(tokens, priority, now, self._reserve) for lim in self._limiters),
            default=now,
        )

    def admit(self, tokens: int, now: float) -> Admission:
        """Book an attempt of ``tokens`` estimated tokens in every budget, at ``now``."""
        # The books stay in time order even if a caller's clock reads earlier than another's.
        at = max([now, *(limiter.last_at for limiter in self._limiters)])
        admission = Admission(at, max(0, tokens))
        for limiter in self._limiters:
            limiter.book(admission, at)
        return admission

    async def admit_many(
        self, wanted: Sequence[tuple[int, RequestPriority, int]], now: float
    ) -> list[Admission]:
        """Shared books only: admit the longest head of ``wanted`` that fits, in one decision.

        ``wanted`` holds ``(estimated tokens, priority, queue rank)`` in queue order; the
        in-memory books are asked entry by entry (:meth:`ready_at`, :meth:`admit`) instead.
        """
        raise NotImplementedError("in-memory books admit synchronously: use ready_at and admit")

    def release(self, admissions: Sequence[Admission]) -> None:
        """Shared books only: give back admissions :meth:`admit_many` made that went unused."""
        if admissions:
            raise NotImplementedError("in-memory admissions are never given back")

    def settle(
        self, admission: Admission, used_tokens: object, headers: Mapping[str, str], now: float
    ) -> None:
        """Replace the estimate with real usage (0 for an error answer); read the headers.

        A second call for the same admission is a no-op. An unusable usage value (not a
        number, negative, not finite) keeps the estimate. Never raises on usage or headers.
        """
        if admission.settled:
            return
        tokens = _usage_tokens(used_tokens)
        admission._settled = True
        if tokens is not None and tokens != admission.tokens:
            for limiter in self._limiters:
                limiter.reconcile(admission, tokens, now)
            admission._tokens = tokens
        self.observe(headers, now)

    def observe(self, headers: Mapping[str, str], now: float) -> None:
        """Read a provider's rate-limit headers (from an answer without an admission)."""
        for limiter in self._limiters:
            limiter.observe(headers, now, self._max_reset_s)

    def record_throttled(self, seconds: float) -> None:
        """Count ``seconds`` the lane waited for this budget (here and in every limiter)."""
        if math.isfinite(seconds) and seconds > 0:
            self._throttled_s += seconds
            for limiter in self._limiters:
                limiter.record_throttled(seconds)

    shared = False
    """Whether the books live elsewhere (Redis): the lane then awaits :meth:`admit_many`
    instead of calling :meth:`ready_at` and :meth:`admit` (see ``_shared_limits.py``)."""

    def record_rate_limited(self, retry_after_s: float | None = None) -> None:
        """Count a rate-limit answer (HTTP 429), here and in every limiter.

        ``retry_after_s`` is the pause the provider asked for: the model's ``Breaker`` keeps it
        in this process; shared books also pause the other processes.
        """
        self._rate_limited += 1
        for limiter in self._limiters:
            limiter.record_rate_limited()

    def add_listener(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when budget frees early (a settle below the estimate, by any lane)."""
        for limiter in self._limiters:
            limiter.add_listener(wake)

    def remaining(self, now: float) -> tuple[int | None, int | None]:
        """Requests and tokens a HIGH request could use now (None where nothing limits them)."""
        each = [limiter.remaining(now) for limiter in self._limiters]
        return _least(r for r, _ in each), _least(t for _, t in each)


def _least(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _usage_tokens(value: object) -> int | None:
    """Real usage as booked tokens, or None when the value is unusable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return min(math.ceil(value), MAX_COUNT)


# -- provider headers ----------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)", re.ASCII)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HEADER_NAMES = {
    kind: (
        (f"anthropic-ratelimit-{kind}-remaining", f"anthropic-ratelimit-{kind}-reset"),
        (f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}"),
    )
    for kind in ("requests", "tokens")
}


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def parse_remaining(value: object) -> int | None:
    """A provider's remaining count: None if unusable, 0 if negative, clamped if absurd."""
    if not isinstance(value, str):
        return None
    number = _finite(value.strip())
    if number is None:
        return None
    return int(min(max(number, 0.0), MAX_COUNT))


def parse_reset(value: object) -> float | None:
    """Seconds until a provider's reset, from a duration (OpenAI: ``6m0s``, ``12ms``, ``7``) or
    an RFC 3339 time (Anthropic). None if unusable, 0 if past; ``inf`` stays for the caller to
    cap.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNIT_S[u] for n, u in parts)  # may be inf: the caller caps it
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text)
    if seconds is None or math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _seconds_until(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp() - time.time()
    except (ValueError, OverflowError, OSError):
        return None


def read_rate_limit_headers(headers: Mapping[str, str]) -> dict[str, tuple[int, float]]:
    """The usable (remaining, seconds to reset) pairs in ``headers``, by ``requests``/``tokens``.

    Header names are matched case-insensitively; a pair with either value unusable is left out.
    """
    lower = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    found: dict[str, tuple[int, float]] = {}
    for kind, pairs in _HEADER_NAMES.items():
        for remaining_key, reset_key in pairs:
            if remaining_key in lower and reset_key in lower:
                remaining = parse_remaining(lower[remaining_key])
                reset_s = parse_reset(lower[reset_key])
                if remaining is not None and reset_s is not None:
                    found[kind] = (remaining, reset_s)
                    break
    return found
