"""Anthropic's Message Batches API, for the batch lane (see ``docs/batch-api.md``).

The same low-level path as the realtime adapter (``client.post``/``client.get`` with
``cast_to=httpx2.Response``): the official client's auth, headers, base URL and error mapping.
``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}``, ``GET
/v1/messages/batches/{id}`` until ``processing_status`` is ``ended``, ``GET .../{id}/results``
(JSON Lines, in any order), ``POST .../{id}/cancel``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anthropic
import httpx2

from .._exceptions import ProviderError, ProviderResponseError, status_error_type
from .._models import LLMRequest, LLMResponse
from ._anthropic import ERRORS, AnthropicProvider
from ._http import BodyError, body_fields, read_json, str_field

__all__ = ["AnthropicBatchApi"]

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024

# Anthropic's error types in an errored result -> the HTTP status they stand for.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicBatchApi:
    """One Anthropic model's batch calls.

    Args:
        provider: The model's realtime adapter (its client, its request bodies, its parsing).
    """

    provider_name = "Anthropic"
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, provider: AnthropicProvider) -> None:
        self.provider = provider
        self.client = provider.client
        self._secrets = provider._secrets

    def item(self, custom_id: str, request: LLMRequest) -> bytes:
        """One entry of the batch's ``requests``, encoded (raises ``RequestValidationError``)."""
        params = self.provider.request_body(request)
        return json.dumps({"custom_id": custom_id, "params": params}).encode()

    async def _call(self, method: str, path: str, content: bytes | None = None) -> httpx2.Response:
        try:
            if method == "POST":
                return await self.client.post(path, content=content, cast_to=httpx2.Response)
            return await self.client.get(path, cast_to=httpx2.Response)
        except anthropic.APIError as error:
            failure = ERRORS.translate(error, self._secrets)
        raise failure

    async def create(self, items: Sequence[bytes]) -> str:
        """Submit a batch; its id."""
        body = b'{"requests":[' + b",".join(items) + b"]}"
        response = await self._call("POST", "/v1/messages/batches", body)
        return _batch_id(response)

    async def ended(self, batch_id: str) -> bool:
        """Whether the batch has ended (its results can be read)."""
        response = await self._call("GET", f"/v1/messages/batches/{batch_id}")
        try:
            status = str_field(
                body_fields(read_json(response), "a message batch"), "processing_status"
            )
        except BodyError as exc:
            raise ERRORS.malformed(response, str(exc)) from None
        return status == "ended"

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""
        await self._call("POST", f"/v1/messages/batches/{batch_id}/cancel", b"{}")

    async def results(
        self, batch_id: str, request_for: Callable[[str], LLMRequest | None]
    ) -> tuple[dict[str, LLMResponse | BaseException | str], BaseException | str]:
        """Each item's outcome by ``custom_id`` (a response, its error, ``"expired"`` or
        ``"canceled"``), and the outcome of any item the results do not name (``"expired"``).

        ``request_for`` gives the request an item answers (for parsing), or ``None`` for an
        item that is not the caller's.
        """
        response = await self._call("GET", f"/v1/messages/batches/{batch_id}/results")
        outcomes: dict[str, LLMResponse | BaseException | str] = {}
        for number, line in enumerate(response.content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = body_fields(json.loads(line), "a batch result")
                custom_id = str_field(record, "custom_id")
                result = body_fields(record.get("result"), "a batch result's result")
                kind = str_field(result, "type", "result")
            except (ValueError, BodyError) as exc:
                raise ERRORS.malformed(
                    response, f"results line {number} is unusable ({exc})"
                ) from None
            request = request_for(custom_id)
            if request is None:
                continue  # not one of ours (or already settled)
            outcomes[custom_id] = self._outcome(batch_id, kind, result, request)
        return outcomes, "expired"

    def _outcome(
        self, batch_id: str, kind: str, result: Mapping[str, Any], request: LLMRequest
    ) -> LLMResponse | BaseException | str:
        if kind == "succeeded":
            message = result.get("message")
            answer = httpx2.Response(200, json=message)
            try:
                return self.provider.parse_response(request, answer)
            except ProviderError as error:
                return error
        if kind == "errored":
            return _item_error(batch_id, result.get("error"))
        if kind in ("expired", "canceled"):
            return kind
        return ProviderResponseError(
            f"Anthropic batch {batch_id} gave a result of unknown type {kind!r}"
        )


def _batch_id(response: httpx2.Response) -> str:
    try:
        return str_field(body_fields(read_json(response), "a message batch"), "id")
    except BodyError as exc:
        raise ERRORS.malformed(response, str(exc)) from None


def _item_error(batch_id: str, error: object) -> ProviderError:
    # {"type": "error", "error": {"type": "invalid_request_error", "message": "..."}}
    inner = error.get("error") if isinstance(error, dict) else None
    fields = inner if isinstance(inner, dict) else error if isinstance(error, dict) else {}
    error_type = fields.get("type") if isinstance(fields.get("type"), str) else None
    message = fields.get("message") if isinstance(fields.get("message"), str) else None
    status = ERROR_STATUSES.get(error_type or "", 500)
    return status_error_type(status)(
        f"Anthropic batch {batch_id} answered this request with an error"
        + (f" {error_type}" if error_type else ""),
        status_code=status,
        error_type=error_type,
        provider_message=message,
    )
