"""Choosing and opening the provider adapter for a model configuration."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from .._config import ModelConfig
from .._exceptions import ConfigError
from .._imports import import_off_loop
from .._models import ModelProvider
from ._base import Provider
from ._mock import MockFixtures, MockProvider, MockScript

if TYPE_CHECKING:
    import httpx2

__all__ = ["open_provider"]


def mock_script_from_options(model_id: str, config: ModelConfig) -> MockScript:
    """The mock's behaviour from ``provider_options`` (``latency_s``, ``fixtures``).

    It keeps no request history: a gateway on the mock provider may serve requests for as long
    as it is open without holding on to them.
    """
    options = dict(config.provider_options)
    latency = options.pop("latency_s", 0.0)
    fixtures_path = options.pop("fixtures", None)
    if options:
        raise ConfigError(
            f"models.{model_id}.provider_options has unknown keys {sorted(options)} for the mock "
            "provider; it knows 'latency_s' and 'fixtures'"
        )
    if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
        raise ConfigError(f"models.{model_id}.provider_options.latency_s is {latency!r}; use >= 0")
    fixtures = MockFixtures() if fixtures_path is None else MockFixtures.load(fixtures_path)
    return MockScript(fixtures=fixtures, latency_s=float(latency))


def sdk_extra(provider: ModelProvider) -> str | None:
    """The extra (and SDK) a provider needs: ``"anthropic"``, ``"openai"``, or ``None``."""
    kind = provider.kind
    if kind is ModelProvider.ANTHROPIC:
        return "anthropic"
    if kind in (ModelProvider.OPENAI, ModelProvider.OPENAI_COMPATIBLE):
        return "openai"
    return None


def _missing_extra(
    error: ModuleNotFoundError, extra: str, model_id: str, config: ModelConfig
) -> Exception:
    """The ConfigError for an uninstalled extra; ``error`` itself when something else is missing."""
    missing = (error.name or "").partition(".")[0]
    if missing not in (extra, "httpx2"):
        return error
    return ConfigError(
        f"models.{model_id}: provider {config.provider.value!r} needs the {extra} SDK, and "
        f"{missing!r} is not installed; install it from the project's checkout with: "
        f"pip install -e '.[{extra}]' (or: pip install {extra})"
    )


@asynccontextmanager
async def open_provider(
    model_id: str, config: ModelConfig, *, http_client: httpx2.AsyncClient | None = None
) -> AsyncGenerator[Provider]:
    """Open the adapter ``config.provider`` calls for; close it on exit.

    The SDK adapters are imported here, when a model needs them, so ``import llm_gateway``
    imports no SDK and a missing extra only matters to the models that need it.

    Args:
        model_id: The configured model id.
        config: The model's configuration.
        http_client: For tests: the HTTP client an SDK adapter uses (e.g. one with an
            ``httpx2.MockTransport``); it is closed with the adapter. The mock ignores it.

    Raises:
        ConfigError: The provider cannot be used (a missing extra, a missing key, a missing
            ``endpoint`` for ``openai-compatible``, unknown ``provider_options``).
    """
    extra = sdk_extra(config.provider)
    if extra is not None:
        try:
            # Off the loop: the first import of an SDK in a process takes hundreds of ms.
            adapter = await import_off_loop(f"{__package__}._{extra}")
        except ModuleNotFoundError as error:
            raise _missing_extra(error, extra, model_id, config) from None
        # Each SDK adapter module has an `open_<extra>` with the same signature.
        open_sdk: Callable[..., AbstractAsyncContextManager[Provider]] = getattr(
            adapter, f"open_{extra}"
        )
        async with open_sdk(model_id, config, http_client=http_client) as sdk:
            yield sdk
    elif config.provider is ModelProvider.MOCK:
        yield MockProvider(model_id, config.model_name, mock_script_from_options(model_id, config))
    else:
        raise ConfigError(
            f"models.{model_id}: the {config.provider.value!r} provider has no adapter"
        )
