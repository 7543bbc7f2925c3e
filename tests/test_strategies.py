"""llm_gateway.testing.strategies generates only valid values: the gateway accepts every request.

Properties run on both backends (a fresh virtual clock per example, see docs/testing.md).
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import (
    GatewayConfig,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    ModelConfig,
    ProviderError,
    RequestPriority,
)
from llm_gateway.testing import MockLLMGateway, request_digest
from llm_gateway.testing import strategies as gst

from .conftest import virtual_time_backend

CONFIG = GatewayConfig(
    models={
        "fast": ModelConfig(provider="mock", model_name="fast", batch_size=4),
        "smart": ModelConfig(provider="claude-sonnet", model_name="sonnet", max_concurrency=2),
    },
    log_dir=None,
)


def check_conversation(messages: tuple[LLMMessage, ...], tool_names: set[str]) -> None:
    """The shape providers require of a conversation."""
    assert messages
    assert messages[-1].role in ("user", "tool")
    assert all(m.role != "system" for m in messages[1:])
    pending: set[str] = set()
    seen: set[str] = set()
    for message in messages:
        if message.role == "tool":
            assert message.tool_call_id in pending
            pending.discard(message.tool_call_id)
            continue
        assert not pending, "tool calls must be answered before the next message"
        if message.role == "user":
            assert message.content
        for call in message.tool_calls:
            assert call.name in tool_names
            assert call.id not in seen
            seen.add(call.id)
            pending.add(call.id)
    assert not pending


@settings(max_examples=200, deadline=None)
@given(gst.requests(CONFIG, timeouts=True))
def test_generated_requests_are_well_formed(request: LLMRequest) -> None:
    assert request.model in CONFIG.models
    assert 0 <= request.temperature <= 2
    assert request.max_tokens is None or request.max_tokens > 0
    assert request.timeout_s is None or request.timeout_s > 0
    names = [t.name for t in request.tools]
    assert len(set(names)) == len(names)
    check_conversation(request.messages, set(names))


async def run_through_gateway(requests: list[LLMRequest]) -> list[LLMResponse]:
    async with MockLLMGateway(CONFIG) as gw:
        # Submitted without waiting, then awaited: they queue, batch and run concurrently.
        responses = await gw.batch(requests)
        stats = gw.get_stats()
    assert stats.total.completed == len(requests)
    assert sorted(r.request_id for r in gw.received) == sorted(r.request_id for r in requests)
    return responses


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(max_examples=40, deadline=None)
@given(requests=st.lists(gst.requests(CONFIG), min_size=1, max_size=8))
def test_the_gateway_accepts_every_generated_request(
    backend: str, requests: list[LLMRequest]
) -> None:
    name, options = virtual_time_backend(backend)
    responses = anyio.run(
        partial(run_through_gateway, requests), backend=name, backend_options=options
    )
    for request, response in zip(requests, responses, strict=True):
        assert response.request_id == request.request_id
        assert response.model == request.model
        assert request_digest(request)[:12] in response.content  # the default answer


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(max_examples=60, deadline=None)
@given(request=gst.requests(["mock"], priorities=[RequestPriority.HIGH]), data=st.data())
def test_generated_answers_reach_the_caller_unchanged(
    backend: str, request: LLMRequest, data: st.DataObject
) -> None:
    answer = data.draw(gst.mock_answers(tool_names=[t.name for t in request.tools]))

    async def ask() -> LLMResponse | ProviderError:
        async with MockLLMGateway() as gw:
            gw.answer_next(*[answer] * 8)  # enough for the gateway's retries of an error
            try:
                return await gw.request(request)
            except ProviderError as exc:
                return exc

    name, options = virtual_time_backend(backend)
    result = anyio.run(ask, backend=name, backend_options=options)
    if answer.error is not None:
        assert isinstance(result, ProviderError)
        assert result.status_code == answer.error.status_code
        return
    assert isinstance(result, LLMResponse)
    assert (result.content, result.tool_calls, result.usage) == (
        answer.content,
        answer.tool_calls,
        answer.usage,
    )
    assert {c.name for c in result.tool_calls} <= {t.name for t in request.tools}


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_generated_responses_are_consistent(data: st.DataObject) -> None:
    request = data.draw(gst.requests(["m"]))
    response = data.draw(gst.responses(request))
    assert (response.request_id, response.model) == (request.request_id, "m")
    assert (response.finish_reason == "tool_calls") == bool(response.tool_calls)
    assert {c.name for c in response.tool_calls} <= {t.name for t in request.tools}
    assert len({c.id for c in response.tool_calls}) == len(response.tool_calls)
    wild = data.draw(gst.responses(tool_names=["known"], unknown_tools=True))
    assert all(c.name for c in wild.tool_calls)


@settings(max_examples=100, deadline=None)
@given(message=gst.messages(roles=["system", "user", "assistant", "tool"]))
def test_single_messages_are_valid(message: LLMMessage) -> None:
    assert message.role != "tool" or message.tool_call_id
    assert not message.tool_calls or message.role == "assistant"


def test_model_ids_come_from_a_config_a_dict_or_a_list() -> None:
    assert gst.model_ids(CONFIG) == ["fast", "smart"]
    assert gst.model_ids({"models": {"a": {"provider": "mock", "model_name": "x"}}}) == ["a"]
    assert gst.model_ids(["x", "y"]) == ["x", "y"]
    with pytest.raises(ValueError, match="at least one model id"):
        gst.model_ids([])


def test_importing_the_library_or_its_testing_helpers_loads_no_test_framework() -> None:
    code = (
        "import sys, anyio, llm_gateway, llm_gateway.testing\n"
        "from llm_gateway import Gateway, ModelConfig, LLMRequest, LLMMessage\n"
        "async def main():\n"
        "    models = {'m': ModelConfig(provider='mock', model_name='m')}\n"
        "    async with Gateway(models=models, log_dir=None) as gw:\n"
        "        await gw.request(LLMRequest(model='m', messages=[LLMMessage('user', 'x')]))\n"
        "anyio.run(main)\n"
        "loaded = [m for m in ('hypothesis', 'pytest', '_pytest',"
        " 'llm_gateway.testing.strategies') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
