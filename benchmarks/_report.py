"""Turn the raw measurements into ratios, target checks, a plot and ``docs/benchmarks.md``."""

from __future__ import annotations

import importlib
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FINDINGS = HERE / "findings.md"

LABELS = {
    "sdk": "raw SDK `create()` + semaphore",
    "sdk-post": "raw SDK `client.post()` (the adapters' path; not a contender)",
    "gateway-asyncio": "**llm_gateway** on asyncio",
    "gateway-trio": "**llm_gateway** on trio",
    "gateway-asyncio-high": "llm_gateway on asyncio, all requests HIGH",
    "litellm": "LiteLLM `Router.acompletion`",
    "langchain": "LangChain `ChatOpenAI.abatch`",
}
SHORT = {
    "sdk": "raw SDK create()",
    "sdk-post": "raw SDK post()",
    "gateway-asyncio": "gateway (asyncio)",
    "gateway-trio": "gateway (trio)",
    "gateway-asyncio-high": "gateway (asyncio, HIGH)",
    "litellm": "LiteLLM Router",
    "langchain": "LangChain abatch",
}
ORDER = list(LABELS)
COMBOS = [
    ("openai", "mock"),
    ("openai", "loopback"),
    ("anthropic", "mock"),
    ("anthropic", "loopback"),
]
TRANSPORT_NAMES = {"mock": "MockTransport", "loopback": "loopback"}
BATCH_WAIT_MS = 100.0  # ModelConfig.batch_timeout_ms default
FILLS = ("eager", "wait")  # ModelConfig.batch_fill: the default first
MAX_OWN_US = 120.0
"""Issue 11: the gateway's own CPU per request, on top of the SDK call it makes."""
MIN_MEAN_BATCH = 5.0  # the target at twice the capacity offered

# The previous report's CPU per request as a ratio to the raw SDK's create(), c=64 (median, min,
# max over its 5 repetitions): docs/benchmarks.json at commit d1bb4d4, the engine before the
# lanes. "No worse than before" is checked against these medians.
BASELINE_COMMIT = "d1bb4d4"
BASELINE_CPU_RATIO: dict[str, dict[str, tuple[float, float, float]]] = {
    "openai/mock": {
        "gateway-asyncio": (0.740, 0.633, 0.809),
        "gateway-trio": (0.749, 0.604, 0.922),
    },
    "openai/loopback": {
        "gateway-asyncio": (0.667, 0.541, 0.766),
        "gateway-trio": (0.560, 0.479, 0.578),
    },
    "anthropic/mock": {
        "gateway-asyncio": (0.947, 0.823, 0.989),
        "gateway-trio": (1.070, 0.869, 1.293),
    },
    "anthropic/loopback": {
        "gateway-asyncio": (0.812, 0.737, 0.942),
        "gateway-trio": (0.713, 0.643, 0.792),
    },
}
# A cell's median ratio may exceed the baseline's by this much and count as no worse: the
# repetitions of one run spread +-15% around their median on this shared machine.
BASELINE_NOISE = 0.10


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    if not values:
        return math.nan, math.nan, math.nan
    return statistics.median(values), min(values), max(values)


