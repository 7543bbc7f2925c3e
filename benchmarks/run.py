"""Run every benchmark in one go and write ``docs/benchmarks.md`` (+ PNG and raw JSON).

    python -m benchmarks.run            # what ``nox -s bench`` runs
    python -m benchmarks.run --quick    # a smoke run: 1 repetition, small sizes (minutes)

One worker process per contender (see ``_worker.py``) and one process for the loopback fake
server; the jobs are interleaved across contenders, repetition after repetition, with the order
rotated each time, so the drift of a shared, noisy machine hits every contender alike.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import pkgutil
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import _report, startup
from ._contenders import LITELLM_ENV
from ._fake import serve_forever
from ._worker import serve

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = [
    "sdk",
    "sdk-post",
    "gateway-asyncio",
    "gateway-trio",
    "gateway-asyncio-high",
    "litellm",
    "langchain",
]
GATEWAYS = ["gateway-asyncio", "gateway-trio"]  # measured alone, too
PROTOCOLS = ["openai", "anthropic"]
TRANSPORTS = ["mock", "loopback"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Worker:
    """A contender's process: send it jobs, get results."""

    def __init__(self, ctx: Any, contender: str) -> None:
        self.contender = contender
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=serve, args=(contender, child), daemon=True, name=f"bench-{contender}"
        )
        self.process.start()
        self.error: str | None = None

    def run(self, job: dict[str, Any]) -> dict[str, Any] | None:
        if self.error is not None:
            return None
        try:
            self.conn.send(job)
            reply = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.error = f"worker died: {exc!r}"
            return None
        if "error" in reply:
            log(f"{self.contender}: {job['kind']} failed:\n{reply['error']}")
            if job["kind"] == "probe":
                self.error = reply["error"].strip().splitlines()[-1]
            return None
        result: dict[str, Any] = reply["result"]
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


