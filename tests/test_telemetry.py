"""OpenTelemetry: one GenAI span per request, nested under the caller's span, and metrics.

The SDK's global providers can be set once per process, so these tests hand the gateway its
own providers (``Gateway(tracer_provider=..., meter_provider=...)``); the global default path
runs in a subprocess (``test_the_global_providers_are_used_by_default``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llm_gateway import (
    ConfigError,
    Gateway,
    GatewayConfig,
    LLMRequest,
    LLMResponse,
    ModelConfig,
    ModelPricing,
    ProviderStatusError,
    RequestPriority,
    RetriesExhaustedError,
    RetryPolicy,
    Usage,
)
from llm_gateway._telemetry import trace_context_of
from llm_gateway.providers import Provider, open_provider
from llm_gateway.testing import FakeLLMApi, strategies

from ._support import ask, mock_model
from .conftest import run_on_virtual_time
from .test_batch_api import batch_model, low

Fail = Callable[[LLMRequest, str], BaseException | None]


@attrs.define
class Telemetry:
    """An SDK tracer and meter provider, exporting to memory."""

    spans: InMemorySpanExporter = attrs.field(factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = attrs.field(factory=InMemoryMetricReader)
    tracer_provider: TracerProvider = attrs.field(factory=TracerProvider)
    meter_provider: MeterProvider = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> Sequence[ReadableSpan]:
        return self.spans.get_finished_spans()

    def gateway_span(self, request_id: str) -> ReadableSpan:
        found = [
            s
            for s in self.finished()
            if (s.attributes or {}).get("llm_gateway.request_id") == request_id
        ]
        assert len(found) == 1, [s.name for s in self.finished()]
        return found[0]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:  # nothing recorded at all
            return []
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def dump(self) -> str:
        """Everything exported, as text: spans (attributes, events) and metrics."""
        data = self.reader.get_metrics_data()
        metrics = data.to_json() if data is not None else ""
        return "\n".join(s.to_json() for s in self.finished()) + metrics


@attrs.define
class ScriptedProvider:
    """Answers after ``latency`` s unless ``fail(request, model_id)`` gives an error."""

    model_id: str
    fail: Fail
    latency: float
    calls: list[tuple[str, str]]

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls.append((request.request_id, self.model_id))
        await anyio.sleep(self.latency)
        error = self.fail(request, self.model_id)
        if error is not None:
            raise error
        return LLMResponse(
            request_id=request.request_id,
            content=f"COMPLETION-{request.request_id}",
            model=self.model_id,
            usage=Usage(input_tokens=3, output_tokens=5),
            finish_reason="stop",
            # As the batch lane answers: with the provider batch's id.
            batch_id="msgbatch_1" if request.request_id.startswith("batched") else None,
        )


def scripted_gateway(
    models: dict[str, ModelConfig],
    otel: Telemetry | None,
    *,
    fail: Fail = lambda r, m: None,
    latency: float = 1.0,
    **config: Any,
) -> Gateway:
    calls: list[tuple[str, str]] = []

    def open_provider(model_id: str, _: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        return _yielding(ScriptedProvider(model_id, fail, latency, calls))

    return Gateway(
        GatewayConfig(models=models, log_dir=None, **config),
        provider_factory=open_provider,
        tracer_provider=None if otel is None else otel.tracer_provider,
        meter_provider=None if otel is None else otel.meter_provider,
    )


@asynccontextmanager
async def _yielding(provider: Provider) -> AsyncGenerator[Provider]:
    yield provider


def unavailable(request: LLMRequest, model_id: str) -> BaseException:
    # The message quotes the prompt, as a provider's 400 may: it must never reach a span.
    prompt = request.messages[0].content
    return ProviderStatusError(f"overloaded while reading {prompt!r}", status_code=503)


def model(model_name: str = "mock-model", **overrides: Any) -> ModelConfig:
    return ModelConfig(provider="mock", model_name=model_name, **overrides)


def primary_and_backup() -> dict[str, ModelConfig]:
    return {
        "primary": model(
            "primary-model",
            max_concurrency=1,
            retry=RetryPolicy(max_attempts=2, backoff_base_s=0.5),
            fallbacks=("backup",),
        ),
        "backup": model("backup-model"),
    }


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


# -- the span ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_queued_retried_fallen_back_request_is_one_span_under_the_callers(
    otel: Telemetry,
) -> None:
    # "blocker" holds primary's only slot for 1 s, so "r" waits in the queue; then both of
    # r's attempts on primary fail (503), and backup answers.
    def fail(request: LLMRequest, model_id: str) -> BaseException | None:
        if request.request_id == "r" and model_id == "primary":
            return unavailable(request, model_id)
        return None

    app = otel.tracer_provider.get_tracer("app")
    gw = scripted_gateway(primary_and_backup(), otel, fail=fail)
    with app.start_as_current_span("gateway owner"):  # the lanes' tasks start in this context
        async with gw:
            results: dict[str, LLMResponse] = {}

            async def blocker() -> None:
                results["blocker"] = await gw.request(ask("primary", request_id="blocker"))

            async def agent() -> None:
                with app.start_as_current_span("agent step"):
                    results["r"] = await gw.request(
                        ask(
                            "primary",
                            "the prompt",
                            request_id="r",
                            priority=RequestPriority.LOW,
                            max_tokens=64,
                            temperature=0.5,
                        )
                    )

            async with anyio.create_task_group() as tg:
                tg.start_soon(blocker)
                await anyio.sleep(0.1)
                tg.start_soon(agent)
    assert results["r"].model == "backup"
    assert gw.get_stats().observer_errors["telemetry"] == 0

    span = otel.gateway_span("r")
    (agent_step,) = [s for s in otel.finished() if s.name == "agent step"]
    assert span.name == "chat primary-model"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == agent_step.context.span_id  # not the gateway owner's span
    assert span.context.trace_id == agent_step.context.trace_id
    attributes = dict(span.attributes or {})
    queue_wait = attributes.pop("llm_gateway.queue_wait_s")
    assert queue_wait == pytest.approx(0.9, abs=1e-3)  # behind the blocker, 0.1 s to 1 s
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": "primary-model",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.model": "backup-model",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ("stop",),
        "llm_gateway.model_id": "primary",
        "llm_gateway.request_id": "r",
        "llm_gateway.priority": "LOW",
        "llm_gateway.attempts": 3,
        "llm_gateway.fallback_chain": ("primary", "backup"),
        "llm_gateway.answered_by": "backup",
    }
    assert span.status.status_code is StatusCode.UNSET
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [name for name, _ in events] == [
        "llm_gateway.attempt_failed",
        "llm_gateway.attempt_failed",
        "llm_gateway.fallback",
    ]
    retry, fallback, moved = (attributes for _, attributes in events)
    delay = float(retry.pop("llm_gateway.retry_in_s"))  # type: ignore[arg-type]
    assert 0 <= delay <= 0.5
    assert retry == {
        "llm_gateway.attempt": 1,
        "llm_gateway.model_id": "primary",
        "llm_gateway.phase": "in_flight",
        "llm_gateway.decision": "retry",
        "error.type": "ProviderStatusError",
        "http.response.status_code": 503,
    }
    assert fallback == {
        "llm_gateway.attempt": 2,
        "llm_gateway.model_id": "primary",
        "llm_gateway.phase": "in_flight",
        "llm_gateway.decision": "fallback",
        "error.type": "ProviderStatusError",
        "http.response.status_code": 503,
    }
    assert moved == {"llm_gateway.model_id": "primary", "llm_gateway.fallback_to": "backup"}
    # One span per request: r's and the blocker's, besides the application's two.
    assert sorted(s.name for s in otel.finished()) == [
        "agent step",
        "chat primary-model",
        "chat primary-model",
        "gateway owner",
    ]

    # Metrics: the counts of what happened.
    (retries,) = otel.points("llm_gateway.retries")
    assert (retries.value, dict(retries.attributes)) == (1, {"llm_gateway.model_id": "primary"})
    (fallbacks,) = otel.points("llm_gateway.fallbacks")
    assert fallbacks.value == 1
    assert dict(fallbacks.attributes) == {
        "llm_gateway.model_id": "primary",
        "llm_gateway.fallback_to": "backup",
    }
    durations = {p.attributes["gen_ai.response.model"]: p for p in otel.points(DURATION)}
    assert {k: (p.count, p.sum) for k, p in durations.items()} == {
        "primary-model": (1, pytest.approx(1.0, abs=1e-3)),  # the blocker
        "backup-model": (1, pytest.approx(0.9 + 1 + delay + 1 + 1, abs=1e-3)),  # r
    }
    assert dict(durations["backup-model"].attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": "primary-model",
        "gen_ai.response.model": "backup-model",
    }
    tokens = {
        (p.attributes["gen_ai.response.model"], p.attributes["gen_ai.token.type"]): (
            p.count,
            p.sum,
        )
        for p in otel.points("gen_ai.client.token.usage")
    }
    assert tokens == {
        ("primary-model", "input"): (1, 3),
        ("primary-model", "output"): (1, 5),
        ("backup-model", "input"): (1, 3),
        ("backup-model", "output"): (1, 5),
    }


DURATION = "gen_ai.client.operation.duration"


@pytest.mark.anyio
async def test_concurrent_callers_each_parent_their_own_request(otel: Telemetry) -> None:
    app = otel.tracer_provider.get_tracer("app")
    gw = scripted_gateway({"m": mock_model(batch_size=8)}, otel)
    async with gw, anyio.create_task_group() as tg:
        for i in range(6):

            async def caller(i: int = i) -> None:
                with app.start_as_current_span(f"caller {i}"):
                    await gw.request(ask(request_id=f"r{i}"))

            tg.start_soon(caller)
    callers = {s.name: s for s in otel.finished() if s.name.startswith("caller")}
    for i in range(6):
        span = otel.gateway_span(f"r{i}")
        assert span.parent is not None
        assert span.parent.span_id == callers[f"caller {i}"].context.span_id


@pytest.mark.anyio
async def test_a_submitted_request_keeps_the_context_it_was_submitted_in(
    otel: Telemetry,
) -> None:
    app = otel.tracer_provider.get_tracer("app")
    async with scripted_gateway({"m": mock_model()}, otel) as gw:
        with app.start_as_current_span("submitter") as submitter:
            fut = await gw.submit(ask(request_id="r"))
        with app.start_as_current_span("awaiter"):
            await fut
    span = otel.gateway_span("r")
    assert span.parent is not None
    assert span.parent.span_id == submitter.get_span_context().span_id


@pytest.mark.anyio
async def test_a_failed_request_has_its_error_type_and_each_attempt(otel: Telemetry) -> None:
    models = {"m": mock_model(retry=RetryPolicy(max_attempts=2, backoff_base_s=0))}
    async with scripted_gateway(models, otel, fail=unavailable) as gw:
        with pytest.raises(Exception, match="failed after 2 attempts"):
            await gw.request(ask(request_id="r"))
    span = otel.gateway_span("r")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None  # never the error's message
    attributes = span.attributes or {}
    assert attributes["error.type"] == "RetriesExhaustedError"
    assert attributes["llm_gateway.attempts"] == 2
    assert "gen_ai.response.model" not in attributes
    decisions = [(e.attributes or {})["llm_gateway.decision"] for e in span.events]
    assert decisions == ["retry", "fail"]
    (duration,) = otel.points(DURATION)
    assert duration.attributes["error.type"] == "RetriesExhaustedError"
    assert otel.points("gen_ai.client.token.usage") == []


@pytest.mark.anyio
async def test_a_request_trace_id_joins_that_trace_when_no_span_is_active(
    otel: Telemetry,
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    app = otel.tracer_provider.get_tracer("app")
    async with scripted_gateway({"m": mock_model()}, otel) as gw:
        await gw.request(ask(request_id="alone", trace_id=trace_id))
        await gw.request(ask(request_id="uuid", trace_id="4BF92F35-77B3-4DA6-A3CE-929D0E0E4736"))
        await gw.request(ask(request_id="not-hex", trace_id="run-42"))
        with app.start_as_current_span("caller") as caller:
            await gw.request(ask(request_id="inside", trace_id=trace_id))
    for request_id in ("alone", "uuid"):
        span = otel.gateway_span(request_id)
        assert span.context.trace_id == int(trace_id, 16)
        assert span.parent is not None and span.parent.is_remote
    assert (otel.gateway_span("alone").attributes or {})["llm_gateway.trace_id"] == trace_id
    odd = otel.gateway_span("not-hex")
    assert odd.parent is None  # a trace of its own; the id is still on the span
    assert (odd.attributes or {})["llm_gateway.trace_id"] == "run-42"
    inside = otel.gateway_span("inside")  # an active span wins
    assert inside.context.trace_id == caller.get_span_context().trace_id
    assert inside.parent is not None
    assert inside.parent.span_id == caller.get_span_context().span_id


@pytest.mark.parametrize(
    ("trace_id", "expected"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", 0x4BF92F3577B34DA6A3CE929D0E0E4736),
        ("4BF92F35-77B3-4DA6-A3CE-929D0E0E4736", 0x4BF92F3577B34DA6A3CE929D0E0E4736),
        ("0" * 32, None),  # the invalid trace id
        ("4bf92f3577b34da6a3ce929d0e0e473", None),  # 31 digits
        ("4bf92f3577b34da6a3ce929d0e0e4736ff", None),
        ("zbf92f3577b34da6a3ce929d0e0e4736", None),
        ("run-42", None),
    ],
)
def test_which_trace_ids_name_a_trace(trace_id: str, expected: int | None) -> None:
    context = trace_context_of(trace_id)
    if expected is None:
        assert context is None
    else:
        assert context is not None and context.is_valid and context.is_remote
        assert context.trace_id == expected
        assert context.trace_flags.sampled


# -- metrics ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_gauges_show_queue_depth_per_priority_and_calls_in_flight(
    otel: Telemetry,
) -> None:
    models = {"m": mock_model(max_concurrency=2), "idle": mock_model()}
    async with scripted_gateway(models, otel, latency=10) as gw:
        priorities = [RequestPriority.HIGH] * 1 + [RequestPriority.NORMAL] * 3
        priorities += [RequestPriority.LOW] * 2
        futures = [gw.submit_nowait(ask(priority=p)) for p in priorities]
        await anyio.sleep(1)  # two dispatched (HIGH and a NORMAL), four wait
        depth = {
            (p.attributes["llm_gateway.model_id"], p.attributes["llm_gateway.priority"]): p.value
            for p in otel.points("llm_gateway.queue.depth")
        }
        assert depth == {
            ("m", "HIGH"): 0,
            ("m", "NORMAL"): 2,
            ("m", "LOW"): 2,
            ("idle", "HIGH"): 0,
            ("idle", "NORMAL"): 0,
            ("idle", "LOW"): 0,
        }
        assert sum(depth.values()) == gw.get_stats().total.queued
        in_flight = {
            p.attributes["llm_gateway.model_id"]: p.value
            for p in otel.points("llm_gateway.in_flight")
        }
        assert in_flight == {"m": 2, "idle": 0}
        futures[-1].cancel()  # a cancelled request leaves the queue's depth too
        await anyio.lowlevel.checkpoint()
        depth_low = [
            p.value
            for p in otel.points("llm_gateway.queue.depth")
            if p.attributes == {"llm_gateway.model_id": "m", "llm_gateway.priority": "LOW"}
        ]
        assert depth_low == [1]
    assert {p.value for p in otel.points("llm_gateway.queue.depth")} == {0}


@pytest.mark.anyio
async def test_cost_is_on_the_span_and_counted(otel: Telemetry) -> None:
    pricing = ModelPricing(input_usd_per_mtok=1_000_000, output_usd_per_mtok=2_000_000)
    models = {"priced": model(pricing=pricing), "free": model()}
    async with scripted_gateway(models, otel) as gw:
        priced = await gw.batch([ask("priced", request_id=f"p{i}") for i in range(2)])
        await gw.request(ask("free", request_id="f"))
        await gw.request(ask("free", request_id="batched"))
    assert priced[0].cost_usd == 3 * 1 + 5 * 2
    assert (otel.gateway_span("p0").attributes or {})["llm_gateway.cost_usd"] == 13
    assert "llm_gateway.cost_usd" not in (otel.gateway_span("f").attributes or {})
    assert "llm_gateway.batch_id" not in (otel.gateway_span("f").attributes or {})  # realtime
    assert (otel.gateway_span("batched").attributes or {})["llm_gateway.batch_id"] == "msgbatch_1"
    (cost,) = otel.points("llm_gateway.cost")
    assert (cost.value, dict(cost.attributes)) == (26, {"llm_gateway.model_id": "priced"})
    assert cost.value == gw.get_stats().total.cost_usd


@pytest.mark.anyio
async def test_a_stream_has_its_time_to_first_token_and_the_callers_parent(
    otel: Telemetry,
) -> None:
    app = otel.tracer_provider.get_tracer("app")
    gw = Gateway(
        GatewayConfig(models={"m": model(max_concurrency=1)}, log_dir=None),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    async with gw:
        with app.start_as_current_span("reader") as reader:
            async with gw.stream(ask(request_id="s")) as stream:
                text = "".join([chunk.text async for chunk in stream])
        await gw.request(ask(request_id="plain"))
    assert text
    span = otel.gateway_span("s")
    assert span.parent is not None
    assert span.parent.span_id == reader.get_span_context().span_id
    attributes = span.attributes or {}
    assert attributes["llm_gateway.stream"] is True
    ttft = gw.get_stats().models["m"].time_to_first_token_ms.p50 / 1000
    assert attributes["llm_gateway.stream.time_to_first_token_s"] == pytest.approx(ttft, abs=1e-6)
    plain = otel.gateway_span("plain").attributes or {}
    assert "llm_gateway.stream" not in plain
    assert "llm_gateway.stream.time_to_first_token_s" not in plain


@pytest.mark.anyio
async def test_a_batch_api_request_is_one_span_with_its_batch_and_no_queue_depth(
    otel: Telemetry, tmp_path: Path
) -> None:
    api = FakeLLMApi()
    api.batches.processing_delay_s = 600.0
    model_config = batch_model("anthropic", window_s=60.0, poll_interval_s=30.0)

    def factory(model_id: str, config: ModelConfig) -> Any:
        return open_provider(model_id, config, http_client=api.mock_client())

    app = otel.tracer_provider.get_tracer("app")
    gw = Gateway(
        GatewayConfig(models={"m": model_config}, log_dir=None, state_dir=str(tmp_path)),
        provider_factory=factory,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    async with gw:
        # The SDK's first call works in a worker thread (the virtual clock may jump): warm up.
        await gw.request(low("warm-up", priority="high"))
        with app.start_as_current_span("nightly job") as job:
            kept = await gw.submit(low("summarise", request_id="kept"))
            dropped = await gw.submit(low("never mind", request_id="dropped"))
        dropped.cancel()  # while gathering
        await anyio.sleep(1)
        assert {p.value for p in otel.points("llm_gateway.queue.depth")} == {0}
        answer = await kept
    assert answer.batch_id is not None
    span = otel.gateway_span("kept")
    assert span.parent is not None
    assert span.parent.span_id == job.get_span_context().span_id
    attributes = span.attributes or {}
    assert attributes["llm_gateway.batch_api"] is True
    assert attributes["llm_gateway.batch_id"] == answer.batch_id
    assert attributes["llm_gateway.cost_usd"] == answer.cost_usd
    assert attributes["llm_gateway.attempts"] == 1
    assert attributes["llm_gateway.queue_wait_s"] == pytest.approx(60.0, abs=1e-3)  # gathering
    cancelled = otel.gateway_span("dropped").attributes or {}
    assert cancelled["error.type"] == "RequestCancelledError"
    assert cancelled["llm_gateway.attempts"] == 0
    assert {p.value for p in otel.points("llm_gateway.queue.depth")} == {0}


@pytest.mark.anyio
async def test_cooldowns_rate_limits_and_throttling_are_counted(otel: Telemetry) -> None:
    models = {
        "m": mock_model(
            max_requests_per_minute=60,
            rate_limit=attrs.evolve(mock_model().rate_limit, window_s=1),
            retry=RetryPolicy(max_attempts=1),
        )
    }

    def limited(request: LLMRequest, model_id: str) -> BaseException | None:
        if request.request_id == "429":
            return ProviderStatusError("slow down", status_code=429, retry_after_s=2)
        return None

    async with scripted_gateway(models, otel, fail=limited, latency=0.1) as gw:
        await gw.batch([ask(request_id=f"r{i}") for i in range(3)])
        with pytest.raises(RetriesExhaustedError):
            await gw.request(ask(request_id="429"))
        stats = gw.get_stats().models["m"]
    values = {
        name: sum(p.value for p in otel.points(name))
        for name in ("llm_gateway.throttled", "llm_gateway.rate_limited", "llm_gateway.cooldowns")
    }
    assert values["llm_gateway.throttled"] == pytest.approx(stats.throttled_s)
    assert values["llm_gateway.throttled"] > 1  # one request a second: r1, r2 and 429 waited
    assert values["llm_gateway.rate_limited"] == stats.rate_limited == 1
    assert values["llm_gateway.cooldowns"] == stats.cooldowns == 1


# -- privacy ----------------------------------------------------------------------------------

SECRET_KEY = "sk-Telemetry-Must-Never-See-This-Key"
PROMPT = "PROMPT-MARKER"


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=25)
@given(
    request=strategies.requests(["m"]),
    fail_first=st.booleans(),
)
def test_no_prompt_completion_or_key_reaches_a_span_or_metric(
    backend: str, request: LLMRequest, fail_first: bool
) -> None:
    run_on_virtual_time(backend, partial(_check_privacy, request, fail_first, content=False))


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_the_content_opt_in_puts_the_messages_on_the_span(backend: str) -> None:
    request = ask(text="what is 2 + 2?", request_id="r", temperature=0.3)
    run_on_virtual_time(backend, partial(_check_privacy, request, False, content=True))


async def _check_privacy(request: LLMRequest, fail_first: bool, *, content: bool) -> None:
    otel = Telemetry()
    marked = attrs.evolve(
        request,
        messages=[attrs.evolve(m, content=PROMPT + m.content) for m in request.messages],
    )
    failed: set[str] = set()

    def fail(r: LLMRequest, model_id: str) -> BaseException | None:
        if fail_first and r.request_id not in failed:
            failed.add(r.request_id)
            return unavailable(r, model_id)
        return None

    models = {"m": mock_model(api_key=SECRET_KEY, retry=RetryPolicy(backoff_base_s=0.1))}
    gw = scripted_gateway(models, otel, fail=fail, telemetry_content=content)
    async with gw:
        response = await gw.request(marked)
    dump = otel.dump()
    span = otel.gateway_span(request.request_id)
    assert span.attributes is not None
    if content:
        # The opt-in puts the text on the span (so the check below can see a leak).
        messages = json.loads(str(span.attributes["gen_ai.input.messages"]))
        assert messages == [
            {"role": "user", "parts": [{"type": "text", "content": PROMPT + "what is 2 + 2?"}]}
        ]
        output = json.loads(str(span.attributes["gen_ai.output.messages"]))
        assert output[0]["parts"][0]["content"] == response.content
    else:
        assert PROMPT not in dump
        assert "COMPLETION-" not in dump
        assert "overloaded while reading" not in dump  # the error's message
    assert SECRET_KEY not in dump
    assert "Must-Never" not in dump


# -- an observer that fails harms nothing ------------------------------------------------------


class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise OSError("the collector is down")


class RaisingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor bug")


@pytest.mark.anyio
async def test_a_raising_exporter_or_processor_harms_no_request_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    otel = Telemetry()
    otel.tracer_provider.add_span_processor(SimpleSpanProcessor(RaisingExporter()))
    otel.tracer_provider.add_span_processor(RaisingProcessor())
    caplog.set_level(logging.WARNING)
    start = anyio.current_time()
    async with scripted_gateway({"m": mock_model()}, otel) as gw:
        responses = await gw.batch([ask(request_id=f"r{i}") for i in range(5)])
    assert [r.request_id for r in responses] == [f"r{i}" for i in range(5)]
    assert anyio.current_time() - start == pytest.approx(1.0, abs=1e-3)  # not delayed
    assert gw.get_stats().observer_errors["telemetry"] == 5  # each span's end raised
    warnings = [r for r in caplog.records if "telemetry observer failed" in r.getMessage()]
    assert len(warnings) == 1
    assert gw.get_stats().models["m"].completed == 5
    # The SDK contained the exporter's failure itself: the spans before it were exported.
    assert len(otel.finished()) == 5


class BrokenMeterProvider(MeterProvider):
    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("meter provider bug")


@pytest.mark.anyio
async def test_telemetry_that_cannot_start_is_counted_and_the_gateway_serves() -> None:
    gw = Gateway(
        GatewayConfig(models={"m": mock_model()}, log_dir=None),
        meter_provider=BrokenMeterProvider(),
    )
    async with gw:
        response = await gw.request(ask())
    assert response.content
    assert gw.get_stats().observer_errors["telemetry"] == 1


# -- switching it on and off, and what it costs to import ---------------------------------


@pytest.mark.anyio
async def test_telemetry_off_records_nothing(otel: Telemetry) -> None:
    async with scripted_gateway({"m": mock_model()}, otel, telemetry="off") as gw:
        await gw.request(ask())
    assert otel.finished() == ()
    assert "telemetry" not in gw.get_stats().observer_errors
    assert otel.points(DURATION) == []


def run_python(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


GLOBAL_DEFAULT = """
import sys, anyio
import llm_gateway
from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported at import"
gw = Gateway(models={"m": ModelConfig(provider="mock", model_name="mock-1")}, log_dir=None)
assert not [m for m in sys.modules if m.startswith("opentelemetry.")], "imported when built"

