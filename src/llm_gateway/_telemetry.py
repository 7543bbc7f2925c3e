"""OpenTelemetry: one GenAI client span per request, and metrics, from the lanes' events.

This module imports ``opentelemetry`` (the API only) at its top, so the gateway imports it only
when it opens with telemetry on and the API is installed (from a checkout:
``pip install -e '.[otel]'``). Like every library that instruments itself, it uses the tracer and
meter providers the application configured (the global ones unless the gateway was given
others) and never configures an exporter. With no provider configured, the API's no-op tracer
makes every span non-recording: a request then costs one context read and one no-op span.

It is one more observer (:mod:`._observe`): it only watches, and anything it raises (a span
processor or a metric reader that fails, an attribute the SDK refuses) is counted in
``get_stats().observer_errors["telemetry"]`` and never reaches a request.

The span is started when the request is accepted, in the caller's task, on the caller's current
context: so it is a child of whatever span the caller has open, whichever task the lane later
runs the request in (trio and asyncio copy context into tasks differently; the lane's tasks
belong to the gateway, not to the caller). The span is never made current, so no context token
crosses a task. Spans and metrics hold metadata only: ids, model names, priorities, timings,
token counts, error class names. Message text only with the explicit ``telemetry_content``
opt-in; never an error's message (a provider's error may quote the prompt), never a key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import (
    NonRecordingSpan,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from ._exceptions import ProviderError
from ._models import RequestPriority
from ._observe import (
    AttemptFailed,
    CooldownStarted,
    Dispatched,
    Event,
    FellBack,
    Finished,
    Queued,
    RateLimited,
    Throttled,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

    from ._config import ModelConfig
    from ._lane import Lane
    from ._models import LLMRequest, LLMResponse
    from ._queue import Entry

__all__ = ["SCOPE", "Telemetry", "trace_context_of"]

SCOPE = "llm_gateway"
"""The instrumentation scope name of the gateway's spans and metrics."""

OPERATION = "chat"

UNCONFIGURED_RECHECK_S = 1.0
"""How often (s) telemetry on the global providers asks whether one was configured since."""

# The GenAI semantic conventions' advised buckets.
_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02, ... 81.92
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864

_SET_AT_START = frozenset({"gen_ai.operation.name", "gen_ai.request.model"})

_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def trace_context_of(trace_id: str) -> SpanContext | None:
    """The remote parent a request's ``trace_id`` stands for, or ``None`` if it names no trace.

    A W3C trace id (32 hex digits, not all zero; a UUID's dashes and upper case are accepted)
    becomes a sampled remote span context in that trace. Its span id is derived from the trace
    id, so every request of one trace hangs under the same (absent) parent.
    """
    digits = trace_id.replace("-", "").lower()
    if not _TRACE_ID.fullmatch(digits):
        return None
    value = int(digits, 16)
    if value == 0:
        return None
    span_id = (value & 0xFFFF_FFFF_FFFF_FFFF) or 1
    return SpanContext(value, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


class _Trace:
    """One request's span and what the span's end needs to know."""

    __slots__ = ("attempts", "chain", "gathering", "queued_s", "queued_since", "span")

    def __init__(self, span: Span, model_id: str, at: float, gathering: bool) -> None:
        self.span = span
        self.gathering = gathering  # in the batch lane, not yet in a provider batch
        self.attempts = 0
        self.chain = [model_id]
        self.queued_s = 0.0
        self.queued_since = at


class _Model:
    """One model's fixed names and attributes (built once, not per request)."""

    __slots__ = ("attributes", "model_name", "provider", "span_name")

    def __init__(self, config: ModelConfig) -> None:
        self.model_name = config.model_name
        self.provider = config.provider.kind.value
        self.span_name = f"{OPERATION} {config.model_name}"
        self.attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": config.model_name,
        }


def _messages(request: LLMRequest) -> str:
    return json.dumps(
        [
            {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
            for m in request.messages
        ]
    )


def _output(response: LLMResponse) -> str:
    parts: list[dict[str, Any]] = [{"type": "text", "content": response.content}]
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": dict(c.arguments)}
        for c in response.tool_calls
    ]
    message = {"role": "assistant", "parts": parts, "finish_reason": response.finish_reason}
    return json.dumps([message])


