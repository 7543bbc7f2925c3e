"""Every exit path: whatever ends the ``async with`` block, every accepted request is resolved
exactly once, and the exception leaving the block is the one that ended it.

Hypothesis generates the moment and the manner of the exit (the block's own exception, a
cancel scope around the block, KeyboardInterrupt, a timed shutdown, a plain exit) over a
workload with logs on (requests sent by ``submit()``, ``request()`` and ``stream()``), on both
backends and virtual time.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    GatewayClosedError,
    LLMRequest,
    LLMResponse,
    ProviderError,
    RequestCancelledError,
    RetryPolicy,
)

from ._exit_support import EXITS, AcceptingGateway, Exit, run_and_exit, temporary_dir
from ._support import RecordingGateway, ask, mock_model
from .conftest import run_on_virtual_time


@attrs.frozen
class Scenario:
    exit: str
    exit_after_s: float
    latencies: list[float]
    failing: list[bool]  # the first attempt of this request fails (retryable)
    gaps: list[float]
    via_request: list[bool]  # sent by gw.request() from an agent task (else by submit())
    streamed: list[bool]  # an agent's request is streamed (gw.stream()) instead


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 25))
    ms = st.integers(0, 1500).map(lambda v: v / 1000)
    return Scenario(
        exit=draw(st.sampled_from(EXITS)),
        exit_after_s=draw(ms),
        latencies=draw(
            st.lists(st.integers(1, 900).map(lambda v: v / 1000), min_size=n, max_size=n)
        ),
        failing=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        gaps=draw(
            st.lists(st.one_of(st.just(0.0), ms.map(lambda v: v / 10)), min_size=n, max_size=n)
        ),
        via_request=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        streamed=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    )


class CountingGateway(RecordingGateway, AcceptingGateway):
    """Keeps every future it accepts, and what the streams' callers saw."""

    torn: list[str]  # streams that ended well with text other than their response's
    read_through: list[str]  # streams whose caller's loop ended without an error


@attrs.frozen
class Played:
    gateway: CountingGateway
    exit: Exit


async def play(scenario: Scenario, logs: str) -> Played:
    by_id = {f"r{i}": i for i in range(len(scenario.latencies))}
    attempts: dict[str, int] = {}

    def fail(request: LLMRequest) -> BaseException | None:
        rid = request.request_id
        attempts[rid] = attempts.get(rid, 0) + 1
        if scenario.failing[by_id[rid]] and attempts[rid] == 1:
            return ProviderError("scripted", status_code=503)
        return None

    models = {
        "m": mock_model(
            max_concurrency=4,
            batch_size=3,
            timeout_s=None,
            retry=RetryPolicy(backoff_base_s=0.2),
        )
    }
    gateway = CountingGateway(
        models,
        latency=lambda r: scenario.latencies[by_id[r.request_id]],
        fail=fail,
        log_dir=logs,
    )
    gateway.accepted = []
    gateway.torn = []
    gateway.read_through = []

    async def ask_and_wait(i: int) -> None:
        # The outcome is checked on the future; a submission refused after the close is fine.
        with contextlib.suppress(Exception):
            if not scenario.streamed[i]:
                await gateway.request(ask("m", request_id=f"r{i}"))
                return
            async with gateway.stream(ask("m", request_id=f"r{i}")) as stream:
                assert stream._future is not None
                gateway.accepted.append(stream._future)
                text = "".join([chunk.text async for chunk in stream])
            gateway.read_through.append(f"r{i}")
            if text != stream.response.content:  # a stream that ends well is whole
                gateway.torn.append(f"r{i}")

    exit = await run_and_exit(
        gateway,
        exit=scenario.exit,
        exit_after_s=scenario.exit_after_s,
        shutdown_timeout_s=0.3,
        normal_wait_s=sum(scenario.gaps) + 60,  # every request has long finished by then
        gaps=scenario.gaps,
        via_request=scenario.via_request,
        question=lambda i: ask("m", request_id=f"r{i}"),
        ask_and_wait=ask_and_wait,
    )
    return Played(gateway, exit)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=120)
@given(scenario=scenarios())
def test_every_exit_resolves_every_request_once_and_lets_its_own_exception_out(
    backend: str, scenario: Scenario
) -> None:
    with temporary_dir("llm-gateway-exits-") as logs:
        result: list[Played] = []

        async def main() -> None:
            result.append(await play(scenario, logs))

        run_on_virtual_time(backend, main)
        played = result[0]
        # The exception that ended the block is the one that leaves it, as itself; a
        # cancellation is absorbed by the scope that caused it.
        assert played.exit.escaped is played.exit.raised, f"{played.exit.escaped!r} escaped"
        assert played.exit.cancelled_caught == (scenario.exit == "cancel")
        gateway, accepted = played.gateway, played.gateway.accepted
        stats = gateway.get_stats()
        total = stats.total
        # Every accepted request ended, exactly once (the stats count each ending once).
        assert all(f.done() for f in accepted)
        assert not gateway.torn
        assert total.completed + total.failed + total.cancelled == len(accepted)
        assert (total.queued, total.in_flight, total.retrying) == (0, 0, 0)
        for fut in accepted:
            error = fut.exception()
            rid = fut.request.request_id
            i = int(rid[1:])
            if scenario.via_request[i] and scenario.streamed[i] and scenario.exit == "normal":
                # A stream's caller always hears its end: its loop ends, or raises the error.
                assert (rid in gateway.read_through) == (error is None), rid
            if error is None:
                assert isinstance(fut.result(), LLMResponse)
            elif isinstance(error, RequestCancelledError):
                # Only request()'s (or stream()'s) own caller being cancelled cancels it.
                assert scenario.via_request[int(fut.request.request_id[1:])]
                assert scenario.exit != "normal"
            else:
                assert isinstance(error, GatewayClosedError), repr(error)
                assert scenario.exit != "normal"
                assert "aborted" in str(error)
        assert stats.observer_errors == {"stats": 0, "jsonl_log": 0, "telemetry": 0}
        # The logs are whole JSON lines.
        for file in Path(logs, "gateway").glob("*.jsonl"):
            for line in file.read_text().splitlines():
                assert line.startswith("{") and line.endswith("}")
