"""What streaming through the gateway costs: CPU per chunk, and time to the first token.

Side by side in one process, interleaved repetition by repetition (the order rotated each
time), on asyncio and on trio, for both protocols, over a real loopback socket to the fake LLM
API (``open_fake_llm_server``, run in its own process so its CPU is not counted):

- **raw SDK**: ``client.chat.completions.create(stream=True)`` / ``client.messages.create(
  stream=True)``, iterated to the end (what an agent that bypasses the gateway runs);
- **gateway**: ``async with gw.stream(request) as stream: async for chunk in stream``, on the
  same HTTP client (httpx2), with the same ``include_usage`` option.

CPU per chunk is the process's CPU time over sequential streams divided by the content chunks
received. Time to first token is from the call to the first content chunk, for a HIGH request
on an idle gateway; the gateway's added time is its p50 minus the raw SDK's.

Targets: CPU per chunk through the gateway <= 1.10x the raw SDK stream; idle HIGH added time to
first token p50 < 1 ms.

    python -m benchmarks.bench_stream [--quick]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import anyio

BACKENDS = ("asyncio", "trio")
PROTOCOLS = ("openai", "anthropic")
CONTENDERS = ("raw SDK", "gateway")
CPU_TARGET = 1.10
TTFT_TARGET_MS = 1.0


def _serve(conn: Connection) -> None:
    from llm_gateway.testing import open_fake_llm_server

    async def main() -> None:
        async with open_fake_llm_server() as server:
            conn.send(server.port)
            await anyio.sleep_forever()

    anyio.run(main)


def _prompt(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


async def _raw(clients: dict[str, Any], protocol: str, prompt: str) -> tuple[int, float]:
    """One raw SDK stream: (content chunks, seconds to the first one)."""
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    if protocol == "openai":
        stream = await clients["openai"].chat.completions.create(
            model="g",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.0,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                if chunks == 1:
                    first = time.perf_counter() - started
    else:
        stream = await clients["anthropic"].messages.create(
            model="c", max_tokens=4096, messages=[{"role": "user", "content": prompt}], stream=True
        )
        async for event in stream:
            if event.type == "content_block_delta":
                chunks += 1
                if chunks == 1:
                    first = time.perf_counter() - started
    return chunks, first


async def _through(gw: Any, protocol: str, prompt: str) -> tuple[int, float]:
    """One stream through the gateway: (chunks, seconds to the first one)."""
    from llm_gateway import LLMMessage, LLMRequest

    request = LLMRequest(
        model=protocol, messages=[LLMMessage("user", prompt)], priority="high", max_tokens=4096
    )
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    async with gw.stream(request) as stream:
        async for _chunk in stream:
            chunks += 1
            if chunks == 1:
                first = time.perf_counter() - started
    return chunks, first


async def _backend(port: int, reps: int, streams: int, words: int, samples: int) -> dict[str, Any]:
    import anthropic
    import httpx2
    import openai

    from llm_gateway import Gateway, ModelConfig

    base = f"http://127.0.0.1:{port}"
    options = {"http_client": "httpx"}  # the raw SDK's own client: compare like with like
    models = {
        "openai": ModelConfig(
            provider="openai",
            model_name="g",
            endpoint=f"{base}/v1",
            api_key="k-openai",
            provider_options=options,
        ),
        "anthropic": ModelConfig(
            provider="anthropic",
            model_name="c",
            endpoint=base,
            api_key="k-anthropic",
            provider_options=options,
        ),
    }
    prompt = _prompt(words)
    cpu: dict[str, dict[str, list[float]]] = {p: {c: [] for c in CONTENDERS} for p in PROTOCOLS}
    ttft: dict[str, dict[str, list[float]]] = {p: {c: [] for c in CONTENDERS} for p in PROTOCOLS}
    chunks_per_stream: dict[str, int] = {}
    async with (
        openai.AsyncOpenAI(
            api_key="k-openai",
            base_url=f"{base}/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(),
        ) as oa,
        anthropic.AsyncAnthropic(
            api_key="k-anthropic", base_url=base, max_retries=0, http_client=httpx2.AsyncClient()
        ) as an,
        Gateway(models=models) as gw,
    ):
        clients = {"openai": oa, "anthropic": an}

        async def one(contender: str, protocol: str, text: str) -> tuple[int, float]:
            if contender == "raw SDK":
                return await _raw(clients, protocol, text)
            return await _through(gw, protocol, text)

        for protocol in PROTOCOLS:  # warm up: connections, the SDKs' platform probes
            for contender in CONTENDERS:
                await one(contender, protocol, prompt)
        for rep in range(reps):
            for protocol in PROTOCOLS:
                order = CONTENDERS if rep % 2 == 0 else CONTENDERS[::-1]
                for contender in order:
                    gc.collect()
                    total = 0
                    started = time.process_time()
                    for _ in range(streams):
                        total += (await one(contender, protocol, prompt))[0]
                    spent = time.process_time() - started
                    cpu[protocol][contender].append(spent / total * 1e6)
                    chunks_per_stream[protocol] = total // streams
                # Time to first token: short answers, alternating contenders sample by sample.
                for i in range(samples):
                    for contender in order if i % 2 == 0 else order[::-1]:
                        ttft[protocol][contender].append((await one(contender, protocol, "hi"))[1])
    return {"cpu_us_per_chunk": cpu, "ttft_s": ttft, "chunks_per_stream": chunks_per_stream}


def measure(quick: bool) -> dict[str, Any]:
    """Both contenders, both protocols, both backends; interleaved repetitions."""
    reps, streams, words, samples = (2, 5, 100, 20) if quick else (5, 20, 300, 100)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child,), daemon=True, name="bench-stream-server")
    server.start()
    try:
        port = parent.recv()
        results: dict[str, Any] = {
            "reps": reps,
            "streams": streams,
            "words": words,
            "samples": samples,
            "backends": {},
        }
        for backend in BACKENDS:
            results["backends"][backend] = anyio.run(
                _backend, port, reps, streams, words, samples, backend=backend
            )
        return results
    finally:
        server.terminate()
        server.join(5)


def _summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for backend, figures in results["backends"].items():
        for protocol in PROTOCOLS:
            cpu = {
                c: statistics.median(figures["cpu_us_per_chunk"][protocol][c]) for c in CONTENDERS
            }
            ttft = {c: statistics.median(figures["ttft_s"][protocol][c]) * 1000 for c in CONTENDERS}
            rows.append(
                {
                    "backend": backend,
                    "protocol": protocol,
                    "chunks": figures["chunks_per_stream"][protocol],
                    "cpu": cpu,
                    "ratio": cpu["gateway"] / cpu["raw SDK"],
                    "ttft": ttft,
                    "added_ms": ttft["gateway"] - ttft["raw SDK"],
                }
            )
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The section's target rows (what ``benchmarks/_report.py`` prints and checks)."""
    out = []
    for row in _summary(results):
        where = f"{row['protocol']}, {row['backend']}, loopback"
        out.append(
            {
                "target": f"stream CPU/chunk <= {CPU_TARGET:.2f}x raw SDK stream, {where}",
                "measured": f"{row['ratio']:.2f}x ({row['cpu']['gateway']:.1f} vs "
                f"{row['cpu']['raw SDK']:.1f} us/chunk)",
                "met": row["ratio"] <= CPU_TARGET,
            }
        )
        out.append(
            {
                "target": f"idle HIGH added time to first token p50 < {TTFT_TARGET_MS:g} ms, "
                f"{where}",
                "measured": f"{row['added_ms']:+.3f} ms ({row['ttft']['gateway']:.3f} vs "
                f"{row['ttft']['raw SDK']:.3f} ms)",
                "met": row["added_ms"] < TTFT_TARGET_MS,
            }
        )
    return out


