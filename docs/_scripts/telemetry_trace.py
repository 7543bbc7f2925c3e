"""Render docs/telemetry-trace.svg: the spans of a real run, as a timeline.

A real gateway (the Anthropic and OpenAI adapters, on real time) talks over loopback to the
fake LLM server, which answers the first two calls of one prompt with 503. An agent step asks
two things at once of a model that takes one call at a time: the second waits in the queue,
fails twice, and is answered by the fallback model. The spans go to the OpenTelemetry SDK's
in-memory exporter; this script draws them (no plotting library needed).

    python docs/_scripts/telemetry_trace.py   # writes docs/telemetry-trace.svg
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import anyio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig, RetryPolicy
from llm_gateway.testing import Fault, FaultPlan, open_fake_llm_server

OUT = Path(__file__).resolve().parents[1] / "telemetry-trace.svg"
SUMMARY = "Summarise the findings."


async def run(provider: TracerProvider) -> None:
    plan = FaultPlan(scripts={SUMMARY: [Fault.http(503, latency_s=0.2)] * 2}, latency_s=0.3)
    app = provider.get_tracer("research_agent")
    async with open_fake_llm_server(faults=plan) as server:
        models = {
            "claude": ModelConfig(
                provider="anthropic",
                model_name="claude-haiku-4-5",
                endpoint=server.base_url,
                api_key="fake-key",
                max_concurrency=1,
                retry=RetryPolicy(max_attempts=2, backoff_base_s=0.2),
                fallbacks=("gpt",),
            ),
            "gpt": ModelConfig(
                provider="openai",
                model_name="gpt-4o-mini",
                endpoint=server.openai_base_url,
                api_key="fake-key",
            ),
        }
        gateway = Gateway(models=models, log_dir=None, tracer_provider=provider)
        async with gateway:
            with app.start_as_current_span("agent step"):

                async def ask(text: str, priority: str) -> None:
                    request = LLMRequest(
                        model="claude",
                        messages=[LLMMessage("user", text)],
                        priority=priority,
                        max_tokens=256,
                    )
                    await gateway.request(request)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask, "Plan the next step.", "high")
                    await anyio.sleep(0.05)
                    tg.start_soon(ask, SUMMARY, "low")


def ordered(spans: Sequence[ReadableSpan]) -> list[tuple[int, ReadableSpan]]:
    """Depth-first, children by start time: (depth, span)."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    result: list[tuple[int, ReadableSpan]] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time or 0):
            result.append((depth, span))
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return result


def describe(span: ReadableSpan) -> list[str]:
    """The attributes worth a line under a span's bar."""
    a = dict(span.attributes or {})
    if "llm_gateway.priority" not in a:
        return []
    chain = " → ".join(str(m) for m in a.get("llm_gateway.fallback_chain", ()))  # type: ignore[union-attr]
    return [
        f"{a['llm_gateway.priority']} · queue wait {float(a['llm_gateway.queue_wait_s']):.2f} s"  # type: ignore[arg-type]
        f" · {a['llm_gateway.attempts']} attempts · {chain}",
        f"response.model {a.get('gen_ai.response.model')} · tokens "
        f"{a.get('gen_ai.usage.input_tokens')} in / {a.get('gen_ai.usage.output_tokens')} out",
    ]


def svg(spans: Sequence[ReadableSpan]) -> str:
    rows = ordered(spans)
    t0 = min(s.start_time or 0 for s in spans)
    t1 = max(s.end_time or 0 for s in spans)
    left, width, row_h, line_h = 240, 640, 34, 15
    scale = width / max(t1 - t0, 1)
    heights = [row_h + line_h * len(describe(s)) + 14 * len(s.events) for _, s in rows]
    total_h = 70 + sum(heights) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" '
        f'height="{total_h}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="16" y="24" font-size="15" font-weight="bold">A trace from a real run: '
        "one agent step, two gateway requests</text>",
    ]
    seconds = (t1 - t0) / 1e9
    for i in range(int(seconds / 0.25) + 1):
        x = left + i * 0.25e9 * scale
        out.append(f'<line x1="{x:.1f}" y1="40" x2="{x:.1f}" y2="{total_h - 24}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{total_h - 10}" fill="#888">{i * 0.25:.2f} s</text>')
    y = 50
    for (depth, span), h in zip(rows, heights, strict=True):
        x = left + ((span.start_time or 0) - t0) * scale
        w = max(((span.end_time or 0) - (span.start_time or 0)) * scale, 2)
        gateway = "llm_gateway.priority" in (span.attributes or {})
        fill = "#4c78a8" if gateway else "#9ecae9"
        out.append(
            f'<text x="{16 + depth * 16}" y="{y + 15}">{html.escape(span.name)}'
            f'<tspan fill="#888"> {span.kind.name}</tspan></text>'
        )
        out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="16" fill="{fill}"/>')
        text_y = y + row_h
        for line in describe(span):
            out.append(
                f'<text x="{left}" y="{text_y}" fill="#333" font-size="11">'
                f"{html.escape(line)}</text>"
            )
            text_y += line_h
        for event in span.events:
            ex = left + (event.timestamp - t0) * scale
            attributes = event.attributes or {}
            if event.name == "llm_gateway.attempt_failed":
                label = f"✗ {attributes.get('http.response.status_code')} → "
                label += str(attributes.get("llm_gateway.decision"))
                retry_in = attributes.get("llm_gateway.retry_in_s")
                if retry_in is not None:
                    label += f" in {float(retry_in):.2f} s"  # type: ignore[arg-type]
            else:
                label = f"↪ {attributes.get('llm_gateway.fallback_to')}"
            out.append(
                f'<line x1="{ex:.1f}" y1="{y}" x2="{ex:.1f}" y2="{text_y - 8}" stroke="#e45756" '
                'stroke-width="2"/>'
            )
            out.append(
                f'<text x="{ex + 3:.1f}" y="{text_y + 2}" fill="#e45756" font-size="11">'
                f"{html.escape(label)}</text>"
            )
            text_y += 14
        y += h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    anyio.run(run, provider)
    spans = exporter.get_finished_spans()
    for depth, span in ordered(spans):
        print("  " * depth + span.name, dict(span.attributes or {}))
        for event in span.events:
            print("  " * depth + "  *", event.name, dict(event.attributes or {}))
    OUT.write_text(svg(spans), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
