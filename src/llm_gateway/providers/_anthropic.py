"""The Anthropic adapter: ``anthropic`` (and ``claude-*``) models through the ``anthropic`` SDK.

It uses the SDK's documented low-level call, ``client.post("/v1/messages", body=...,
cast_to=httpx2.Response)``: the official client's auth, headers, base URL, connection pool and
error mapping, without ``messages.create``'s request transform and response model (about half
its CPU cost). The gateway's own types are already validated, so the adapter builds the body
itself and reads the JSON answer with plain dict access. See ``docs/providers.md``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx2

from .._config import ModelConfig
from .._exceptions import RequestValidationError
from .._models import LLMMessage, LLMRequest, LLMResponse, ToolCall, Usage
from .._stream import ChunkSink
from ._http import (
    PARSE_ERRORS,
    BodyError,
    SdkErrors,
    absolute_url,
    body_fields,
    headers_option,
    item_fields,
    json_kind,
    kept_headers,
    list_field,
    mapping_field,
    open_sdk_client,
    optional_str_field,
    parsed_content,
    positive_int_option,
    provider_options,
    read_json,
    require_api_key,
    str_field,
    token_count,
    tool_arguments,
)
from ._streaming import AnthropicEvents, relay
from ._transport import SdkHttpClients

__all__ = ["AnthropicProvider", "open_anthropic"]

API_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_MAX_TOKENS = 4096
OPTIONS = ("default_max_tokens", "extra_headers", "http_client")

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic's ``stop_reason`` -> the gateway's ``finish_reason``; others pass through."""

ERRORS = SdkErrors(
    provider="Anthropic",
    request_id_header="request-id",
    status=anthropic.APIStatusError,
    timeout=anthropic.APITimeoutError,
    connection=anthropic.APIConnectionError,
)


def _tool_result_block(message: LLMMessage) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}


def _assistant_message(message: LLMMessage) -> dict[str, Any]:
    if not message.tool_calls:
        return {"role": "assistant", "content": message.content}
    blocks: list[dict[str, Any]] = []
    if message.content:  # Anthropic rejects empty text blocks
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}
        for call in message.tool_calls
    )
    return {"role": "assistant", "content": blocks}


def messages_and_system(
    messages: tuple[LLMMessage, ...],
) -> tuple[list[dict[str, Any]], str | None]:
    """Anthropic's ``messages`` and top-level ``system`` for a conversation.

    System messages (wherever they are) join, in order, into ``system``. Tool results become
    ``tool_result`` blocks of a user message; consecutive ones share one user message, as the
    API wants every result of one assistant turn in the next user turn.
    """
    system: list[str] = []
    result: list[dict[str, Any]] = []
    open_results: list[dict[str, Any]] | None = None  # the tool_result blocks being collected
    for message in messages:
        role = message.role
        if role == "tool":
            if open_results is None:
                open_results = []
                result.append({"role": "user", "content": open_results})
            open_results.append(_tool_result_block(message))
            continue
        if role == "system":
            system.append(message.content)
            continue
        open_results = None
        if role == "assistant":
            result.append(_assistant_message(message))
        else:
            result.append({"role": "user", "content": message.content})
    return result, "\n\n".join(system) if system else None


