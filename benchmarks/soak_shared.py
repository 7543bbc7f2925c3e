"""Soak test of shared rate limits: several gateway processes, one Redis, one provider quota.

The coordinator starts a ``redis-server`` (the first on PATH) on a free port and the loopback fake
server (:func:`llm_gateway.testing.open_fake_llm_server`), which enforces the quota itself: at
most ``--rpm`` requests and ``--tpm`` tokens (the usage it answers with) in any 60-s span,
answering 429 past it. Then it starts ``--processes`` worker processes, half on trio and half on
asyncio, each a :class:`~llm_gateway.Gateway` with the same model (the real OpenAI adapter,
``max_requests_per_minute=--rpm``, ``max_tokens_per_minute=--tpm``, ``window_s=1``) sharing its
books through the Redis server. Each worker keeps a backlog of LOW requests queued for the
whole run; at a set moment each worker in turn sends one HIGH request. Midway the coordinator
kills one worker (SIGKILL: no shutdown, its reservations never settle).

Properties checked (exit status 1 if any fails):

- no 429 from the server, in any process;
- the aggregate rate (requests the server accepted per second, from the first second on) is at
  least 90 % of the limit;
- a HIGH request from any process reaches the server before LOW requests queued in the others:
  none of theirs arrives between a HIGH's submission (plus a slack for decisions already on
  their way) and its arrival, and it waits at most one window (plus the slack);
- after the kill, the others' aggregate rate, from one window after it, is still at least 90 %.

Run: ``nox -s soak-shared`` or ``python benchmarks/soak_shared.py [--duration S] [--rpm N]``;
``--json`` prints the figures as JSON (``tests/test_shared_soak.py`` runs a short version).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from llm_gateway import (
    Gateway,
    GatewayConfig,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    RateLimitPolicy,
    RequestPriority,
)
from llm_gateway.testing import open_fake_llm_server
from llm_gateway.testing._fake_server import FakeReply, ReceivedRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests._redis_server import RedisServer  # noqa: E402  (the tests' launcher, one copy)

WINDOW_S = 1.0
SLACK_S = 0.3  # decisions already on their way, and a loaded machine's scheduling delays
MAX_TOKENS = 64


# -- the worker: one gateway process -----------------------------------------------------------


def worker_config(args: argparse.Namespace) -> GatewayConfig:
    model = ModelConfig(
        provider="gpt-4o-mini",
        model_name="gpt-4o-mini",
        endpoint=args.endpoint,
        api_key="soak-key",
        max_concurrency=16,
        max_requests_per_minute=args.rpm,
        max_tokens_per_minute=args.tpm,
        rate_limit=RateLimitPolicy(window_s=WINDOW_S),
    )
    return GatewayConfig(
        models={"m": model},
        log_dir=None,
        shared_state=args.redis,
        shared_prefix=args.prefix,
        expected_processes=args.processes,
    )


def request(worker: int, priority: RequestPriority, n: int) -> LLMRequest:
    # The server reads who sent what, and at which priority, from the text.
    text = f"w{worker} {priority.name} {n}"
    return LLMRequest(
        model="m", messages=[LLMMessage("user", text)], max_tokens=MAX_TOKENS, priority=priority
    )


async def run_worker(args: argparse.Namespace) -> None:
    async with Gateway(worker_config(args)) as gw:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # the coordinator's go
        start = time.time()
        end = start + args.duration
        counter = iter(range(10**9))
        high: dict[str, float] = {}

        async def keep_low() -> None:
            while time.time() < end:
                await gw.request(request(args.index, RequestPriority.LOW, next(counter)))

        async def one_high() -> None:
            await anyio.sleep(max(0.0, start + args.high_at - time.time()))
            high["submitted"] = time.time()
            await gw.request(request(args.index, RequestPriority.HIGH, next(counter)))
            high["answered"] = time.time()

        with anyio.move_on_after(args.duration):
            async with anyio.create_task_group() as tg:
                for _ in range(args.backlog):
                    tg.start_soon(keep_low)
                tg.start_soon(one_high)
        stats = gw.get_stats()
        model = stats.models["m"]
        shared = stats.shared_state
        print(
            json.dumps(
                {
                    "worker": args.index,
                    "high": high,
                    "completed": model.completed,
                    "rate_limited": model.rate_limited,
                    "shared_errors": None if shared is None else shared.errors,
                }
            ),
            flush=True,
        )


# -- the coordinator ---------------------------------------------------------------------------


class Quota:
    """The provider's own quota, enforced by the fake server over every 60-s span."""

    def __init__(self, rpm: int, tpm: int) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.accepted: deque[tuple[float, int]] = deque()  # (arrival, tokens) in the last 60 s
        self.tokens = 0
        self.log: list[tuple[float, str, int]] = []  # (arrival, text, status) of every request
        self.oversized = 0

    def install(self, server: Any) -> None:
        answer = server.respond

        def respond(received: ReceivedRequest) -> FakeReply:
            now = time.time()
            text = received.json()["messages"][-1]["content"]
            while self.accepted and self.accepted[0][0] <= now - 60.0:
                self.tokens -= self.accepted.popleft()[1]
            reply = answer(received)
            usage = reply.body["usage"]
            tokens = usage["total_tokens"]
            if usage["completion_tokens"] > MAX_TOKENS:
                self.oversized += 1  # the answer would exceed what the gateway reserved
            if len(self.accepted) + 1 > self.rpm or self.tokens + tokens > self.tpm:
                self.log.append((now, text, 429))
                return FakeReply(
                    429,
                    {"error": {"type": "rate_limit_error", "message": "slow down"}},
                    {"retry-after": "1"},
                )
            self.accepted.append((now, tokens))
            self.tokens += tokens
            self.log.append((now, text, 200))
            return reply

        server.respond = respond


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 20)).decode()


