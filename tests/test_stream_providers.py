"""Streams through the real SDK adapters and the fake LLM API, in both protocols.

Over a real loopback socket (real time, both backends) for what the server sees: arrivals,
connections closed by the client. Over the fake API's MockTransport (virtual time, both
backends) where time matters: first-token timeouts, backoffs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ModelConfig,
    ProviderConnectionError,
    ProviderStatusError,
    RequestPriority,
    RetryPolicy,
    StreamChunk,
    StreamInterruptedError,
)
from llm_gateway.testing import FakeLLMApi, FakeLLMServer, StreamFault, open_fake_llm_server

pytestmark = pytest.mark.anyio

KINDS = ("anthropic", "openai", "local-llama")
FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base_s=0.01, backoff_max_s=0.01)
LOOKUP = LLMTool(
    "lookup", "Look a term up", {"type": "object", "properties": {"query": {"type": "string"}}}
)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real time by default: most of this module talks over sockets."""
    return (request.param, {})


def model(kind: str, api: FakeLLMApi | FakeLLMServer | None = None, **fields: Any) -> ModelConfig:
    """A model of ``kind`` served by the fake API (its socket, when it has one)."""
    base = getattr(api, "base_url", "http://fake.invalid")
    if kind == "anthropic":
        return ModelConfig(
            provider="anthropic", model_name="c", endpoint=base, api_key="k-anthropic", **fields
        )
    key: dict[str, Any] = {"api_key": "k-openai"} if kind == "openai" else {}
    return ModelConfig(provider=kind, model_name="g", endpoint=f"{base}/v1", **key, **fields)


def ask(text: str, model_id: str = "m", **fields: Any) -> LLMRequest:
    return LLMRequest(model=model_id, messages=[LLMMessage("user", text)], **fields)


async def read_all(gw: Gateway, request: LLMRequest) -> tuple[list[StreamChunk], LLMResponse]:
    async with gw.stream(request) as stream:
        chunks = [chunk async for chunk in stream]
    return chunks, stream.response


def prompts(api: FakeLLMApi) -> list[str]:
    """The last user message of every request the fake API received, in arrival order."""
    found = []
    for received in api.received:
        content = received.json()["messages"][-1]["content"]
        found.append(content if isinstance(content, str) else json.dumps(content))
    return found


@asynccontextmanager
async def serving(kind: str, **fields: Any) -> AsyncGenerator[tuple[FakeLLMServer, Gateway]]:
    async with (
        open_fake_llm_server() as server,
        Gateway(models={"m": model(kind, server, **fields)}) as gw,
    ):
        yield server, gw


# -- what a stream assembles ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_text_and_tool_call_streams_assemble_what_request_returns(kind: str) -> None:
    async with serving(kind) as (server, gw):
        for request in [ask("tell me about streams"), ask("find streams", tools=[LOOKUP])]:
            chunks, streamed = await read_all(gw, request)
            answered = await gw.request(request)
            assert len(chunks) >= 3
            assert [c.index for c in chunks] == list(range(len(chunks)))
            assert "".join(c.text for c in chunks) == streamed.content == answered.content
            for field in ("usage", "finish_reason", "model", "rate_limit_headers"):
                assert getattr(streamed, field) == getattr(answered, field), field
            # The fake server numbers its answers, so the ids differ; all else is the same.
            assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
                (c.name, c.arguments) for c in answered.tool_calls
            ]
            deltas = [d for c in chunks for d in c.tool_call_deltas]
            if request.tools:
                (call,) = streamed.tool_calls
                assert call.arguments == {"query": "find streams"}
                assert deltas[0].id == call.id
                assert deltas[0].name == "lookup"
                assert json.loads("".join(d.arguments for d in deltas)) == call.arguments
                assert len(deltas) >= 2  # the arguments came in pieces
            else:
                assert not deltas
        bodies = [r.json() for r in server.received]
    assert [b.get("stream", False) for b in bodies] == [True, False, True, False]
    if kind != "anthropic":
        assert bodies[0]["stream_options"] == {"include_usage": True}


