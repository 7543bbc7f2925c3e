"""The provider interface the gateway's executor calls."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from .._config import ModelConfig
from .._models import LLMRequest, LLMResponse

__all__ = ["Provider", "ProviderFactory"]


@runtime_checkable
class Provider(Protocol):
    """One model's connection to its LLM: one request in, one response out.

    The gateway creates a provider when it opens and closes it (if it is an async context
    manager) when it closes. ``complete`` is called concurrently, up to the model's
    ``max_concurrency`` at once, and may be cancelled at any await.
    """

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request``.

        Returns:
            The response; ``request_id`` and ``model`` set, timings left to the gateway.

        Raises:
            GatewayError: A subclass (usually :class:`ProviderError`) describing the failure.
        """
        ...


ProviderFactory = Callable[[str, ModelConfig], AbstractAsyncContextManager[Provider]]
"""Opens one model's provider: called with the model id and its configuration when the gateway
opens; the gateway enters the returned context manager and exits it when it closes.
``llm_gateway.providers.open_provider`` is the default."""