async def coordinate(args: argparse.Namespace) -> dict[str, Any]:
    backends = ["trio" if i % 2 == 0 else "asyncio" for i in range(args.processes)]
    quota = Quota(args.rpm, args.tpm)
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(Path(directory))
        redis.start()
        try:
            async with open_fake_llm_server() as server:
                quota.install(server)
                return await run_workers(args, backends, quota, redis.url, server.openai_base_url)
        finally:
            redis.stop()


async def run_workers(
    args: argparse.Namespace, backends: list[str], quota: Quota, redis_url: str, endpoint: str
) -> dict[str, Any]:
    prefix = f"soak-{os.getpid()}"
    # Each worker sends its HIGH request at its own moment, before the kill.
    kill_at = args.duration * 0.6
    highs_at = [args.duration * (0.15 + 0.4 * i / args.processes) for i in range(args.processes)]
    processes = []
    for i, backend in enumerate(backends):
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "soak_shared.py"),
            "--worker",
            f"--index={i}",
            f"--backend={backend}",
            f"--endpoint={endpoint}",
            f"--redis={redis_url}",
            f"--prefix={prefix}",
            f"--rpm={args.rpm}",
            f"--tpm={args.tpm}",
            f"--processes={args.processes}",
            f"--duration={args.duration}",
            f"--backlog={args.backlog}",
            f"--high-at={highs_at[i]}",
        ]
        processes.append(await anyio.open_process(command, stderr=None))
    try:
        outs = [BufferedByteReceiveStream(p.stdout) for p in processes if p.stdout]
        with anyio.fail_after(120):
            for out in outs:
                assert (await read_line(out)).strip() == "ready"
        start = time.time()
        for p in processes:
            assert p.stdin is not None
            await p.stdin.send(b"go\n")
        victim = processes[-1]
        await anyio.sleep(max(0.0, start + kill_at - time.time()))
        killed = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        reports = []
        with anyio.fail_after(args.duration + 120):
            for out in outs[:-1]:
                reports.append(json.loads(await read_line(out)))
            for p in processes:
                await p.wait()
    finally:
        for p in processes:
            if p.returncode is None:
                os.kill(p.pid, signal.SIGKILL)
                await p.wait()
    return summarize(args, quota, start, killed, reports)


