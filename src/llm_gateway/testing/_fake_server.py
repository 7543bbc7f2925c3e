"""A fake LLM API: on a real loopback socket, or as an ``httpx2.MockTransport`` handler.

It speaks just enough of two APIs: OpenAI chat completions (``POST /v1/chat/completions``) and
Anthropic messages (``POST /v1/messages``). Answers are deterministic: the text echoes the last
user message, and a request that offers tools and ends with a user message gets a call to its
first tool. The server speaks just enough HTTP/1.1 (``Content-Length`` bodies, keep-alive); it
runs on trio and asyncio (anyio), with no dependency beyond anyio.

Faults (status codes, ``retry-after``, latency, dropped connections, timeouts, malformed
bodies) are scripted with a :class:`~llm_gateway.testing.FaultPlan`, played the same way by
both transports; or by hand, by overriding :meth:`FakeLLMApi.respond`.
"""

from __future__ import annotations

import http
import itertools
import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import attrs
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from .._tokens import heuristic_count
from ._fake_batch_api import FakeBatchApi
from ._fake_sse import Step, StreamFault, StreamRecord, mock_response, play_on_socket, sse_steps
from ._faults import MALFORMED_BODY, Fault, FaultCall, FaultPlan, content_text

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "FakeLLMApi",
    "FakeLLMServer",
    "FakeReply",
    "ReceivedRequest",
    "fake_answer",
    "open_fake_llm_server",
]

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
    """An HTTP response the fake API sends (or, ``action``, does not send).

    Attributes:
        status: The HTTP status.
        body: The JSON body (any JSON-serialisable value).
        headers: Headers besides ``content-type`` and ``content-length``.
        delay_s: How long to wait before acting.
        action: ``"send"`` the response; ``"drop"`` the connection without answering;
            ``"hang"``: never answer. The server then holds the connection until the client
            gives up (``delay_s`` does not count); the MockTransport handler, which has no
            client clock, raises ``httpx2.ReadTimeout`` after ``delay_s``.
        raw_body: Bytes to send instead of ``body`` (e.g. a malformed body).
        call: The fault plan's record of this call, completed when the reply is sent.
        stream: A streamed answer's steps (see ``_fake_sse.py``), sent as a chunked
            ``text/event-stream`` body instead of ``body``.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay_s: float = attrs.field(default=0.0, kw_only=True)
    action: Literal["send", "drop", "hang"] = attrs.field(default="send", kw_only=True)
    raw_body: bytes | None = attrs.field(default=None, kw_only=True)
    call: FaultCall | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    stream: tuple[Step, ...] | None = attrs.field(default=None, kw_only=True, repr=False)

    @classmethod
    def for_fault(cls, fault: Fault, path: str) -> FakeReply:
        """The reply that plays ``fault`` (not ``"ok"``) for a request to ``path``."""
        if fault.kind == "status":
            raw = fault.error_body(path)
            return cls(fault.status, None, fault.headers, delay_s=fault.latency_s, raw_body=raw)
        if fault.kind == "malformed":
            return cls(200, None, fault.headers, delay_s=fault.latency_s, raw_body=MALFORMED_BODY)
        action: Literal["drop", "hang"] = "drop" if fault.kind == "drop" else "hang"
        return cls(delay_s=fault.latency_s, action=action)

    def body_bytes(self) -> bytes:
        """The body on the wire."""
        if self.raw_body is not None:
            return self.raw_body
        return b"" if self.body is None else json.dumps(self.body).encode()

    def encode(self) -> bytes:
        """The response's bytes on the wire."""
        body = self.body_bytes()
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


