"""Monitoring figures: the value types ``Gateway.get_stats()`` returns, and the observer that
keeps their running counts."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import cattrs

from ._exceptions import RequestCancelledError
from ._observe import (
    AttemptFailed,
    CooldownStarted,
    Dispatched,
    Event,
    FellBack,
    Finished,
    RateLimited,
    Throttled,
)

if TYPE_CHECKING:
    from ._cost import ModelPricing
    from ._models import LLMResponse

__all__ = [
    "GatewayStats",
    "LatencySummary",
    "LimitGroupStats",
    "LiveFigures",
    "ModelStats",
    "SharedStateStats",
    "StatsObserver",
]

# Percentiles are over the most recent samples: monitoring wants "now", and a bounded window
# keeps memory flat however long the gateway runs.
SAMPLE_WINDOW = 4096


@attrs.frozen(eq=False)
class LatencySummary:
    """Percentiles of a duration, in milliseconds, over the most recent requests.

    Each is ``nan`` when there is no sample yet.

    Attributes:
        p50: The median, in ms.
        p95: The 95th percentile, in ms.
        p99: The 99th percentile, in ms.
    """

    p50: float = math.nan
    p95: float = math.nan
    p99: float = math.nan

    def _key(self) -> tuple[float | None, ...]:
        # Two summaries without samples (nan) are equal: no figure differs.
        return tuple(None if math.isnan(v) else v for v in (self.p50, self.p95, self.p99))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySummary):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

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
        cost_usd: What the completed requests cost, in US dollars (the sum of their
            ``LLMResponse.cost_usd``; a model without ``ModelConfig.pricing`` counts nothing).
        batch_savings_usd: What the batch lane saved, in US dollars: the full price of the
            requests it answered minus what they cost (``ModelPricing.batch_discount``).
        streams: Streamed requests (``gw.stream()``) that ended; they are counted in
            ``completed``, ``failed`` and ``cancelled`` too.
        time_to_first_token_ms: Streams: time from submission to the first chunk.
        batch_pending: Requests in the batch lane right now: gathering for a provider batch,
            or waiting for one to end (see ``docs/batch-api.md``); not in ``queued`` or
            ``in_flight``.
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
    cost_usd: float = 0.0
    batch_savings_usd: float = 0.0
    streams: int = 0
    time_to_first_token_ms: LatencySummary = attrs.field(factory=LatencySummary)
    batch_pending: int = 0


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
class SharedStateStats:
    """The link to the shared rate-limit books (``GatewayConfig.shared_state``).

    Attributes:
        connected: Whether Redis answered the last call (else the local books pace).
        errors: Calls to Redis that failed (refused, timed out, or an error answer).
        outages: Times Redis became unreachable (one warning is logged for each).
        local_admissions: Requests admitted by the local books while Redis was unreachable.
    """

    connected: bool
    errors: int
    outages: int
    local_admissions: int


@attrs.frozen(kw_only=True)
class GatewayStats:
    """What ``Gateway.get_stats()`` returns.

    Attributes:
        models: Model id -> its figures.
        total: The figures summed over every model (percentiles over all their samples).
        uptime_s: Seconds since the gateway opened.
        limit_groups: Each shared budget's figures, by group name.
        observer_errors: Failures of each observer (``"stats"``, ``"jsonl_log"``: a record
            that could not be built or written, e.g. a full disk; ``"telemetry"``: the
            OpenTelemetry observer, see ``docs/telemetry.md``), by name. Observers only
            watch: their failures never touch a request.
        shared_state: The link to the shared rate-limit books; ``None`` without
            ``GatewayConfig.shared_state``.
    """

    models: Mapping[str, ModelStats]
    total: ModelStats
    uptime_s: float
    limit_groups: Mapping[str, LimitGroupStats] = attrs.field(factory=dict)
    observer_errors: Mapping[str, int] = attrs.field(factory=dict)
    shared_state: SharedStateStats | None = None

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain dicts, lists and numbers (for JSON, dashboards, logs)."""
        result: dict[str, Any] = cattrs.unstructure(self)
        return result


@attrs.define
class _Counts:
    """The running counts of one model."""

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
    cost_usd: float = 0.0
    batch_savings_usd: float = 0.0
    queue_wait_ms: deque[float] = attrs.field(factory=lambda: deque(maxlen=SAMPLE_WINDOW))
    latency_ms: deque[float] = attrs.field(factory=lambda: deque(maxlen=SAMPLE_WINDOW))
    streams: int = 0
    ttft_ms: deque[float] = attrs.field(factory=lambda: deque(maxlen=SAMPLE_WINDOW))


