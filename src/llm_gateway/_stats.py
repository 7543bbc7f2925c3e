"""Monitoring figures: the value types ``Gateway.get_stats()`` returns, and their bookkeeping."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import cattrs

__all__ = ["GatewayStats", "LatencySummary", "LimitGroupStats", "ModelStats"]

# Percentiles are over the most recent samples: monitoring wants "now", and a bounded window
# keeps memory flat however long the gateway runs.
SAMPLE_WINDOW = 4096


@attrs.frozen
class LatencySummary:
    """Percentiles of a duration, in milliseconds, over the most recent requests.

    Each is ``nan`` when there is no sample yet.
    """

    p50: float = math.nan
    p95: float = math.nan
    p99: float = math.nan

    @classmethod
    def of(cls, samples: Iterable[float]) -> LatencySummary:
        ordered = sorted(samples)
        if not ordered:
            return cls()

        def rank(q: float) -> float:  # nearest-rank percentile
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(rank(0.50), rank(0.95), rank(0.99))


@attrs.frozen(kw_only=True)
class ModelStats:
    """Figures for one model, or for the whole gateway (``GatewayStats.total``).

    Attributes:
        queued: Requests accepted and waiting for dispatch.
        in_flight: Requests dispatched and not finished.
        completed: Requests answered.
        failed: Requests that ended in an error (timeouts and shutdown aborts included).
        cancelled: Requests cancelled by their caller.
        retrying: Requests waiting out a backoff before their next attempt.
        retries: Attempts that were retried.
        fallbacks: Requests moved from this model to a fallback model.
        cooldowns: Cooldowns started (the model paused dispatching).
        cooldown_remaining_s: Seconds until the current cooldown ends (0: none).
        rate_limited: Rate-limit answers (HTTP 429) seen from the provider.
        throttled_s: Seconds the model's queue waited for rate-limit budget.
        remaining_requests: Requests the rate limits admit right now (``None``: no limit).
        remaining_tokens: Tokens the rate limits admit right now (``None``: no limit).
        batches: Batches dispatched.
        mean_batch_size: Requests per batch, on average (0 before the first batch).
        queue_wait_ms: Time from submission to dispatch.
        latency_ms: Time from dispatch to the end of the request.
        input_tokens: Input tokens of completed requests.
        output_tokens: Output tokens of completed requests.
    """

    queued: int
    in_flight: int
    completed: int
    failed: int
    cancelled: int
    retrying: int
    retries: int
    fallbacks: int
    cooldowns: int
    cooldown_remaining_s: float
    rate_limited: int
    throttled_s: float
    remaining_requests: int | None
    remaining_tokens: int | None
    batches: int
    mean_batch_size: float
    queue_wait_ms: LatencySummary
    latency_ms: LatencySummary
    input_tokens: int
    output_tokens: int


@attrs.frozen(kw_only=True)
class LimitGroupStats:
    """A shared rate-limit budget's figures.

    Attributes:
        remaining_requests: Requests it admits right now (``None``: no request limit).
        remaining_tokens: Tokens it admits right now (``None``: no token limit).
        throttled_s: Seconds its models' queues waited for its budget (summed over models).
        rate_limited: Rate-limit answers (HTTP 429) its models saw.
    """

    remaining_requests: int | None
    remaining_tokens: int | None
    throttled_s: float
    rate_limited: int


@attrs.frozen(kw_only=True)
class GatewayStats:
    """What ``Gateway.get_stats()`` returns.

    Attributes:
        models: Model id -> its figures.
        total: The figures summed over every model (percentiles over all their samples).
        uptime_s: Seconds since the gateway opened.
        limit_groups: Each shared budget's figures, by group name.
    """

    models: Mapping[str, ModelStats]
    total: ModelStats
    uptime_s: float
    limit_groups: Mapping[str, LimitGroupStats] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain dicts, lists and numbers (for JSON, dashboards, logs)."""
        result: dict[str, Any] = cattrs.unstructure(self)
        return result


@attrs.define
class StatsRecorder:
    """The running counters of one model's batcher."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retries: int = 0
    fallbacks: int = 0
    cooldowns: int = 0
    rate_limited: int = 0
    throttled_s: float = 0.0
    batches: int = 0
    batched: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    queue_wait_ms: deque[float] = attrs.field(factory=lambda: deque(maxlen=SAMPLE_WINDOW))
    latency_ms: deque[float] = attrs.field(factory=lambda: deque(maxlen=SAMPLE_WINDOW))


def summarise(
    recorders: list[StatsRecorder],
    *,
    queued: int,
    in_flight: int,
    retrying: int,
    cooldown_remaining_s: float,
    remaining_requests: int | None,
    remaining_tokens: int | None,
) -> ModelStats:
    batches = sum(r.batches for r in recorders)
    batched = sum(r.batched for r in recorders)
    return ModelStats(
        queued=queued,
        in_flight=in_flight,
        completed=sum(r.completed for r in recorders),
        failed=sum(r.failed for r in recorders),
        cancelled=sum(r.cancelled for r in recorders),
        retrying=retrying,
        retries=sum(r.retries for r in recorders),
        fallbacks=sum(r.fallbacks for r in recorders),
        cooldowns=sum(r.cooldowns for r in recorders),
        cooldown_remaining_s=cooldown_remaining_s,
        rate_limited=sum(r.rate_limited for r in recorders),
        throttled_s=sum(r.throttled_s for r in recorders),
        remaining_requests=remaining_requests,
        remaining_tokens=remaining_tokens,
        batches=batches,
        mean_batch_size=batched / batches if batches else 0.0,
        queue_wait_ms=LatencySummary.of(s for r in recorders for s in r.queue_wait_ms),
        latency_ms=LatencySummary.of(s for r in recorders for s in r.latency_ms),
        input_tokens=sum(r.input_tokens for r in recorders),
        output_tokens=sum(r.output_tokens for r in recorders),
    )


def total_snapshot(recorders: list[StatsRecorder], models: list[ModelStats]) -> ModelStats:
    """The figures summed over several models (the longest cooldown for the cooldown)."""
    return summarise(
        recorders,
        queued=sum(m.queued for m in models),
        in_flight=sum(m.in_flight for m in models),
        retrying=sum(m.retrying for m in models),
        cooldown_remaining_s=max((m.cooldown_remaining_s for m in models), default=0.0),
        remaining_requests=None,  # budgets are per model and per group, not additive
        remaining_tokens=None,
    )