def summarize(
    args: argparse.Namespace,
    quota: Quota,
    start: float,
    killed: float,
    reports: list[dict[str, Any]],
) -> dict[str, Any]:
    end = start + args.duration
    limit_rate = args.rpm / 60.0
    ok = [t for t, _, status in quota.log if status == 200]

    def rate(since: float, until: float) -> float:
        return sum(since <= t < until for t in ok) / (until - since)

    highs = []
    for report in reports:
        worker, high = report["worker"], report["high"]
        if "submitted" not in high:
            highs.append({"worker": worker, "served": False})
            continue
        mine = f"w{worker} HIGH"
        arrival = next((t for t, text, _ in quota.log if text.startswith(mine)), None)
        lows_before = [
            t
            for t, text, _ in quota.log
            if "LOW" in text
            and not text.startswith(f"w{worker} ")
            and arrival is not None
            and high["submitted"] + SLACK_S < t < arrival
        ]
        highs.append(
            {
                "worker": worker,
                "served": arrival is not None,
                "wait_s": None if arrival is None else round(arrival - high["submitted"], 3),
                "others_lows_before": len(lows_before),
            }
        )
    figures = {
        "processes": args.processes,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "duration_s": args.duration,
        "requests": len(quota.log),
        "server_429": sum(status == 429 for _, _, status in quota.log),
        "gateway_429": sum(r["rate_limited"] for r in reports),
        "oversized_answers": quota.oversized,
        "limit_rate_per_s": round(limit_rate, 3),
        "rate_per_s": round(rate(start + WINDOW_S, end), 3),
        "rate_after_kill_per_s": round(rate(killed + WINDOW_S, end), 3),
        "highs": highs,
    }
    failures = []
    if figures["server_429"] or figures["gateway_429"]:
        failures.append("429 answers")
    if quota.oversized:
        failures.append("answers larger than the gateway reserved (the soak's own setup)")
    if figures["rate_per_s"] < 0.9 * limit_rate:
        failures.append("aggregate rate below 90 % of the limit")
    if figures["rate_after_kill_per_s"] < 0.9 * limit_rate:
        failures.append("rate after the kill below 90 % of the limit")
    for high in highs:
        if not high["served"] or high["others_lows_before"] or high["wait_s"] > WINDOW_S + SLACK_S:
            failures.append(f"worker {high['worker']}'s HIGH request did not go first")
    figures["failures"] = failures
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['processes']} processes (trio and asyncio), one Redis, "
        f"rpm={figures['rpm']} tpm={figures['tpm']}, {figures['duration_s']:g} s",
        f"requests reaching the server: {figures['requests']}; 429s: server "
        f"{figures['server_429']}, gateways {figures['gateway_429']}",
        f"aggregate rate: {figures['rate_per_s']}/s of {figures['limit_rate_per_s']}/s; "
        f"after killing one process: {figures['rate_after_kill_per_s']}/s",
    ]
    for high in figures["highs"]:
        lines.append(
            f"worker {high['worker']}'s HIGH: waited {high.get('wait_s')} s, "
            f"LOW requests of others before it: {high.get('others_lows_before')}"
        )
    lines.append("FAILED: " + "; ".join(figures["failures"]) if figures["failures"] else "OK")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--tpm", type=int, default=6000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=8, help="LOW requests each keeps queued")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="trio", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--redis", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--high-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        anyio.run(run_worker, args, backend=args.backend)
        return 0
    figures = anyio.run(coordinate, args)
    print(json.dumps(figures) if args.json else report(figures))
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