class Telemetry:
    """The OpenTelemetry observer: spans per request, GenAI and gateway metrics.

    Args:
        models: The gateway's models, by id.
        lanes: The gateway's lanes, by id (read by the in-flight gauge).
        aliases: Provider name -> the model id a request naming it goes to.
        content: Put message text on spans (the explicit ``telemetry_content`` opt-in).
        tracer_provider: Where spans go; the global provider when ``None``.
        meter_provider: Where metrics go; the global provider when ``None``.
    """

    name = "telemetry"

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        lanes: Mapping[str, Lane],
        aliases: Mapping[str, str],
        *,
        content: bool = False,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        from . import __version__

        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        # With the global provider: until when (loop time) none is known to be configured.
        self._unconfigured_until = -math.inf if tracer_provider is None else math.nan
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self._models = {model_id: _Model(config) for model_id, config in models.items()}
        self._lanes = lanes
        self._model_ids = aliases  # LLMRequest.model may name a provider instead of a model id
        self._content = content
        self._traces: dict[Entry, _Trace] = {}
        self._gathering: set[Entry] = set()  # accepted by a batch lane, not ended or requeued
        self._metric_attributes: dict[
            tuple[str, str, str | None], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
        ] = {}
        # Queued requests per (model id, priority), kept from events: the gauge's callback
        # may run on a metric reader's thread, where the lanes' queues must not be walked.
        self._depth = {(m, p): 0 for m in models for p in RequestPriority}
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration (submission to outcome, queue wait included)",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._retries = meter.create_counter(
            "llm_gateway.retries", unit="{attempt}", description="Failed attempts retried"
        )
        self._fallbacks = meter.create_counter(
            "llm_gateway.fallbacks",
            unit="{request}",
            description="Requests moved to a fallback model",
        )
        self._cooldowns = meter.create_counter(
            "llm_gateway.cooldowns", unit="{cooldown}", description="Cooldowns started"
        )
        self._rate_limited = meter.create_counter(
            "llm_gateway.rate_limited",
            unit="{response}",
            description="Rate-limit answers (HTTP 429) from the provider",
        )
        self._cost = meter.create_counter(
            "llm_gateway.cost",
            unit="USD",
            description="What answered requests cost (models with ModelConfig.pricing)",
        )
        self._throttled = meter.create_counter(
            "llm_gateway.throttled",
            unit="s",
            description="Time a model's queue waited for rate-limit budget",
        )
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            Queued: self._queued,
            Dispatched: self._dispatched,
            Finished: self._finished,
            AttemptFailed: self._attempt_failed,
            FellBack: self._fell_back,
            Throttled: self._throttled_for,
            CooldownStarted: self._cooldown_started,
            RateLimited: self._rate_limited_by,
        }
        meter.create_observable_gauge(
            "llm_gateway.queue.depth",
            callbacks=[self._observe_depth],
            unit="{request}",
            description="Requests waiting in a model's queue, by requested priority",
        )
        meter.create_observable_gauge(
            "llm_gateway.in_flight",
            callbacks=[self._observe_in_flight],
            unit="{request}",
            description="Provider calls under way",
        )

    # -- gauges (called by the metric reader, possibly on its own thread) -----------------

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            metrics.Observation(n, {"llm_gateway.model_id": m, "llm_gateway.priority": p.name})
            for (m, p), n in list(self._depth.items())
        ]

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        # len() of a set is atomic: safe from a reader's thread.
        return [
            metrics.Observation(len(lane._running), {"llm_gateway.model_id": model_id})
            for model_id, lane in list(self._lanes.items())
        ]

    # -- events (on the event loop's thread) ------------------------------------------------

    def observe(self, event: Event) -> None:
        # One lookup by type: most events (BatchFinished, ...) need nothing from telemetry.
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _throttled_for(self, event: Throttled) -> None:
        self._throttled.add(event.seconds, {"llm_gateway.model_id": event.model_id})

    def _cooldown_started(self, event: CooldownStarted) -> None:
        self._cooldowns.add(1, {"llm_gateway.model_id": event.model_id})

    def _rate_limited_by(self, event: RateLimited) -> None:
        self._rate_limited.add(1, {"llm_gateway.model_id": event.model_id})

    def _unconfigured(self, now: float) -> bool:
        """Whether the application has configured no global tracer provider (yet).

        Asking the API costs about as much as starting a no-op span (it reads the
        environment), so the answer is kept for a second: an application that configures
        OpenTelemetry after the gateway opened gets its spans within a second. Once a provider
        is configured, it stays so (the API sets the global provider once).
        """
        until = self._unconfigured_until
        if until != until:  # NaN: a provider was given or found; never ask again
            return False
        if now < until:
            return True
        if isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
            self._unconfigured_until = now + UNCONFIGURED_RECHECK_S
            return True
        self._unconfigured_until = math.nan
        return False

    def _queued(self, event: Queued) -> None:
        entry = event.entry
        request = entry.request
        if event.batch_api:  # gathering for the batch API: not in the queue's depth
            self._gathering.add(entry)
        else:
            self._depth[event.model_id, request.priority] += 1
        if event.retry:
            self._gathering.discard(entry)
            trace_ = self._traces.get(entry)
            if trace_ is not None:
                self._gathered(trace_, entry, event.at)
                trace_.queued_since = event.at
            return
        if self._unconfigured(event.at):
            return
        # In the caller's task: its current context is the span's parent.
        parent = otel_context.get_current()
        if request.trace_id is not None and not (
            trace.get_current_span(parent).get_span_context().is_valid
        ):
            remote = trace_context_of(request.trace_id)
            if remote is not None:
                parent = trace.set_span_in_context(NonRecordingSpan(remote), parent)
        model = self._models[event.model_id]
        span = self._tracer.start_span(model.span_name, parent, SpanKind.CLIENT)
        if not span.is_recording():  # no tracer provider configured, or not sampled
            return
        self._traces[entry] = _Trace(span, event.model_id, event.at, event.batch_api)
        attributes = dict(model.attributes)
        attributes["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        attributes["llm_gateway.model_id"] = event.model_id
        attributes["llm_gateway.request_id"] = request.request_id
        attributes["llm_gateway.priority"] = request.priority.name
        if request.agent_id is not None:
            attributes["llm_gateway.agent_id"] = request.agent_id
        if request.trace_id is not None:
            attributes["llm_gateway.trace_id"] = request.trace_id
        if event.batch_api:
            attributes["llm_gateway.batch_api"] = True
        if self._content:
            attributes["gen_ai.input.messages"] = _messages(request)
        span.set_attributes(attributes)

    @staticmethod
    def _gathered(trace_: _Trace, entry: Entry, now: float) -> None:
        """Count a batch-lane request's gathering as queue wait, and its batch as an attempt.

        The batch lane sends no events of its own: a request that left for a provider batch
        has its ``dispatched_at`` set; one that never did gathered until ``now``.
        """
        if not trace_.gathering:
            return
        trace_.gathering = False
        dispatched_at = entry.dispatched_at
        if dispatched_at == dispatched_at:  # not NaN: it went into a provider batch
            trace_.attempts += 1
            trace_.queued_s += dispatched_at - trace_.queued_since
        else:
            trace_.queued_s += now - trace_.queued_since

    def _dispatched(self, event: Dispatched) -> None:
        depth, traces, model_id = self._depth, self._traces, event.model_id
        for entry in event.entries:
            depth[model_id, entry.request.priority] -= 1
            trace_ = traces.get(entry)
            if trace_ is not None:
                trace_.attempts += 1
                trace_.queued_s += event.at - trace_.queued_since

    def _attempt_failed(self, event: AttemptFailed) -> None:
        entry = event.entry
        if event.phase == "queued":  # left a cooling model's queue for a fallback
            self._depth[event.model_id, entry.request.priority] -= 1
        if event.decision == "retry":
            self._retries.add(1, {"llm_gateway.model_id": event.model_id})
        trace_ = self._traces.get(entry)
        if trace_ is None:
            return
        if event.phase == "queued":
            trace_.queued_s += anyio.current_time() - trace_.queued_since
        error = event.error
        attributes: dict[str, Any] = {
            "llm_gateway.attempt": len(entry.failures),
            "llm_gateway.model_id": event.model_id,
            "llm_gateway.phase": event.phase,
            "llm_gateway.decision": event.decision,
            "error.type": type(error).__name__ if error is not None else "CooldownPastDeadline",
        }
        if event.delay_s is not None:
            attributes["llm_gateway.retry_in_s"] = event.delay_s
        if isinstance(error, ProviderError) and error.status_code is not None:
            attributes["http.response.status_code"] = error.status_code
        trace_.span.add_event("llm_gateway.attempt_failed", attributes)

    def _fell_back(self, event: FellBack) -> None:
        attributes = {
            "llm_gateway.model_id": event.model_id,
            "llm_gateway.fallback_to": event.to_model_id,
        }
        self._fallbacks.add(1, attributes)
        trace_ = self._traces.get(event.entry)
        if trace_ is not None:
            trace_.chain.append(event.to_model_id)
            trace_.span.add_event("llm_gateway.fallback", attributes)

    def _attributes_for(
        self, requested: str, answering: str, error_type: str | None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The metrics' attributes (duration, input tokens, output tokens) of an outcome.

        Built once per (requested model, answering model, error type): a request then records
        its metrics without building any.
        """
        model = self._models[answering]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": self._models[requested].model_name,
        }
        if error_type is None:
            attributes["gen_ai.response.model"] = model.model_name
        else:
            attributes["error.type"] = error_type
        return (
            attributes,
            {**attributes, "gen_ai.token.type": "input"},
            {**attributes, "gen_ai.token.type": "output"},
        )

    def _finished(self, event: Finished) -> None:
        entry = event.entry
        request = entry.request
        trace_ = self._traces.pop(entry, None)  # first: nothing is kept if the rest fails
        gathering = self._gathering
        if gathering and entry in gathering:  # a batch-lane request: never in the depth
            gathering.discard(entry)
        elif event.phase == "queued":
            self._depth[event.model_id, request.priority] -= 1
        response, error = event.response, event.error
        outcome = type(error).__name__ if response is None else None
        requested = self._model_ids.get(request.model, request.model)
        key = (requested, event.model_id, outcome)
        metric_attributes = self._metric_attributes.get(key)
        if metric_attributes is None:
            metric_attributes = self._metric_attributes[key] = self._attributes_for(*key)
        duration_attributes, input_attributes, output_attributes = metric_attributes
        self._duration.record(event.at - entry.enqueued_at, duration_attributes)
        if response is not None:
            usage = response.usage
            if response.cost_usd is not None:
                self._cost.add(response.cost_usd, {"llm_gateway.model_id": event.model_id})
            self._tokens.record(usage.input_tokens, input_attributes)
            self._tokens.record(usage.output_tokens, output_attributes)
        if trace_ is None:
            return
        span = trace_.span
        if trace_.gathering:
            self._gathered(trace_, entry, event.at)
        elif event.phase == "queued":
            trace_.queued_s += event.at - trace_.queued_since
        # The operation and the requested model are on the span since its start.
        attributes: dict[str, Any] = {
            k: v for k, v in duration_attributes.items() if k not in _SET_AT_START
        }
        attributes["llm_gateway.attempts"] = trace_.attempts
        attributes["llm_gateway.queue_wait_s"] = trace_.queued_s
        attributes["llm_gateway.fallback_chain"] = trace_.chain
        attributes["llm_gateway.answered_by"] = event.model_id
        stream = entry.stream
        if stream is not None:
            attributes["llm_gateway.stream"] = True
            if stream.committed:  # from submission to the first content chunk, as in the stats
                ttft = stream.committed_at - entry.enqueued_at
                attributes["llm_gateway.stream.time_to_first_token_s"] = ttft
        if response is not None:
            usage = response.usage
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if response.finish_reason is not None:
                attributes["gen_ai.response.finish_reasons"] = [response.finish_reason]
            if response.provider_request_id is not None:
                attributes["gen_ai.response.id"] = response.provider_request_id
            if response.cost_usd is not None:
                attributes["llm_gateway.cost_usd"] = response.cost_usd
            if response.batch_id is not None:
                attributes["llm_gateway.batch_id"] = response.batch_id
            if self._content:
                attributes["gen_ai.output.messages"] = _output(response)
        span.set_attributes(attributes)
        if error is not None:
            # The class name only: an error's message may quote the provider, and so the prompt.
            span.set_status(Status(StatusCode.ERROR))
        span.end()
