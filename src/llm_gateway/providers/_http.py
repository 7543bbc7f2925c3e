"""What the SDK adapters share: keys, options, the HTTP client's shape, and error translation.

Imported only by the SDK adapters (which are imported only when a model needs them), so it may
import ``httpx2``: ``import llm_gateway`` stays free of HTTP and SDK imports.
"""

from __future__ import annotations

import email.utils
import math
import os
import time
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

import attrs
import httpx2

from .._config import ModelConfig
from .._exceptions import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
    status_error_type,
)

__all__ = [
    "SdkErrors",
    "headers_option",
    "kept_headers",
    "parse_retry_after",
    "pool_limits",
    "positive_int_option",
    "provider_options",
    "require_api_key",
    "str_option",
]

RATE_LIMIT_HEADER_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
RETRY_HEADERS = frozenset({"retry-after", "retry-after-ms", "x-should-retry"})


# -- configuration -------------------------------------------------------------------------


def require_api_key(model_id: str, config: ModelConfig, env_var: str) -> str:
    """The model's key: ``api_key`` from its config, else the ``env_var`` environment variable.

    Raises:
        ConfigError: Neither is set (checked when the gateway opens, not at the first request).
    """
    key = config.api_key or os.environ.get(env_var)
    if not key:
        raise ConfigError(
            f"models.{model_id} (provider {config.provider.value!r}) has no API key; set "
            f"models.{model_id}.api_key or the {env_var} environment variable"
        )
    return key