class Server:
    """The loopback fake provider, in its own process."""

    def __init__(self, ctx: Any) -> None:
        self.conn: Connection
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve_forever, args=(child,), daemon=True)
        self.process.start()
        self.port: int = self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def import_times(reps: int) -> dict[str, list[float]]:
    """Seconds to import each package in a fresh interpreter (after one untimed import)."""
    code = (
        "import sys, time; t = time.perf_counter(); import {m}; "
        "d = time.perf_counter() - t; "
        "print(d, 'openai' in sys.modules, 'anthropic' in sys.modules, 'httpx2' in sys.modules)"
    )
    env = {**os.environ, **LITELLM_ENV}
    times: dict[str, list[float]] = {"llm_gateway": [], "litellm": []}
    lazy = True
    for rep in range(reps + 1):
        for module in rotated(list(times), rep):
            out = subprocess.run(
                [sys.executable, "-c", code.format(m=module)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if out.returncode != 0:
                log(f"import {module} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            seconds, *loaded = out.stdout.split()
            if rep:  # the first round compiles bytecode on a fresh machine
                times[module].append(float(seconds))
            if module == "llm_gateway" and "True" in loaded:
                lazy = False
    times["sdk_loaded_by_import"] = [0.0 if lazy else 1.0]
    return times


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, small sizes")
    parser.add_argument("--reps", type=int, default=5, help="repetitions at concurrency 64")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: rewrite the report from saved results"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        write_report(json.loads(args.from_json.read_text()), args.out)
        return 0

    quick = args.quick
    reps64 = 1 if quick else args.reps
    reps_other = 1 if quick else max(1, min(2, args.reps))  # c=1, c=512, event-loop lag
    sizes = (
        {1: 100, 64: 300, 512: 1024}
        if quick
        else {1: 200, 64: 800, 512: 1024}  # requests per timed run, by concurrency
    )
    # Idle samples by batch_fill and priority: "wait" NORMAL costs a whole batch window each.
    idle_n = {
        "eager": {"HIGH": 100 if quick else 300, "NORMAL": 100 if quick else 300},
        "wait": {"HIGH": 100 if quick else 300, "NORMAL": 20 if quick else 100},
    }
    saturation = {"concurrency": 8, "latency_s": 0.1, "seconds": 2.0 if quick else 4.0}
    # (requests in one batch() call, runs): more runs of the short ones, which are noisier.
    scale_plan = [(1_000, 3), (10_000, 1)] if quick else [(1_000, 9), (10_000, 3), (100_000, 1)]
    memory_n = 20_000 if quick else 100_000
    config = {
        "quick": quick,
        "reps": {
            "64": reps64,
            "1": reps_other,
            "512": reps_other,
            "lag": reps_other,
        },
        "sizes": sizes,
        "idle_n": idle_n,
        "saturation": saturation,
        "scale_plan": scale_plan,
        "memory_n": memory_n,
    }
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    server = Server(ctx)
    workers = {name: Worker(ctx, name) for name in CONTENDERS}
    results: dict[str, Any] = {"config": config, "machine": machine(), "versions": {}}
    try:
        for name, worker in workers.items():
            versions = worker.run({"kind": "probe"})
            if versions is None:
                log(f"{name} is not available: {worker.error}")
                results.setdefault("unavailable", {})[name] = worker.error
            else:
                results["versions"].update(versions)
        available = [name for name in CONTENDERS if workers[name].error is None]

        # 1. CPU per request and throughput: every contender, protocol, transport, concurrency.
        loads: list[dict[str, Any]] = []
        for concurrency in (64, 1, 512):
            reps = reps64 if concurrency == 64 else reps_other
            n = sizes[concurrency]
            for rep in range(reps):
                for protocol in PROTOCOLS:
                    for transport in TRANSPORTS:
                        contenders = [
                            c
                            for c in rotated(available, rep)
                            if not (c == "langchain" and protocol != "openai")
                        ]
                        for contender in contenders:
                            job = {
                                "kind": "load",
                                "setup": {
                                    "protocol": protocol,
                                    "transport": transport,
                                    "concurrency": concurrency,
                                    "port": server.port,
                                },
                                "n": n,
                                "warmup": max(50, concurrency),
                            }
                            result = workers[contender].run(job)
                            if result is None:
                                continue
                            if result["ok"] != n:
                                log(f"{contender}: only {result['ok']}/{n} right answers")
                            loads.append(
                                {
                                    "contender": contender,
                                    "protocol": protocol,
                                    "transport": transport,
                                    "concurrency": concurrency,
                                    "rep": rep,
                                    **result,
                                }
                            )
                        log(
                            f"load c={concurrency} rep {rep + 1}/{reps} {protocol}/{transport}"
                            f" done ({time.perf_counter() - started:.0f} s)"
                        )
        results["loads"] = loads

        # 2. Event-loop lag under load (OpenAI protocol, loopback, concurrency 64).
        lags: list[dict[str, Any]] = []
        for rep in range(reps_other):
            for contender in rotated(available, rep):
                job = {
                    "kind": "load",
                    "setup": {
                        "protocol": "openai",
                        "transport": "loopback",
                        "concurrency": 64,
                        "port": server.port,
                    },
                    "n": sizes[64],
                    "warmup": 64,
                    "lag": True,
                }
                result = workers[contender].run(job)
                if result is not None:
                    lags.append({"contender": contender, "rep": rep, **result})
        results["lag"] = lags
        log(f"event-loop lag done ({time.perf_counter() - started:.0f} s)")

        # 3. The gateway alone: idle latency, batches at twice the capacity, memory per queued
        # request, cost vs request count.
        gateway_runs: dict[str, Any] = {"idle": [], "saturation": [], "memory": [], "scale": []}
        for backend in GATEWAYS:
            worker = workers[backend]
            for fill, by_priority in idle_n.items():
                for priority, n in by_priority.items():
                    job = {
                        "kind": "idle",
                        "priority": priority,
                        "batch_fill": fill,
                        "n": n,
                        "warmup": 20,
                        "gap_s": 0.002,
                    }
                    result = worker.run(job)
                    if result is not None:
                        gateway_runs["idle"].append(
                            {"contender": backend, "priority": priority, "batch_fill": fill}
                            | result
                        )
            for fill in ("eager", "wait"):
                result = worker.run({"kind": "saturation", "batch_fill": fill, **saturation})
                if result is not None:
                    gateway_runs["saturation"].append({"contender": backend, **result})
            result = worker.run({"kind": "memory", "n": memory_n})
            if result is not None:
                gateway_runs["memory"].append({"contender": backend, **result})
            for rep in range(max(runs for _, runs in scale_plan)):
                for n, runs in scale_plan if rep % 2 == 0 else scale_plan[::-1]:
                    if rep >= runs:
                        continue
                    result = worker.run({"kind": "scale", "n": n, "warmup": 500})
                    if result is not None:
                        gateway_runs["scale"].append({"contender": backend, "rep": rep, **result})
            log(f"{backend} alone done ({time.perf_counter() - started:.0f} s)")
        results.update(gateway_runs)
    finally:
        for worker in workers.values():
            worker.close()
        server.close()

    # 4. Import time.
    results["imports"] = import_times(3 if quick else 5)
    results["open_stalls"] = startup.open_stalls(2 if quick else 5)

    # 5. The capabilities' own sections: each `bench_<topic>.py` measures side by side alone.
    results["sections"] = {}
    for name in sections():
        log(f"section {name}")
        try:
            results["sections"][name] = importlib.import_module(f"benchmarks.{name}").measure(quick)
        except Exception as error:  # a section that cannot run is reported, not fatal
            log(f"section {name} failed: {error!r}")
            results["sections"][name] = {"error": repr(error)}
    results["duration_s"] = time.perf_counter() - started
    log(f"all measured in {results['duration_s']:.0f} s; writing {args.out}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    write_report(results, args.out)
    return 0


def sections() -> list[str]:
    """The ``bench_<topic>`` modules beside this one, in name order."""
    here = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))


def write_report(results: dict[str, Any], out: Path) -> None:
    """``out`` (Markdown) and its plot (PNG beside it) from ``results``; print the targets."""
    summary = _report.summarise(results)
    _report.plot(summary, out.with_suffix(".png"))
    out.write_text(_report.markdown(summary, results, out.with_suffix(".png").name))
    for line in _report.target_lines(summary):
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