class FakeLLMApi:
    """The fake API's answers, and the ``httpx2.MockTransport`` handler that gives them.

    With a ``faults`` plan, each call first gets its scripted fault (see
    :class:`~llm_gateway.testing.FaultPlan`). Use it in virtual-time tests as
    ``httpx2.AsyncClient(transport=httpx2.MockTransport(api.handle))`` (or
    :meth:`mock_client`), passed to ``open_provider(..., http_client=...)``.

    A request with ``"stream": true`` gets its answer as server-sent events in its API's
    protocol; queue :class:`~llm_gateway.testing.StreamFault` values (or ``None`` for a clean
    stream) on :attr:`stream_faults` to break the next streamed answers, one each.

    Attributes:
        received: Every request received, in arrival order.
        faults: The fault plan, if any.
        stream_faults: Faults for the next streamed answers, in order.
        streams: Every streamed answer, as played (:class:`~llm_gateway.testing.StreamRecord`).
        batches: The batch APIs (Anthropic Message Batches, OpenAI Batch): a
            :class:`~llm_gateway.testing.FakeBatchApi` (processing delay, scripted errors and
            expiries, the batches received).
    """

    def __init__(self, faults: FaultPlan | None = None) -> None:
        self.received: list[ReceivedRequest] = []
        self.faults = faults
        self._ids = itertools.count(1)
        self.stream_faults: list[StreamFault | None] = []
        self.streams: list[StreamRecord] = []
        self.batches = FakeBatchApi(self)

    # -- answers ----------------------------------------------------------------------------

    def respond(self, request: ReceivedRequest) -> FakeReply:
        """The reply to ``request`` (already recorded in :attr:`received`).

        The fault plan's fault for this call if it has one, else the API's answer. Override
        to script replies by hand: a :class:`FakeReply` can also delay, drop the connection,
        hang, or send a raw body.
        """
        if self.faults is None:
            return self.answer(request)
        call = self.faults.next_call(request.headers, request.body)
        if call.fault is None or call.fault.kind == "ok":
            reply = attrs.evolve(self.answer(request), delay_s=self.faults.delay_of(call))
        else:
            reply = FakeReply.for_fault(call.fault, request.path)
        return attrs.evolve(reply, call=call)

    def answer(self, request: ReceivedRequest) -> FakeReply:
        """The API's normal answer to ``request``."""
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return self._streamed(request, self._chat_completion(request.json()))
        if request.method == "POST" and request.path == "/v1/messages":
            return self._streamed(request, self._anthropic_message(request.json()))
        batch_reply = self.batches.answer(request)
        if batch_reply is not None:
            return batch_reply
        return FakeReply(
            404,
            {"error": {"type": "not_found_error", "message": f"no route {request.path}"}},
        )

    def _streamed(self, request: ReceivedRequest, reply: FakeReply) -> FakeReply:
        """``reply`` as a stream, when the request asked for one (with the next stream fault)."""
        if not request.json().get("stream"):
            return reply
        fault = self.stream_faults.pop(0) if self.stream_faults else None
        return attrs.evolve(reply, stream=sse_steps(request.path, reply.body, fault))

    def _chat_completion(self, body: dict[str, Any]) -> FakeReply:
        messages = body["messages"]
        last = messages[-1]
        prompt = content_text(last.get("content"))
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
        prompt_tokens = sum(heuristic_count(content_text(m.get("content"))) for m in messages)
        completion_tokens = heuristic_count(message["content"] or "")
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
        prompt = content_text(last.get("content"))
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
        input_tokens = heuristic_count(str(body.get("system", ""))) + sum(
            heuristic_count(content_text(m.get("content"))) for m in messages
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
                    "output_tokens": sum(heuristic_count(b.get("text", "")) for b in content),
                },
            },
            {"request-id": request_id},
        )

    # -- MockTransport ----------------------------------------------------------------------

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        """The ``httpx2.MockTransport`` handler: plays :meth:`respond` without a socket.

        A dropped connection raises ``httpx2.RemoteProtocolError`` and a hang raises
        ``httpx2.ReadTimeout`` (after the reply's delay), as httpx would.
        """
        import httpx2  # only tests that use a MockTransport need it

        received = ReceivedRequest(
            request.method,
            request.url.raw_path.decode("ascii"),
            {name.lower(): value for name, value in request.headers.items()},
            request.content,
        )
        self.received.append(received)
        reply = self.respond(received)
        if reply.delay_s:
            await anyio.sleep(reply.delay_s)
        if reply.call is not None:
            reply.call.ended = anyio.current_time()
        if reply.action == "drop":
            raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
        if reply.action == "hang":
            raise httpx2.ReadTimeout("The read operation timed out (a scripted timeout)")
        if reply.stream is not None:
            record = StreamRecord(received.path, anyio.current_time())
            self.streams.append(record)
            return mock_response(reply.stream, reply.headers, record)
        headers = {"content-type": "application/json", **reply.headers}
        return httpx2.Response(reply.status, headers=headers, content=reply.body_bytes())

    def mock_client(self) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` whose transport is :meth:`handle`."""
        import httpx2

        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


class FakeLLMServer(FakeLLMApi):
    """The running fake server (from :func:`open_fake_llm_server`).

    Attributes:
        host: The address it listens on.
        port: The port it listens on (chosen by the OS).
        received: Every request received, in arrival order.
        faults: The fault plan, if any.
    """

    def __init__(self, host: str, port: int, faults: FaultPlan | None = None) -> None:
        super().__init__(faults)
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        """``http://host:port``: the ``endpoint`` of an Anthropic model."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://host:port/v1``: the ``endpoint`` of an OpenAI or ``local-llama`` model."""
        return f"{self.base_url}/v1"

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
                if not await self._reply(stream, reader, self.respond(request)):
                    return
                if headers.get("connection", "").lower() == "close":
                    return

    async def _reply(
        self, stream: anyio.abc.SocketStream, reader: BufferedByteReceiveStream, reply: FakeReply
    ) -> bool:
        """Play ``reply`` on the connection; whether the connection stays open."""
        if reply.delay_s and reply.action != "hang":
            await anyio.sleep(reply.delay_s)
        if reply.action == "hang":
            # Never answer: hold the connection until the client gives up and closes it (its
            # own timeout is the one that counts here, not the reply's delay).
            try:
                while True:
                    await reader.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        if reply.call is not None:
            reply.call.ended = anyio.current_time()
        if reply.action != "send":
            return False  # leaving closes the connection: a drop, or the hang is over
        if reply.stream is not None:
            record = StreamRecord("", anyio.current_time())
            self.streams.append(record)
            return await play_on_socket(stream, reader, reply.stream, reply.headers, record)
        try:
            await stream.send(reply.encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False  # the client gave up first (its timeout)
        return True


@asynccontextmanager
async def open_fake_llm_server(
    host: str = "127.0.0.1", *, faults: FaultPlan | None = None
) -> AsyncGenerator[FakeLLMServer]:
    """Run a :class:`FakeLLMServer` on ``host`` and a free port until the block exits.

    Close the clients (the gateway) before leaving the block: leaving it stops the server and
    drops its open connections.

    Args:
        host: The address to listen on (keep it a loopback address).
        faults: A fault plan the server plays (see :class:`~llm_gateway.testing.FaultPlan`).
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    async with listener, anyio.create_task_group() as tg:
        server = FakeLLMServer(host, listener.extra(SocketAttribute.local_port), faults)
        tg.start_soon(listener.serve, server._serve_connection, tg)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
