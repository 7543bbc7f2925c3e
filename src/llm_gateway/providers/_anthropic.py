"""The Anthropic adapter: ``claude-*`` models through the official ``anthropic`` SDK.

It uses the SDK's documented low-level call, ``client.post("/v1/messages", body=...,
cast_to=httpx2.Response)``: the official client's auth, headers, base URL, connection pool and
error mapping, without ``messages.create``'s request transform and response model (about half
its CPU cost). The gateway's own types are already validated, so the adapter builds the body
itself and reads the JSON answer with plain dict access. See ``docs/providers.md``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx2

from .._config import ModelConfig
from .._models import LLMMessage, LLMRequest, LLMResponse, ToolCall, Usage
from ._http import (
    SdkErrors,
    headers_option,
    kept_headers,
    pool_limits,
    positive_int_option,
    provider_options,
    require_api_key,
)

__all__ = ["AnthropicProvider", "open_anthropic"]

API_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_MAX_TOKENS = 4096
OPTIONS = ("default_max_tokens", "extra_headers")

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
    ) -> None:
        self.model_id = model_id
        self.model_name = model_name
        self.client = client
        self.default_max_tokens = default_max_tokens

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of the Messages API call for ``request``.

        Keys are in the order ``messages.create`` sends them, so the bytes are the same.
        ``request.temperature`` is not sent: the API version anthropic 2.x speaks
        (2026-10-21) rejects every sampling parameter.
        """
        messages, system = messages_and_system(request.messages)
        body: dict[str, Any] = {
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": messages,
            "model": self.model_name,
        }
        if system is not None:
            body["system"] = system
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
                "/v1/messages", body=self.request_body(request), cast_to=httpx2.Response
            )
        except anthropic.APIError as error:
            raise ERRORS.translate(error) from error.__cause__
        return self.parse_response(request, response)

    def parse_response(self, request: LLMRequest, response: httpx2.Response) -> LLMResponse:
        """The gateway's response for a 2xx answer.

        Raises:
            ProviderResponseError: The body is not a Messages API message.
        """
        try:
            data = response.json()
            texts: list[str] = []
            tool_calls: list[ToolCall] = []
            for block in data["content"]:
                kind = block["type"]
                if kind == "text":
                    texts.append(block["text"])
                elif kind == "tool_use":
                    arguments = block["input"]
                    if not isinstance(arguments, dict):
                        raise ERRORS.malformed(
                            response,
                            f"tool_use block {block['name']!r} (id {block['id']}) has an input "
                            f"that is not a JSON object but a {type(arguments).__name__}",
                        )
                    tool_calls.append(ToolCall(block["id"], block["name"], arguments))
                # Other blocks (thinking, server tools) carry nothing the gateway returns.
            stop_reason = data.get("stop_reason")
            usage = data.get("usage") or {}
            cache_read = usage.get("cache_read_input_tokens") or 0
            cache_write = usage.get("cache_creation_input_tokens") or 0
            return LLMResponse(
                request_id=request.request_id,
                content="".join(texts),
                model=self.model_id,
                tool_calls=tool_calls,
                # Anthropic's input_tokens excludes cache reads and writes; ours includes them.
                usage=Usage(
                    input_tokens=(usage.get("input_tokens") or 0) + cache_read + cache_write,
                    output_tokens=usage.get("output_tokens") or 0,
                    cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write,
                ),
                finish_reason=FINISH_REASONS.get(stop_reason, stop_reason),
                provider_request_id=response.headers.get(ERRORS.request_id_header),
                rate_limit_headers=kept_headers(response.headers),
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ERRORS.malformed(
                response, f"not a Messages API message ({type(exc).__name__}: {exc})"
            ) from None


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
        ConfigError: No key, or bad ``provider_options``.
    """
    options = provider_options(model_id, config, "Anthropic", OPTIONS)
    default_max_tokens = positive_int_option(
        model_id, options, "default_max_tokens", DEFAULT_MAX_TOKENS
    )
    extra_headers = headers_option(model_id, options)
    api_key = require_api_key(model_id, config, API_KEY_ENV)
    client = anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=config.endpoint,
        timeout=config.timeout_s,  # a backstop: the gateway's deadline usually comes first
        max_retries=0,  # the gateway owns retries
        default_headers=extra_headers,
        http_client=http_client
        or anthropic.DefaultAsyncHttpxClient(limits=pool_limits(config), timeout=config.timeout_s),
    )
    try:
        yield AnthropicProvider(
            model_id, config.model_name, client, default_max_tokens=default_max_tokens
        )
    finally:
        await client.close()
