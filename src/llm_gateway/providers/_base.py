"""The provider interface the gateway's executor calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from .._config import ModelConfig
from .._models import LLMRequest, LLMResponse

__all__ = ["Provider", "ProviderFactory", "strict_json", "structured_answer"]


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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def strict_json(text: str) -> object:
    """``json.loads``, refusing NaN and Infinity (Python's extensions, not JSON).

    Raises:
        ValueError: Not JSON (a ``json.JSONDecodeError`` gives the position, never the text).
        RecursionError: Nested too deeply to decode.
    """
    return json.loads(text, parse_constant=_refuse_constant)


def structured_answer(request: LLMRequest, content: str) -> Any:
    """``LLMResponse.parsed``: the answer as JSON when ``request.response_format`` asked for it.

    ``None`` when the request gave no ``response_format``. Only JSON validity is checked; the
    schema is the provider's to enforce.

    Raises:
        ValueError: The answer is not JSON (the message gives the position, never the text).
    """
    if request.response_format is None:
        return None
    try:
        return strict_json(content)
    except (ValueError, RecursionError) as exc:
        raise ValueError(
            f"the answer is not the JSON that response_format asked for: {exc}"
        ) from None