def _open_stalls(stalls: dict[str, Any]) -> dict[str, Any]:
    """Per backend and phase, the spread of the loop's longest step (ms) while a gateway opens."""
    return {
        backend: {phase: _spread(values) for phase, values in phases.items()}
        for backend, phases in stalls.items()
        if isinstance(phases, dict)
    } | {"models": stalls.get("models", 0)}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Medians, spreads and ratios of everything, keyed for the report."""
    # (protocol, transport, concurrency) -> rep -> contender -> run
    runs: dict[tuple[str, str, int], dict[int, dict[str, dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for run in results.get("loads", []):
        key = (run["protocol"], run["transport"], run["concurrency"])
        runs[key][run["rep"]][run["contender"]] = run
    load: dict[str, dict[str, dict[str, Any]]] = {}
    for (protocol, transport, concurrency), by_rep in runs.items():
        cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for per in by_rep.values():
            sdk = per.get("sdk")
            litellm = per.get("litellm")
            for contender, run in per.items():
                cpu_us = run["cpu_s"] / run["n"] * 1e6
                rps = run["n"] / run["wall_s"]
                cell = cells[contender]
                cell["cpu_us"].append(cpu_us)
                cell["rps"].append(rps)
                if sdk is not None:
                    cell["cpu_ratio"].append(cpu_us / (sdk["cpu_s"] / sdk["n"] * 1e6))
                    cell["rps_ratio"].append(rps / (sdk["n"] / sdk["wall_s"]))
                if litellm is not None:
                    cell["vs_litellm"].append(rps / (litellm["n"] / litellm["wall_s"]))
                post = per.get("sdk-post")
                if post is not None:
                    cell["cpu_minus_post_us"].append(cpu_us - post["cpu_s"] / post["n"] * 1e6)
        load[f"{protocol}/{transport}/{concurrency}"] = {
            contender: {name: _spread(values) for name, values in cell.items()}
            | {"reps": len(cell["cpu_us"])}
            for contender, cell in cells.items()
        }

    lag: dict[str, dict[str, tuple[float, float, float]]] = {}
    by_contender: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in results.get("lag", []):
        for stat in ("p50", "p99", "max"):
            by_contender[run["contender"]][stat].append(run["lag_ms"][stat])
    for contender, stats in by_contender.items():
        lag[contender] = {stat: _spread(values) for stat, values in stats.items()}

    # Reports before batch_fill existed measured the fixed window, which is now "wait".
    idle = {
        (run["contender"], run.get("batch_fill", "wait"), run["priority"]): run["added_ms"]
        for run in results.get("idle", [])
    }
    saturation = {
        (run["contender"], run["batch_fill"]): run for run in results.get("saturation", [])
    }
    memory = {run["contender"]: run for run in results.get("memory", [])}
    by_size: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in results.get("scale", []):
        by_size[run["contender"]][run["n"]].append(run["cpu_s"] / run["n"] * 1e6)
    scale = {
        contender: sorted((n, _med(values)) for n, values in sizes.items())
        for contender, sizes in by_size.items()
    }
    imports = {
        module: _spread([t * 1000 for t in times])
        for module, times in results.get("imports", {}).items()
        if module != "sdk_loaded_by_import"
    }
    summary = {
        "load": load,
        "lag": lag,
        "idle": idle,
        "saturation": saturation,
        "memory": memory,
        "scale": scale,
        "imports": imports,
        "sdk_loaded_by_import": results.get("imports", {}).get("sdk_loaded_by_import", [0.0]),
        "open_stalls": _open_stalls(results.get("open_stalls", {})),
        "unavailable": results.get("unavailable", {}),
    }
    summary["targets"] = targets(summary) + section_targets(results)
    return summary


# -- targets ---------------------------------------------------------------------------------------


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what it asks, what was measured, met or not."""
    rows: list[dict[str, Any]] = []
    load = summary["load"]
    for protocol, transport in COMBOS:
        cell = load.get(f"{protocol}/{transport}/64", {})
        for gateway in ("gateway-asyncio", "gateway-trio"):
            if gateway in cell and "cpu_ratio" in cell[gateway]:
                ratio = cell[gateway]["cpu_ratio"]
                rows.append(
                    {
                        "target": f"CPU/request <= 1.10x raw SDK, c=64, {protocol}, "
                        f"{TRANSPORT_NAMES[transport]}, {SHORT[gateway]}",
                        "measured": f"{ratio[0]:.2f}x (reps {ratio[1]:.2f}-{ratio[2]:.2f})",
                        "met": ratio[0] <= 1.10,
                    }
                )
    for protocol, transport in COMBOS:
        cell = load.get(f"{protocol}/{transport}/64", {})
        for gateway in ("gateway-asyncio", "gateway-trio", "gateway-asyncio-high"):
            if gateway in cell and "vs_litellm" in cell[gateway]:
                ratio = cell[gateway]["vs_litellm"]
                rows.append(
                    {
                        "target": f"throughput >= 3x LiteLLM Router, c=64, {protocol}, "
                        f"{TRANSPORT_NAMES[transport]}, {SHORT[gateway]}",
                        "measured": f"{ratio[0]:.2f}x (reps {ratio[1]:.2f}-{ratio[2]:.2f})",
                        "met": ratio[0] >= 3.0,
                    }
                )
    for protocol, transport in COMBOS:
        cell = load.get(f"{protocol}/{transport}/64", {})
        for gateway in ("gateway-asyncio", "gateway-trio"):
            if transport == "mock" and "cpu_minus_post_us" in cell.get(gateway, {}):
                own = cell[gateway]["cpu_minus_post_us"]
                rows.append(
                    {
                        "target": f"the gateway's own CPU/request <= {MAX_OWN_US:g} us (its CPU "
                        f"minus the SDK `client.post()` it makes), c=64, {protocol}, "
                        f"{TRANSPORT_NAMES[transport]}, {SHORT[gateway]}",
                        "measured": f"{own[0]:.0f} us (reps {own[1]:.0f}-{own[2]:.0f})",
                        "met": own[0] <= MAX_OWN_US,
                    }
                )
    for (contender, fill, priority), added in sorted(summary["idle"].items()):
        if fill == "eager" or priority == "HIGH":
            rows.append(
                {
                    "target": f"idle {priority} added latency p50 < 1 ms, p99 < 5 ms, "
                    f"batch_fill={fill!r}, {SHORT[contender]}",
                    "measured": f"p50 {added['p50']:.3f} ms, p99 {added['p99']:.3f} ms",
                    "met": added["p50"] < 1.0 and added["p99"] < 5.0,
                }
            )
        else:  # the fixed window waits for its batch by design
            rows.append(
                {
                    "target": f"idle NORMAL added latency p99 <= batch wait "
                    f"({BATCH_WAIT_MS:g} ms) + 5 ms, batch_fill='wait', {SHORT[contender]}",
                    "measured": f"p50 {added['p50']:.1f} ms, p99 {added['p99']:.1f} ms",
                    "met": added["p99"] <= BATCH_WAIT_MS + 5.0,
                }
            )
    for (contender, fill), run in sorted(summary["saturation"].items()):
        if fill != "eager":
            continue  # "wait" is shown next to it in its section, for comparison
        rows.append(
            {
                "target": f"mean batch size >= {MIN_MEAN_BATCH:g} at twice the capacity offered "
                f"(max_concurrency {run['concurrency']}, latency {run['latency_s'] * 1000:g} ms, "
                f"batch_size 10), batch_fill={fill!r}, {SHORT[contender]}",
                "measured": f"{run['mean_batch_size']:.2f} ({run['batches']:,} batches)",
                "met": run["mean_batch_size"] >= MIN_MEAN_BATCH,
            }
        )
    changes: list[float] = []
    for combo, by_gateway in BASELINE_CPU_RATIO.items():
        cell = load.get(f"{combo}/64", {})
        for gateway, before in by_gateway.items():
            if gateway not in cell or "cpu_ratio" not in cell[gateway]:
                continue
            now = cell[gateway]["cpu_ratio"]
            changes.append(now[0] / before[0])
            protocol, transport = combo.split("/")
            rows.append(
                {
                    "target": f"CPU/request ratio to raw SDK no worse than the {BASELINE_COMMIT} "
                    f"report (another machine: see Findings; +{BASELINE_NOISE:.0%} noise), c=64, "
                    f"{protocol}, "
                    f"{TRANSPORT_NAMES[transport]}, {SHORT[gateway]}",
                    "measured": f"{now[0]:.2f}x (reps {now[1]:.2f}-{now[2]:.2f}) vs "
                    f"{before[0]:.2f}x (reps {before[1]:.2f}-{before[2]:.2f})",
                    "met": now[0] <= before[0] * (1 + BASELINE_NOISE),
                }
            )
    if changes:
        geo = math.exp(statistics.fmean(math.log(c) for c in changes))
        rows.append(
            {
                "target": f"CPU/request ratio to raw SDK no worse than the {BASELINE_COMMIT} "
                f"report over all {len(changes)} cells above (geometric mean of now/before "
                "<= 1.05)",
                "measured": f"{geo:.3f} (cells " + ", ".join(f"{c:.2f}" for c in changes) + ")",
                "met": geo <= 1.05,
            }
        )
    for contender, run in sorted(summary["memory"].items()):
        per = run["request_bytes"] + run["gateway_bytes"]
        rows.append(
            {
                "target": f"{run['n']:,} queued requests: <= 2 KB each beyond their message "
                f"text, {SHORT[contender]}",
                "measured": f"{per:,.0f} B ({run['request_bytes']:,.0f} request object + "
                f"{run['gateway_bytes']:,.0f} gateway)",
                "met": per <= 2048,
            }
        )
    for contender, points in sorted(summary["scale"].items()):
        points = sorted(points)
        if len(points) >= 2:
            costs = [cost for _, cost in points]
            rows.append(
                {
                    "target": f"cost/request flat from {points[0][0]:,} to {points[-1][0]:,} "
                    f"requests (highest <= 1.25x lowest), {SHORT[contender]}",
                    "measured": " -> ".join(f"{cost:.0f}" for cost in costs)
                    + f" us ({max(costs) / min(costs):.2f}x)",
                    "met": max(costs) <= 1.25 * min(costs),
                }
            )
    gateway_import = summary["imports"].get("llm_gateway")
    if gateway_import is not None:
        lazy = not summary["sdk_loaded_by_import"][0]
        rows.append(
            {
                "target": "`import llm_gateway` < 150 ms, SDKs not imported",
                "measured": f"{gateway_import[0]:.0f} ms (reps {gateway_import[1]:.0f}-"
                f"{gateway_import[2]:.0f}); SDKs {'not ' if lazy else ''}imported",
                "met": gateway_import[0] < 150 and lazy,
            }
        )
    stalls = summary["open_stalls"]
    models = stalls["models"]
    for backend in ("trio", "asyncio"):
        if backend not in stalls:
            continue
        # The worst repetition, first open included (it imports the SDKs), per model.
        worst = max(stalls[backend]["first_open_ms"][2], stalls[backend]["later_open_ms"][2])
        rows.append(
            {
                "target": f"opening a gateway blocks the event loop < 5 ms per model, {backend}",
                "measured": f"longest loop step {worst:.1f} ms for {models} SDK models "
                f"({worst / models:.1f} ms per model; SDK import included)",
                "met": worst / models < 5,
            }
        )
    return rows


