"""The gateway's exception hierarchy.

Every error a caller can see from the gateway derives from :class:`GatewayError`, so
``except GatewayError`` catches all of them. Messages never contain prompt or completion text,
nor a key. The tree (a second base in parentheses)::

    GatewayError
    ├── ConfigError (ValueError)              bad configuration, at construction or loading
    ├── RequestValidationError (ValueError)   a bad value type, at the call that built it
    │   └── UnknownModelError                 the request names no configured model
    ├── GatewayClosedError (RuntimeError)     not open, shutting down, or shut down
    │   └── BatchPendingError                 closed while in a provider batch: see the journal
    ├── QueueFullError                        submit_nowait found the queue full
    ├── RequestCancelledError                 cancelled by future.cancel() or its caller
    ├── RequestTimeoutError (TimeoutError)    the request's own deadline passed
    ├── BatchError                            some requests of Gateway.batch() failed
    ├── StreamInterruptedError                a stream broke after its first content delta
    ├── UnknownRequestError (LookupError)     deferred_result: the journal holds no such id
    └── ProviderError                         the provider failed to answer
        ├── ProviderStatusError               an HTTP error status
        │   ├── RateLimitError                429
        │   └── AuthenticationError           401 or 403
        ├── ProviderTimeoutError              no answer within the model's timeout_s
        ├── ProviderConnectionError           unreachable, or the connection broke
        ├── ProviderResponseError             a success answer the gateway cannot use
        ├── BatchExpiredError                 its provider batch expired before processing it
        └── RetriesExhaustedError             retryable failures used up the retries
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import LLMResponse

__all__ = [
    "AuthenticationError",
    "BatchError",
    "BatchExpiredError",
    "BatchPendingError",
    "ConfigError",
    "GatewayClosedError",
    "GatewayError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QueueFullError",
    "RateLimitError",
    "RetriesExhaustedError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RequestValidationError",
    "StreamInterruptedError",
    "UnknownModelError",
    "UnknownRequestError",
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
        headers: The provider's rate-limit and retry headers from the failed call
            (``retry-after``, ``retry-after-ms``, ``x-should-retry``, ``anthropic-ratelimit-*``,
            ``x-ratelimit-*``), lower-case names; no other headers.
        error_type: The provider's error type string (e.g. ``"rate_limit_error"``), when given.
        provider_message: The provider's own error message, when given. It may quote the
            request, so the gateway never logs it; ``str(error)`` does not include it.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider_request_id: str | None = None,
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider_request_id = provider_request_id
        self.retry_after_s = retry_after_s
        self.headers: Mapping[str, str] = {} if headers is None else headers
        self.error_type = error_type
        self.provider_message = provider_message


class ProviderStatusError(ProviderError):
    """The provider answered with an HTTP error status (``status_code`` is set)."""


class RateLimitError(ProviderStatusError):
    """The provider refused the call for its rate limits (HTTP 429); see ``retry_after_s``."""


class AuthenticationError(ProviderStatusError):
    """The provider refused the key (HTTP 401) or its permissions (HTTP 403)."""


class ProviderTimeoutError(ProviderError):
    """The provider did not answer within the model's ``timeout_s`` (the SDK's own timeout)."""


class ProviderConnectionError(ProviderError):
    """The provider could not be reached, or the connection broke before an answer."""


class ProviderResponseError(ProviderError):
    """The provider answered success with a body the gateway cannot use.

    For example malformed JSON, a missing required field, or tool-call arguments that are not
    a JSON object.
    """


def status_error_type(status_code: int) -> type[ProviderStatusError]:
    """The :class:`ProviderStatusError` subclass for an HTTP error status."""
    if status_code == 429:
        return RateLimitError
    if status_code in (401, 403):
        return AuthenticationError
    return ProviderStatusError


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


class RetriesExhaustedError(ProviderError):
    """A request's retryable failures used up its retry budget (and any fallback models).

    Its status, request id and ``retry_after_s`` are the last attempt's; ``__cause__`` is the
    last attempt's error.

    Attributes:
        attempts: Every failed attempt's error, in order.
    """

    def __init__(self, message: str, attempts: Sequence[BaseException]) -> None:
        last = attempts[-1]
        info = last if isinstance(last, ProviderError) else None
        super().__init__(
            message,
            status_code=info.status_code if info else None,
            provider_request_id=info.provider_request_id if info else None,
            retry_after_s=info.retry_after_s if info else None,
            headers=info.headers if info else None,
        )
        self.attempts = list(attempts)


class StreamInterruptedError(GatewayError):
    """A stream failed after its first content delta: the caller has seen part of the answer.

    Before the first delta a failure is an ordinary failed attempt (retried, cooled down or
    sent to a fallback, invisibly); after it the gateway cannot retry without repeating what
    the caller already read, so the iteration ends with this error: never a silent clean end.

    Attributes:
        partial: The text the stream delivered before it broke.
        cause: What broke it (also ``__cause__``): a :class:`ProviderError` (an error event, a
            dropped connection), or a :class:`RequestTimeoutError` (the request's deadline).
        chunks: How many chunks the caller was sent.
    """

    def __init__(self, message: str, *, partial: str, cause: BaseException, chunks: int) -> None:
        super().__init__(message)
        self.partial = partial
        self.cause = cause
        self.chunks = chunks
        self.__cause__ = cause


class BatchPendingError(GatewayClosedError):
    """The gateway closed while the request waited for its provider batch.

    The batch goes on at the provider, and the batch journal (``GatewayConfig.state_dir``)
    keeps it: a gateway opened later on the same state directory polls it and keeps the
    result, which ``await gw.deferred_result(request_id)`` returns. See ``docs/batch-api.md``.

    Attributes:
        request_id: The request's id (what ``deferred_result`` takes).
        batch_id: The provider's id of the batch that holds it.
    """

    def __init__(self, message: str, *, request_id: str, batch_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.batch_id = batch_id


class BatchExpiredError(ProviderError):
    """The provider's batch expired (24 hours) before it processed the request.

    Raised when the model's ``BatchApiPolicy.on_expired`` is ``"fail"``, and by
    ``deferred_result`` for such a request (the journal holds no prompt to send it again).
    """


class UnknownRequestError(GatewayError, LookupError):
    """``deferred_result`` was given a request id that the batch journal does not hold.

    It never went to a provider batch, its result was already collected (or delivered to its
    caller), or it was kept longer than the journal's retention.
    """