def provider_options(
    model_id: str, config: ModelConfig, adapter: str, known: Iterable[str]
) -> dict[str, Any]:
    """A copy of ``provider_options``, after checking that the adapter knows every key.

    Raises:
        ConfigError: An unknown key (a typo would otherwise be ignored silently).
    """
    options = dict(config.provider_options)
    known = tuple(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        knows = ", ".join(repr(k) for k in known) if known else "no keys"
        raise ConfigError(
            f"models.{model_id}.provider_options has unknown keys {unknown} for the {adapter} "
            f"provider; it knows {knows}"
        )
    return options


def positive_int_option(model_id: str, options: Mapping[str, Any], name: str, default: int) -> int:
    """``options[name]`` (default ``default``), checked to be an int >= 1."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"models.{model_id}.provider_options.{name} is {value!r}; use an int >= 1"
        )
    return value


def str_option(model_id: str, options: Mapping[str, Any], name: str) -> str | None:
    """``options[name]``, checked to be a non-empty str, or ``None`` when absent."""
    value = options.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(
            f"models.{model_id}.provider_options.{name} is {value!r}; use a non-empty string"
        )
    return value


def headers_option(model_id: str, options: Mapping[str, Any]) -> dict[str, str] | None:
    """``options["extra_headers"]``, checked to map str to str, or ``None`` when absent."""
    value = options.get("extra_headers")
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(
            f"models.{model_id}.provider_options.extra_headers must map header names to "
            "string values"
        )
    return dict(value)


def pool_limits(config: ModelConfig) -> httpx2.Limits:
    """A connection pool as large as the model's ``max_concurrency``, and no larger.

    The gateway never has more than ``max_concurrency`` calls of a model in flight, so more
    connections would only be idle sockets; fewer would queue calls inside httpx.
    """
    return httpx2.Limits(
        max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency
    )


# -- responses and errors ------------------------------------------------------------------


def kept_headers(headers: httpx2.Headers) -> dict[str, str]:
    """The rate-limit and retry headers of a response (lower-case names), and no others.

    Retry headers: ``retry-after``, ``retry-after-ms``, and ``x-should-retry`` (the providers'
    explicit "retry this" / "do not retry this").
    """
    return {
        name: value
        for name, value in headers.items()
        if name in RETRY_HEADERS or name.startswith(RATE_LIMIT_HEADER_PREFIXES)
    }


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The provider's retry hint in seconds, or ``None`` when it gives none (or an unusable one).

    Reads ``retry-after-ms`` first (more precise), then ``retry-after`` as seconds, then
    ``retry-after`` as an HTTP date (counted from ``now``, the wall clock by default: an HTTP
    date is wall-clock time). A date in the past is 0.
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        value = _seconds(milliseconds)
        if value is not None:
            return value / 1000.0
    retry_after = headers.get("retry-after")
    if retry_after is None:
        return None
    value = _seconds(retry_after)
    if value is not None:
        return value
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" in the date: UTC, with no claim about local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """The provider's error type and message from an error body, when it has them.

    Anthropic's SDK keeps the whole body (``{"type": "error", "error": {...}}``); OpenAI's keeps
    only the inner ``error`` object: look inside ``error`` when there is one.
    """
    if not isinstance(body, Mapping):
        return None, None
    inner = body.get("error")
    if isinstance(inner, Mapping):
        body = inner
    error_type = body.get("type")
    if not isinstance(error_type, str):
        error_type = body.get("code")
    message = body.get("message")
    return (
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else None,
    )


@attrs.frozen
class SdkErrors:
    """Turns one SDK's exceptions and bad responses into the gateway's exceptions.

    Classified by exception family and HTTP status, never by the SDK's leaf classes (they
    differ between SDK versions: 529 is ``OverloadedError`` in anthropic and a plain
    ``InternalServerError`` in openai). Messages carry the status, the provider's error type
    and request id, never the provider's message (it may quote the prompt); that is kept in
    ``provider_message``.

    Attributes:
        provider: The provider's name, for messages (``"Anthropic"``).
        request_id_header: The response header holding the provider's request id.
        status: The SDK's ``APIStatusError`` (a non-2xx answer).
        timeout: The SDK's ``APITimeoutError``.
        connection: The SDK's ``APIConnectionError`` (a base of ``APITimeoutError``).
    """

    provider: str
    request_id_header: str
    status: type[Exception]
    timeout: type[Exception]
    connection: type[Exception]

    def translate(self, error: Exception) -> ProviderError:
        """The gateway exception for an exception of the SDK's ``APIError`` family.

        Raise it ``from error.__cause__``: a status error then has no cause (the SDK's
        exception quotes the whole error body), and a timeout or connection error keeps the
        transport's exception, which says what went wrong at the socket.
        """
        if isinstance(error, self.status):
            sdk_error: Any = error
            return self.status_error(sdk_error.response, sdk_error.body)
        if isinstance(error, self.timeout):
            return ProviderTimeoutError(
                f"{self.provider} did not answer within the model's timeout_s (the SDK's timeout)"
            )
        if isinstance(error, self.connection):
            cause = error.__cause__
            detail = f" ({type(cause).__name__})" if cause is not None else ""
            return ProviderConnectionError(f"could not reach {self.provider}{detail}")
        # Any other APIError (e.g. response validation, which the raw path does not do).
        return ProviderResponseError(f"{self.provider}'s SDK failed with {type(error).__name__}")

    def status_error(self, response: httpx2.Response, body: object) -> ProviderStatusError:
        """The exception for a non-2xx answer; ``body`` is the SDK's decoded error body."""
        status = response.status_code
        headers = kept_headers(response.headers)
        request_id = response.headers.get(self.request_id_header)
        error_type, provider_message = _error_fields(body)
        retry_after = parse_retry_after(headers)
        message = f"{self.provider} answered HTTP {status}"
        if error_type:
            message += f" {error_type}"
        if request_id:
            message += f" (request id {request_id})"
        if retry_after is not None:
            message += f"; retry after {retry_after:g} s"
        return status_error_type(status)(
            message,
            status_code=status,
            provider_request_id=request_id,
            retry_after_s=retry_after,
            headers=headers,
            error_type=error_type,
            provider_message=provider_message,
        )

    def malformed(self, response: httpx2.Response, problem: str) -> ProviderResponseError:
        """The exception for a success answer whose body cannot be used."""
        request_id = response.headers.get(self.request_id_header)
        return ProviderResponseError(
            f"{self.provider} answered HTTP {response.status_code} with an unusable body: "
            f"{problem}" + (f" (request id {request_id})" if request_id else ""),
            status_code=response.status_code,
            provider_request_id=request_id,
            headers=kept_headers(response.headers),
        )
