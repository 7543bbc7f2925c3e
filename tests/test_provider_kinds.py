"""Generic provider kinds: ``anthropic``, ``openai``, ``openai-compatible`` take any model name.

The original family names stay as aliases of the same adapters. Opening SDK models does not
stall the event loop (their HTTP clients, which load TLS certificates, are built in a thread).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import llm_gateway.providers._anthropic
import llm_gateway.providers._openai
from llm_gateway import (
    ConfigError,
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ModelProvider,
)
from llm_gateway.providers import open_provider
from llm_gateway.providers._anthropic import AnthropicProvider
from llm_gateway.providers._open import sdk_extra
from llm_gateway.providers._openai import OpenAIProvider

from ._provider_support import ScriptedApi, json_response

KEY_ENV = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")

ANTHROPIC_OK = {
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
OPENAI_OK = {
    "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
}


@pytest.fixture(autouse=True)
def no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)


def ask(model: str = "m") -> LLMRequest:
    return LLMRequest(model=model, messages=[LLMMessage("user", "hi")])


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("claude-haiku", "anthropic"),
        ("claude-sonnet", "anthropic"),
        ("claude-opus", "anthropic"),
        ("gpt-4o-mini", "openai"),
        ("gpt-4o", "openai"),
        ("local-llama", "openai-compatible"),
        ("anthropic", "anthropic"),
        ("openai", "openai"),
        ("openai-compatible", "openai-compatible"),
        ("mock", "mock"),
    ],
)
def test_each_name_is_a_kind_and_needs_that_kinds_sdk(alias: str, kind: str) -> None:
    provider = ModelProvider(alias)
    assert provider.kind is ModelProvider(kind)
    expected = {"anthropic": "anthropic", "openai": "openai", "openai-compatible": "openai"}
    assert sdk_extra(provider) == expected.get(kind)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "body", "path", "adapter"),
    [
        ("anthropic", ANTHROPIC_OK, "/v1/messages", AnthropicProvider),
        ("openai", OPENAI_OK, "/v1/chat/completions", OpenAIProvider),
    ],
)
async def test_a_generic_kind_sends_any_model_name(
    provider: str, body: dict[str, Any], path: str, adapter: type
) -> None:
    scripted = ScriptedApi(lambda r: json_response(200, body))
    model = ModelConfig(provider=provider, model_name="brand-new-model-2027", api_key="k")
    async with open_provider("m", model, http_client=scripted.client()) as opened:
        assert type(opened) is adapter
        answer = await opened.complete(ask())
    assert answer.content == "hi"
    (sent,) = scripted.requests
    assert sent.url.path == path
    assert scripted.bodies[0]["model"] == "brand-new-model-2027"


@pytest.mark.anyio
async def test_openai_compatible_needs_an_endpoint_and_no_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_endpoint = ModelConfig(provider="openai-compatible", model_name="qwen")
    with pytest.raises(
        ConfigError, match=r"models\.q\.endpoint is required for provider 'openai-compatible'"
    ):
        async with Gateway(models={"q": no_endpoint}, log_dir=None):
            pass
    # An OpenAI key in the environment is never sent to another server.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    scripted = ScriptedApi(lambda r: json_response(200, OPENAI_OK))
    model = ModelConfig(
        provider="openai-compatible", model_name="qwen", endpoint="http://127.0.0.1:9/v1"
    )
    async with open_provider("q", model, http_client=scripted.client()) as opened:
        await opened.complete(ask("q"))
    (sent,) = scripted.requests
    assert str(sent.url) == "http://127.0.0.1:9/v1/chat/completions"
    assert "sk-real-openai-key" not in sent.headers["authorization"]
    # ...while a compatible server's own key is sent when configured.
    scripted = ScriptedApi(lambda r: json_response(200, OPENAI_OK))
    keyed = ModelConfig(
        provider="openai-compatible",
        model_name="qwen",
        endpoint="http://127.0.0.1:9/v1",
        api_key="server-key",
    )
    async with open_provider("q", keyed, http_client=scripted.client()) as opened:
        await opened.complete(ask("q"))
    assert scripted.requests[0].headers["authorization"] == "Bearer server-key"
    # and it sends max_tokens, the name compatible servers know.
    assert "max_completion_tokens" not in scripted.bodies[0]


# -- opening SDK models does not stall the event loop --------------------------------------

STALL_BOUND_S = 0.045
"""The longest loop stall allowed while opening three SDK models. Building one SDK HTTP client
on the loop stalled it 35-110 ms here (TLS certificates); in a thread the longest gap was
~12 ms, mostly the GIL while the thread parses certificates."""

SDK_MODELS: Any = {
    "a": {"provider": "anthropic", "model_name": "claude-x", "api_key": "k"},
    "o": {"provider": "openai", "model_name": "gpt-x", "api_key": "k"},
    "l": {
        "provider": "openai-compatible",
        "model_name": "llama",
        "endpoint": "http://127.0.0.1:9/v1",
    },
}


async def longest_stall_opening_a_gateway() -> float:
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.005)
        async with Gateway(models=SDK_MODELS, log_dir=None):
            pass
        done.set()
    return max(gaps)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_opening_three_sdk_models_does_not_stall_the_event_loop(backend: str) -> None:
    # Real time on purpose: a virtual clock cannot see a blocked loop. The SDK modules are
    # imported already (above): this measures opening models, not the one-time SDK import.
    assert llm_gateway.providers._anthropic and llm_gateway.providers._openai
    # The best of three openings: a loaded machine may pause any one of them, while code
    # that blocks the loop stalls every one.
    stall = min(
        anyio.run(partial(longest_stall_opening_a_gateway), backend=backend) for _ in range(3)
    )
    assert stall < STALL_BOUND_S, f"the loop stalled {stall * 1000:.1f} ms"
