"""OpenAI's Batch API, for the batch lane (see ``docs/batch-api.md``).

A batch is a JSON Lines file (one ``{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body"}`` per request, one model per file) uploaded with
``purpose="batch"``, then ``batches.create`` on ``/v1/chat/completions`` with a 24 h window,
``batches.retrieve`` until it ends, and the lines of its output and error files, matched by
``custom_id``. Through the official SDK's methods (a few calls per batch: their CPU cost does
not matter here), with its errors mapped as the realtime adapter maps them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import httpx2
import openai

from .._exceptions import ProviderError, ProviderResponseError, status_error_type
from .._models import LLMRequest, LLMResponse
from ._http import BodyError, body_fields, str_field
from ._openai import ERRORS, OpenAIProvider

__all__ = ["OpenAIBatchApi"]

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT: Final = "/v1/chat/completions"
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})

T = TypeVar("T")


class OpenAIBatchApi:
    """One OpenAI model's batch calls.

    Args:
        provider: The model's realtime adapter (its client, its request bodies, its parsing).
    """

    provider_name = "OpenAI"
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.client = provider.client
        self._secrets = provider._secrets

    def item(self, custom_id: str, request: LLMRequest) -> bytes:
        """One line of the batch's input file, encoded."""
        line = {
            "custom_id": custom_id,
            "method": "POST",
            "url": ENDPOINT,
            "body": self.provider.request_body(request),
        }
        return json.dumps(line).encode()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except openai.APIError as error:
            failure = ERRORS.translate(error, self._secrets)
        raise failure

    async def create(self, items: Sequence[bytes]) -> str:
        """Upload the input file and create the batch; its id."""
        data = b"\n".join(items) + b"\n"
        uploaded = await self._call(
            lambda: self.client.files.create(
                file=("batch.jsonl", data, "application/jsonl"), purpose="batch"
            )
        )
        batch = await self._call(
            lambda: self.client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            )
        )
        return batch.id

    async def ended(self, batch_id: str) -> bool:
        """Whether the batch has ended (completed, failed, expired or cancelled)."""
        batch = await self._call(lambda: self.client.batches.retrieve(batch_id))
        return batch.status in ENDED

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""
        await self._call(lambda: self.client.batches.cancel(batch_id))

    async def _lines(self, file_id: str | None) -> list[bytes]:
        if not file_id:
            return []
        content = await self._call(lambda: self.client.files.content(file_id))
        return content.content.splitlines()

    async def results(
        self, batch_id: str, request_for: Callable[[str], LLMRequest | None]
    ) -> tuple[dict[str, LLMResponse | BaseException | str], BaseException | str]:
        """Each item's outcome by ``custom_id`` (a response, its error, ``"expired"`` or
        ``"canceled"``), and the outcome of the items neither file names.

        Those were not processed before the batch ended: ``"expired"`` (``"canceled"`` for a
        cancelled batch); a batch that failed validation fails each of them.
        """
        batch = await self._call(lambda: self.client.batches.retrieve(batch_id))
        outcomes: dict[str, LLMResponse | BaseException | str] = {}
        lines = [*await self._lines(batch.output_file_id), *await self._lines(batch.error_file_id)]
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = body_fields(json.loads(line), "a batch output line")
                custom_id = str_field(record, "custom_id")
            except (ValueError, BodyError) as exc:
                raise ProviderResponseError(
                    f"OpenAI batch {batch_id}: output line {number} is unusable ({exc})"
                ) from None
            request = request_for(custom_id)
            if request is not None:
                outcomes[custom_id] = self._outcome(batch_id, record, request)
        if batch.status == "failed":
            errors = (batch.errors.data if batch.errors else None) or []
            codes = sorted({e.code for e in errors if e.code})
            failed = ProviderResponseError(
                f"OpenAI batch {batch_id} failed validation"
                + (f" ({', '.join(codes)})" if codes else ""),
                error_type=codes[0] if codes else None,
            )
            return outcomes, failed
        return outcomes, "canceled" if batch.status == "cancelled" else "expired"

    def _outcome(
        self, batch_id: str, record: Mapping[str, Any], request: LLMRequest
    ) -> LLMResponse | BaseException | str:
        error = record.get("error")
        response = record.get("response")
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            if code == "batch_expired":
                return "expired"
            if code == "batch_cancelled":
                return "canceled"
            message = error.get("message")
            return ProviderResponseError(
                f"OpenAI batch {batch_id} could not process this request"
                + (f" ({code})" if code else ""),
                error_type=code,
                provider_message=message if isinstance(message, str) else None,
            )
        if not isinstance(response, dict):
            return ProviderResponseError(f"OpenAI batch {batch_id}: a line with no response")
        status = response.get("status_code")
        body = response.get("body")
        if not isinstance(status, int) or isinstance(status, bool):
            return ProviderResponseError(f"OpenAI batch {batch_id}: a response with no status")
        if status >= 400:
            return _status_error(batch_id, status, body)
        try:
            return self.provider.parse_response(request, httpx2.Response(status, json=body))
        except ProviderError as failure:
            return failure


def _status_error(batch_id: str, status: int, body: object) -> ProviderError:
    inner = body.get("error") if isinstance(body, dict) else None
    fields = inner if isinstance(inner, dict) else {}
    error_type = fields.get("type") or fields.get("code")
    message = fields.get("message")
    return status_error_type(status)(
        f"OpenAI batch {batch_id} answered this request with HTTP {status}"
        + (f" {error_type}" if isinstance(error_type, str) else ""),
        status_code=status,
        error_type=error_type if isinstance(error_type, str) else None,
        provider_message=message if isinstance(message, str) else None,
    )
