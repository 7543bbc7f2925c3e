"""The OpenAI adapter: ``gpt-*`` models, and ``local-llama`` on OpenAI-compatible servers.

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
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai

from .._config import ModelConfig
from .._exceptions import ConfigError
from .._models import LLMMessage, LLMRequest, LLMResponse, ModelProvider, ToolCall, Usage
from ._http import (
    SdkErrors,
    headers_option,
    kept_headers,
    pool_limits,
    provider_options,
    require_api_key,
    str_option,
)

__all__ = ["OpenAIProvider", "open_openai"]

API_KEY_ENV = "OPENAI_API_KEY"
LOCAL_API_KEY = "no-key"
"""What a ``local-llama`` model sends as its key when its config has none (servers ignore it)."""

OPENAI_OPTIONS = ("organization", "project", "extra_headers")
LOCAL_OPTIONS = ("extra_headers",)

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
    ) -> None:
        self.model_id = model_id
        self.model_name = model_name
        self.client = client
        self.max_tokens_field = max_tokens_field

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
                "/chat/completions",
                body=self.request_body(request),
                cast_to=httpx2.Response,
                options=_REQUEST_OPTIONS,
            )
        except openai.APIError as error:
            raise ERRORS.translate(error) from error.__cause__
        return self.parse_response(request, response)

    def _tool_call(self, response: httpx2.Response, call: Any) -> ToolCall:
        function = call["function"]
        name = function["name"]
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError as exc:
            # The JSON error gives a position, not the text: arguments may quote the prompt.
            raise ERRORS.malformed(
                response,
                f"tool call {name!r} (id {call['id']}) has arguments that are not JSON: {exc}",
            ) from None
        if not isinstance(arguments, dict):
            raise ERRORS.malformed(
                response,
                f"tool call {name!r} (id {call['id']}) has arguments that are a JSON "
                f"{type(arguments).__name__}, not an object",
            )
        return ToolCall(call["id"], name, arguments)

    def parse_response(self, request: LLMRequest, response: httpx2.Response) -> LLMResponse:
        """The gateway's response for a 2xx answer.

        Raises:
            ProviderResponseError: The body is not a chat completion, or a tool call's
                arguments are not a JSON object.
        """
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            tool_calls = [
                self._tool_call(response, call) for call in message.get("tool_calls") or ()
            ]
            finish_reason = choice.get("finish_reason")
            finish_reason = FINISH_REASONS.get(finish_reason, finish_reason)
            if message.get("refusal") and not content:
                finish_reason = "content_filter"
            usage = data.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            return LLMResponse(
                request_id=request.request_id,
                content=content,
                model=self.model_id,
                tool_calls=tool_calls,
                usage=Usage(
                    input_tokens=usage.get("prompt_tokens") or 0,  # cached tokens included
                    output_tokens=usage.get("completion_tokens") or 0,
                    cache_read_tokens=details.get("cached_tokens") or 0,
                ),
                finish_reason=finish_reason,
                provider_request_id=response.headers.get(ERRORS.request_id_header),
                rate_limit_headers=kept_headers(response.headers),
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ERRORS.malformed(
                response, f"not a chat completion ({type(exc).__name__}: {exc})"
            ) from None


@asynccontextmanager
async def open_openai(
    model_id: str, config: ModelConfig, *, http_client: httpx2.AsyncClient | None = None
) -> AsyncGenerator[OpenAIProvider]:
    """Create the model's SDK client, yield its adapter, close the client on exit.

    ``gpt-*`` models need a key (config or ``OPENAI_API_KEY``). ``local-llama`` models need an
    ``endpoint`` and no key; they never read ``OPENAI_API_KEY``, so an OpenAI key is never sent
    to a local server.

    Args:
        model_id: The configured model id.
        config: The model's configuration.
        http_client: Use this HTTP client (tests inject a MockTransport); by default one
            whose pool holds ``max_concurrency`` connections.

    Raises:
        ConfigError: No key, no endpoint for a local model, or bad ``provider_options``.
    """
    local = config.provider is ModelProvider.LOCAL_LLAMA
    if local:
        options = provider_options(model_id, config, "local-llama", LOCAL_OPTIONS)
        if not config.endpoint:
            raise ConfigError(
                f"models.{model_id}.endpoint is required for provider 'local-llama': set it to "
                "the server's OpenAI-compatible base URL, e.g. 'http://localhost:11434/v1'"
            )
        api_key = config.api_key or LOCAL_API_KEY
    else:
        options = provider_options(model_id, config, "OpenAI", OPENAI_OPTIONS)
        api_key = require_api_key(model_id, config, API_KEY_ENV)
    organization = str_option(model_id, options, "organization")
    project = str_option(model_id, options, "project")
    extra_headers = headers_option(model_id, options)
    client = openai.AsyncOpenAI(
        api_key=api_key,
        organization=organization,
        project=project,
        base_url=config.endpoint,
        timeout=config.timeout_s,  # a backstop: the gateway's deadline usually comes first
        max_retries=0,  # the gateway owns retries
        default_headers=extra_headers,
        http_client=http_client
        or openai.DefaultAsyncHttpxClient(limits=pool_limits(config), timeout=config.timeout_s),
    )
    try:
        yield OpenAIProvider(
            model_id,
            config.model_name,
            client,
            max_tokens_field="max_tokens" if local else "max_completion_tokens",
        )
    finally:
        await client.close()