async def ask(gw):
    async with gw:
        return await gw.request(LLMRequest(model="m", messages=[LLMMessage("user", "hi")]))

anyio.run(ask, gw)  # no provider configured: nothing recorded, nothing kept
print(sorted(gw.get_stats().observer_errors.items()))

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
gw = Gateway(models={"m": ModelConfig(provider="mock", model_name="mock-1")}, log_dir=None)
anyio.run(ask, gw, backend="{backend}")
print([s.name for s in exporter.get_finished_spans()])
names = [m.name for rm in reader.get_metrics_data().resource_metrics
         for sm in rm.scope_metrics for m in sm.metrics]
print("gen_ai.client.operation.duration" in names)
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_the_global_providers_are_used_by_default(backend: str) -> None:
    out = run_python(GLOBAL_DEFAULT.replace("{backend}", backend))
    assert out.splitlines() == [
        "[('stats', 0), ('telemetry', 0)]",
        "['chat mock-1']",
        "True",
    ]


LATE_SETUP = """
import sys, anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig

exporter = InMemorySpanExporter()

async def main():
    gw = Gateway(models={"m": ModelConfig(provider="mock", model_name="x")}, log_dir=None)
    async with gw:
        ask = lambda i: LLMRequest(model="m", messages=[LLMMessage("user", "hi")], request_id=i)
        await gw.request(ask("before"))
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # configured after the gateway opened
        await gw.request(ask("at once"))
        await anyio.sleep(1.0)
        await gw.request(ask("a second later"))

anyio.run(main, backend=sys.argv[1])
print([s.attributes["llm_gateway.request_id"] for s in exporter.get_finished_spans()])
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_global_provider_configured_after_the_gateway_opened_gets_spans_within_a_second(
    backend: str,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LATE_SETUP, backend], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['a second later']"


OFF_THE_LOOP = """
import sys, threading, anyio
from llm_gateway import Gateway, ModelConfig
seen = {}
sys.addaudithook(
    lambda event, args: event == "import" and args[0] == "opentelemetry.trace"
    and seen.setdefault("thread", threading.get_ident())
)

