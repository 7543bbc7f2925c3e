"""The fault-injection harness: one FaultPlan, played by a MockTransport and by a real socket.

Each fault reaches the caller through the real SDK adapters as the gateway error it stands for.
MockTransport tests run on virtual time; loopback tests on real time, on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from llm_gateway import (
    AuthenticationError,
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    RetryPolicy,
)
from llm_gateway.providers import Provider, open_provider
from llm_gateway.testing import (
    FakeLLMApi,
    Fault,
    FaultPlan,
    fake_answer,
    open_fake_llm_server,
    prompt_key,
)

pytestmark = pytest.mark.anyio

ADAPTERS: dict[str, dict[str, Any]] = {
    "claude": {"provider": "claude-haiku", "model_name": "claude-haiku-4-5", "api_key": "k"},
    "gpt": {"provider": "gpt-4o-mini", "model_name": "gpt-4o-mini", "api_key": "k"},
}


def config(adapter: str, endpoint: str | None = None, **fields: Any) -> ModelConfig:
    base = endpoint
    if endpoint is not None and adapter == "gpt":
        base = f"{endpoint}/v1"
    return ModelConfig(**ADAPTERS[adapter], endpoint=base, **fields)


def ask(text: str, model: str = "m") -> LLMRequest:
    return LLMRequest(model=model, messages=[LLMMessage("user", text)])


# (fault, the gateway exception class, its status, its retry_after_s)
CASES: list[tuple[Fault, type[ProviderError], int | None, float | None]] = [
    (Fault.http(429, retry_after=2), RateLimitError, 429, 2.0),
    (Fault.http(429, retry_after_ms=250, retry_after=9), RateLimitError, 429, 0.25),
    (Fault.http(529), ProviderStatusError, 529, None),
    (Fault.http(503, should_retry=False), ProviderStatusError, 503, None),
    (Fault.http(401), AuthenticationError, 401, None),
    (Fault.http(422), ProviderStatusError, 422, None),
    (Fault.drop(), ProviderConnectionError, None, None),
    (Fault.timeout(latency_s=0.5), ProviderTimeoutError, None, None),
    (Fault.malformed(), ProviderResponseError, 200, None),
]
IDS = [f"{f.describe()}-{i}" for i, (f, *_) in enumerate(CASES)]


@asynccontextmanager
async def mock_provider(adapter: str, api: FakeLLMApi) -> AsyncGenerator[Provider]:
    async with open_provider(
        "m", config(adapter, timeout_s=None), http_client=api.mock_client()
    ) as p:
        yield p


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(("fault", "error_type", "status", "retry_after"), CASES, ids=IDS)
async def test_each_fault_is_the_gateway_error_it_stands_for_over_a_mock_transport(
    adapter: str,
    fault: Fault,
    error_type: type[ProviderError],
    status: int | None,
    retry_after: float | None,
) -> None:
    api = FakeLLMApi(FaultPlan({"q": [fault]}))
    async with mock_provider(adapter, api) as provider:
        await provider.complete(ask("warm up"))  # the SDK's platform thread, off the clock
        start = anyio.current_time()
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask("q"))
        assert anyio.current_time() - start == pytest.approx(fault.latency_s, abs=1e-3)
        answer = await provider.complete(ask("q"))  # the script is over: the next call succeeds
    assert type(caught.value) is error_type
    assert (caught.value.status_code, caught.value.retry_after_s) == (status, retry_after)
    if "x-should-retry" in fault.headers:
        assert caught.value.headers["x-should-retry"] == "false"
    assert answer.content == fake_answer("q")
    assert [(c.key, c.attempt, c.fault) for c in api.faults.calls] == [  # type: ignore[union-attr]
        ("warm up", 1, None),
        ("q", 1, fault),
        ("q", 2, None),
    ]


def test_a_plan_keys_calls_by_header_or_prompt_else_takes_faults_in_order() -> None:
    slow = Fault.ok(latency_s=3.0)
    plan = FaultPlan(
        {"model-a": [Fault.http(500), Fault.drop()], "hello": [slow]},
        ordered=[None, Fault.http(503)],
        latency_s=0.5,
    )
    body = b'{"model": "x", "messages": [{"role": "user", "content": "hello"}]}'
    other = b'{"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}'  # noqa: E501
    assert prompt_key({}, body) == "hello"
    assert prompt_key({}, other) == "hi"
    assert prompt_key({"x-fault-key": "model-a"}, body) == "model-a"
    assert prompt_key({}, b"not json") is None

    async def main() -> None:
        header = {"x-fault-key": "model-a"}
        faults = [plan.next_call(header, body).fault for _ in range(3)]
        assert faults == [Fault.http(500), Fault.drop(), None]
        assert [plan.next_call({}, body).fault for _ in range(2)] == [slow, None]
        assert [plan.next_call({}, other).fault for _ in range(3)] == [None, Fault.http(503), None]

    anyio.run(main, backend="trio")
    assert [plan.delay_of(c) for c in plan.calls[3:5]] == [3.0, 0.5]
    assert {k: len(v) for k, v in plan.calls_by_key().items()} == {
        "model-a": 3,
        "hello": 2,
        "hi": 3,
    }
    assert all(c.model == "x" for c in plan.calls)
    assert Fault.http(429, retry_after_ms=1500).retry_after_s == 1.5
    assert Fault.http(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s is None
    assert Fault.drop().retry_after_s is None


# -- over a real loopback socket (real time) -----------------------------------------------


def run_real(backend: str, fn: Callable[[], Any]) -> None:
    anyio.run(fn, backend=backend)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_each_fault_is_the_gateway_error_it_stands_for_over_a_socket(
    backend: str, adapter: str
) -> None:
    async def main() -> None:
        plan = FaultPlan({f"q{i}": [fault] for i, (fault, *_) in enumerate(CASES)})
        async with open_fake_llm_server(faults=plan) as server:
            # The SDK's own timeout ends a hang (a "timeout" fault).
            model = config(adapter, server.base_url, timeout_s=0.3)
            async with open_provider("m", model) as provider:
                for i, (_fault, error_type, status, retry_after) in enumerate(CASES):
                    with anyio.fail_after(10), pytest.raises(ProviderError) as caught:
                        await provider.complete(ask(f"q{i}"))
                    assert type(caught.value) is error_type
                    assert caught.value.status_code == status
                    assert caught.value.retry_after_s == retry_after
                    answer = await provider.complete(ask(f"q{i}"))
                    assert answer.content == fake_answer(f"q{i}")
        by_key = plan.calls_by_key()
        for i, (fault, *_) in enumerate(CASES):
            first, second = by_key[f"q{i}"]
            assert (first.fault, second.fault) == (fault, None)
            assert first.ended is not None and second.ended is not None
            if fault.kind == "timeout":  # held until the client gave up, after its timeout
                assert first.ended - first.started >= 0.29

    run_real(backend, main)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_gateway_retries_through_scripted_faults_on_a_socket(backend: str) -> None:
    """429 with retry-after-ms, 503, a dropped connection, a timeout: then the answer."""

    async def main() -> None:
        script = [
            Fault.http(429, retry_after_ms=200),
            Fault.http(503, latency_s=0.05),
            Fault.drop(),
            Fault.timeout(),
        ]
        plan = FaultPlan({"flaky": script})
        retry = RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.02)
        async with open_fake_llm_server(faults=plan) as server:
            models = {"m": config("claude", server.base_url, timeout_s=0.5, retry=retry)}
            async with Gateway(models=models, log_dir=None) as gw:
                with anyio.fail_after(10):
                    request = LLMRequest(
                        model="m", messages=[LLMMessage("user", "flaky")], timeout_s=10
                    )
                    answer = await gw.request(request)
                stats = gw.get_stats().models["m"]
        assert answer.content == fake_answer("flaky")
        calls = plan.calls_by_key()["flaky"]
        assert [c.fault for c in calls] == [*script, None]
        assert stats.retries == 4
        assert calls[0].ended is not None
        assert calls[1].started - calls[0].ended >= 0.2  # waited out the retry-after
        assert calls[4].started - calls[3].started >= 0.5  # the timeout: the SDK gave up at 0.5

    run_real(backend, main)