@attrs.frozen
class LiveFigures:
    """What a model holds right now, read from the structures that hold it."""

    queued: int
    in_flight: int
    retrying: int
    cooldown_remaining_s: float
    remaining_requests: int | None
    remaining_tokens: int | None
    batch_pending: int = 0


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class StatsObserver:
    """Keeps every model's running counts from the lanes' events."""

    name = "stats"

    def __init__(
        self, model_ids: Iterable[str], pricing: Mapping[str, ModelPricing | None] | None = None
    ) -> None:
        self._counts = {model_id: _Counts() for model_id in model_ids}
        # Each model's prices: what a batch answer would have cost at the realtime price.
        self._pricing = dict(pricing or {})

    def observe(self, event: Event) -> None:
        counts = self._counts[event.model_id]
        if isinstance(event, Finished):
            entry = event.entry
            if event.response is not None:
                counts.completed += 1
                counts.input_tokens += event.response.usage.input_tokens
                counts.output_tokens += event.response.usage.output_tokens
                self._count_cost(counts, event.model_id, event.response)
            elif isinstance(event.error, RequestCancelledError):
                counts.cancelled += 1
            else:
                counts.failed += 1
            if event.phase == "in_flight":
                counts.latency_ms.append(_ms(event.at - entry.dispatched_at))
            stream = getattr(entry, "stream", None)  # tests may report entry-less events
            if stream is not None:
                counts.streams += 1
                if stream.committed:
                    counts.ttft_ms.append(_ms(stream.committed_at - entry.enqueued_at))
        elif isinstance(event, Dispatched):
            counts.batches += 1
            counts.batched += len(event.entries)
            for entry in event.entries:
                counts.queue_wait_ms.append(_ms(event.at - entry.enqueued_at))
        elif isinstance(event, AttemptFailed):
            if event.decision == "retry":
                counts.retries += 1
        elif isinstance(event, FellBack):
            counts.fallbacks += 1
        elif isinstance(event, CooldownStarted):
            counts.cooldowns += 1
        elif isinstance(event, RateLimited):
            counts.rate_limited += 1
        elif isinstance(event, Throttled):
            counts.throttled_s += event.seconds

    def _count_cost(self, counts: _Counts, model_id: str, response: LLMResponse) -> None:
        cost = response.cost_usd
        if cost is None:
            return
        counts.cost_usd += cost
        pricing = self._pricing.get(model_id)
        if response.batch_id is not None and pricing is not None:
            counts.batch_savings_usd += max(0.0, pricing.list_cost_usd(response.usage) - cost)

    def model(self, model_id: str, live: LiveFigures) -> ModelStats:
        """One model's figures."""
        return _summarise([self._counts[model_id]], live)

    def total(self, models: Iterable[ModelStats]) -> ModelStats:
        """The figures summed over every model (the longest cooldown for the cooldown)."""
        models = list(models)
        live = LiveFigures(
            queued=sum(m.queued for m in models),
            in_flight=sum(m.in_flight for m in models),
            retrying=sum(m.retrying for m in models),
            cooldown_remaining_s=max((m.cooldown_remaining_s for m in models), default=0.0),
            remaining_requests=None,  # budgets are per model and per group, not additive
            remaining_tokens=None,
            batch_pending=sum(m.batch_pending for m in models),
        )
        return _summarise(list(self._counts.values()), live)


def _summarise(counts: list[_Counts], live: LiveFigures) -> ModelStats:
    batches = sum(c.batches for c in counts)
    batched = sum(c.batched for c in counts)
    return ModelStats(
        queued=live.queued,
        in_flight=live.in_flight,
        completed=sum(c.completed for c in counts),
        failed=sum(c.failed for c in counts),
        cancelled=sum(c.cancelled for c in counts),
        retrying=live.retrying,
        retries=sum(c.retries for c in counts),
        fallbacks=sum(c.fallbacks for c in counts),
        cooldowns=sum(c.cooldowns for c in counts),
        cooldown_remaining_s=live.cooldown_remaining_s,
        rate_limited=sum(c.rate_limited for c in counts),
        throttled_s=sum(c.throttled_s for c in counts),
        remaining_requests=live.remaining_requests,
        remaining_tokens=live.remaining_tokens,
        batches=batches,
        mean_batch_size=batched / batches if batches else 0.0,
        queue_wait_ms=LatencySummary.of(s for c in counts for s in c.queue_wait_ms),
        latency_ms=LatencySummary.of(s for c in counts for s in c.latency_ms),
        input_tokens=sum(c.input_tokens for c in counts),
        output_tokens=sum(c.output_tokens for c in counts),
        cost_usd=sum(c.cost_usd for c in counts),
        batch_savings_usd=sum(c.batch_savings_usd for c in counts),
        streams=sum(c.streams for c in counts),
        time_to_first_token_ms=LatencySummary.of(s for c in counts for s in c.ttft_ms),
        batch_pending=live.batch_pending,
    )
