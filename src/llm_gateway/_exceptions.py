"""The gateway's exception hierarchy.

Every error a caller can see from the gateway derives from :class:`GatewayError`, so
``except GatewayError`` catches all of them. Messages never contain prompt or completion text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import LLMResponse

__all__ = [
    "BatchError",
    "ConfigError",
    "GatewayClosedError",
    "GatewayError",
    "ProviderError",
    "QueueFullError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RequestValidationError",
    "UnknownModelError",
]


class GatewayError(Exception):
    """Base class of every error raised by the gateway."""


class ConfigError(GatewayError, ValueError):
    """The gateway or model configuration is invalid; the message names the field."""


class RequestValidationError(GatewayError, ValueError):
    """A request is invalid; raised at the call that made it, naming the field and the fix."""


class UnknownModelError(RequestValidationError):
    """A request names a model id that the gateway was not configured with."""


class GatewayClosedError(GatewayError, RuntimeError):
    """The gateway is not open, is shutting down, or shut down before the request finished."""


class QueueFullError(GatewayError):
    """``submit_nowait`` found the model's queue at capacity (``submit`` would have waited)."""


class RequestCancelledError(GatewayError):
    """The request was cancelled (``ResponseFuture.cancel()`` or its caller was cancelled)."""


class RequestTimeoutError(GatewayError, TimeoutError):
    """The request's deadline (``timeout_s``) passed before a response arrived."""


class ProviderError(GatewayError):
    """The provider failed to answer a request.

    Attributes:
        status_code: The HTTP status, when the provider answered with one.
        provider_request_id: The provider's own id for the failed call, when given.
        retry_after_s: The provider's ``retry-after`` hint in seconds, when given.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider_request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider_request_id = provider_request_id
        self.retry_after_s = retry_after_s


class BatchError(GatewayError):
    """One or more requests of ``Gateway.batch()`` failed.

    Raised only after every request of the batch has finished, so no result is lost.

    Attributes:
        results: One entry per input request, in input order: its response, or the exception
            it failed with.
        exceptions: The failures alone, in input order.
    """

    def __init__(self, results: Sequence[LLMResponse | BaseException]) -> None:
        self.results = list(results)
        self.exceptions = [r for r in self.results if isinstance(r, BaseException)]
        kinds = sorted({type(e).__name__ for e in self.exceptions})
        super().__init__(
            f"{len(self.exceptions)} of {len(self.results)} requests failed ({', '.join(kinds)}); "
            "see .results for every outcome in input order"
        )
