"""Test doubles for the provider tests: a scripted HTTP API behind ``httpx2.MockTransport`` or on a
loopback socket, and one :class:`Protocol` object per SDK adapter, so that one contract suite
runs against both adapters, and on each HTTP client the adapters can use (:data:`WIRES`)."""

from __future__ import annotations

import http
import json
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anthropic
import anyio
import anyio.abc
import attrs
import httpx2
import openai
from anyio.streams.buffered import BufferedByteReceiveStream

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ModelProvider,
    ToolCall,
    Usage,
)
from llm_gateway.providers import Provider, open_provider

WIRES = ("mock", "httpx", "aiohttp")
"""How an adapter reaches a :class:`ScriptedApi`: ``"mock"``, an injected client on an
``httpx2.MockTransport`` (virtual time); ``"httpx"`` or ``"aiohttp"``, the adapter's own HTTP
client of that kind (``provider_options.http_client``) over a loopback socket (real time)."""

Reply = httpx2.Response | Exception | Callable[[httpx2.Request], httpx2.Response]


@attrs.define
class ScriptedApi:
    """An HTTP API on a MockTransport: records every request, answers from a script.

    Queued replies (``reply``) answer the next requests in order; then ``default`` answers.
    A reply may be a response, an exception to raise (``httpx2.ReadTimeout`` ...), or a
    function of the request. ``delay_s`` makes every answer take that long (virtual time).
    """

    default: Callable[[httpx2.Request], httpx2.Response]
    requests: list[httpx2.Request] = attrs.field(factory=list)
    replies: deque[Reply] = attrs.field(factory=deque)
    delay_s: float = 0.0

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        reply: Reply = self.replies.popleft() if self.replies else self.default
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx2.Response):
            return reply
        return reply(request)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))

    # -- the same API on a loopback socket ---------------------------------------------------

    base_url: str = ""
    connections: int = 0
    """Connections accepted by :meth:`serving`."""
    disconnects: int = 0
    """Connections that the client closed while the server held a request unanswered."""
    closed: anyio.Event | None = None
    """Set (by :meth:`serving`) when a client closes a connection whose request the server
    holds unanswered."""

    @asynccontextmanager
    async def serving(self, wire: str) -> AsyncGenerator[None]:
        """Serve this API on 127.0.0.1 while the block runs (nothing for the ``"mock"`` wire).

        Replies play as over the MockTransport; a scripted exception plays as what the socket
        would do: an ``httpx2.TimeoutException`` holds the request unanswered until the client
        gives up and closes the connection (counted in :attr:`disconnects`, :attr:`closed`
        set); any other exception closes the connection without answering.
        """
        if wire == "mock":
            yield
            return
        self.closed = anyio.Event()
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.base_url = f"http://127.0.0.1:{port}"
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self._serve_connection, tg)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        reader = BufferedByteReceiveStream(stream)
        gone = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError)
        async with stream:
            while True:
                try:
                    head = await reader.receive_until(b"\r\n\r\n", 64 * 1024)
                except gone:
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [(n.strip(), v.strip()) for n, _, v in (x.partition(":") for x in lines)]
                length = int({n.lower(): v for n, v in headers}.get("content-length", "0"))
                body = await reader.receive_exactly(length) if length else b""
                request = httpx2.Request(
                    method, self.base_url + target, headers=headers, content=body
                )
                try:
                    response = await self(request)
                except httpx2.TimeoutException:
                    try:
                        while True:
                            await reader.receive()
                    except gone:
                        self.disconnects += 1
                        assert self.closed is not None
                        self.closed.set()
                    return
                except Exception:
                    return  # drop the connection without an answer
                await stream.send(_wire_bytes(response))

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of every request, in order."""
        return [json.loads(r.content) for r in self.requests]


def _wire_bytes(response: httpx2.Response) -> bytes:
    """``response`` as HTTP/1.1 bytes, with a ``content-length`` body."""
    body = response.content
    try:
        reason = http.HTTPStatus(response.status_code).phrase
    except ValueError:  # e.g. Anthropic's 529
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status_code} {reason}", f"content-length: {len(body)}"]
    lines += [
        f"{name}: {value}"
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-length", "transfer-encoding")
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def on_wire(config: ModelConfig, api: ScriptedApi, wire: str) -> ModelConfig:
    """``config`` pointed at ``api`` served on loopback, with the ``wire``'s HTTP client."""
    anthropic_api = config.provider.kind is ModelProvider.ANTHROPIC
    return attrs.evolve(
        config,
        endpoint=api.base_url + ("" if anthropic_api else "/v1"),
        provider_options={**config.provider_options, "http_client": wire},
    )


def open_scripted(
    model_id: str, config: ModelConfig, api: ScriptedApi, wire: str = "mock"
) -> AbstractAsyncContextManager[Provider]:
    """The adapter for ``config``, talking to ``api`` over ``wire`` (inside ``api.serving``)."""
    if wire == "mock":
        return open_provider(model_id, config, http_client=api.client())
    return open_provider(model_id, on_wire(config, api, wire))