class AnthropicProvider:
    """Answers requests with Anthropic's Messages API.

    Args:
        model_id: The configured model id (``LLMResponse.model``).
        model_name: Anthropic's name for the model (the ``model`` of the API call).
        client: An open SDK client, with retries off; the caller closes it.
        default_max_tokens: ``max_tokens`` for requests that set none (the API requires one).
    """

    def __init__(
        self,
        model_id: str,
        model_name: str,
        client: anthropic.AsyncAnthropic,
        *,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        secrets: Collection[str] = (),
    ) -> None:
        self.model_id = model_id
        self.model_name = model_name
        self.client = client
        self._messages_url = absolute_url(client, "/v1/messages")
        self.default_max_tokens = default_max_tokens
        # What no exception may show (the key, extra header values): see SdkErrors.translate.
        self._secrets = tuple(s for s in (client.api_key, *secrets) if s)

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of the Messages API call for ``request``.

        Keys are in the order ``messages.create`` sends them, so the bytes are the same.
        ``request.temperature`` is not sent: the API version anthropic 2.x speaks
        (2026-10-21) rejects every sampling parameter. ``stop`` becomes ``stop_sequences``,
        ``tool_choice`` Anthropic's ``{"type": "auto" | "none" | "any" | "tool", "name"}``,
        ``response_format`` the structured-output ``output_config.format``.

        Raises:
            RequestValidationError: The request sets what Anthropic cannot honour (``top_p``,
                ``seed``); the gateway fails the request with it, without retrying.
        """
        messages, system = messages_and_system(request.messages)
        body: dict[str, Any] = {
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": messages,
            "model": self.model_name,
        }
        if system is not None:
            body["system"] = system
        _refuse_unsupported(request)
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if request.response_format is not None:
            body["output_config"] = {
                "format": {"type": "json_schema", "schema": request.response_format}
            }
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if request.tools:
            body["tools"] = [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                }
                if tool.description
                else {"name": tool.name, "input_schema": tool.input_schema}
                for tool in request.tools
            ]
        return body

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send ``request`` to Anthropic and normalise the answer.

        Raises:
            ProviderError: A subclass for each failure (see ``docs/providers.md``).
        """
        try:
            response = await self.client.post(
                self._messages_url, body=self.request_body(request), cast_to=httpx2.Response
            )
        except anthropic.APIError as error:
            failure = ERRORS.translate(error, self._secrets)
        else:
            return self.parse_response(request, response)
        # Raised outside the except block: the SDK's exception, which holds the transport's
        # (whose text may quote request headers), is not even this one's __context__.
        raise failure

    async def stream(self, request: LLMRequest, sink: ChunkSink) -> LLMResponse:
        """Stream ``request``: each content delta to ``sink``; return the whole answer.

        An ``event: error`` inside the 200 stream (``overloaded_error``...) counts as the
        status its type means; see ``providers/_streaming.py``.

        Raises:
            ProviderError: A subclass for each failure, as :meth:`complete`.
        """
        body = self.request_body(request)
        body["stream"] = True
        try:
            response = await self.client.post(
                self._messages_url, body=body, cast_to=httpx2.Response, stream=True
            )
        except anthropic.APIError as error:
            failure = ERRORS.translate(error, self._secrets)
        else:
            events = AnthropicEvents(
                self.model_id, ERRORS, response.headers, FINISH_REASONS, _usage
            )
            return await relay(response, events, sink, ERRORS, request)
        raise failure

    def parse_response(self, request: LLMRequest, response: httpx2.Response) -> LLMResponse:
        """The gateway's response for a 2xx answer.

        Every field read is checked: ``content`` a list of objects, text blocks' ``text`` a
        string, tool_use blocks' ``id`` and ``name`` strings and ``input`` an object, usage
        counts integers >= 0 (missing or null: 0), ``stop_reason`` a string or null. Other
        blocks (thinking, server tools) carry nothing the gateway returns and are skipped.

        Raises:
            ProviderResponseError: The body is not a Messages API message; the message names
                the field, never the provider's text.
        """
        try:
            return self._response(request, response)
        except PARSE_ERRORS as exc:
            failure = ERRORS.unusable(response, exc)
        raise failure

    def _response(self, request: LLMRequest, response: httpx2.Response) -> LLMResponse:
        data = body_fields(read_json(response), "a Messages API message")
        texts: list[str] = []
        tool_calls: list[ToolCall] = []
        for i, item in enumerate(list_field(data, "content", required=True)):
            where = f"content[{i}]"
            block = item_fields(item, where)
            kind = str_field(block, "type", where)
            if kind == "text":
                texts.append(str_field(block, "text", where))
            elif kind == "tool_use":
                tool_calls.append(_tool_call(block, where))
        stop_reason = optional_str_field(data, "stop_reason")
        usage = _usage(mapping_field(data, "usage"))
        content = "".join(texts)
        return LLMResponse(
            request_id=request.request_id,
            content=content,
            parsed=parsed_content(request, content),
            model=self.model_id,
            tool_calls=tool_calls,
            usage=usage,
            finish_reason=(
                None if stop_reason is None else FINISH_REASONS.get(stop_reason, stop_reason)
            ),
            provider_request_id=response.headers.get(ERRORS.request_id_header),
            rate_limit_headers=kept_headers(response.headers),
        )


def _refuse_unsupported(request: LLMRequest) -> None:
    for field, value in (("top_p", request.top_p), ("seed", request.seed)):
        if value is not None:
            raise RequestValidationError(
                f"LLMRequest.{field} is {value!r}, which Anthropic models cannot honour "
                f"(the Messages API has no {field} in this API version); leave it None for "
                "this model"
            )


def _tool_choice(choice: str) -> dict[str, str]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _tool_call(block: Mapping[str, Any], where: str) -> ToolCall:
    call_id = str_field(block, "id", where)
    name = str_field(block, "name", where)
    arguments = block.get("input")
    if not isinstance(arguments, dict):
        found = "no input" if "input" not in block else f"an input that is {json_kind(arguments)}"
        raise BodyError(
            f"tool_use block {name!r} (id {call_id}) has {found}; expected a JSON object"
        )
    return ToolCall(call_id, name, tool_arguments(arguments, f"{where}.input"))


def _usage(usage: Mapping[str, Any]) -> Usage:
    cache_read = token_count(usage, "cache_read_input_tokens")
    cache_write = token_count(usage, "cache_creation_input_tokens")
    return Usage(
        # Anthropic's input_tokens excludes cache reads and writes; ours includes them.
        input_tokens=token_count(usage, "input_tokens") + cache_read + cache_write,
        output_tokens=token_count(usage, "output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


@asynccontextmanager
async def open_anthropic(
    model_id: str, config: ModelConfig, *, http_client: httpx2.AsyncClient | None = None
) -> AsyncGenerator[AnthropicProvider]:
    """Create the model's SDK client, yield its adapter, close the client on exit.

    Args:
        model_id: The configured model id.
        config: The model's configuration.
        http_client: Use this HTTP client (tests inject a MockTransport); by default one
            whose pool holds ``max_concurrency`` connections.

    Raises:
        ConfigError: No key, a key that cannot be sent, or bad ``provider_options``.
    """
    options = provider_options(model_id, config, "Anthropic", OPTIONS)
    default_max_tokens = positive_int_option(
        model_id, options, "default_max_tokens", DEFAULT_MAX_TOKENS
    )
    extra_headers = headers_option(model_id, options)
    api_key = require_api_key(model_id, config, API_KEY_ENV)
    async with open_sdk_client(
        anthropic.AsyncAnthropic,
        SdkHttpClients(anthropic.DefaultAsyncHttpxClient, anthropic.DefaultAioHttpClient),
        config,
        model_id=model_id,
        http_client=http_client,
        api_key=api_key,
        extra_headers=extra_headers,
    ) as client:
        yield AnthropicProvider(
            model_id,
            config.model_name,
            client,
            default_max_tokens=default_max_tokens,
            secrets=(extra_headers or {}).values(),
        )
