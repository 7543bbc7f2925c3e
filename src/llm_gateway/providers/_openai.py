"""The OpenAI adapter: ``openai`` models, and ``openai-compatible`` servers.

Both go through the official ``openai`` SDK's documented low-level call,
``client.post("/chat/completions", body=..., cast_to=httpx2.Response)``: the official client's
auth, headers, base URL, connection pool and error mapping, without ``chat.completions.create``'s
request transform and response model (more than half its CPU cost). The body is built here from
the gateway's validated types; the JSON answer is read with plain dict access. A local server
(Ollama, vLLM, llama.cpp server, LM Studio) is the same API at the model's ``endpoint``. See
``docs/providers.md``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai

from .._config import ModelConfig
from .._exceptions import ConfigError
from .._models import LLMMessage, LLMRequest, LLMResponse, ModelProvider, ToolCall, Usage
from .._stream import ChunkSink
from .._validators import check_api_key
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
    provider_options,
    read_json,
    require_api_key,
    str_field,
    str_option,
    strict_json,
    token_count,
    tool_arguments,
)
from ._streaming import ChatCompletionChunks, relay
from ._transport import SdkHttpClients

__all__ = ["OpenAIProvider", "open_openai"]

API_KEY_ENV = "OPENAI_API_KEY"
LOCAL_API_KEY = "no-key"
"""What an ``openai-compatible`` model sends as its key when its config has none."""

OPENAI_OPTIONS = ("organization", "project", "extra_headers", "http_client")
LOCAL_OPTIONS = ("extra_headers", "http_client")

FINISH_REASONS = {"function_call": "tool_calls"}
"""OpenAI's ``finish_reason`` -> the gateway's; the rest already are the gateway's values."""

ERRORS = SdkErrors(
    provider="OpenAI",
    request_id_header="x-request-id",
    status=openai.APIStatusError,
    timeout=openai.APITimeoutError,
    connection=openai.APIConnectionError,
)

# Auth as chat.completions.create sends it: the API key, never an admin key from the environment.
_REQUEST_OPTIONS: openai.RequestOptions = {"security": {"bearer_auth": True}}


def _arguments_json(call: ToolCall) -> str:
    return json.dumps(dict(call.arguments), ensure_ascii=False, separators=(",", ":"))


def chat_message(message: LLMMessage) -> dict[str, Any]:
    """One chat-completions message for ``message``."""
    role = message.role
    if role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # null, as OpenAI itself sends, when the turn was only tool calls
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments_json(call)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": role, "content": message.content}