def _section(name: str) -> Any:
    return importlib.import_module(f"benchmarks.{name}")


def section_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Target rows of the ``bench_<topic>`` sections that define ``targets(results)``."""
    rows: list[dict[str, Any]] = []
    for name, section in results.get("sections", {}).items():
        if "error" in section:
            rows.append({"target": f"{name} ran", "measured": section["error"], "met": False})
            continue
        module = _section(name)
        if hasattr(module, "targets"):
            rows.extend(module.targets(section))
    return rows


def section_markdown(results: dict[str, Any]) -> list[str]:
    """Each ``bench_<topic>`` section's own report, in name order."""
    out: list[str] = []
    for name, section in sorted(results.get("sections", {}).items()):
        if "error" in section:
            out.append(f"## {name}\n\nCould not run: `{section['error']}`\n")
        else:
            out.append(_section(name).report(section).rstrip() + "\n")
    return out


def target_lines(summary: dict[str, Any]) -> list[str]:
    return [
        f"{'MET   ' if row['met'] else 'MISSED'} {row['target']}: {row['measured']}"
        for row in summary["targets"]
    ]


# -- plot ------------------------------------------------------------------------------------------


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "sdk": "#7f7f7f",
        "sdk-post": "#c7c7c7",
        "gateway-asyncio": "#1f77b4",
        "gateway-trio": "#17becf",
        "gateway-asyncio-high": "#9467bd",
        "litellm": "#d62728",
        "langchain": "#ff7f0e",
    }
    load = summary["load"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))

    # CPU per request at c=64, grouped by protocol/transport.
    ax = axes[0][0]
    width = 0.8 / len(ORDER)
    for i, contender in enumerate(ORDER):
        xs, ys, lo, hi = [], [], [], []
        for j, (protocol, transport) in enumerate(COMBOS):
            cell = load.get(f"{protocol}/{transport}/64", {}).get(contender)
            if cell is None:
                continue
            med, low, high = cell["cpu_us"]
            xs.append(j + (i - len(ORDER) / 2 + 0.5) * width)
            ys.append(med)
            lo.append(med - low)
            hi.append(high - med)
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], label=SHORT[contender], color=colors[contender])
    ax.set_xticks(range(len(COMBOS)))
    ax.set_xticklabels([f"{p}\n{TRANSPORT_NAMES[t]}" for p, t in COMBOS])
    ax.set_ylabel("client CPU per request (us), lower is better")
    ax.set_title("Overhead: CPU per request at concurrency 64")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=2, loc="upper left")

    # Throughput vs concurrency (OpenAI protocol), both transports.
    for ax, transport in ((axes[0][1], "loopback"), (axes[1][0], "mock")):
        for contender in ORDER:
            points = []
            for concurrency in (1, 64, 512):
                cell = load.get(f"openai/{transport}/{concurrency}", {}).get(contender)
                if cell is not None:
                    points.append((concurrency, *cell["rps"]))
            if points:
                cs = [p[0] for p in points]
                ax.errorbar(
                    cs,
                    [p[1] for p in points],
                    yerr=[[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]],
                    marker="o",
                    capsize=3,
                    label=SHORT[contender],
                    color=colors[contender],
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 64, 512])
        ax.set_xticklabels(["1", "64", "512"])
        ax.set_xlabel("concurrency")
        ax.set_ylabel("requests per second, higher is better")
        ax.set_title(f"Throughput, OpenAI protocol, {TRANSPORT_NAMES[transport]}")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
        ax.legend(fontsize=8, ncol=2, loc="upper left")

    # Cost per request vs number of requests.
    ax = axes[1][1]
    for contender, points in sorted(summary["scale"].items()):
        points = sorted(points)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            label=SHORT[contender],
            color=colors[contender],
        )
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("requests in one gw.batch()")
    ax.set_ylabel("CPU per request (us)")
    ax.set_title("Gateway alone (built-in mock model): cost per request vs. count")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- markdown --------------------------------------------------------------------------------------


