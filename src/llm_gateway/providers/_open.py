"""Choosing and opening the provider adapter for a model configuration."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from .._config import ModelConfig
from .._exceptions import ConfigError
from .._models import ModelProvider
from ._base import Provider
from ._mock import MockFixtures, MockProvider, MockScript

__all__ = ["open_provider"]


def mock_script_from_options(model_id: str, config: ModelConfig) -> MockScript:
    """The mock's behaviour from ``provider_options`` (``latency_s``, ``fixtures``)."""
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


@asynccontextmanager
async def open_provider(model_id: str, config: ModelConfig) -> AsyncGenerator[Provider]:
    """Open the adapter ``config.provider`` calls for; close it on exit.

    Raises:
        ConfigError: The provider cannot be used (a missing extra, a missing key).
    """
    if config.provider is ModelProvider.MOCK:
        yield MockProvider(model_id, config.model_name, mock_script_from_options(model_id, config))
        return
    raise ConfigError(
        f"models.{model_id}: the {config.provider.value!r} provider is not available in this "
        "version; use provider = 'mock'"
    )
