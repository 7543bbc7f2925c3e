"""What a request costs on trio, layer by layer, over loopback: where the CPU goes.

    python -m benchmarks.bench_layers [--quick]     # prints the markdown section

Issue 11 asks for 3x LiteLLM Router's throughput on trio too, where there is no aiohttp: the
official SDKs run on httpx2 (httpx2 -> httpcore2 -> h11 -> trio sockets). This measures each
layer alone, in one trio process, against the loopback fake server (another process), the
Anthropic protocol, concurrency 64, interleaved repetition after repetition:

- ``h11``: h11 on one trio socket per concurrent request, reading until the end of each
  answer. The protocol's floor, not a client: no timeouts, no error handling, no pool.
- ``httpcore2 connection``: one ``httpcore2.AsyncHTTPConnection`` per concurrent request.
- ``httpcore2 pool``: httpcore2's ``AsyncConnectionPool`` of 64 (httpx2's default pool).
- ``StackedConnectionPool``: the gateway's pool (``providers/_transport.py``) of 64.
- ``httpx2 client``: ``client.post()`` of the HTTP client the gateway builds for the SDK.
- ``SDK client.post()``: the Anthropic SDK's ``client.post()`` on that client, as the adapter
  calls it.
- ``gateway``: ``gw.batch()`` on trio (the ``gateway-trio`` contender), everything included.

LiteLLM Router's CPU per request (its own process, asyncio, aiohttp) is measured in the same
repetitions: a third of it is what 3x its throughput allows a CPU-bound client.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

CONCURRENCY = 64
LAYERS = [
    "h11",
    "httpcore2 connection",
    "httpcore2 pool",
    "StackedConnectionPool",
    "httpx2 client",
    "SDK client.post()",
    "gateway",
]

Send = Callable[[], Awaitable[None]]


def _layers(port: int) -> dict[str, Callable[[], Any]]:
    """Each layer's opener: an async context manager giving ``send(n)``."""
    from contextlib import asynccontextmanager

    import anthropic
    import h11
    import httpcore2
    import httpx2
    import trio

    from llm_gateway import ModelConfig
    from llm_gateway.providers._transport import (
        SdkHttpClients,
        StackedConnectionPool,
        build_http_client,
    )

    from ._contenders import CONTENDERS, Setup
    from ._fake import MAX_TOKENS, MODEL_ANTHROPIC, PROMPT

    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/messages"
    body = {"max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}
    body["model"] = MODEL_ANTHROPIC
    content = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json")]

    def fanned(one: Send) -> Callable[[int], Awaitable[None]]:
        async def send(n: int) -> None:
            limit = trio.Semaphore(CONCURRENCY)

            async def task() -> None:
                async with limit:
                    await one()

            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(task)

        return send

    @asynccontextmanager
    async def bare_h11() -> Any:
        free: list[tuple[trio.SocketStream, h11.Connection]] = []
        head = [(b"host", f"127.0.0.1:{port}".encode()), *headers]
        head.append((b"content-length", str(len(content)).encode()))

        async def one() -> None:
            if free:
                stream, conn = free.pop()
            else:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method="POST", target="/v1/messages", headers=head)
            await stream.send_all(conn.send(request) + conn.send(h11.Data(data=content)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            data = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            json.loads(data)
            conn.start_next_cycle()
            free.append((stream, conn))

        try:
            yield fanned(one)
        finally:
            for stream, _ in free:
                await stream.aclose()

    @asynccontextmanager
    async def connections() -> Any:
        origin = httpcore2.Origin(b"http", b"127.0.0.1", port)
        free: list[httpcore2.AsyncHTTPConnection] = []

        async def one() -> None:
            conn = free.pop() if free else httpcore2.AsyncHTTPConnection(origin)
            response = await conn.request("POST", url, headers=headers, content=content)
            json.loads(response.content)
            free.append(conn)

        try:
            yield fanned(one)
        finally:
            for conn in free:
                await conn.aclose()

    def pooled(pool: httpcore2.AsyncConnectionPool) -> Any:
        @asynccontextmanager
        async def opened() -> Any:
            async def one() -> None:
                response = await pool.request("POST", url, headers=headers, content=content)
                json.loads(response.content)

            async with pool:
                yield fanned(one)

        return opened

    config = ModelConfig(
        provider="anthropic", model_name=MODEL_ANTHROPIC, max_concurrency=CONCURRENCY
    )
    clients = SdkHttpClients(anthropic.DefaultAsyncHttpxClient, anthropic.DefaultAioHttpClient)

    @asynccontextmanager
    async def http_client() -> Any:
        client = build_http_client(clients, "httpx", config)

        async def one() -> None:
            (await client.post(url, content=content, headers=dict(headers))).json()

        async with client:
            yield fanned(one)

    @asynccontextmanager
    async def sdk_post() -> Any:
        client = anthropic.AsyncAnthropic(
            api_key="k",
            base_url=base,
            max_retries=0,
            http_client=build_http_client(clients, "httpx", config),
        )

        async def one() -> None:
            response = await client.post(url, body=body, cast_to=httpx2.Response)
            response.json()

        async with client:
            yield fanned(one)

    @asynccontextmanager
    async def gateway() -> Any:
        setup = Setup("anthropic", "loopback", CONCURRENCY, port, "NORMAL")
        async with CONTENDERS["gateway-trio"](setup) as send:

            async def sent(n: int) -> None:
                await send(n)

            yield sent

    return {
        "h11": bare_h11,
        "httpcore2 connection": connections,
        "httpcore2 pool": pooled(httpcore2.AsyncConnectionPool(max_connections=CONCURRENCY)),
        "StackedConnectionPool": pooled(StackedConnectionPool(max_connections=CONCURRENCY)),
        "httpx2 client": http_client,
        "SDK client.post()": sdk_post,
        "gateway": gateway,
    }


def _run_layers(port: int, rep: int, n: int, conn: Connection) -> None:
    """The trio process of one repetition: every layer, in an order rotated by ``rep``."""
    import trio

    from .run import rotated

    async def main() -> list[dict[str, Any]]:
        runs = []
        for layer in rotated(LAYERS, rep):
            async with _layers(port)[layer]() as send:
                await send(max(200, CONCURRENCY))  # warm-up: connections open
                cpu, wall = time.process_time(), time.perf_counter()
                await send(n)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            runs.append({"layer": layer, "rep": rep, "cpu_s": cpu, "wall_s": wall, "n": n})
        return runs

    conn.send(trio.run(main))


def measure(quick: bool) -> dict[str, Any]:
    """Every layer on trio, and LiteLLM Router alongside, over the same loopback server."""
    from ._contenders import LITELLM_ENV
    from .run import Server, Worker

    os.environ.update(LITELLM_ENV)  # LiteLLM's price list from its package, not the network
    reps, n = (2, 600) if quick else (5, 2000)
    ctx = multiprocessing.get_context("spawn")
    server = Server(ctx)
    litellm = Worker(ctx, "litellm")
    results: dict[str, Any] = {"config": {"reps": reps, "n": n}, "runs": [], "litellm": []}
    try:
        for rep in range(reps):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_run_layers, args=(server.port, rep, n, child))
            process.start()
            results["runs"] += parent.recv()
            process.join()
            setup = {
                "protocol": "anthropic",
                "transport": "loopback",
                "concurrency": CONCURRENCY,
                "port": server.port,
            }
            done = litellm.run({"kind": "load", "setup": setup, "n": n, "warmup": 200})
            if done is not None:
                results["litellm"].append(done["cpu_s"] / done["n"] * 1e6)
    finally:
        litellm.close()
        server.close()
    return results


def _us(results: dict[str, Any], layer: str) -> list[float]:
    return [r["cpu_s"] / r["n"] * 1e6 for r in results["runs"] if r["layer"] == layer]


def _rps(results: dict[str, Any], layer: str) -> list[float]:
    return [r["n"] / r["wall_s"] for r in results["runs"] if r["layer"] == layer]


def report(results: dict[str, Any]) -> str:
    """The markdown section: each layer's CPU per request and what it adds."""
    config = results["config"]
    out = [
        "## What a request costs on trio, layer by layer (bench_layers)\n",
        f"The Anthropic protocol over loopback, concurrency {CONCURRENCY}, on trio; "
        f"{config['n']:,} requests per run after a warm-up, {config['reps']} interleaved "
        "repetitions (median, min-max). Each layer is the one above it plus what it names; "
        "`h11` is the protocol's floor (h11 on bare sockets: no timeouts, no error handling), "
        "not a client anyone should ship.\n",
        "| layer | CPU/request | adds | requests/s |",
        "|---|---:|---:|---:|",
    ]
    before = None
    for layer in LAYERS:
        cpu = _us(results, layer)
        if not cpu:
            continue
        median = statistics.median(cpu)
        adds = "" if before is None else f"{median - before:+,.0f} us"
        if layer == "StackedConnectionPool":  # beside httpcore2's pool, not on top of it
            adds = f"{median - statistics.median(_us(results, 'httpcore2 connection')):+,.0f} us"
        if layer != "httpcore2 pool":
            before = median
        rps = statistics.median(_rps(results, layer))
        out.append(
            f"| {layer} | {median:,.0f} us ({min(cpu):,.0f}-{max(cpu):,.0f}) | {adds} | "
            f"{rps:,.0f}/s |"
        )
    out.append("")
    if results["litellm"]:
        litellm = statistics.median(results["litellm"])
        out.append(
            f"LiteLLM Router, same repetitions: {litellm:,.0f} us per request, so 3x its "
            f"throughput allows a CPU-bound client {litellm / 3:,.0f} us per request, "
            "everything included.\n"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    print(report(measure(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