async def main():
    async with Gateway(models={"m": ModelConfig(provider="mock", model_name="x")}, log_dir=None):
        return threading.get_ident()

loop_thread = anyio.run(main, backend=sys.argv[1])
print("opentelemetry.trace" in sys.modules, seen["thread"] != loop_thread)
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_on_real_time_the_api_is_imported_off_the_event_loop(backend: str) -> None:
    assert run_python(OFF_THE_LOOP, backend).split() == ["True", "True"]


WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import anyio
from llm_gateway import ConfigError, Gateway, LLMMessage, LLMRequest, ModelConfig
models = {"m": ModelConfig(provider="mock", model_name="mock-1")}

async def ask(gw):
    async with gw:
        return await gw.request(LLMRequest(model="m", messages=[LLMMessage("user", "hi")]))

gw = Gateway({"models": models, "log_dir": None})
print(anyio.run(ask, gw).model, dict(gw.get_stats().observer_errors))
try:
    Gateway({"models": models, "log_dir": None, "telemetry": "on"})
except ConfigError as exc:
    print(exc)
"""


def test_without_opentelemetry_auto_is_off_and_on_is_refused() -> None:
    out = run_python(WITHOUT_OTEL).splitlines()
    assert out[0] == "m {'stats': 0}"
    assert out[1].startswith("GatewayConfig.telemetry is 'on' but opentelemetry-api is not")
    assert "pip install -e '.[otel]'" in out[1]


def test_telemetry_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"GatewayConfig.telemetry must be one of .*'off'"):
        GatewayConfig(models={"m": mock_model()}, telemetry="of")
    with pytest.raises(ConfigError, match="telemetry_content must be a bool"):
        GatewayConfig(models={"m": mock_model()}, telemetry_content="yes")  # type: ignore[arg-type]
