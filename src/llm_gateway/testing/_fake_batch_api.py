"""The fake server's batch APIs: Anthropic Message Batches and OpenAI Batch.

Anthropic: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
``GET /v1/messages/batches/{id}/results``, ``POST /v1/messages/batches/{id}/cancel``.
OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``), ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/files/{id}/content``.

A batch ends ``processing_delay_s`` after it was created (on the caller's clock: virtual time
in tests); its results come in a shuffled order. Each item is answered as the realtime fake
answers it, except that a request whose last message holds :attr:`FakeBatchApi.error_marker`
is errored (HTTP 400 ``invalid_request_error``) and one holding
:attr:`FakeBatchApi.expire_marker` expires unprocessed.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from ._faults import content_text

if TYPE_CHECKING:
    from ._fake_server import FakeLLMApi, FakeReply, ReceivedRequest

__all__ = ["FakeBatch", "FakeBatchApi"]

ANTHROPIC_BATCHES = "/v1/messages/batches"


@attrs.define
class FakeBatch:
    """One batch the fake received.

    Attributes:
        id: Its id.
        protocol: ``"anthropic"`` or ``"openai"``.
        items: ``(custom_id, request body)`` in the order received.
        size_bytes: The size of the batch as sent (the request body, or the uploaded file).
        created_at: When it was created (the server's clock).
        ends_at: When it ends.
        cancelled: Whether it was cancelled before it ended.
        input_file_id: OpenAI: the uploaded input file.
        output_file_id: OpenAI: the output file, once it ended.
        error_file_id: OpenAI: the error file, once it ended with errors.
    """

    id: str
    protocol: str
    items: list[tuple[str, dict[str, Any]]]
    size_bytes: int
    created_at: float
    ends_at: float
    cancelled: bool = False
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    def ended(self, now: float) -> bool:
        """Whether it has ended (processed, or cancelled)."""
        return self.cancelled or now >= self.ends_at


class FakeBatchApi:
    """The batch endpoints of a :class:`~llm_gateway.testing.FakeLLMApi` (its ``batches``).

    Attributes:
        processing_delay_s: How long a batch takes to end after it is created (``math.inf``:
            until :meth:`end_all`).
        error_marker: A request whose last message holds this text is errored.
        expire_marker: A request whose last message holds this text expires unprocessed.
        max_requests: If set, a larger batch is refused (HTTP 400), as over a provider limit.
        max_bytes: If set, a larger batch (body or file) is refused (HTTP 413).
        batches: Every batch created, by id, in creation order.
        cancelled: The ids of the batches cancelled, in order.
    """

    def __init__(self, api: FakeLLMApi, *, seed: int = 0) -> None:
        self._api = api
        self.processing_delay_s = 0.0
        self.error_marker = "[batch-error]"
        self.expire_marker = "[batch-expire]"
        self.max_requests: int | None = None
        self.max_bytes: int | None = None
        self.batches: dict[str, FakeBatch] = {}
        self.cancelled: list[str] = []
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._random = random.Random(seed)

    # -- routing -------------------------------------------------------------------------

    def answer(self, request: ReceivedRequest) -> FakeReply | None:
        """The reply to a batch call, or ``None`` when ``request`` is not one."""
        method, path = request.method, request.path.partition("?")[0]
        parts = path.strip("/").split("/")
        if path == ANTHROPIC_BATCHES and method == "POST":
            return self._anthropic_create(request)
        if path.startswith(ANTHROPIC_BATCHES + "/") and len(parts) >= 4:
            batch = self.batches.get(parts[3])
            if batch is None:
                return self._not_found(path)
            tail = parts[4:]
            if method == "GET" and not tail:
                return self._reply(200, self._anthropic_batch(batch))
            if method == "GET" and tail == ["results"]:
                return self._anthropic_results(batch)
            if method == "POST" and tail == ["cancel"]:
                self._cancel(batch)
                return self._reply(
                    200, {**self._anthropic_batch(batch), "processing_status": "canceling"}
                )
        if path == "/v1/files" and method == "POST":
            return self._openai_upload(request)
        if path.startswith("/v1/files/") and parts[-1] == "content" and method == "GET":
            data = self._files.get(parts[2])
            if data is None:
                return self._not_found(path)
            return self._raw(data)
        if path == "/v1/batches" and method == "POST":
            return self._openai_create(request.json())
        if path.startswith("/v1/batches/"):
            batch = self.batches.get(parts[2])
            if batch is None:
                return self._not_found(path)
            if method == "GET" and len(parts) == 3:
                return self._reply(200, self._openai_batch(batch))
            if method == "POST" and parts[3:] == ["cancel"]:
                self._cancel(batch)
                return self._reply(200, {**self._openai_batch(batch), "status": "cancelling"})
        return None

    @staticmethod
    def _reply(status: int, body: Any) -> FakeReply:
        from ._fake_server import FakeReply

        return FakeReply(status, body)

    @staticmethod
    def _raw(data: bytes) -> FakeReply:
        from ._fake_server import FakeReply

        return FakeReply(200, raw_body=data)

    def _not_found(self, path: str) -> FakeReply:
        error = {"type": "not_found_error", "message": f"no batch or file at {path}"}
        return self._reply(404, {"type": "error", "error": error})

    def _refused(self, items: int, size: int) -> FakeReply | None:
        if self.max_requests is not None and items > self.max_requests:
            error = {"type": "invalid_request_error", "message": "too many requests in a batch"}
            return self._reply(400, {"type": "error", "error": error})
        if self.max_bytes is not None and size > self.max_bytes:
            error = {"type": "request_too_large", "message": "the batch is too large"}
            return self._reply(413, {"type": "error", "error": error})
        return None

    def _new(self, protocol: str, items: list[tuple[str, dict[str, Any]]], size: int) -> FakeBatch:
        prefix = "msgbatch_" if protocol == "anthropic" else "batch_"
        now = anyio.current_time()
        batch = FakeBatch(
            f"{prefix}{next(self._ids)}", protocol, items, size, now, now + self.processing_delay_s
        )
        self.batches[batch.id] = batch
        return batch

    def end_all(self) -> None:
        """End every batch still processing, now (for a ``processing_delay_s`` of ``inf``)."""
        now = anyio.current_time()
        for batch in self.batches.values():
            batch.ends_at = min(batch.ends_at, now)

    def _cancel(self, batch: FakeBatch) -> None:
        if not batch.ended(anyio.current_time()):
            batch.cancelled = True
            self.cancelled.append(batch.id)

    # -- what an item comes to ---------------------------------------------------------------

    def _kind(self, body: dict[str, Any], batch: FakeBatch) -> str:
        if batch.cancelled:
            return "canceled"
        text = content_text(body["messages"][-1].get("content"))
        if self.expire_marker in text:
            return "expired"
        if self.error_marker in text:
            return "errored"
        return "succeeded"

    def _shuffled(self, batch: FakeBatch) -> list[tuple[str, dict[str, Any]]]:
        items = list(batch.items)
        self._random.shuffle(items)  # results come in any order: match by custom_id
        return items

    # -- Anthropic ---------------------------------------------------------------------------

    def _anthropic_create(self, request: ReceivedRequest) -> FakeReply:
        requests = request.json()["requests"]
        refused = self._refused(len(requests), len(request.body))
        if refused is not None:
            return refused
        items = [(r["custom_id"], r["params"]) for r in requests]
        if len({c for c, _ in items}) != len(items):
            error = {"type": "invalid_request_error", "message": "custom_id values must be unique"}
            return self._reply(400, {"type": "error", "error": error})
        batch = self._new("anthropic", items, len(request.body))
        return self._reply(200, self._anthropic_batch(batch))

    def _anthropic_batch(self, batch: FakeBatch) -> dict[str, Any]:
        ended = batch.ended(anyio.current_time())
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        for _, body in batch.items:
            counts[self._kind(body, batch) if ended else "processing"] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": "2026-12-01T00:00:00Z",
            "expires_at": "2026-12-02T00:00:00Z",
            "ended_at": "2026-12-01T01:00:00Z" if ended else None,
            "cancel_initiated_at": "2026-12-01T00:30:00Z" if batch.cancelled else None,
            "archived_at": None,
            "results_url": f"{ANTHROPIC_BATCHES}/{batch.id}/results" if ended else None,
        }

    def _anthropic_results(self, batch: FakeBatch) -> FakeReply:
        if not batch.ended(anyio.current_time()):
            error = {"type": "invalid_request_error", "message": "the batch is still processing"}
            return self._reply(400, {"type": "error", "error": error})
        lines = []
        for custom_id, params in self._shuffled(batch):
            kind = self._kind(params, batch)
            result: dict[str, Any] = {"type": kind}
            if kind == "succeeded":
                result["message"] = self._api._anthropic_message(params).body
            elif kind == "errored":
                result["error"] = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "a scripted error"},
                }
            lines.append(json.dumps({"custom_id": custom_id, "result": result}))
        return self._raw(("\n".join(lines) + "\n").encode())

    # -- OpenAI ------------------------------------------------------------------------------

    def _openai_upload(self, request: ReceivedRequest) -> FakeReply:
        fields = _multipart(request.headers.get("content-type", ""), request.body)
        data = fields.get("file", b"")
        file_id = f"file-{next(self._ids)}"
        self._files[file_id] = data
        return self._reply(
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": 0,
                "filename": "batch.jsonl",
                "purpose": fields.get("purpose", b"").decode(),
                "status": "processed",
            },
        )

    def _openai_create(self, body: dict[str, Any]) -> FakeReply:
        data = self._files.get(body.get("input_file_id", ""))
        if data is None:
            return self._not_found("/v1/files")
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        refused = self._refused(len(lines), len(data))
        if refused is not None:
            return refused
        models = {line["body"]["model"] for line in lines}
        if len(models) > 1 or body.get("endpoint") != "/v1/chat/completions":
            error = {"type": "invalid_request_error", "message": "one model and endpoint a file"}
            return self._reply(400, {"error": error})
        items = [(line["custom_id"], line["body"]) for line in lines]
        batch = self._new("openai", items, len(data))
        batch.input_file_id = body["input_file_id"]
        return self._reply(200, self._openai_batch(batch))

    def _openai_batch(self, batch: FakeBatch) -> dict[str, Any]:
        now = anyio.current_time()
        ended = batch.ended(now)
        if ended and batch.output_file_id is None:
            self._openai_files(batch)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": ("cancelled" if batch.cancelled else "completed") if ended else "in_progress",
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": 0,
            "request_counts": {"total": len(batch.items), "completed": 0, "failed": 0},
        }

    def _openai_files(self, batch: FakeBatch) -> None:
        output: list[str] = []
        errors: list[str] = []
        for n, (custom_id, body) in enumerate(self._shuffled(batch)):
            kind = self._kind(body, batch)
            line: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": custom_id}
            if kind == "succeeded":
                answer = self._api._chat_completion(body)
                line["response"] = {
                    "status_code": 200,
                    "request_id": f"req_{n}",
                    "body": answer.body,
                }
                line["error"] = None
                output.append(json.dumps(line))
                continue
            if kind == "errored":
                error = {"type": "invalid_request_error", "message": "a scripted error"}
                line["response"] = {
                    "status_code": 400,
                    "request_id": f"req_{n}",
                    "body": {"error": error},
                }
                line["error"] = None
            else:
                code = "batch_expired" if kind == "expired" else "batch_cancelled"
                line["response"] = None
                line["error"] = {"code": code, "message": f"the request was not processed ({kind})"}
            errors.append(json.dumps(line))
        batch.output_file_id = f"file-{next(self._ids)}"
        self._files[batch.output_file_id] = ("\n".join(output) + "\n").encode()
        if errors:
            batch.error_file_id = f"file-{next(self._ids)}"
            self._files[batch.error_file_id] = ("\n".join(errors) + "\n").encode()


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body, by name (just enough for the SDK's upload)."""
    _, _, boundary = content_type.partition("boundary=")
    boundary = boundary.split(";")[0].strip().strip('"')
    fields: dict[str, bytes] = {}
    for part in body.split(b"--" + boundary.encode()):
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for header in head.decode("latin-1").split("\r\n"):
            if header.lower().startswith("content-disposition") and 'name="' in header:
                name = header.split('name="', 1)[1].split('"', 1)[0]
                fields[name] = data.removesuffix(b"\r\n")
    return fields
