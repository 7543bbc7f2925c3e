"""Over a loopback socket: the gateway on each HTTP client, next to LiteLLM Router and the raw SDK.

    python -m benchmarks.bench_transports [--quick]     # prints the markdown section

Issue 11's target: at concurrency 64 over loopback, for the OpenAI and Anthropic protocols, the
gateway's throughput is at least 3x LiteLLM Router's on asyncio and on trio. The contenders
(``_contenders.py``), each in its own worker process, against the same loopback fake server
(another process), interleaved repetition after repetition with the order rotated:

- ``gateway-asyncio``: the default ``http_client="auto"``, which is the SDKs' aiohttp client on
  asyncio when the ``aiohttp`` extra is installed;
- ``gateway-asyncio-httpx``: the same gateway pinned to httpx2 (``http_client="httpx"``);
- ``gateway-trio``: on trio, where the client is always httpx2;
- ``litellm``: ``Router.acompletion`` (its default transport is aiohttp);
- ``sdk`` / ``sdk-aiohttp``: the raw SDK's ``create()`` on its httpx2 / aiohttp client.

Ratios are taken within one repetition (same machine state), then summarised as the median and
the min-max over repetitions.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
from typing import Any

CONTENDERS = [
    "litellm",
    "gateway-asyncio",
    "gateway-asyncio-httpx",
    "gateway-trio",
    "sdk",
    "sdk-aiohttp",
]
GATEWAYS = ["gateway-asyncio", "gateway-trio", "gateway-asyncio-httpx"]
PROTOCOLS = ["openai", "anthropic"]
CONCURRENCY = 64
TARGET = 3.0
CPU_TARGET = 0.8

LABELS = {
    "litellm": "LiteLLM `Router.acompletion` (aiohttp)",
    "gateway-asyncio": "**llm_gateway** on asyncio, `http_client='auto'` (aiohttp)",
    "gateway-asyncio-httpx": "llm_gateway on asyncio, `http_client='httpx'` (httpx2)",
    "gateway-trio": "**llm_gateway** on trio (httpx2)",
    "sdk": "raw SDK `create()` on httpx2 (its default)",
    "sdk-aiohttp": "raw SDK `create()` on `DefaultAioHttpClient`",
}


def measure(quick: bool) -> dict[str, Any]:
    """Run every contender on both protocols, ``reps`` times, interleaved."""
    from .run import Server, Worker, log, rotated

    reps, n, warmup = (3, 400, 100) if quick else (7, 1000, 200)
    ctx = multiprocessing.get_context("spawn")
    server = Server(ctx)
    workers = {name: Worker(ctx, name) for name in CONTENDERS}
    results: dict[str, Any] = {
        "config": {"reps": reps, "n": n, "warmup": warmup, "concurrency": CONCURRENCY},
        "versions": {},
        "unavailable": {},
        "runs": [],
    }
    try:
        for name, worker in workers.items():
            versions = worker.run({"kind": "probe"})
            if versions is None:
                results["unavailable"][name] = worker.error
            else:
                results["versions"].update(versions)
        available = [name for name in CONTENDERS if workers[name].error is None]
        for rep in range(reps):
            for protocol in PROTOCOLS:
                for contender in rotated(available, rep):
                    setup = {
                        "protocol": protocol,
                        "transport": "loopback",
                        "concurrency": CONCURRENCY,
                        "port": server.port,
                    }
                    job = {"kind": "load", "setup": setup, "n": n, "warmup": warmup}
                    result = workers[contender].run(job)
                    if result is None:
                        continue
                    if result["ok"] != n:
                        log(f"{contender}: only {result['ok']}/{n} right answers")
                    results["runs"].append(
                        {"contender": contender, "protocol": protocol, "rep": rep, **result}
                    )
            log(f"transports: repetition {rep + 1}/{reps} done")
    finally:
        for worker in workers.values():
            worker.close()
        server.close()
    return results


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _x(values: list[float]) -> str:
    if not values:
        return "-"
    median, low, high = _spread(values)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


def summarise(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(protocol, contender) -> per-repetition figures and ratios."""
    by_rep: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for run in results["runs"]:
        by_rep.setdefault((run["protocol"], run["rep"]), {})[run["contender"]] = run
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for (protocol, _), runs in by_rep.items():
        litellm, sdk = runs.get("litellm"), runs.get("sdk")
        for contender, run in runs.items():
            cell = cells.setdefault(
                (protocol, contender),
                {"rps": [], "cpu_us": [], "vs_litellm": [], "cpu_vs_sdk": [], "cpu_vs_litellm": []},
            )
            rps, cpu = run["n"] / run["wall_s"], run["cpu_s"] / run["n"]
            cell["rps"].append(rps)
            cell["cpu_us"].append(cpu * 1e6)
            if litellm is not None:
                cell["vs_litellm"].append(rps / (litellm["n"] / litellm["wall_s"]))
                cell["cpu_vs_litellm"].append(cpu / (litellm["cpu_s"] / litellm["n"]))
            if sdk is not None:
                cell["cpu_vs_sdk"].append(cpu / (sdk["cpu_s"] / sdk["n"]))
    return cells


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The section's target rows (what ``benchmarks/_report.py`` prints and checks): issue 11's
    throughput >= 3x LiteLLM Router and CPU per request <= 0.8x the raw SDK's ``create()``, for
    each protocol and loop, at c=64 over loopback."""
    cells = summarise(results)
    rows: list[dict[str, Any]] = []
    for protocol in PROTOCOLS:
        for gateway in ("gateway-asyncio", "gateway-trio"):
            cell = cells.get((protocol, gateway), {})
            where = f"c={CONCURRENCY}, {protocol}, loopback, {gateway}"
            if cell.get("vs_litellm"):
                rows.append(
                    {
                        "target": f"throughput >= {TARGET:g}x LiteLLM Router, {where}",
                        "measured": _x(cell["vs_litellm"]),
                        "met": statistics.median(cell["vs_litellm"]) >= TARGET,
                    }
                )
            if cell.get("cpu_vs_sdk"):
                rows.append(
                    {
                        "target": f"CPU/request <= {CPU_TARGET:g}x raw SDK create(), {where}",
                        "measured": _x(cell["cpu_vs_sdk"]),
                        "met": statistics.median(cell["cpu_vs_sdk"]) <= CPU_TARGET,
                    }
                )
    return rows


def report(results: dict[str, Any]) -> str:
    """The markdown section: one table per protocol, then the targets."""
    config = results["config"]
    cells = summarise(results)
    out = [
        "## HTTP clients over loopback: the gateway on aiohttp and on httpx2, next to LiteLLM",
        "",
        f"Concurrency {config['concurrency']}, {config['n']:,} requests per run after "
        f"{config['warmup']} untimed, {config['reps']} interleaved repetitions; each contender in "
        "its own process, the fake server in another. Each ratio is taken within a repetition "
        "(median, min-max). Throughput: higher is better; CPU: the client process's, lower is "
        "better.",
        "",
    ]
    if results.get("unavailable"):
        out += [f"Not measured: {', '.join(sorted(results['unavailable']))}.", ""]
    for protocol in PROTOCOLS:
        out += [
            f"### {protocol}",
            "",
            "| contender | requests/s | throughput vs LiteLLM | CPU/request | CPU vs raw SDK "
            "(httpx2) | CPU vs LiteLLM |",
            "|---|---|---|---|---|---|",
        ]
        for contender in CONTENDERS:
            cell = cells.get((protocol, contender))
            if cell is None:
                continue
            out.append(
                f"| {LABELS[contender]} | {statistics.median(cell['rps']):,.0f}/s | "
                f"{_x(cell['vs_litellm'])} | {statistics.median(cell['cpu_us']):,.0f} us | "
                f"{_x(cell['cpu_vs_sdk'])} | {_x(cell['cpu_vs_litellm'])} |"
            )
        asyncio_aiohttp = cells.get((protocol, "gateway-asyncio"), {}).get("cpu_us")
        asyncio_httpx = cells.get((protocol, "gateway-asyncio-httpx"), {}).get("cpu_us")
        if asyncio_aiohttp and asyncio_httpx:
            saved = statistics.median(asyncio_httpx) - statistics.median(asyncio_aiohttp)
            out += [
                "",
                f"On asyncio, aiohttp saves the gateway {saved:,.0f} us of CPU per request "
                f"against httpx2 ({statistics.median(asyncio_httpx):,.0f} -> "
                f"{statistics.median(asyncio_aiohttp):,.0f} us).",
            ]
        out.append("")
    out += ["| target | measured | met |", "|---|---|---|"]
    out += [
        f"| {row['target']} | {row['measured']} | {'yes' if row['met'] else '**no**'} |"
        for row in targets(results)
    ]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items()))
    out += ["", f"Versions: {versions}.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    import json
    import os

    from ._contenders import LITELLM_ENV

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    os.environ.update(LITELLM_ENV)
    results = measure(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(report(results))


if __name__ == "__main__":
    main()
