"""Test doubles for the provider tests: a scripted HTTP API behind ``httpx2.MockTransport``."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import attrs
import httpx2

from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig
from llm_gateway.providers import Provider, open_provider

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

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of every request, in order."""
        return [json.loads(r.content) for r in self.requests]


class ScriptedGateway(Gateway):
    """A real Gateway whose SDK adapters talk to ``api`` through a MockTransport."""

    def __init__(self, models: Mapping[str, ModelConfig], api: ScriptedApi) -> None:
        super().__init__(models=models, log_dir=None, provider_factory=self._open)
        self.api = api

    def _open(self, model_id: str, config: ModelConfig) -> AbstractAsyncContextManager[Provider]:
        return open_provider(model_id, config, http_client=self.api.client())


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> httpx2.Response:
    return httpx2.Response(status, json=body, headers=dict(headers or {}))


def user(text: str, model: str = "m", **fields: Any) -> LLMRequest:
    """A one-user-message request."""
    return LLMRequest(model=model, messages=[LLMMessage("user", text)], **fields)