class ScriptedGateway(Gateway):
    """A real Gateway whose SDK adapters talk to ``api`` over ``wire`` (a MockTransport by
    default; a loopback wire needs ``api.serving(wire)`` around the gateway)."""

    def __init__(
        self, models: Mapping[str, ModelConfig], api: ScriptedApi, wire: str = "mock"
    ) -> None:
        super().__init__(models=models, log_dir=None, provider_factory=self._open)
        self.api = api
        self.wire = wire

    def _open(self, model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        return open_scripted(model_id, config, self.api, self.wire)


# Batches leave at once while a model has capacity (batch_fill="eager"); the tests that count
# batches ask for the fixed window.
FULL_BATCHES: dict[str, Any] = {"batch_fill": "wait"}


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> httpx2.Response:
    return httpx2.Response(status, json=body, headers=dict(headers or {}))


def user(text: str, model: str = "m", **fields: Any) -> LLMRequest:
    """A one-user-message request."""
    return LLMRequest(model=model, messages=[LLMMessage("user", text)], **fields)


# -- one object per wire protocol ----------------------------------------------------------

Body = dict[str, Any]


@attrs.frozen(repr=False)
class Protocol:
    """What the contract suite needs to know about one adapter's wire protocol.

    Attributes:
        name: The test id (``"anthropic"``, ``"openai"``).
        provider: A ``ModelProvider`` value served by the adapter.
        model_name: The provider's model name the configs use.
        display: The provider's name in error messages (``"Anthropic"``).
        env_var: The environment variable the key may come from.
        url: Where calls go when no endpoint is configured.
        request_id_header: The response header with the provider's request id.
        answer: A success body: ``answer(text, tool_calls, finish, usage)``; ``finish`` and
            ``usage`` are the provider's raw values.
        with_text: A success body whose answer text (Anthropic: a text block's ``text``,
            OpenAI: ``message.content``) is the given value, whatever its type.
        with_tool_call: A success body with one tool call whose id, name and arguments (the
            decoded arguments object: OpenAI's is sent as its JSON text) are the given values.
        with_finish: A success body whose raw finish reason is the given value.
        with_usage: A success body whose ``usage`` is the given value.
        error_body: An error body with the given error type and ``"secret prompt fragment"``
            as the provider's message.
        usage_paths: Each usage count's path in the body, and the ``Usage`` field it feeds.
        usage_example: A ``usage`` object with every count, and the ``Usage`` it means.
        finish_reasons: Raw finish reasons and what the gateway makes of them.
        rate_limit_headers: A realistic set of the provider's rate-limit headers.
        text_path: The path of the answer text, as an error message names it.
        last_text: The text of the last message of a request body.
        create: Calls the SDK's own create() with ``(client, kwargs)``.
    """

    name: str
    provider: str
    model_name: str
    display: str
    env_var: str
    url: str
    request_id_header: str
    answer: Callable[[str, Sequence[ToolCall], Any, Any], Body]
    with_text: Callable[[Any], Body]
    with_tool_call: Callable[[Any, Any, Any], Body]
    with_finish: Callable[[Any], Body]
    with_usage: Callable[[Any], Body]
    error_body: Callable[[str], Body]
    usage_paths: Mapping[str, str]
    usage_example: tuple[Body, Usage]
    finish_reasons: Sequence[tuple[str | None, str | None]]
    rate_limit_headers: Mapping[str, str]
    text_path: str
    create: Callable[[Any, Mapping[str, Any]], Any]

    def config(self, **overrides: Any) -> ModelConfig:
        fields: dict[str, Any] = {
            "provider": self.provider,
            "model_name": self.model_name,
            "api_key": "test-key",
        }
        return ModelConfig(**(fields | overrides))

    def reply(
        self,
        text: str = "hi",
        tool_calls: Sequence[ToolCall] = (),
        headers: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        """A 200 answer with ``text`` and ``tool_calls``, a stop finish and some usage."""
        finish = self.finish_reasons[0][0]
        return json_response(200, self.answer(text, tool_calls, finish, None), headers)

    def echo(self, request: httpx2.Request) -> httpx2.Response:
        """Answers with the text of the last message, so answers can be matched to requests."""
        last = json.loads(request.content)["messages"][-1]["content"]
        return self.reply(f"echo {last}", headers={self.request_id_header: "req_echo"})

    def api(self) -> ScriptedApi:
        """A scripted API that echoes unless told otherwise."""
        return ScriptedApi(self.echo)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Protocol {self.name}>"


# Anthropic Messages API ------------------------------------------------------------------


def anthropic_answer(
    text: str, tool_calls: Sequence[ToolCall], stop_reason: Any, usage: Any
) -> Body:
    blocks: list[Any] = [{"type": "text", "text": text}] if text else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
        for c in tool_calls
    ]
    return anthropic_message(blocks, stop_reason, usage)


def anthropic_message(content: Any, stop_reason: Any = "end_turn", usage: Any = None) -> Body:
    """A Messages API answer with these values."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2} if usage is None else usage,
    }


async def anthropic_create(client: httpx2.AsyncClient, kwargs: Mapping[str, Any]) -> None:
    sdk = anthropic.AsyncAnthropic(
        api_key="test-key", max_retries=0, timeout=600.0, http_client=client
    )
    async with sdk:
        await sdk.messages.create(model="claude-haiku-4-5", **kwargs)


ANTHROPIC = Protocol(
    name="anthropic",
    provider="claude-haiku",
    model_name="claude-haiku-4-5",
    display="Anthropic",
    env_var="ANTHROPIC_API_KEY",
    url="https://api.anthropic.com/v1/messages",
    request_id_header="request-id",
    answer=anthropic_answer,
    with_text=lambda value: anthropic_message([{"type": "text", "text": value}]),
    with_tool_call=lambda call_id, name, arguments: anthropic_message(
        [{"type": "tool_use", "id": call_id, "name": name, "input": arguments}], "tool_use"
    ),
    with_finish=lambda value: anthropic_message([{"type": "text", "text": "hi"}], value),
    with_usage=lambda usage: anthropic_message([{"type": "text", "text": "hi"}]) | {"usage": usage},
    error_body=lambda error_type: {
        "type": "error",
        "error": {"type": error_type, "message": "secret prompt fragment"},
    },
    usage_paths={
        "usage.input_tokens": "input_tokens",
        "usage.output_tokens": "output_tokens",
        "usage.cache_read_input_tokens": "cache_read_tokens",
        "usage.cache_creation_input_tokens": "cache_write_tokens",
    },
    # Anthropic's input_tokens excludes cache reads and writes; the gateway's includes them.
    usage_example=(
        {
            "input_tokens": 10,
            "output_tokens": 7,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
        Usage(input_tokens=130, output_tokens=7, cache_read_tokens=100, cache_write_tokens=20),
    ),
    finish_reasons=(
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
        (None, None),
    ),
    rate_limit_headers={
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-11-20T10:00:07Z",
    },
    text_path="content[0].text",
    create=anthropic_create,
)


# OpenAI chat completions -----------------------------------------------------------------


def openai_answer(
    text: str, tool_calls: Sequence[ToolCall], finish_reason: Any, usage: Any
) -> Body:
    message: Body = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))},
            }
            for c in tool_calls
        ]
    return openai_completion(message, finish_reason, usage)


def openai_completion(message: Any, finish_reason: Any = "stop", usage: Any = None) -> Body:
    """A chat-completions answer with these values."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if usage is None
        else usage,
    }