# -- the commit point: faults before and after the first delta ---------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_faults_before_the_first_delta_are_retried_and_unseen(kind: str) -> None:
    async with serving(kind, retry=FAST_RETRY) as (server, gw):
        server.stream_faults += [
            StreamFault.error_event(),
            StreamFault.drop(),
            StreamFault.error_event(error_type="rate_limit_error"),
            StreamFault.cut(),
        ]
        chunks, response = await read_all(gw, ask("try and try again"))
        stats = gw.get_stats().models["m"]
    assert len(server.received) == 5  # four broken streams, then the one the caller saw
    hows = [s.how for s in server.streams]
    assert hows == ["complete", "dropped", "complete", "complete", "complete"]
    assert (
        "".join(c.text for c in chunks) == response.content == "Fake answer to: try and try again"
    )
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert (stats.retries, stats.completed, stats.failed, stats.rate_limited) == (4, 1, 0, 1)


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_an_error_event_is_classified_by_its_type_not_the_200(kind: str) -> None:
    async with serving(kind, retry=FAST_RETRY) as (server, gw):
        server.stream_faults.append(StreamFault.error_event(error_type="invalid_request_error"))
        with pytest.raises(ProviderStatusError) as caught:
            await read_all(gw, ask("bad request"))
    assert len(server.received) == 1  # a 400-type error is not retried
    assert (caught.value.status_code, caught.value.error_type) == (400, "invalid_request_error")
    assert "scripted" not in str(caught.value)  # the provider's text is kept out of messages


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", ["error", "drop", "cut"])
async def test_a_fault_after_the_first_delta_interrupts_with_the_partial_text(
    kind: str, fault: str
) -> None:
    broken = {
        "error": StreamFault.error_event(after=2),
        "drop": StreamFault.drop(after=2),
        "cut": StreamFault.cut(after=2),  # a clean end of the body is no clean end of the answer
    }[fault]
    async with serving(kind, retry=FAST_RETRY) as (server, gw):
        server.stream_faults.append(broken)
        seen: list[str] = []
        with pytest.raises(StreamInterruptedError) as caught:
            async with gw.stream(ask("one two three four")) as stream:
                async for chunk in stream:
                    seen.append(chunk.text)
        stats = gw.get_stats().models["m"]
    assert seen == ["Fake ", "answer "]
    assert caught.value.partial == "Fake answer "
    assert len(server.received) == 1  # never retried after content reached the caller
    cause = caught.value.cause
    if fault == "error":
        assert isinstance(cause, ProviderStatusError)
        expected = 529 if kind == "anthropic" else 500
        assert cause.status_code == expected
    else:
        assert isinstance(cause, ProviderConnectionError)
    assert (stats.failed, stats.retries, stats.in_flight) == (1, 0, 0)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stall_past_first_token_timeout_falls_back(kind: str) -> None:
    async with open_fake_llm_server() as server:
        models = {
            "a": model(
                kind,
                server,
                first_token_timeout_s=0.3,
                retry=RetryPolicy(max_attempts=1),
                fallbacks=["b"],
            ),
            "b": model(kind, server),
        }
        async with Gateway(models=models) as gw:
            server.stream_faults.append(StreamFault.stall())  # until the client leaves
            started = anyio.current_time()
            chunks, response = await read_all(gw, ask("hello", "a"))
            took = anyio.current_time() - started
            stats = gw.get_stats()
    assert response.model == "b"
    assert "".join(c.text for c in chunks) == "Fake answer to: hello"
    assert len(server.received) == 2
    stalled = server.streams[0]
    assert stalled.how == "client_closed"
    assert stalled.ended is not None
    # The first-token timer started when the attempt did, a moment before the server began.
    assert 0.25 <= stalled.ended - stalled.started < 1.0
    assert 0.3 <= took < 1.0
    assert (stats.models["a"].fallbacks, stats.models["b"].completed) == (1, 1)


# -- cancellation closes the connection and frees the slot ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_leaving_mid_stream_closes_the_connection_and_a_queued_high_starts(kind: str) -> None:
    order: list[str] = []

    async def read(gw: Gateway, text: str, priority: RequestPriority) -> None:
        await read_all(gw, ask(text, priority=priority))
        order.append(text)

    async with serving(kind, max_concurrency=1) as (server, gw):
        server.stream_faults.append(StreamFault.stall(after=2))  # stalls until the client leaves
        async with anyio.create_task_group() as tg:
            async with gw.stream(ask("first")) as stream:
                async for chunk in stream:
                    if chunk.index == 1:
                        tg.start_soon(read, gw, "low", RequestPriority.LOW)
                        await anyio.sleep(0.05)
                        tg.start_soon(read, gw, "high", RequestPriority.HIGH)
                        await anyio.sleep(0.05)
                        left = anyio.current_time()
                        break
            # The server notices the closed connection at once.
            with anyio.fail_after(1):
                while server.streams[0].ended is None:  # noqa: ASYNC110 (the server's record)
                    await anyio.sleep(0.005)
        stats = gw.get_stats().models["m"]
    first = server.streams[0]
    assert first.how == "client_closed"
    assert first.ended is not None
    assert first.ended - left < 0.1
    assert prompts(server) == ["first", "high", "low"]
    assert order == ["high", "low"]
    assert (stats.cancelled, stats.completed, stats.in_flight, stats.streams) == (1, 2, 0, 3)
