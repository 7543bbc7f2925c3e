"""Every exit path with the batch lane: every accepted request ends exactly once, the exception
leaving the block is the one that ended it, and nothing a provider batch was paid for is lost:
a request told its result is in the journal gets it from the next gateway on the state dir.

Hypothesis draws the workload (LOW requests to the batch lane, HIGH ones realtime), how long
the provider takes, and the moment and manner of the exit; both backends, virtual time, over
the fake batch API.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    BatchApiPolicy,
    BatchPendingError,
    GatewayClosedError,
    GatewayConfig,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    ModelConfig,
    RequestCancelledError,
    ResponseFuture,
)
from llm_gateway.providers import open_provider
from llm_gateway.testing import FakeLLMApi, fake_answer

from ._exit_support import EXITS, AcceptingGateway, Exit, run_and_exit, temporary_dir
from .conftest import run_on_virtual_time


@attrs.frozen
class Scenario:
    protocol: str
    exit: str
    exit_after_s: float
    processing_s: float
    low: list[bool]  # to the batch lane (else HIGH, realtime)
    gaps: list[float]
    via_request: list[bool]  # sent by gw.request() from an agent task (else by submit())


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 12))
    return Scenario(
        protocol=draw(st.sampled_from(["anthropic", "openai"])),
        exit=draw(st.sampled_from(EXITS)),
        exit_after_s=draw(st.integers(0, 400)),
        processing_s=draw(st.sampled_from([1.0, 50.0, 200.0, math.inf])),
        low=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        gaps=draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)),
        via_request=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    )


def gateway(api: FakeLLMApi, protocol: str, state: str) -> AcceptingGateway:
    model = ModelConfig(
        provider=protocol,
        model_name="model",
        api_key="sk-test-0123456789",
        timeout_s=None,  # the SDKs' and the journal's worker threads let virtual time jump
        batch_api=BatchApiPolicy(enabled=True, window_s=30, poll_interval_s=10),
    )

    def factory(model_id: str, config: ModelConfig) -> Any:
        return open_provider(model_id, config, http_client=api.mock_client())

    gw = AcceptingGateway(
        GatewayConfig(models={"m": model}, log_dir=None, state_dir=state), provider_factory=factory
    )
    gw.accepted = []
    return gw


def question(scenario: Scenario, i: int) -> LLMRequest:
    return LLMRequest(
        model="m",
        messages=[LLMMessage("user", f"question {i}")],
        request_id=f"r{i}",
        priority="low" if scenario.low[i] else "high",
    )


@attrs.frozen
class Played:
    accepted: list[ResponseFuture]
    exit: Exit
    collected: dict[str, LLMResponse]
    pending_after: int  # the batch lane's requests once the block had ended


async def play(scenario: Scenario, state: str) -> Played:
    api = FakeLLMApi()
    api.batches.processing_delay_s = scenario.processing_s
    gw = gateway(api, scenario.protocol, state)

    async def ask_and_wait(i: int) -> None:
        with contextlib.suppress(Exception):  # the outcome is checked on the future
            await gw.request(question(scenario, i))

    exit = await run_and_exit(
        gw,
        exit=scenario.exit,
        exit_after_s=scenario.exit_after_s,
        shutdown_timeout_s=5,
        normal_wait_s=sum(scenario.gaps) + 1,
        gaps=scenario.gaps,
        via_request=scenario.via_request,
        question=lambda i: question(scenario, i),
        ask_and_wait=ask_and_wait,
    )

    # The next gateway on the same state dir, once the provider has finished.
    api.batches.end_all()
    collected: dict[str, LLMResponse] = {}
    async with gateway(api, scenario.protocol, state) as after:
        for fut in gw.accepted:
            if isinstance(fut.exception(), BatchPendingError):
                collected[fut.request.request_id] = await after.deferred_result(
                    fut.request.request_id
                )
    pending = gw.get_stats().total.batch_pending
    return Played(gw.accepted, exit, collected, pending)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(deadline=None, max_examples=40)
@given(scenario=scenarios())
def test_every_exit_with_the_batch_lane_resolves_each_request_once_and_loses_nothing(
    backend: str, scenario: Scenario
) -> None:
    with temporary_dir("llm-gateway-batch-exits-") as state:
        result: list[Played] = []

        async def main() -> None:
            result.append(await play(scenario, state))

        run_on_virtual_time(backend, main)
    played = result[0]
    assert played.exit.escaped is played.exit.raised, f"{played.exit.escaped!r} escaped"
    assert played.exit.cancelled_caught == (scenario.exit == "cancel")
    assert all(f.done() for f in played.accepted)
    assert played.pending_after == 0
    for fut in played.accepted:
        rid = fut.request.request_id
        i = int(rid[1:])
        error = fut.exception()
        if error is None:
            answer = fut.result()
            assert answer.content == fake_answer(f"question {i}")
            assert (answer.batch_id is not None) == scenario.low[i]
        elif isinstance(error, BatchPendingError):
            # Left to the journal, and delivered by the next gateway: nothing lost.
            assert scenario.low[i]
            assert error.request_id == rid
            assert played.collected[rid].content == fake_answer(f"question {i}")
            assert played.collected[rid].batch_id == error.batch_id
        elif isinstance(error, RequestCancelledError):
            assert scenario.via_request[i]
            assert scenario.exit != "normal"
        else:
            assert isinstance(error, GatewayClosedError), repr(error)
            assert scenario.exit != "normal"
            assert "aborted" in str(error)
    assert set(played.collected) == {
        f.request.request_id
        for f in played.accepted
        if isinstance(f.exception(), BatchPendingError)
    }
