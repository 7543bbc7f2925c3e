"""The fake provider every contender talks to: canned answers, in-process or on a loopback port.

Two ways to reach it, the same bytes either way:

- in process: an ``httpx2.MockTransport`` (or ``httpx.MockTransport`` for clients built on
  httpx) whose handler returns the canned answer; the whole process's CPU is the client's.
- loopback: a minimal HTTP/1.1 keep-alive server (an ``asyncio.Protocol``, a few microseconds
  per request) in its own process, so its CPU is not counted as the client's. The test suite's
  ``llm_gateway.testing.open_fake_llm_server`` is more faithful but costs ~10x more per
  request in pure Python, and would be the bottleneck at high concurrency.

Paths ending in ``/chat/completions`` get an OpenAI chat completion, paths ending in
``/messages`` an Anthropic message; the answer does not depend on the request.
"""

from __future__ import annotations

import asyncio
import json
from multiprocessing.connection import Connection
from typing import Any

PROMPT = "Summarise the benchmark plan in one short sentence, please."
ANSWER = "The gateway costs almost nothing."
MODEL_OPENAI = "gpt-4o-mini"
MODEL_ANTHROPIC = "claude-3-5-haiku-20241022"
MAX_TOKENS = 64

OPENAI_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL_OPENAI,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
        "system_fingerprint": "fp_bench",
    }
).encode()

ANTHROPIC_BODY = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL_ANTHROPIC,
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }
).encode()

OPENAI_HEADERS = {"content-type": "application/json", "x-request-id": "req_bench"}
ANTHROPIC_HEADERS = {"content-type": "application/json", "request-id": "req_bench"}


def body_for(path: str) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of the answer to a POST to ``path``."""
    if path.endswith("/chat/completions"):
        return 200, OPENAI_BODY, OPENAI_HEADERS
    if path.endswith("/messages"):
        return 200, ANTHROPIC_BODY, ANTHROPIC_HEADERS
    return 404, b'{"error": {"type": "not_found", "message": "no such route"}}', {}


def httpx2_transport() -> Any:
    """An ``httpx2.MockTransport`` answering like the server."""
    import httpx2

    def handler(request: httpx2.Request) -> httpx2.Response:
        status, body, headers = body_for(request.url.path)
        return httpx2.Response(status, content=body, headers=headers)

    return httpx2.MockTransport(handler)


def httpx_transport() -> Any:
    """An ``httpx.MockTransport`` (for clients built on httpx: LiteLLM)."""
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        status, body, headers = body_for(request.url.path)
        return httpx.Response(status, content=body, headers=headers)

    return httpx.MockTransport(handler)


# -- the loopback server -----------------------------------------------------------------------


def _reply_bytes(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    reason = "OK" if status == 200 else "Not Found"
    lines = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_REPLIES = {
    "openai": _reply_bytes(*body_for("/v1/chat/completions")),
    "anthropic": _reply_bytes(*body_for("/v1/messages")),
    "missing": _reply_bytes(*body_for("/")),
}


class _HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with ``Content-Length`` bodies, keep-alive and pipelining; nothing else."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                return
            path = head.split(b" ", 2)[1].split(b"?", 1)[0]
            del buffer[: end + 4 + length]
            if path.endswith(b"/chat/completions"):
                reply = _REPLIES["openai"]
            elif path.endswith(b"/messages"):
                reply = _REPLIES["anthropic"]
            else:
                reply = _REPLIES["missing"]
            assert self._transport is not None
            self._transport.write(reply)


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_HttpProtocol, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    conn.send(port)
    async with server:
        # Serve until the parent says stop (or dies): poll the pipe off the event loop.
        await loop.run_in_executor(None, conn.recv)


def serve_forever(conn: Connection) -> None:
    """Entry point of the server process: send the port on ``conn``, serve until told to stop."""
    asyncio.run(_serve(conn))
