"""A fake LLM HTTP server on a real loopback socket, for end-to-end tests of the SDK adapters.

It speaks just enough HTTP/1.1 (``Content-Length`` bodies, keep-alive) and just enough of two
APIs: OpenAI chat completions (``POST /v1/chat/completions``) and Anthropic messages
(``POST /v1/messages``). Answers are deterministic: the text echoes the last user message, and a
request that offers tools and ends with a user message gets a call to its first tool. It runs on
trio and asyncio (anyio), with no dependency beyond anyio.

The place to script faults (status codes, ``retry-after``, latency, dropped connections,
malformed bodies) is :meth:`FakeLLMServer.respond`.
"""

from __future__ import annotations

import http
import itertools
import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["FakeLLMServer", "FakeReply", "ReceivedRequest", "fake_answer", "open_fake_llm_server"]

MAX_HEAD_BYTES = 64 * 1024


@attrs.frozen
class ReceivedRequest:
    """An HTTP request the fake server received.

    Attributes:
        method: The HTTP method.
        path: The request target (path and query).
        headers: The headers, lower-case names (a repeated header keeps its last value).
        body: The raw body.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return json.loads(self.body)


@attrs.frozen
class FakeReply:
    """An HTTP response the fake server sends.

    Attributes:
        status: The HTTP status.
        body: The JSON body (any JSON-serialisable value).
        headers: Headers besides ``content-type`` and ``content-length``.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        """The response's bytes on the wire."""
        body = b"" if self.body is None else json.dumps(self.body).encode()
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:  # e.g. Anthropic's 529
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def fake_answer(prompt: str) -> str:
    """The text the fake server answers to a conversation whose last user message is ``prompt``."""
    return f"Fake answer to: {prompt}"


def _count_tokens(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or content blocks (text or tool results)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            _text_of(block.get("content"))
            if block.get("type") == "tool_result"
            else block.get("text", "")
            for block in content
            if isinstance(block, dict)
        )
    return ""


class FakeLLMServer:
    """The running fake server (from :func:`open_fake_llm_server`).

    Attributes:
        host: The address it listens on.
        port: The port it listens on (chosen by the OS).
        received: Every request received, in arrival order.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.received: list[ReceivedRequest] = []
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """``http://host:port``: the ``endpoint`` of an Anthropic model."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://host:port/v1``: the ``endpoint`` of an OpenAI or ``local-llama`` model."""
        return f"{self.base_url}/v1"

    # -- answers ----------------------------------------------------------------------------

    def respond(self, request: ReceivedRequest) -> FakeReply:
        """The reply to ``request`` (already recorded in :attr:`received`)."""
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return self._chat_completion(request.json())
        if request.method == "POST" and request.path == "/v1/messages":
            return self._anthropic_message(request.json())
        return FakeReply(
            404,
            {"error": {"type": "not_found_error", "message": f"no route {request.path}"}},
        )

    def _chat_completion(self, body: dict[str, Any]) -> FakeReply:
        messages = body["messages"]
        last = messages[-1]
        prompt = _text_of(last.get("content"))
        request_id = f"fake-req-{next(self._ids)}"
        message: dict[str, Any] = {"role": "assistant", "content": fake_answer(prompt)}
        finish_reason = "stop"
        if body.get("tools") and last["role"] == "user":
            tool = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call-{request_id}",
                        "type": "function",
                        "function": {"name": tool, "arguments": json.dumps({"query": prompt})},
                    }
                ],
            }
            finish_reason = "tool_calls"
        prompt_tokens = sum(_count_tokens(_text_of(m.get("content"))) for m in messages)
        completion_tokens = _count_tokens(message["content"] or "")
        return FakeReply(
            200,
            {
                "id": f"chatcmpl-{request_id}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            {"x-request-id": request_id},
        )

    def _anthropic_message(self, body: dict[str, Any]) -> FakeReply:
        messages = body["messages"]
        last = messages[-1]
        prompt = _text_of(last.get("content"))
        request_id = f"fake-req-{next(self._ids)}"
        ends_with_user_text = last["role"] == "user" and isinstance(last.get("content"), str)
        content: list[dict[str, Any]]
        if body.get("tools") and ends_with_user_text:
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu-{request_id}",
                    "name": body["tools"][0]["name"],
                    "input": {"query": prompt},
                }
            ]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": fake_answer(prompt)}]
            stop_reason = "end_turn"
        input_tokens = _count_tokens(str(body.get("system", ""))) + sum(
            _count_tokens(_text_of(m.get("content"))) for m in messages
        )
        return FakeReply(
            200,
            {
                "id": f"msg-{request_id}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": sum(_count_tokens(b.get("text", "")) for b in content),
                },
            },
            {"request-id": request_id},
        )

    # -- HTTP -------------------------------------------------------------------------------

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            while True:
                try:
                    head = await reader.receive_until(b"\r\n\r\n", MAX_HEAD_BYTES)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                    return  # the client closed its (keep-alive) connection
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "transfer-encoding" in headers:  # not needed by the SDKs: keep it simple
                    await stream.send(
                        FakeReply(501, {"error": "chunked bodies unsupported"}).encode()
                    )
                    return
                length = int(headers.get("content-length", "0"))
                try:
                    body = await reader.receive_exactly(length) if length else b""
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                request = ReceivedRequest(method, path, headers, body)
                self.received.append(request)
                await stream.send(self.respond(request).encode())
                if headers.get("connection", "").lower() == "close":
                    return


@asynccontextmanager
async def open_fake_llm_server(host: str = "127.0.0.1") -> AsyncGenerator[FakeLLMServer]:
    """Run a :class:`FakeLLMServer` on ``host`` and a free port until the block exits.

    Close the clients (the gateway) before leaving the block: leaving it stops the server and
    drops its open connections.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    async with listener, anyio.create_task_group() as tg:
        server = FakeLLMServer(host, listener.extra(SocketAttribute.local_port))
        tg.start_soon(listener.serve, server._serve_connection, tg)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
