"""What the SDK adapters share: keys, options, the SDK client's lifecycle, reading bodies, errors.

Imported only by the SDK adapters (which are imported only when a model needs them), so it may
import ``httpx2``: ``import llm_gateway`` stays free of HTTP and SDK imports.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
import time
import traceback
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
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
from .._models import LLMRequest
from .._validators import check_api_key
from ._base import strict_json, structured_answer
from ._transport import SdkHttpClients, build_http_client, http_client_choice

__all__ = [
    "MAX_TOKEN_COUNT",
    "PARSE_ERRORS",
    "BodyError",
    "SdkErrors",
    "body_fields",
    "headers_option",
    "item_fields",
    "json_kind",
    "kept_headers",
    "list_field",
    "mapping_field",
    "open_sdk_client",
    "optional_str_field",
    "parse_retry_after",
    "parsed_content",
    "positive_int_option",
    "provider_options",
    "read_json",
    "require_api_key",
    "str_field",
    "str_option",
    "strict_json",
    "token_count",
    "tool_arguments",
]

RATE_LIMIT_HEADER_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
RETRY_HEADERS = frozenset({"retry-after", "retry-after-ms", "x-should-retry"})
_RETRY_HEADERS = frozenset(name.encode() for name in RETRY_HEADERS)
_RATE_LIMIT_HEADER_PREFIXES = tuple(prefix.encode() for prefix in RATE_LIMIT_HEADER_PREFIXES)


# -- configuration -------------------------------------------------------------------------


def require_api_key(model_id: str, config: ModelConfig, env_var: str) -> str:
    """The model's key: ``api_key`` from its config, else the ``env_var`` environment variable.

    Either is checked with :func:`check_api_key` (a key read from a file often keeps its
    trailing newline; sent, it would fail as a "connection error" whose message quotes it).

    Raises:
        ConfigError: Neither is set, or the key cannot be sent as an HTTP header (the message
            names where the key came from and never shows it). Checked when the gateway
            opens, not at the first request.
    """
    if config.api_key:
        return check_api_key(config.api_key, f"models.{model_id}.api_key")
    key = os.environ.get(env_var)
    if not key:
        raise ConfigError(
            f"models.{model_id} (provider {config.provider.value!r}) has no API key; set "
            f"models.{model_id}.api_key or the {env_var} environment variable"
        )
    return check_api_key(key, f"the {env_var} environment variable (for models.{model_id})")


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


# An HTTP header value the SDKs can send: visible ASCII, with inner spaces and tabs (RFC 9110
# field-value without obs-text, which httpx refuses to encode). No CR or LF: a line break would
# end the header, and httpx's error for it quotes the whole value.
_HEADER_VALUE = re.compile(r"(?:[!-~]+(?:[ \t]+[!-~]+)*)?")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token


def _is_header_value(value: str) -> bool:
    return _HEADER_VALUE.fullmatch(value) is not None


def str_option(model_id: str, options: Mapping[str, Any], name: str) -> str | None:
    """``options[name]``, checked to be a non-empty str an HTTP header can carry, or ``None``.

    The SDKs send these options (``organization``, ``project``) as headers.
    """
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"models.{model_id}.provider_options.{name} is {value!r}; use a non-empty string"
        )
    if not _is_header_value(value):
        raise ConfigError(
            f"models.{model_id}.provider_options.{name} has characters an HTTP header cannot "
            "carry (a line break, a control character, or non-ASCII; the value is not shown)"
        )
    return value


def headers_option(model_id: str, options: Mapping[str, Any]) -> dict[str, str] | None:
    """``options["extra_headers"]``, checked to map header names to printable values.

    Raises:
        ConfigError: Not a mapping of str to str, a name that is not an HTTP token, or a value
            with a line break, a control character or non-ASCII. The message never shows a
            value (extra headers often carry credentials) nor a malformed name.
    """
    field = f"models.{model_id}.provider_options.extra_headers"
    value = options.get("extra_headers")
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{field} must map header names to string values")
    headers = dict(value)
    for name, header_value in headers.items():
        if _HEADER_NAME.fullmatch(name) is None:
            raise ConfigError(
                f"{field} has a header name that is not an HTTP token (letters, digits and "
                "!#$%&'*+-.^_`|~ only; the name is not shown)"
            )
        if not _is_header_value(header_value):
            raise ConfigError(
                f"{field}[{name!r}] has characters a header value cannot have (a line break, "
                "a control character, non-ASCII, or leading or trailing whitespace; the value "
                "is not shown); strip it, e.g. read it from its file with .read().strip()"
            )
    return headers


class _SdkClient(Protocol):
    async def close(self) -> None: ...


class _UrlMerging(Protocol):
    def _prepare_url(self, url: str) -> httpx2.URL: ...


def absolute_url(client: _UrlMerging, path: str) -> str:
    """The absolute URL an SDK client sends ``path`` to (its base URL joined with ``path``).

    The SDK joins a relative path to its base URL, parsing both, on every call (20-40 us);
    the adapters join each of their paths once, by the SDK's own rule, and pass the result.
    """
    return str(client._prepare_url(path))


ClientT = TypeVar("ClientT", bound=_SdkClient)


@asynccontextmanager
async def open_sdk_client(
    sdk_client: Callable[..., ClientT],
    http_clients: SdkHttpClients,
    config: ModelConfig,
    *,
    model_id: str,
    http_client: httpx2.AsyncClient | None,
    api_key: str,
    extra_headers: Mapping[str, str] | None,
    **options: Any,
) -> AsyncGenerator[ClientT]:
    """One SDK client the way every adapter wants it; closed (with its HTTP client) on exit.

    Retries off (the gateway owns them), the model's ``endpoint`` as base URL, ``timeout_s``
    as the SDK's timeout (a backstop: the gateway's deadline usually comes first), the extra
    headers on every call, and a connection pool of ``max_concurrency``. The HTTP client is
    the SDK's httpx2 or aiohttp one, as ``provider_options.http_client`` chooses (see
    :mod:`._transport`). The client is built in a worker thread, so opening a model does not
    block the event loop.

    Args:
        sdk_client: The SDK's client class (``anthropic.AsyncAnthropic``, ``openai.AsyncOpenAI``).
        http_clients: The SDK's ``DefaultAsyncHttpxClient`` and ``DefaultAioHttpClient``.
        config: The model's configuration.
        model_id: The configured model id (for error messages).
        http_client: Use this HTTP client instead (tests inject a MockTransport).
        api_key: The checked key (:func:`require_api_key`).
        extra_headers: The checked extra headers (:func:`headers_option`).
        **options: Further arguments of the SDK's client (``organization=``...).

    Raises:
        ConfigError: A bad ``provider_options.http_client`` (see :func:`http_client_choice`).
    """
    choice = http_client_choice(model_id, config.provider_options)

    def build() -> ClientT:
        return sdk_client(
            api_key=api_key,
            base_url=config.endpoint,
            timeout=config.timeout_s,
            max_retries=0,
            default_headers=extra_headers,
            http_client=http_client or build_http_client(http_clients, choice, config),
            **options,
        )

    # Building an HTTP client loads the system's TLS certificates (the first time: see
    # shared_ssl_context) and the SDK's modules: done on the event loop, it would stall every
    # other task. A worker thread keeps the loop free; construction touches no loop state.
    client = await anyio.to_thread.run_sync(build)
    try:
        yield client
    finally:
        await client.close()


# -- reading a success body ----------------------------------------------------------------

MAX_TOKEN_COUNT = 2**53 - 1
"""The largest usage count accepted: larger is no real count, and would lose precision (or
overflow) where the gateway does float arithmetic with it (rate-limit books)."""


class BodyError(Exception):
    """A 2xx body the adapter cannot use.

    The message names the field (``usage.output_tokens``) and what is wrong with it, never
    the provider's text: the adapter turns it into a ``ProviderResponseError``.
    """


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words, for messages that must not quote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"  # not from JSON: kept general for the callers' checks


def parsed_content(request: LLMRequest, content: str) -> Any:
    """:func:`structured_answer`, raising :class:`BodyError` for an answer that is not JSON."""
    try:
        return structured_answer(request, content)
    except ValueError as exc:
        raise BodyError(str(exc)) from None


def read_json(response: httpx2.Response) -> object:
    """The decoded body: strict UTF-8 JSON (no NaN or Infinity, no lone encoded surrogates).

    Raises:
        BodyError: The body is not UTF-8, not JSON, or nested too deeply to decode.
    """
    try:
        text = response.content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BodyError(f"not UTF-8 (an invalid byte at offset {exc.start})") from None
    try:
        return strict_json(text)
    except json.JSONDecodeError as exc:
        # Position only: the body may quote the prompt.
        raise BodyError(
            f"not JSON (JSONDecodeError: {exc.msg}: line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise BodyError(f"not JSON ({exc})") from None
    except RecursionError:
        raise BodyError("not usable JSON (nested too deeply to decode)") from None


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def body_fields(body: object, what: str) -> Mapping[str, Any]:
    """``body`` itself, checked to be a JSON object (``what`` names the expected answer)."""
    if not isinstance(body, dict):
        raise BodyError(f"not {what}: the body is {json_kind(body)}, not an object")
    return body


def mapping_field(
    fields: Mapping[str, Any], name: str, where: str = "", *, required: bool = False
) -> Mapping[str, Any]:
    """``fields[name]`` checked to be an object; missing or null is ``{}`` unless ``required``."""
    value = fields.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        found = "missing" if name not in fields else json_kind(value)
        raise BodyError(f"{_path(where, name)} is {found}; expected an object")
    return value


def list_field(
    fields: Mapping[str, Any], name: str, where: str = "", *, required: bool = False
) -> list[Any]:
    """``fields[name]`` checked to be a list; missing or null is ``[]`` unless ``required``."""
    value = fields.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        found = "missing" if name not in fields else json_kind(value)
        raise BodyError(f"{_path(where, name)} is {found}; expected a list")
    return value


def item_fields(value: object, where: str) -> Mapping[str, Any]:
    """One item of a list (``where`` is its path, ``content[2]``), checked to be an object."""
    if not isinstance(value, dict):
        raise BodyError(f"{where} is {json_kind(value)}; expected an object")
    return value


def _checked_text(value: str, where: str, name: str) -> str:
    # A lone surrogate (a JSON "\ud800" escape) is a str Python cannot encode: refused here,
    # not later in the caller's code or the gateway's UTF-8 logs. ASCII has none.
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(
            f"{_path(where, name)} is a string with a lone surrogate (not Unicode text)"
        ) from None
    return value


def str_field(fields: Mapping[str, Any], name: str, where: str = "") -> str:
    """``fields[name]`` checked to be a string (required)."""
    value = fields.get(name)
    if not isinstance(value, str):
        found = "missing" if name not in fields else json_kind(value)
        raise BodyError(f"{_path(where, name)} is {found}; expected a string")
    return _checked_text(value, where, name)


def optional_str_field(fields: Mapping[str, Any], name: str, where: str = "") -> str | None:
    """``fields[name]`` checked to be a string, or ``None`` when missing or null."""
    if fields.get(name) is None:
        return None
    return str_field(fields, name, where)


def token_count(fields: Mapping[str, Any], name: str, where: str = "usage") -> int:
    """A usage count: an integer from 0 to :data:`MAX_TOKEN_COUNT`; missing or null is 0.

    Not a boolean, a string or a number with a fraction: such a count would break the
    arithmetic of stats and rate-limit books far from the reply that carried it.
    """
    value = fields.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(f"{_path(where, name)} is {json_kind(value)}; expected an integer >= 0")
    if not 0 <= value <= MAX_TOKEN_COUNT:
        raise BodyError(
            f"{_path(where, name)} is an integer out of range; expected 0 to {MAX_TOKEN_COUNT}"
        )
    return value


def tool_arguments(value: dict[str, Any], path: str) -> dict[str, Any]:
    """Tool-call arguments, checked to be JSON that can be sent back on the next turn.

    The body was decoded strictly, so this only refuses lone surrogates in strings (and
    nesting too deep to encode again).
    """
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        raise BodyError(
            f"{path} cannot be sent back as JSON (a lone surrogate, or too deep)"
        ) from None
    return value


# -- responses and errors ------------------------------------------------------------------


def kept_headers(headers: httpx2.Headers) -> dict[str, str]:
    """The rate-limit and retry headers of a response (lower-case names), and no others.

    Retry headers: ``retry-after``, ``retry-after-ms``, and ``x-should-retry`` (the providers'
    explicit "retry this" / "do not retry this"). Values pass unchanged (httpx decodes any
    byte); reading them is the rate limiter's and :func:`parse_retry_after`'s job.
    """
    # Only the kept ones are decoded (``headers.items()`` decodes every header); a name sent
    # twice keeps both values, comma-joined, as ``items()`` joins them.
    kept: dict[str, str] = {}
    for raw_name, raw_value in headers.raw:
        lowered = raw_name.lower()
        if lowered in _RETRY_HEADERS or lowered.startswith(_RATE_LIMIT_HEADER_PREFIXES):
            name, value = lowered.decode(headers.encoding), raw_value.decode(headers.encoding)
            kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


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
    date is wall-clock time). A date in the past is 0. Never raises: the result is ``None`` or
    a finite number >= 0 (how long is too long is the retry policy's ``max_retry_after_s``).
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
        if when.tzinfo is None:  # "-0000" in the date: UTC, with no claim about local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


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


# Transport failures whose text comes from the socket, the OS or the server's bytes, never
# from the request's own headers. Others (LocalProtocolError: "Illegal header value
# b'Bearer sk-...'", UnicodeEncodeError, ProxyError ...) may quote the key: never chained.
MIN_SECRET_LENGTH = 8
_SAFE_CAUSES = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)


def _chained(error: BaseException) -> list[BaseException]:
    """``error`` and every exception chained to it (causes and contexts), each once."""
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        current = todo.pop()
        if not any(current is s for s in seen):
            seen.append(current)
            todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return seen


def _safe_cause(error: Exception, secrets: Collection[str]) -> BaseException | None:
    """The transport exception behind an SDK connection error, if it can be shown safely.

    Safe when its type is a socket-level failure and, as a second line of defence, when no
    secret appears anywhere in its printed traceback (chained causes and contexts included).
    Secrets shorter than :data:`MIN_SECRET_LENGTH` are not looked for: no real credential is
    that short, and they would match the text of any traceback by chance.

    httpx2 attaches the request to its exceptions (``exc.request``: the URL, and the headers
    with the key); a kept cause is detached from it, so that nothing reachable from the
    gateway's exception holds the key (the SDK's own exception, which also holds it, is not
    chained).
    """
    cause = error.__cause__
    if not isinstance(cause, _SAFE_CAUSES):
        return None
    printed = "".join(traceback.format_exception(cause)) + repr(cause)
    if any(len(secret) >= MIN_SECRET_LENGTH and secret in printed for secret in secrets):
        return None
    for link in _chained(cause):
        if isinstance(link, httpx2.RequestError):
            link._request = None  # what the request property's setter would do, given None
    return cause


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

    def translate(self, error: Exception, secrets: Collection[str]) -> ProviderError:
        """The gateway exception for an exception of the SDK's ``APIError`` family.

        Its ``__cause__`` is set, and its context suppressed: raise it as it is, outside the
        ``except`` block that caught ``error``, so that the SDK's exception is not even its
        ``__context__``. A status error has no cause (the SDK's exception quotes the whole
        error body). A timeout or connection error keeps the transport's exception, which says
        what went wrong at the socket, only when that cannot quote the request's headers
        (``secrets``: the key and extra header values, see :func:`_safe_cause`).
        """
        failure: ProviderError
        cause: BaseException | None = None
        if isinstance(error, self.status):
            sdk_error: Any = error
            failure = self.status_error(sdk_error.response, sdk_error.body)
        elif isinstance(error, self.timeout):
            cause = _safe_cause(error, secrets)
            failure = ProviderTimeoutError(
                f"{self.provider} did not answer within the model's timeout_s (the SDK's timeout)"
            )
        elif isinstance(error, self.connection):
            transport = error.__cause__
            cause = _safe_cause(error, secrets)
            detail = ""
            if transport is not None:
                withheld = (
                    ""
                    if cause is not None
                    else "; details withheld: they may quote request headers"
                )
                detail = f" ({type(transport).__name__}{withheld})"
            failure = ProviderConnectionError(f"could not reach {self.provider}{detail}")
        else:
            # Any other APIError (e.g. response validation, which the raw path does not do).
            failure = ProviderResponseError(
                f"{self.provider}'s SDK failed with {type(error).__name__}"
            )
        failure.__cause__ = cause
        failure.__suppress_context__ = True
        return failure

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

    def unusable(self, response: httpx2.Response, error: Exception) -> ProviderResponseError:
        """:meth:`malformed` for an exception raised while reading a success body.

        A :class:`BodyError` says which field is wrong. Anything else (the response types
        refusing a value) is named by its type alone: its message may quote the value.
        """
        if isinstance(error, BodyError):
            return self.malformed(response, str(error))
        return self.malformed(
            response, f"its values were refused ({type(error).__name__}; not shown)"
        )


PARSE_ERRORS = (BodyError, ValueError, TypeError, RecursionError)
"""What reading a success body may raise: :class:`BodyError` from the checks here, ValueError
or TypeError from the response types' own validation, RecursionError from absurd nesting."""