class OpenAIProvider:
    """Answers requests with the chat-completions API (OpenAI's, or a compatible server's).

    Args:
        model_id: The configured model id (``LLMResponse.model``).
        model_name: The server's name for the model (the ``model`` of the API call).
        client: An open SDK client, with retries off; the caller closes it.
        max_tokens_field: Where ``request.max_tokens`` goes: ``"max_completion_tokens"``
            (OpenAI's current name) or ``"max_tokens"`` (what OpenAI-compatible servers know).
    """

    def __init__(
        self,
        model_id: str,
        model_name: str,
        client: openai.AsyncOpenAI,
        *,
        max_tokens_field: str = "max_completion_tokens",
        secrets: Collection[str] = (),
    ) -> None:
        self.model_id = model_id
        self.model_name = model_name
        self.client = client
        self._completions_url = absolute_url(client, "/chat/completions")
        self.max_tokens_field = max_tokens_field
        # What no exception may show (the key, extra header values): see SdkErrors.translate.
        self._secrets = tuple(s for s in (client.api_key, *secrets) if s)

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of the chat-completions call for ``request``.

        Keys are in the order ``chat.completions.create`` sends them, so the bytes are the same.
        """
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [chat_message(m) for m in request.messages],
        }
        if request.max_tokens is not None:
            body[self.max_tokens_field] = request.max_tokens
        body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.response_format is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "response",
                    "schema": request.response_format,
                    "strict": True,
                },
            }
        if request.tool_choice is not None:
            body["tool_choice"] = (
                request.tool_choice
                if request.tool_choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": request.tool_choice}}
            )
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    }
                    if tool.description
                    else {"name": tool.name, "parameters": tool.input_schema},
                }
                for tool in request.tools
            ]
        return body

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send ``request`` and normalise the answer.

        Raises:
            ProviderError: A subclass for each failure (see ``docs/providers.md``).
        """
        try:
            response = await self.client.post(
                self._completions_url,
                body=self.request_body(request),
                cast_to=httpx2.Response,
                options=_REQUEST_OPTIONS,
            )
        except openai.APIError as error:
            failure = ERRORS.translate(error, self._secrets)
        else:
            return self.parse_response(request, response)
        # Raised outside the except block: the SDK's exception, which holds the transport's
        # (whose text may quote request headers), is not even this one's __context__.
        raise failure

    async def stream(self, request: LLMRequest, sink: ChunkSink) -> LLMResponse:
        """Stream ``request``: each content delta to ``sink``; return the whole answer.

        The body asks for ``stream`` with ``stream_options.include_usage`` (the usage comes in
        a last chunk). See ``providers/_streaming.py`` for how errors inside the stream count.

        Raises:
            ProviderError: A subclass for each failure, as :meth:`complete`.
        """
        body = self.request_body(request)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        try:
            response = await self.client.post(
                self._completions_url,
                body=body,
                cast_to=httpx2.Response,
                options=_REQUEST_OPTIONS,
                stream=True,
            )
        except openai.APIError as error:
            failure = ERRORS.translate(error, self._secrets)
        else:
            chunks = ChatCompletionChunks(self.model_id, ERRORS, response.headers, FINISH_REASONS)
            return await relay(response, chunks, sink, ERRORS, request)
        raise failure

    def parse_response(self, request: LLMRequest, response: httpx2.Response) -> LLMResponse:
        """The gateway's response for a 2xx answer.

        Every field read is checked: ``choices`` a non-empty list whose first ``message`` is
        an object; ``content`` a string, null (``""``) or a list of content parts (the text
        parts joined; a refusal part and no text is a ``content_filter`` finish); tool calls'
        ``id`` and ``function.name`` strings, ``function.arguments`` a JSON string of an
        object (empty or null: ``{}``; an object itself is accepted too, as some local servers
        send it); usage counts integers >= 0 (missing or null: 0); ``finish_reason`` and
        ``refusal`` strings or null.

        Raises:
            ProviderResponseError: The body is not a chat completion; the message names the
                field, never the provider's text.
        """
        try:
            return self._response(request, response)
        except PARSE_ERRORS as exc:
            failure = ERRORS.unusable(response, exc)
        raise failure

    def _response(self, request: LLMRequest, response: httpx2.Response) -> LLMResponse:
        data = body_fields(read_json(response), "a chat completion")
        choices = list_field(data, "choices", required=True)
        if not choices:
            raise BodyError("choices is an empty list; expected one choice")
        choice = item_fields(choices[0], "choices[0]")
        message = mapping_field(choice, "message", "choices[0]", required=True)
        where = "choices[0].message"
        content, refused = _content(message, where)
        refused = optional_str_field(message, "refusal", where) is not None or refused
        tool_calls = [
            _tool_call(call, f"{where}.tool_calls[{i}]")
            for i, call in enumerate(list_field(message, "tool_calls", where))
        ]
        finish_reason = optional_str_field(choice, "finish_reason", "choices[0]")
        if finish_reason is not None:
            finish_reason = FINISH_REASONS.get(finish_reason, finish_reason)
        if refused and not content:
            finish_reason = "content_filter"
        usage = mapping_field(data, "usage")
        details = mapping_field(usage, "prompt_tokens_details", "usage")
        return LLMResponse(
            request_id=request.request_id,
            content=content,
            parsed=parsed_content(request, content),
            model=self.model_id,
            tool_calls=tool_calls,
            usage=Usage(
                input_tokens=token_count(usage, "prompt_tokens"),  # cached tokens included
                output_tokens=token_count(usage, "completion_tokens"),
                cache_read_tokens=token_count(
                    details, "cached_tokens", "usage.prompt_tokens_details"
                ),
            ),
            finish_reason=finish_reason,
            provider_request_id=response.headers.get(ERRORS.request_id_header),
            rate_limit_headers=kept_headers(response.headers),
        )


