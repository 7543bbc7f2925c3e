"""Demo: simulated agents of each priority send requests through one gateway, shown live.

Run ``python -m llm_gateway.demo``: the built-in mock provider (no network, no keys), two models,
and three kinds of agent: an interactive HIGH ``user`` who waits for each answer, two NORMAL
``worker`` agents, and a LOW background ``indexer`` that submits more than the models can serve.
A live dashboard (with ``rich``; plain lines without it) shows, per model, the requests queued by
priority, in flight, batches, the rate budget left, latency percentiles and tokens; a summary
follows at the end. The HIGH user's answers stay fast while the LOW queue builds.

Point it at real models with ``--config gateway.toml``, or ``--model gpt-4o-mini`` /
``--model claude-haiku`` (keys from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``), or
``--model local-llama --endpoint http://127.0.0.1:11434/v1 --model-name llama3.2``.

It runs on trio when trio is installed, else on asyncio (``--backend`` chooses). Ctrl+C ends it
early: pending requests are resolved, the summary is printed, and the exit status is 130 (the
shell's convention for SIGINT); a finished run exits 0, a configuration error 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import random
import sys
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import IO, TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from ._config import GatewayConfig, ModelConfig, load_config
from ._exceptions import GatewayError
from ._future import ResponseFuture
from ._gateway import Gateway
from ._models import LLMMessage, LLMRequest, LLMResponse, ModelProvider, RequestPriority
from ._stats import GatewayStats, LatencySummary, ModelStats
from .providers import Provider, ProviderFactory, open_provider

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

INSTALL_HINT = "pip install -e '.[demo]' in the checkout"
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a Ctrl+C'd program

# Provider model names the demo uses with --model unless --model-name says otherwise.
DEFAULT_MODEL_NAMES = {
    ModelProvider.CLAUDE_HAIKU: "claude-haiku-4-5",
    ModelProvider.CLAUDE_SONNET: "claude-sonnet-4-5",
    ModelProvider.CLAUDE_OPUS: "claude-opus-4-1",
    ModelProvider.GPT_4O_MINI: "gpt-4o-mini",
    ModelProvider.GPT_4O: "gpt-4o",
    ModelProvider.LOCAL_LLAMA: "llama3.2",
    ModelProvider.MOCK: "mock",
}

# Sized so that the agents ask for more than the models serve: queues build, and the order in
# which they drain (HIGH, then NORMAL, then LOW) is what the dashboard shows.
MOCK_CONFIG: dict[str, Any] = {
    "models": {
        "fast": {
            "provider": "mock",
            "model_name": "mock-fast",
            "batch_size": 4,
            "max_concurrency": 4,
            # 600 a minute, paced per second (the "budget left" column moves), a fifth of it
            # kept for HIGH requests.
            "max_requests_per_minute": 600,
            "rate_limit": {"window_s": 1.0, "high_reserve": 0.2},
            "provider_options": {"latency_s": 0.15},
        },
        "smart": {
            "provider": "mock",
            "model_name": "mock-smart",
            "batch_size": 4,
            "max_concurrency": 3,
            "provider_options": {"latency_s": 0.4},
        },
    },
}

QUESTIONS = [
    "Summarise the last deployment log in one sentence.",
    "Which of these three tickets is most urgent?",
    "Draft a one-line reply to the customer.",
    "List two risks in the migration plan.",
    "Classify this message: billing, bug or feature request?",
    "Suggest a title for the incident report.",
]

PRIORITIES = (RequestPriority.HIGH, RequestPriority.NORMAL, RequestPriority.LOW)


class DemoError(Exception):
    """A demo setup problem the user can fix (printed without a traceback)."""


# -- what the agents know -------------------------------------------------------------------


@attrs.define
class _Count:
    sent: int = 0
    done: int = 0
    failed: int = 0
    calling: int = 0


class Tally:
    """Per model and priority: requests sent, answered, failed and at the provider right now.

    ``get_stats()`` gives each model's queued total; the split by priority is counted here, from
    what the demo's agents submitted and got back and from its provider wrapper, which sees each
    call start and end.
    """

    def __init__(self, models: Iterable[str]) -> None:
        self.models = list(models)
        self._counts = {(m, p): _Count() for m in self.models for p in PRIORITIES}
        self._end_to_end = {p: deque[float](maxlen=4096) for p in PRIORITIES}
        # Futures whose agent has not read them yet: an interrupt cancels the agents, and
        # reconcile() then reads what the gateway resolved them with.
        self._unread: dict[str, ResponseFuture] = {}

    def count(self, model: str, priority: RequestPriority) -> _Count:
        return self._counts[(model, priority)]

    def sent(self, request: LLMRequest) -> None:
        self.count(request.model, request.priority).sent += 1

    def answered(self, request: LLMRequest, response: LLMResponse) -> None:
        self.count(request.model, request.priority).done += 1
        self._end_to_end[request.priority].append(response.queue_wait_ms + response.latency_ms)

    def failed(self, request: LLMRequest) -> None:
        self.count(request.model, request.priority).failed += 1

    async def settle(self, fut: ResponseFuture) -> None:
        """Wait for ``fut`` and count its outcome."""
        self._unread[fut.request.request_id] = fut
        try:
            response = await fut
        except GatewayError:
            self.failed(fut.request)
        else:
            self.answered(fut.request, response)
        del self._unread[fut.request.request_id]

    def reconcile(self) -> None:
        """Count the outcome of every future an agent stopped waiting for."""
        for fut in self._unread.values():
            if fut.done() and fut.exception() is None:
                self.answered(fut.request, fut.result())
            else:
                self.failed(fut.request)
        self._unread.clear()

    def waiting(self, model: str, priority: RequestPriority) -> int:
        """Sent, not finished and not at the provider: queued (or between retries)."""
        c = self.count(model, priority)
        return max(0, c.sent - c.done - c.failed - c.calling)

    def by_priority(self, priority: RequestPriority) -> _Count:
        total = _Count()
        for model in self.models:
            c = self.count(model, priority)
            total.sent += c.sent
            total.done += c.done
            total.failed += c.failed
            total.calling += c.calling
        return total

    def end_to_end(self, priority: RequestPriority) -> LatencySummary:
        return LatencySummary.of(self._end_to_end[priority])


class _Watched:
    """A provider that tells the tally when each call starts and ends.

    On the mock provider it also adds a random tail to the mock's fixed latency, as real APIs
    have, so that p50, p95 and p99 differ.
    """

    def __init__(
        self, inner: Provider, model_id: str, tally: Tally, tail_s: float, rng: random.Random
    ) -> None:
        self._inner = inner
        self._model_id = model_id
        self._tally = tally
        self._tail_s = tail_s
        self._rng = rng

    async def complete(self, request: LLMRequest) -> LLMResponse:
        count = self._tally.count(self._model_id, request.priority)
        count.calling += 1
        try:
            if self._tail_s > 0:
                await anyio.sleep(self._rng.expovariate(1.0) * self._tail_s)
            return await self._inner.complete(request)
        finally:
            count.calling -= 1


def watching(tally: Tally, rng: random.Random) -> ProviderFactory:
    """``open_provider``, with each provider wrapped in :class:`_Watched`."""

    @asynccontextmanager
    async def open_watched(model_id: str, model: ModelConfig) -> AsyncGenerator[Provider]:
        tail_s = 0.0
        if model.provider is ModelProvider.MOCK:
            tail_s = 0.5 * float(model.provider_options.get("latency_s", 0.0))
        async with open_provider(model_id, model) as inner:
            yield _Watched(inner, model_id, tally, tail_s, rng)

    return open_watched


# -- the agents ------------------------------------------------------------------------------


@attrs.frozen
class Plan:
    """When the agents stop: after their quota of requests, or at the deadline."""

    requests: int
    deadline: float

    def more(self, sent: int, quota: int) -> bool:
        return sent < quota and anyio.current_time() < self.deadline


def make_request(
    name: str, priority: RequestPriority, model: str, i: int, rng: random.Random
) -> LLMRequest:
    return LLMRequest(
        model=model,
        messages=[
            LLMMessage("system", f"You are the {name} agent. Answer in one short sentence."),
            LLMMessage("user", rng.choice(QUESTIONS)),
        ],
        priority=priority,
        max_tokens=64,
        agent_id=name,
        trace_id=f"{name}-{i}",
    )


async def user(
    gw: Gateway,
    tally: Tally,
    plan: Plan,
    models: Sequence[str],
    rng: random.Random,
    say: Callable[[str], None],
) -> None:
    """The interactive HIGH agent: one ``request()`` at a time, reading each answer."""
    i = 0
    while plan.more(i, plan.requests):
        request = make_request("user", RequestPriority.HIGH, models[i % len(models)], i, rng)
        tally.sent(request)
        i += 1
        try:
            response = await gw.request(request)
        except GatewayError as exc:
            tally.failed(request)
            say(f"user: request failed ({type(exc).__name__})")
        except BaseException:  # interrupted: the gateway aborts the request
            tally.failed(request)
            raise
        else:
            tally.answered(request, response)
            end_to_end = response.queue_wait_ms + response.latency_ms
            say(f"user got an answer from {request.model} in {end_to_end:.0f} ms")
        await anyio.sleep(rng.uniform(0.3, 0.9))  # reading the answer


async def submitter(
    gw: Gateway,
    tally: Tally,
    plan: Plan,
    name: str,
    priority: RequestPriority,
    models: Sequence[str],
    quota: int,
    burst: int,
    pause_s: float,
    rng: random.Random,
) -> None:
    """A NORMAL worker or the LOW indexer: ``submit()`` in bursts, collect answers as they come."""
    async with anyio.create_task_group() as tg:
        i = 0
        while plan.more(i, quota):
            for _ in range(min(burst, quota - i)):
                request = make_request(name, priority, models[i % len(models)], i, rng)
                tally.sent(request)
                i += 1
                try:
                    fut = await gw.submit(request)
                except GatewayError:
                    tally.failed(request)
                except BaseException:  # interrupted: the gateway aborts it if it took it
                    tally.failed(request)
                    raise
                else:
                    tg.start_soon(tally.settle, fut)
            await anyio.sleep(rng.uniform(0.5, 1.5) * pause_s)


# -- the figures -----------------------------------------------------------------------------


@attrs.frozen
class Column:
    """A table column: two header lines and how to align it."""

    top: str
    bottom: str = ""
    left: bool = False


QUEUE_COLUMNS = [
    Column("model", left=True),
    Column("queued", "HIGH"),
    Column("queued", "NORMAL"),
    Column("queued", "LOW"),
    Column("in", "flight"),
    Column("batches"),
    Column("mean", "batch"),
    Column("budget", "left"),
]

RESULT_COLUMNS = [
    Column("model", left=True),
    Column("latency", "p50 ms"),
    Column("latency", "p95 ms"),
    Column("latency", "p99 ms"),
    Column("tokens", "in"),
    Column("tokens", "out"),
    Column("done"),
    Column("failed"),
]

PRIORITY_COLUMNS = [
    Column("priority", "(agent)", left=True),
    Column("sent"),
    Column("done"),
    Column("failed"),
    Column("queued"),
    Column("in", "flight"),
    Column("answer", "p50 ms"),
    Column("answer", "p95 ms"),
    Column("answer", "p99 ms"),
]

AGENTS = {
    RequestPriority.HIGH: "HIGH (user)",
    RequestPriority.NORMAL: "NORMAL (workers)",
    RequestPriority.LOW: "LOW (indexer)",
}

LEGEND = [
    "queued: accepted, waiting for dispatch · in flight: at the provider now",
    "mean batch: requests per dispatched batch · budget left: requests the rate",
    "  limit admits now (none: no limit) · failed: errors, cancels and aborts",
    "latency: dispatch to answer · answer: submit to answer (queue wait included)",
]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


def _models_and_total(stats: GatewayStats) -> list[tuple[str, ModelStats]]:
    return [*stats.models.items(), ("TOTAL", stats.total)]


def queue_rows(stats: GatewayStats, tally: Tally) -> list[list[str]]:
    """Per model, then TOTAL: queued by priority, in flight, batching and the rate budget."""
    rows = []
    for name, m in _models_and_total(stats):
        models = list(stats.models) if name == "TOTAL" else [name]
        queued = [sum(tally.waiting(model, p) for model in models) for p in PRIORITIES]
        budget = "none" if m.remaining_requests is None else str(m.remaining_requests)
        rows.append(
            [
                name,
                *(str(q) for q in queued),
                str(m.in_flight),
                str(m.batches),
                f"{m.mean_batch_size:.1f}",
                "" if name == "TOTAL" else budget,  # budgets are per model: they don't add
            ]
        )
    return rows


def result_rows(stats: GatewayStats) -> list[list[str]]:
    """Per model, then TOTAL: latency percentiles, tokens, requests done and failed."""
    return [
        [
            name,
            _ms(m.latency_ms.p50),
            _ms(m.latency_ms.p95),
            _ms(m.latency_ms.p99),
            _k(m.input_tokens),
            _k(m.output_tokens),
            str(m.completed),
            str(m.failed + m.cancelled),
        ]
        for name, m in _models_and_total(stats)
    ]


def priority_rows(tally: Tally) -> list[list[str]]:
    """One row per priority: what its agents sent and how long their answers took."""
    rows = []
    for p in PRIORITIES:
        c = tally.by_priority(p)
        answer = tally.end_to_end(p)
        waiting = sum(tally.waiting(m, p) for m in tally.models)
        rows.append(
            [
                AGENTS[p],
                str(c.sent),
                str(c.done),
                str(c.failed),
                str(waiting),
                str(c.calling),
                _ms(answer.p50),
                _ms(answer.p95),
                _ms(answer.p99),
            ]
        )
    return rows


def tables(stats: GatewayStats, tally: Tally) -> list[tuple[str, list[Column], list[list[str]]]]:
    """The dashboard's tables: (title, columns, rows)."""
    return [
        ("Queues per model", QUEUE_COLUMNS, queue_rows(stats, tally)),
        ("Results per model", RESULT_COLUMNS, result_rows(stats)),
        ("Per priority: the HIGH user's answers stay fast", PRIORITY_COLUMNS, priority_rows(tally)),
    ]


