"""Profile one contender's load: where does its CPU go?

    python -m benchmarks.profile gateway-asyncio --protocol openai --transport loopback -c 64

Runs the load once untimed (warm-up), then under pyinstrument (default; a statistical profiler,
little distortion) or cProfile (``--cprofile``; exact call counts, slows small functions), and
prints the profile. A loopback run starts the fake server in its own process.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import sys
from typing import Any

import anyio

from ._contenders import BACKENDS, CONTENDERS, LITELLM_ENV, Setup
from ._fake import serve_forever


async def _profiled(contender: str, setup: Setup, n: int, profiler: Any) -> None:
    async with CONTENDERS[contender](setup) as send:
        await send(min(n, max(100, setup.concurrency)))
        profiler.start() if hasattr(profiler, "start") else profiler.enable()
        await send(n)
        profiler.stop() if hasattr(profiler, "stop") else profiler.disable()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("--protocol", default="openai", choices=["openai", "anthropic"])
    parser.add_argument("--transport", default="mock", choices=["mock", "loopback"])
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("--priority", default="NORMAL", choices=["HIGH", "NORMAL", "LOW"])
    parser.add_argument("--cprofile", action="store_true", help="cProfile instead of pyinstrument")
    parser.add_argument("--limit", type=int, default=40, help="cProfile: rows to print")
    args = parser.parse_args(argv)
    os.environ.update(LITELLM_ENV)

    server = conn = None
    port = 0
    if args.transport == "loopback":
        ctx = multiprocessing.get_context("spawn")
        conn, child = ctx.Pipe()
        server = ctx.Process(target=serve_forever, args=(child,), daemon=True)
        server.start()
        port = conn.recv()
    setup = Setup(args.protocol, args.transport, args.concurrency, port, args.priority)
    backend = BACKENDS.get(args.contender, "asyncio")
    try:
        if args.cprofile:
            profile = cProfile.Profile()
            anyio.run(_profiled, args.contender, setup, args.requests, profile, backend=backend)
            stats = pstats.Stats(profile, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.limit)
            stats.sort_stats("cumulative").print_stats(args.limit)
        else:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled")
            anyio.run(_profiled, args.contender, setup, args.requests, profiler, backend=backend)
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    finally:
        if conn is not None and server is not None:
            conn.send(None)
            server.join(5)


if __name__ == "__main__":
    main()