def report(results: dict[str, Any]) -> str:
    """The Markdown section: a table per figure, with ratios."""
    lines = [
        "## Streaming",
        "",
        f"Sequential streams over loopback to the fake LLM API (its own process), "
        f"{results['streams']} streams of a ~{results['words']}-word answer per repetition, "
        f"{results['reps']} interleaved repetitions (medians); time to first token over "
        f"{results['samples']} alternating samples per repetition, HIGH priority, idle gateway. "
        "Raw SDK: `create(stream=True)` iterated; gateway: `gw.stream()` on the same httpx2 "
        "client.",
        "",
        "| backend | protocol | chunks/stream | raw SDK us/chunk | gateway us/chunk | ratio | "
        "raw SDK TTFT p50 ms | gateway TTFT p50 ms | added ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _summary(results):
        lines.append(
            f"| {row['backend']} | {row['protocol']} | {row['chunks']} | "
            f"{row['cpu']['raw SDK']:.1f} | {row['cpu']['gateway']:.1f} | {row['ratio']:.2f}x | "
            f"{row['ttft']['raw SDK']:.3f} | {row['ttft']['gateway']:.3f} | "
            f"{row['added_ms']:+.3f} |"
        )
    lines.append("")
    for row in targets(results):
        lines.append(f"- {'met' if row['met'] else 'MISSED'}: {row['target']}: {row['measured']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    args = parser.parse_args()
    print(report(measure(args.quick)))


if __name__ == "__main__":
    main()