def plain_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` under two header lines, in aligned columns."""
    widths = [
        max(len(c.top), len(c.bottom), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if c.left else cell.rjust(w)
            for cell, c, w in zip(cells, columns, widths, strict=True)
        ).rstrip()

    header = [line([c.top for c in columns]), line([c.bottom for c in columns])]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([*header, rule, *(line(r) for r in rows)])


# -- the screens -----------------------------------------------------------------------------


class Screen(Protocol):
    def note(self, text: str) -> None: ...
    def update(self, stats: GatewayStats, tally: Tally) -> None: ...
    def close(self) -> None: ...
    def summary(self, stats: GatewayStats | None, tally: Tally, interrupted: bool) -> None: ...


def _summary_title(stats: GatewayStats | None, interrupted: bool) -> str:
    uptime = 0.0 if stats is None else stats.uptime_s
    how = "interrupted (Ctrl+C)" if interrupted else "finished"
    return f"Summary: {how} after {uptime:.1f} s"


class PlainScreen:
    """Plain lines: one per model every ``every_s`` seconds, then the summary tables."""

    def __init__(self, out: IO[str], every_s: float = 1.0) -> None:
        self._out = out
        self._every_s = every_s
        self._next = -math.inf

    def _print(self, text: str = "") -> None:
        print(text, file=self._out, flush=True)

    def note(self, text: str) -> None:
        self._print(f"  {text}")

    def update(self, stats: GatewayStats, tally: Tally) -> None:
        if stats.uptime_s < self._next:
            return
        self._next = stats.uptime_s + self._every_s
        for model, m in stats.models.items():
            queued = "/".join(str(tally.waiting(model, p)) for p in PRIORITIES)
            self._print(
                f"t={stats.uptime_s:5.1f}s  {model:<6} queued H/N/L {queued:<9} "
                f"in flight {m.in_flight:>2}  done {m.completed:>4}  "
                f"p50 {_ms(m.latency_ms.p50):>4} ms"
            )

    def close(self) -> None:
        pass

    def summary(self, stats: GatewayStats | None, tally: Tally, interrupted: bool) -> None:
        self._print()
        self._print(_summary_title(stats, interrupted))
        if stats is not None:
            for title, columns, rows in tables(stats, tally):
                self._print()
                self._print(title)
                self._print(plain_table(columns, rows))
        self._print()
        self._print("\n".join(LEGEND))


class RichScreen:
    """A rich ``Live`` dashboard, redrawn by :meth:`update` (no refresh thread: the demo's own
    loop redraws it, so it also runs on a virtual clock)."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        self._console = console
        self._notes: deque[str] = deque(maxlen=3)
        self._live: Live | None = Live(
            console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False
        )
        self._live.start()

    def note(self, text: str) -> None:
        self._notes.append(text)

    def _render(
        self, stats: GatewayStats, tally: Tally, title: str, compact: bool = False
    ) -> RenderableType:
        """The tables under ``title``; ``compact`` (a short terminal) drops the spacing and the
        legend, so that every table stays on screen (the summary keeps the legend)."""
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[RenderableType] = [Text(title, style="bold")]
        for caption, columns, rows in tables(stats, tally):
            if not compact:
                parts.append(Text(""))
            table = Table(
                title=caption,
                title_justify="left",
                title_style="bold",
                box=box.SIMPLE_HEAD,
                header_style="bold cyan",
                padding=(0, 0, 0, 1),  # with the box's one-space divider: two spaces apart
                show_edge=False,
            )
            for c in columns:
                table.add_column(
                    f"{c.top}\n{c.bottom}", justify="left" if c.left else "right", no_wrap=True
                )
            for row in rows:
                table.add_row(*row, style="bold" if row[0] == "TOTAL" else None)
            parts.append(table)
        if not compact:
            parts.append(Text("\n".join(LEGEND), style="dim"))
        return Group(*parts)

    def update(self, stats: GatewayStats, tally: Tally) -> None:
        from rich.console import Group
        from rich.text import Text

        if self._live is None:
            return
        title = f"llm_gateway demo · t = {stats.uptime_s:.1f} s · Ctrl+C stops it"
        # The full frame takes up to 32 lines, the compact one 23 (a 24-line terminal).
        compact = self._console.height < 34
        notes = Text(self._notes[-1] if compact and self._notes else "\n".join(["", *self._notes]))
        frame = Group(self._render(stats, tally, title, compact), notes)
        self._live.update(frame, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    def summary(self, stats: GatewayStats | None, tally: Tally, interrupted: bool) -> None:
        from rich.text import Text

        self.close()
        title = _summary_title(stats, interrupted)
        if stats is None:
            self._console.print(Text(title, style="bold"))
        else:
            self._console.print()
            self._console.print(self._render(stats, tally, title))


def rich_console(file: IO[str] | None = None) -> Console | None:
    """A rich console, or ``None`` when rich is not installed."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=file)


# -- running it ------------------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> GatewayConfig:
    if args.config:
        config = load_config(args.config)
    elif args.model:
        provider = ModelProvider(args.model)
        model = ModelConfig(
            provider=provider,
            model_name=args.model_name or DEFAULT_MODEL_NAMES[provider],
            endpoint=args.endpoint,
            max_concurrency=4,
        )
        config = GatewayConfig(models={args.model: model})
    else:
        config = load_config(MOCK_CONFIG)
    if args.no_logs:
        config = GatewayConfig(models=config.models, log_dir=None)
    return config


class Demo:
    """One run: the gateway, the agents, the screen; readable after an interrupt."""

    def __init__(self, args: argparse.Namespace, screen: Screen) -> None:
        self.args = args
        self.screen = screen
        self.config = build_config(args)
        self.tally = Tally(self.config.models)
        self.gateway: Gateway | None = None

    async def main(self) -> None:
        args, tally, screen = self.args, self.tally, self.screen
        rng = random.Random(args.seed)
        models = list(self.config.models)
        gw = Gateway(self.config, provider_factory=watching(tally, random.Random(args.seed + 1)))
        self.gateway = gw
        async with gw, anyio.create_task_group() as tg:
            tg.start_soon(self._redraw, gw)
            plan = Plan(requests=args.requests, deadline=anyio.current_time() + args.duration)
            n = args.requests
            async with anyio.create_task_group() as agents:
                agents.start_soon(user, gw, tally, plan, models, rng, screen.note)
                for w in ("worker-1", "worker-2"):
                    agents.start_soon(
                        submitter, gw, tally, plan, w, RequestPriority.NORMAL, models[:1],
                        3 * n, 3, 0.6, rng,
                    )  # fmt: skip
                agents.start_soon(
                    submitter, gw, tally, plan, "indexer", RequestPriority.LOW, models,
                    6 * n, 12, 1.0, rng,
                )  # fmt: skip
            tg.cancel_scope.cancel()
        screen.update(gw.get_stats(), tally)

    async def _redraw(self, gw: Gateway) -> None:
        while True:
            self.screen.update(gw.get_stats(), self.tally)
            await anyio.sleep(0.25)

    def summary(self, interrupted: bool) -> None:
        stats = None if self.gateway is None else self.gateway.get_stats()
        self.tally.reconcile()
        self.screen.summary(stats, self.tally, interrupted)


def pick_backend(requested: str) -> str:
    """``requested``, or for ``"auto"`` trio when it is installed and asyncio otherwise."""
    has_trio = importlib.util.find_spec("trio") is not None
    if requested == "auto":
        return "trio" if has_trio else "asyncio"
    if requested == "trio" and not has_trio:
        raise DemoError(f"--backend trio: trio is not installed; {INSTALL_HINT}")
    return requested


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m llm_gateway.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="a gateway TOML file")
    source.add_argument(
        "--model", choices=[p.value for p in ModelProvider], help="one model of this provider"
    )
    parser.add_argument("--model-name", help="the provider's model name (with --model)")
    parser.add_argument("--endpoint", help="base URL (with --model; needed for local-llama)")
    parser.add_argument(
        "--requests",
        type=int,
        default=20,
        help="the HIGH user's requests; each NORMAL worker sends 3x, the LOW indexer 6x "
        "(default 20)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds after which the agents stop sending (what is pending still finishes; "
        "default 30)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "asyncio", "trio"],
        default="auto",
        help="auto (default): trio when installed, else asyncio",
    )
    parser.add_argument(
        "--no-live", action="store_true", help="plain lines instead of the live dashboard"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-logs", action="store_true", help="do not write 04_logs/gateway")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error(f"--requests must be >= 1, got {args.requests}")
    if not args.duration > 0 or math.isinf(args.duration):
        parser.error(f"--duration must be a number of seconds > 0, got {args.duration}")
    return args


def make_screen(args: argparse.Namespace, out: IO[str], console: Console | None) -> Screen:
    """The live dashboard when rich is installed and output is a terminal (or ``console`` is
    given), else plain lines (with a hint when only rich was missing)."""
    if args.no_live:
        return PlainScreen(out)
    if console is None:
        if not out.isatty():
            return PlainScreen(out)
        console = rich_console(out)
        if console is None:
            print(f"No rich, plain output; dashboard: {INSTALL_HINT}", file=out)
            return PlainScreen(out)
    return RichScreen(console)


def run(
    argv: Sequence[str] | None = None,
    *,
    out: IO[str] | None = None,
    console: Console | None = None,
    backend_options: dict[str, Any] | None = None,
) -> int:
    """Run the demo; return its exit status (0 done, 1 error, 130 interrupted).

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).
        out: Where plain output goes (``sys.stdout`` when ``None``).
        console: A rich console to draw the dashboard on (tests pass one writing to a file).
        backend_options: Passed to ``anyio.run`` (tests pass a virtual clock).
    """
    args = parse_args(argv)
    out = sys.stdout if out is None else out
    try:
        backend = pick_backend(args.backend)
        demo = Demo(args, make_screen(args, out, console))
    except (DemoError, GatewayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"llm_gateway demo on {backend}: models {demo.tally.models}, "
        f"logs in {demo.config.log_dir or '(off)'}",
        file=out,
    )
    interrupted = False
    errors: list[BaseException] = []
    try:
        anyio.run(demo.main, backend=backend, backend_options=backend_options)
    except* KeyboardInterrupt:
        interrupted = True
    except* GatewayError as group:
        errors.extend(group.exceptions)
    if errors:
        demo.screen.close()
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    demo.summary(interrupted)
    return INTERRUPTED_EXIT if interrupted else 0


if __name__ == "__main__":
    sys.exit(run())