def openai_tool_call(call_id: Any, name: Any, arguments: Any) -> Body:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return openai_completion({"role": "assistant", "content": None, "tool_calls": [call]})


async def openai_create(client: httpx2.AsyncClient, kwargs: Mapping[str, Any]) -> None:
    sdk = openai.AsyncOpenAI(api_key="test-key", max_retries=0, timeout=600.0, http_client=client)
    async with sdk:
        await sdk.chat.completions.create(model="gpt-4o", **kwargs)


OPENAI = Protocol(
    name="openai",
    provider="gpt-4o",
    model_name="gpt-4o",
    display="OpenAI",
    env_var="OPENAI_API_KEY",
    url="https://api.openai.com/v1/chat/completions",
    request_id_header="x-request-id",
    answer=openai_answer,
    with_text=lambda value: openai_completion({"role": "assistant", "content": value}),
    with_tool_call=lambda call_id, name, arguments: openai_tool_call(
        call_id, name, json.dumps(arguments) if isinstance(arguments, dict) else arguments
    ),
    with_finish=lambda value: openai_completion({"role": "assistant", "content": "hi"}, value),
    with_usage=lambda usage: (
        openai_completion({"role": "assistant", "content": "hi"}) | {"usage": usage}
    ),
    error_body=lambda error_type: {
        "error": {
            "message": "secret prompt fragment",
            "type": error_type,
            "param": None,
            "code": None,
        }
    },
    usage_paths={
        "usage.prompt_tokens": "input_tokens",
        "usage.completion_tokens": "output_tokens",
        "usage.prompt_tokens_details.cached_tokens": "cache_read_tokens",
    },
    # OpenAI's prompt_tokens already includes the cached tokens.
    usage_example=(
        {
            "prompt_tokens": 120,
            "completion_tokens": 7,
            "total_tokens": 127,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
        Usage(input_tokens=120, output_tokens=7, cache_read_tokens=100),
    ),
    finish_reasons=(
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("something_new", "something_new"),
        (None, None),
    ),
    rate_limit_headers={
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "1000",
    },
    text_path="choices[0].message.content",
    create=openai_create,
)

PROTOCOLS = (ANTHROPIC, OPENAI)


def set_path(body: Body, path: str, value: Any) -> Body:
    """``body`` with the dotted ``path`` (``usage.prompt_tokens_details.cached_tokens``) set."""
    *parents, last = path.split(".")
    node = body
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value
    return body
