"""Opening providers: which adapter, keys, extras, endpoints, options, client shape, closing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx2
import pytest

import llm_gateway.providers
from llm_gateway import (
    ConfigError,
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ModelProvider,
    ProviderStatusError,
)
from llm_gateway.providers import MockProvider, open_provider
from llm_gateway.providers._anthropic import AnthropicProvider
from llm_gateway.providers._http import kept_headers, parse_retry_after
from llm_gateway.providers._openai import OpenAIProvider
from llm_gateway.providers._transport import StackedConnectionPool

from ._provider_support import ScriptedApi, json_response

pytestmark = pytest.mark.anyio

KEY_ENV = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")


@pytest.fixture(autouse=True)
def no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)


def config(provider: str, **overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {"provider": provider, "model_name": "some-model"}
    return ModelConfig(**(fields | overrides))


def no_http(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError("no request expected")


def test_importing_the_library_imports_no_sdk() -> None:
    code = (
        "import sys, llm_gateway, llm_gateway.providers, llm_gateway.testing\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] in "
        "{'anthropic', 'openai', 'httpx2', 'httpx', 'httpcore2'})\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


ADAPTERS: dict[ModelProvider, type] = {
    ModelProvider.CLAUDE_HAIKU: AnthropicProvider,
    ModelProvider.CLAUDE_SONNET: AnthropicProvider,
    ModelProvider.CLAUDE_OPUS: AnthropicProvider,
    ModelProvider.GPT_4O_MINI: OpenAIProvider,
    ModelProvider.GPT_4O: OpenAIProvider,
    ModelProvider.LOCAL_LLAMA: OpenAIProvider,
    ModelProvider.MOCK: MockProvider,
    ModelProvider.ANTHROPIC: AnthropicProvider,
    ModelProvider.OPENAI: OpenAIProvider,
    ModelProvider.OPENAI_COMPATIBLE: OpenAIProvider,
}


@pytest.mark.parametrize("provider", list(ModelProvider))
async def test_every_provider_has_its_adapter(provider: ModelProvider) -> None:
    model = config(provider, api_key="k", endpoint="http://127.0.0.1:9/v1")
    async with open_provider("m", model) as opened:
        assert type(opened) is ADAPTERS[provider]


async def test_an_sdk_client_is_pooled_to_max_concurrency_with_retries_off_and_closed() -> None:
    # httpx2's pools, read from its internals (the aiohttp client's pool: test_provider_wires.py):
    # max_concurrency connections, kept by the stacked pool.
    httpx = {"http_client": "httpx"}
    model = config(
        "claude-sonnet", api_key="k", max_concurrency=7, timeout_s=42.0, provider_options=httpx
    )
    async with open_provider("m", model) as opened:
        assert isinstance(opened, AnthropicProvider)
        client = opened.client
        assert client.max_retries == 0
        assert client.timeout == 42.0
        pool = client._client._transport._pool  # type: ignore[attr-defined]
        assert type(pool) is StackedConnectionPool
        assert (pool._max_connections, pool._max_keepalive_connections) == (7, 7)
    assert client.is_closed()
    model = config("gpt-4o", api_key="k", max_concurrency=3, timeout_s=None, provider_options=httpx)
    async with open_provider("m", model) as opened:
        assert isinstance(opened, OpenAIProvider)
        sdk = opened.client
        assert (sdk.max_retries, sdk.timeout) == (0, None)
        pool = sdk._client._transport._pool  # type: ignore[attr-defined]
        assert pool._max_connections == 3
    assert sdk.is_closed()


async def test_an_injected_http_client_is_closed_with_the_adapter() -> None:
    http_client = ScriptedApi(no_http).client()
    async with open_provider("m", config("gpt-4o-mini", api_key="k"), http_client=http_client):
        assert not http_client.is_closed
    assert http_client.is_closed


@pytest.mark.parametrize(
    ("provider", "env"),
    [("claude-haiku", "ANTHROPIC_API_KEY"), ("gpt-4o-mini", "OPENAI_API_KEY")],
)
async def test_a_missing_key_fails_at_gateway_start_naming_model_and_variable(
    provider: str, env: str
) -> None:
    gateway = Gateway(models={"fast": config(provider)}, log_dir=None)  # not yet: no error
    with pytest.raises(ConfigError) as caught:
        async with gateway:
            pytest.fail("the gateway opened without a key")
    message = str(caught.value)
    assert "models.fast" in message
    assert env in message
    assert "models.fast.api_key" in message


@pytest.mark.parametrize(
    ("provider", "env", "path"),
    [
        ("claude-opus", "ANTHROPIC_API_KEY", "/v1/messages"),
        ("gpt-4o", "OPENAI_API_KEY", "/v1/chat/completions"),
    ],
)
async def test_the_key_comes_from_the_environment(
    provider: str, env: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, "from-env")
    scripted = ScriptedApi(lambda r: json_response(500, {}))
    async with open_provider("m", config(provider), http_client=scripted.client()) as opened:
        with pytest.raises(ProviderStatusError):
            await opened.complete(LLMRequest(model="m", messages=[LLMMessage("user", "hi")]))
    (sent,) = scripted.requests
    assert sent.url.path == path
    assert sent.headers["authorization"] == "Bearer from-env"


async def test_a_configured_key_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    async with open_provider("m", config("claude-haiku", api_key="from-config")) as opened:
        assert isinstance(opened, AnthropicProvider)
        assert opened.client.api_key == "from-config"


async def test_local_llama_needs_an_endpoint_not_a_key() -> None:
    with pytest.raises(ConfigError, match=r"models\.llama\.endpoint is required"):
        async with Gateway(models={"llama": config("local-llama")}, log_dir=None):
            pass
    async with open_provider("llama", config("local-llama", endpoint="http://127.0.0.1:8080/v1")):
        pass


@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize(
    ("provider", "url"),
    [
        ("claude-haiku", "http://proxy.internal:8000/llm/v1/messages"),
        ("gpt-4o", "http://proxy.internal:8000/llm/chat/completions"),
    ],
)
async def test_endpoint_overrides_the_base_url(provider: str, url: str, slash: str) -> None:
    # The adapters join their path to the base URL once, by the SDK's rule: the same URL.
    scripted = ScriptedApi(lambda r: json_response(500, {}))
    model = config(provider, api_key="k", endpoint="http://proxy.internal:8000/llm" + slash)
    async with open_provider("m", model, http_client=scripted.client()) as opened:
        with pytest.raises(ProviderStatusError):
            await opened.complete(LLMRequest(model="m", messages=[LLMMessage("user", "hi")]))
    assert str(scripted.requests[0].url) == url


@pytest.mark.parametrize(
    ("provider", "options", "match"),
    [
        (
            "claude-haiku",
            {"default_max_token": 5},
            r"unknown keys \['default_max_token'\] for the Anthropic provider; it knows "
            r"'default_max_tokens', 'extra_headers'",
        ),
        (
            "gpt-4o",
            {"organisation": "o", "temperature": 1},
            r"unknown keys \['organisation', 'temperature'\] for the OpenAI provider",
        ),
        ("local-llama", {"project": "p"}, r"unknown keys \['project'\] for the local-llama"),
        ("claude-haiku", {"default_max_tokens": 0}, r"default_max_tokens is 0; use an int >= 1"),
        ("claude-haiku", {"default_max_tokens": True}, r"default_max_tokens is True"),
        ("gpt-4o", {"organization": ""}, r"organization is ''; use a non-empty string"),
        ("gpt-4o", {"extra_headers": {"x": 1}}, r"extra_headers must map header names"),
        ("claude-haiku", {"extra_headers": ["x"]}, r"extra_headers must map header names"),
    ],
)
async def test_bad_provider_options_fail_at_gateway_start(
    provider: str, options: dict[str, Any], match: str
) -> None:
    model = config(
        provider, api_key="k", endpoint="http://127.0.0.1:9/v1", provider_options=options
    )
    with pytest.raises(ConfigError, match=rf"models\.m\.provider_options.*{match}"):
        async with Gateway(models={"m": model}, log_dir=None):
            pass


def hide_sdk(monkeypatch: pytest.MonkeyPatch, sdk: str, adapter: str) -> None:
    """Make ``sdk`` look uninstalled (and the adapter that imports it not yet imported)."""
    monkeypatch.setitem(sys.modules, sdk, None)  # `import sdk` now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, f"llm_gateway.providers.{adapter}")
    monkeypatch.delattr(llm_gateway.providers, adapter)


@pytest.mark.parametrize(
    ("provider", "sdk", "adapter"),
    [
        ("claude-haiku", "anthropic", "_anthropic"),
        ("gpt-4o", "openai", "_openai"),
        ("local-llama", "openai", "_openai"),
        ("anthropic", "anthropic", "_anthropic"),
        ("openai", "openai", "_openai"),
        ("openai-compatible", "openai", "_openai"),
    ],
)
async def test_a_missing_extra_fails_at_gateway_start_naming_it(
    provider: str, sdk: str, adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_sdk(monkeypatch, sdk, adapter)
    model = config(provider, api_key="k", endpoint="http://127.0.0.1:9/v1")
    gateway = Gateway(models={"m": model, "other": config("mock")}, log_dir=None)
    with pytest.raises(ConfigError) as caught:
        async with gateway:
            pass
    assert str(caught.value) == (
        f"models.m: provider {provider!r} needs the {sdk} SDK, and {sdk!r} is not installed; "
        f"install it from the project's checkout with: pip install -e '.[{sdk}]' "
        f"(or: pip install {sdk})"
    )


async def test_a_missing_extra_only_matters_to_the_models_that_need_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_sdk(monkeypatch, "anthropic", "_anthropic")
    models = {"gpt": config("gpt-4o", api_key="k"), "mock": config("mock")}
    async with Gateway(models=models, log_dir=None) as gw:
        answer = await gw.request(LLMRequest(model="mock", messages=[LLMMessage("user", "x")]))
    assert answer.model == "mock"


# -- header helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1200"}, 1.2),
        ({"retry-after-ms": "1200", "retry-after": "9"}, 1.2),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "later"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 -0000"}, 10.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == (
        None if seconds is None else pytest.approx(seconds)
    )


def test_kept_headers_are_the_rate_limit_and_retry_headers_only() -> None:
    headers = httpx2.Headers(
        {
            "Retry-After": "1",
            "retry-after-ms": "900",
            "anthropic-ratelimit-tokens-remaining": "10",
            "x-ratelimit-reset-tokens": "12ms",
            "X-Should-Retry": "false",
            "set-cookie": "secret",
            "request-id": "r",
        }
    )
    assert kept_headers(headers) == {
        "retry-after": "1",
        "retry-after-ms": "900",
        "anthropic-ratelimit-tokens-remaining": "10",
        "x-ratelimit-reset-tokens": "12ms",
        "x-should-retry": "false",
    }