def _content(message: Mapping[str, Any], where: str) -> tuple[str, bool]:
    """The message's text, and whether it holds a refusal part.

    ``content`` is a string, null, or (newer models, compatible servers) a list of content
    parts: ``{"type": "text", "text": ...}`` parts are joined, ``{"type": "refusal"}`` parts
    noted, other parts (audio, images) skipped.
    """
    content = message.get("content")
    if content is None:
        return "", False
    if isinstance(content, str):
        return str_field(message, "content", where), False
    if not isinstance(content, list):
        raise BodyError(
            f"{where}.content is {json_kind(content)}; expected a string, null or a list of "
            "content parts"
        )
    texts: list[str] = []
    refused = False
    for i, item in enumerate(content):
        path = f"{where}.content[{i}]"
        part = item_fields(item, path)
        kind = str_field(part, "type", path)
        if kind == "text":
            texts.append(str_field(part, "text", path))
        elif kind == "refusal":
            refused = True
    return "".join(texts), refused


def _tool_call(item: object, where: str) -> ToolCall:
    call = item_fields(item, where)
    call_id = str_field(call, "id", where)
    function = mapping_field(call, "function", where, required=True)
    name = str_field(function, "name", f"{where}.function")
    raw = function.get("arguments")
    path = f"{where}.function.arguments"
    if isinstance(raw, dict):
        # Lenient local servers send the object itself rather than its JSON text.
        return ToolCall(call_id, name, tool_arguments(raw, path))
    if raw is not None and not isinstance(raw, str):
        raise BodyError(
            f"tool call {name!r} (id {call_id}) has arguments that are {json_kind(raw)}, not a "
            "JSON string of an object"
        )
    try:
        arguments = strict_json(raw or "{}")
    except (ValueError, RecursionError) as exc:
        # The JSON error gives a position, not the text: arguments may quote the prompt.
        raise BodyError(
            f"tool call {name!r} (id {call_id}) has arguments that are not JSON: {exc}"
        ) from None
    if not isinstance(arguments, dict):
        raise BodyError(
            f"tool call {name!r} (id {call_id}) has arguments that are a JSON "
            f"{type(arguments).__name__}, not an object"
        )
    return ToolCall(call_id, name, tool_arguments(arguments, path))


@asynccontextmanager
async def open_openai(
    model_id: str, config: ModelConfig, *, http_client: httpx2.AsyncClient | None = None
) -> AsyncGenerator[OpenAIProvider]:
    """Create the model's SDK client, yield its adapter, close the client on exit.

    ``openai`` models (and ``gpt-*``) need a key (config or ``OPENAI_API_KEY``).
    ``openai-compatible`` models (and ``local-llama``) need an ``endpoint`` and no key; they
    never read ``OPENAI_API_KEY``, so an OpenAI key is never sent
    to a local server.

    Args:
        model_id: The configured model id.
        config: The model's configuration.
        http_client: Use this HTTP client (tests inject a MockTransport); by default one
            whose pool holds ``max_concurrency`` connections.

    Raises:
        ConfigError: No key, a key that cannot be sent, no endpoint for a local model, or bad
            ``provider_options``.
    """
    local = config.provider.kind is ModelProvider.OPENAI_COMPATIBLE
    if local:
        name = config.provider.value
        options = provider_options(model_id, config, name, LOCAL_OPTIONS)
        if not config.endpoint:
            raise ConfigError(
                f"models.{model_id}.endpoint is required for provider {name!r}: set it to "
                "the server's OpenAI-compatible base URL, e.g. 'http://localhost:11434/v1'"
            )
        api_key = (
            check_api_key(config.api_key, f"models.{model_id}.api_key")
            if config.api_key
            else LOCAL_API_KEY
        )
    else:
        options = provider_options(model_id, config, "OpenAI", OPENAI_OPTIONS)
        api_key = require_api_key(model_id, config, API_KEY_ENV)
    organization = str_option(model_id, options, "organization")
    project = str_option(model_id, options, "project")
    extra_headers = headers_option(model_id, options)
    async with open_sdk_client(
        openai.AsyncOpenAI,
        SdkHttpClients(openai.DefaultAsyncHttpxClient, openai.DefaultAioHttpClient),
        config,
        model_id=model_id,
        http_client=http_client,
        api_key=api_key,
        extra_headers=extra_headers,
        organization=organization,
        project=project,
    ) as client:
        yield OpenAIProvider(
            model_id,
            config.model_name,
            client,
            max_tokens_field="max_tokens" if local else "max_completion_tokens",
            secrets=(extra_headers or {}).values(),
        )