def _x(spread: tuple[float, float, float], digits: int = 2) -> str:
    med, low, high = spread
    return f"{med:.{digits}f}x ({low:.{digits}f}-{high:.{digits}f})"


def _n(spread: tuple[float, float, float]) -> str:
    med, low, high = spread
    return f"{med:,.0f} ({low:,.0f}-{high:,.0f})"


def _load_table(load: dict[str, Any], concurrency: int, what: str) -> list[str]:
    head = ["contender"] + [f"{p}, {TRANSPORT_NAMES[t]}" for p, t in COMBOS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for contender in ORDER:
        cells = []
        for protocol, transport in COMBOS:
            cell = load.get(f"{protocol}/{transport}/{concurrency}", {}).get(contender)
            if cell is None:
                cells.append("-")
            elif what == "cpu":
                cells.append(f"{_x(cell['cpu_ratio'])}<br>{cell['cpu_us'][0]:,.0f} us")
            else:
                cells.append(f"{_x(cell['rps_ratio'])}<br>{cell['rps'][0]:,.0f}/s")
        if any(c != "-" for c in cells):
            lines.append(f"| {LABELS[contender]} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict[str, Any], results: dict[str, Any], png: str) -> str:
    config, load = results["config"], summary["load"]
    sizes = {int(k): v for k, v in config["sizes"].items()}
    reps = config["reps"]
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items()))
    out: list[str] = []
    add = out.append
    add("# Benchmarks: what the gateway costs, next to what users would pick instead\n")
    add(
        "<!-- Generated by `python -m benchmarks.run` (`nox -s bench`); edit "
        "`benchmarks/_report.py` or `benchmarks/findings.md`, not this file. -->\n"
    )
    add(
        "Reproduce (installs the contenders in the session's own virtualenv, never as the "
        "library's dependencies; ~10-15 minutes on 2 cores):\n"
    )
    add("```bash\npip install nox && nox -s bench\n```\n")
    add(
        f"This run: {m['date']}, {m['cpu']}, {m['cores']} cores (shared, noisy), Python "
        f"{m['python']}, {results['duration_s'] / 60:.1f} minutes"
        + (" (**quick mode: small sizes, not for conclusions**)" if config["quick"] else "")
        + f". Versions: {versions}. Raw numbers: [`benchmarks.json`](benchmarks.json).\n"
    )
    if summary["unavailable"]:
        for name, why in summary["unavailable"].items():
            add(f"- **{SHORT[name]} could not run here**: {why}\n")
    add(f"![CPU per request, throughput, cost vs count]({png})\n")

    add("## Targets\n")
    add("| target | measured (median, spread over repetitions) | met |")
    add("|---|---|---|")
    for row in summary["targets"]:
        add(f"| {row['target']} | {row['measured']} | {'yes' if row['met'] else '**no**'} |")
    add("\nWhere a target is missed, [Findings](#findings) says why, with the profile.\n")

    add("## Overhead: client CPU per request, concurrency 64\n")
    add(
        f"Each cell: the contender's CPU per request **as a ratio to the raw SDK's `create()`** "
        f"in the same repetition (median, and min-max over {reps['64']} repetitions), then the "
        f"median absolute CPU per request. {sizes[64]:,} requests per run. Lower is better.\n"
    )
    out.extend(_load_table(load, 64, "cpu"))
    add("")
    own = [
        f"{SHORT[g]} {p}: {c['cpu_minus_post_us'][0]:+.0f} us"
        for p, t in COMBOS
        for g in ("gateway-asyncio", "gateway-trio")
        if t == "mock" and (c := load.get(f"{p}/{t}/64", {}).get(g)) and "cpu_minus_post_us" in c
    ]
    if own:
        add(
            "**The gateway's own cost** (its CPU per request minus that of the very SDK call "
            "it makes, `client.post()`, same repetition, MockTransport): "
            + "; ".join(own)
            + ". Over loopback the gateway measured *cheaper* than the bare `client.post()` "
            "loop at the same concurrency (see [Findings](#findings)), so the difference "
            "is not a cost there.\n"
        )

    add("## Throughput at concurrency 1, 64 and 512\n")
    add(
        "Each cell: requests per second **as a ratio to the raw SDK's** in the same repetition "
        "(median, min-max), then the median absolute rate. Higher is better. Requests per run: "
        + ", ".join(f"{sizes[c]:,} at c={c}" for c in (1, 64, 512))
        + f"; repetitions: {reps['1']} at c=1 and c=512, {reps['64']} at c=64.\n"
    )
    for concurrency in (1, 64, 512):
        add(f"### Concurrency {concurrency}\n")
        out.extend(_load_table(load, concurrency, "rps"))
        add("")
    add("Gateway throughput **as a ratio to LiteLLM Router's** (same repetition):\n")
    add("| | " + " | ".join(f"c={c}" for c in (1, 64, 512)) + " |")
    add("|---|---|---|---|")
    for gateway in ("gateway-asyncio", "gateway-trio", "gateway-asyncio-high"):
        for protocol, transport in COMBOS:
            cells = []
            for concurrency in (1, 64, 512):
                cell = load.get(f"{protocol}/{transport}/{concurrency}", {}).get(gateway, {})
                cells.append(_x(cell["vs_litellm"]) if "vs_litellm" in cell else "-")
            add(
                f"| {SHORT[gateway]}, {protocol}, {TRANSPORT_NAMES[transport]} | "
                + " | ".join(cells)
                + " |"
            )
    add("")

    add("## Added latency on an idle gateway\n")
    add(
        "One request at a time, 2 ms apart (the gateway is idle when each arrives), OpenAI "
        "adapter over MockTransport, default settings (`batch_size=10`, "
        "`batch_timeout_ms=100`, `max_concurrency=32`, logs on) but for `batch_fill`. "
        "*Added latency* = the caller's time in `await gw.request()` minus the time spent "
        "inside the provider adapter's `complete()` for that request: queueing, batching, "
        'dispatch, resolution and wake-up. With `batch_fill="eager"` (the default) a batch '
        "leaves at once while the model has free capacity and budget, so a lone NORMAL request "
        'costs what a HIGH one does; with `batch_fill="wait"` (the fixed window, opt-in) a '
        "lone NORMAL request waits the whole `batch_timeout_ms` for company, by design, and "
        "only HIGH skips the wait.\n"
    )
    add("| gateway | batch_fill | priority | samples | p50 | p99 | max |")
    add("|---|---|---|---|---|---|---|")
    for contender in sorted({c for c, _, _ in summary["idle"]}):
        for fill in FILLS:
            for priority in ("NORMAL", "HIGH"):
                added = summary["idle"].get((contender, fill, priority))
                if added is None:
                    continue
                add(
                    f"| {SHORT[contender]} | `{fill}` | {priority} | {added['count']} | "
                    f"{added['p50']:.3f} ms | {added['p99']:.3f} ms | {added['max']:.3f} ms |"
                )
    add("")

    if summary["saturation"]:
        sat = next(iter(summary["saturation"].values()))
        add("## Batches at twice the capacity offered\n")
        add(
            f"The built-in mock model with `max_concurrency={sat['concurrency']}`, "
            f"`batch_size=10`, a fixed latency of {sat['latency_s'] * 1000:g} ms (capacity "
            f"{sat['concurrency'] / sat['latency_s']:g} requests/s) and logs on gets "
            f"{sat['offered_rps']:g} requests/s, evenly spaced, for {sat['seconds']:.1f} s of "
            "real time (NORMAL priority, `submit_nowait()`); the figures are "
            "`get_stats().models['m']` when the last request is submitted. A *batch* is the "
            "requests that leave the queue together (each still its own provider call), so it "
            "is never larger than the free concurrency at that moment.\n"
        )
        add(
            "| gateway | batch_fill | submitted | batches | mean batch size | completed/s | "
            "queue wait p50 | queue wait p99 |"
        )
        add("|---|---|---|---|---|---|---|---|")
        for (contender, fill), run in sorted(summary["saturation"].items()):
            add(
                f"| {SHORT[contender]} | `{fill}` | {run['submitted']:,} | {run['batches']:,} | "
                f"**{run['mean_batch_size']:.2f}** | {run['completed_rps']:.1f} | "
                f"{run['queue_wait_ms']['p50']:.0f} ms | {run['queue_wait_ms']['p99']:.0f} ms |"
            )
        add("")

    add("## Event-loop lag under load\n")
    add(
        f"A task sleeps 1 ms in a loop while {sizes[64]:,} requests run at concurrency 64 "
        "(OpenAI protocol, loopback server); lag = how late each wake-up came. It shows how "
        "long the library runs between yields to the event loop (other tasks of the program, "
        f"e.g. an agent's, wait that long). Median over {reps['lag']} runs, min-max in "
        "brackets.\n"
    )
    add("| contender | p50 | p99 | max |")
    add("|---|---|---|---|")
    for contender in ORDER:
        if contender in summary["lag"]:
            lag = summary["lag"][contender]
            add(
                f"| {LABELS[contender]} | "
                + " | ".join(
                    f"{lag[s][0]:.2f} ms ({lag[s][1]:.2f}-{lag[s][2]:.2f})"
                    for s in ("p50", "p99", "max")
                )
                + " |"
            )
    add("")

    add("## Memory per queued request\n")
    add(
        "A model with `max_concurrency=1` whose only call never ends (built-in mock, "
        "`latency_s=3600`), `queue_capacity` raised, then `submit_nowait()` of N requests that "
        "share one small `LLMMessage` (its text is stored once, so none of the figures below "
        "is message text). Measured with `tracemalloc` after a `gc.collect()`: *request "
        "object* = the `LLMRequest` (with its generated `request_id` and messages tuple), "
        "*gateway* = what queueing it adds (its `ResponseFuture`, queue entry).\n"
    )
    add("| gateway | queued | request object | gateway | total per request |")
    add("|---|---|---|---|---|")
    for contender, run in sorted(summary["memory"].items()):
        add(
            f"| {SHORT[contender]} | {run['queued']:,} | {run['request_bytes']:,.0f} B | "
            f"{run['gateway_bytes']:,.0f} B | "
            f"{run['request_bytes'] + run['gateway_bytes']:,.0f} B |"
        )
    add("")

    add("## Cost per request from 1,000 to 100,000 requests\n")
    add(
        "The gateway alone, on its built-in zero-latency mock model (no HTTP, so the "
        "gateway's own data structures are all that is measured), `max_concurrency=64`, "
        "`queue_capacity` raised, all N submitted by one `gw.batch()` after a 500-request "
        "warm-up. Median over runs: "
        + ", ".join(f"{runs} of {n:,}" for n, runs in config.get("scale_plan", []))
        + ".\n"
    )
    sizes_seen = sorted({n for pts in summary["scale"].values() for n, _ in pts})
    add("| gateway | " + " | ".join(f"{n:,}" for n in sizes_seen) + " |")
    add("|---|" + "---|" * len(sizes_seen))
    for contender, points in sorted(summary["scale"].items()):
        by_n = dict(points)
        add(
            f"| {SHORT[contender]} | "
            + " | ".join(f"{by_n[n]:.0f} us" if n in by_n else "-" for n in sizes_seen)
            + " |"
        )
    add("")

    add("## Import time\n")
    add(
        "`import X` in a fresh interpreter, after one untimed import (bytecode compiled); "
        "LiteLLM with `LITELLM_LOCAL_MODEL_COST_MAP=True` (else it fetches its price list "
        "over the network at import).\n"
    )
    add("| module | median | min-max |")
    add("|---|---|---|")
    for module, spread in summary["imports"].items():
        add(f"| `{module}` | {spread[0]:.0f} ms | {spread[1]:.0f}-{spread[2]:.0f} ms |")
    lazy = not summary["sdk_loaded_by_import"][0]
    add(
        f"\n`import llm_gateway` {'does not import' if lazy else '**imports**'} the openai "
        "and anthropic SDKs (they load when a model that needs them opens).\n"
    )

    stalls = summary["open_stalls"]
    if any(backend in stalls for backend in ("trio", "asyncio")):
        add("## Opening a gateway: how long the event loop is blocked\n")
        add(
            f"A gateway with {stalls['models']} SDK models (openai, anthropic, "
            "openai-compatible) opened twice in a fresh interpreter (`benchmarks/startup.py`): "
            "the loop's longest step, i.e. the longest any other task waited. The first open "
            "imports the SDKs (in a worker thread, with the cyclic collector paused); for "
            "reference, the same SDK import done on the loop.\n"
        )
        add("| backend | first open | later opens | SDK import on the loop (before) |")
        add("|---|---|---|---|")
        for backend in ("trio", "asyncio"):
            if backend in stalls:
                row = stalls[backend]
                add(
                    f"| {backend} | "
                    + " | ".join(
                        f"{row[key][0]:.1f} ms ({row[key][1]:.1f}-{row[key][2]:.1f})"
                        for key in ("first_open_ms", "later_open_ms", "on_loop_import_ms")
                    )
                    + " |"
                )
        add("")

    out.extend(section_markdown(results))

    add("## What each number means\n")
    add("""- **Workload**: N chat requests, each one user message of 60 characters with
  `max_tokens=64`, at most C in flight. The fake provider answers every request with the same
  small completion (OpenAI chat completion or Anthropic message), instantly.
- **Contenders**, each in its own process, each run in a fresh event loop, clients built inside it:
  - *raw SDK `create()`*: `AsyncOpenAI.chat.completions.create` / `AsyncAnthropic.messages.create`
    under an `asyncio.Semaphore(C)`, `asyncio.gather` (the floor users start from);
    connection pool sized to C.
  - *raw SDK `post()`*: the same clients' low-level `client.post(path, body=...,
    cast_to=httpx2.Response)` + `.json()`, which is exactly what the gateway's adapters call.
    Not something users pick; shown so the gateway's own cost can be read off.
  - *llm_gateway*: one model, `max_concurrency=C`, every other setting default
    (`batch_fill="eager"`, `batch_size=10`, `batch_timeout_ms=100`; logs on, in a temporary
    directory), NORMAL priority, `await gw.batch(requests)`. Eager batches leave while the
    model has free capacity, so NORMAL adds no batch wait here (HIGH would measure the same).
  - *LiteLLM*: `Router` with one deployment (`openai/...` or `anthropic/...`),
    `max_parallel_requests=C`, `num_retries=3`, `asyncio.gather` of `router.acompletion`.
    Its per-request logging, which it queues to a background task, is waited for inside the
    timed part. Its HTTP client is its default (an aiohttp-based transport) over loopback.
  - *LangChain*: `ChatOpenAI(..., max_retries=3).abatch(prompts,
    config={"max_concurrency": C})`, with an httpx2 client whose pool is sized to C. OpenAI
    protocol only (`ChatOpenAI`).
  - Retries: every client is set to the gateway's default of 4 attempts. No request fails;
    the only retries are the raw SDKs' at c=512 over loopback (see Findings).
- **Transports**: *MockTransport* = an in-process `httpx2.MockTransport` (`httpx.MockTransport`
  for LiteLLM, whose clients are httpx) returning the canned bytes: no sockets, the client's
  CPU is the process's CPU. *loopback* = a minimal asyncio HTTP/1.1 keep-alive server
  (`benchmarks/_fake.py`) in a separate process, so its CPU is not counted; every contender
  speaks real HTTP over 127.0.0.1.
- **CPU per request** = `time.process_time()` (user + system, all threads of the client
  process) around the timed N requests, after a warm-up of max(50, C) requests on the same
  clients, divided by N.
- **Throughput** = N / wall-clock seconds of the same timed part. With MockTransport the client
  is the only thing working, so throughput is about 1 / CPU per request; over loopback the
  server and the client share the machine's 2 cores.
- **Ratios** are computed within a repetition (the contenders of one repetition run back to
  back, in an order rotated every repetition), then the median and min-max over repetitions
  are reported: machine drift cancels out of the ratios, not out of absolute numbers.
""")
    if FINDINGS.exists():
        add(FINDINGS.read_text())
    return "\n".join(out) + "\n"
