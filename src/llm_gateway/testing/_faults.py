"""Scripted faults for the fake LLM API: one script format for a MockTransport and a real socket.

A :class:`FaultPlan` says how each request's successive calls fail (an HTTP status with its
headers, a latency, a dropped connection, a timeout, a malformed body) before one succeeds.
:class:`~llm_gateway.testing.FakeLLMApi` plays it, both as an ``httpx2.MockTransport`` handler
(virtual time, no sockets) and in the loopback server of
:func:`~llm_gateway.testing.open_fake_llm_server` (real sockets), so the real SDKs and the
gateway's retry path are exercised exactly as in production.

This module imports no HTTP library: ``import llm_gateway.testing`` stays light.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import anyio
import attrs

__all__ = ["Fault", "FaultCall", "FaultKind", "FaultPlan", "prompt_key"]

FaultKind = Literal["status", "drop", "timeout", "malformed", "ok"]

# The error types the APIs give with each status (Anthropic's names; OpenAI's are close).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "request_timeout",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}

MALFORMED_BODY = b'{"id": "truncated", "content": ['
"""What a ``malformed`` fault answers with HTTP 200: JSON cut short."""


@attrs.frozen(kw_only=True)
class Fault:
    """How one call fails (or, ``kind="ok"``, succeeds slowly).

    Build one with the class methods: :meth:`http`, :meth:`drop`, :meth:`timeout`,
    :meth:`malformed`, :meth:`ok`.

    Attributes:
        kind: ``"status"``: answer ``status`` with an error body in the API's shape, and
            ``headers``. ``"drop"``: close the connection without answering (the SDKs raise a
            connection error). ``"timeout"``: never answer; on a socket the server holds the
            connection until the client gives up (its own timeout), and the MockTransport
            handler, which has no client clock, raises ``httpx2.ReadTimeout`` after
            ``latency_s``. ``"malformed"``: answer 200 with a body that is not JSON.
            ``"ok"``: the normal answer, after ``latency_s``.
        status: The HTTP status of a ``"status"`` fault.
        headers: Extra response headers (``retry-after``, ``retry-after-ms``,
            ``x-should-retry``, ...).
        latency_s: How long the server takes before it acts.
    """

    kind: FaultKind = "status"
    status: int = 500
    headers: Mapping[str, str] = attrs.field(factory=dict)
    latency_s: float = 0.0

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
        latency_s: float = 0.0,
    ) -> Fault:
        """An error answer with ``status``.

        Args:
            status: The HTTP status.
            retry_after: The ``retry-after`` header (seconds, or an HTTP date as a str).
            retry_after_ms: The ``retry-after-ms`` header (milliseconds).
            should_retry: The ``x-should-retry`` header (``true``/``false``).
            headers: Any other headers.
            latency_s: How long the server takes to answer.
        """
        sent = dict(headers or {})
        if retry_after is not None:
            sent["retry-after"] = (
                retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
            )
        if retry_after_ms is not None:
            sent["retry-after-ms"] = f"{retry_after_ms:g}"
        if should_retry is not None:
            sent["x-should-retry"] = "true" if should_retry else "false"
        return cls(kind="status", status=status, headers=sent, latency_s=latency_s)

    @classmethod
    def drop(cls, *, latency_s: float = 0.0) -> Fault:
        """Close the connection without answering, after ``latency_s``."""
        return cls(kind="drop", latency_s=latency_s)

    @classmethod
    def timeout(cls, *, latency_s: float = 0.0) -> Fault:
        """Never answer (see :attr:`kind`); ``latency_s`` is the simulated client timeout."""
        return cls(kind="timeout", latency_s=latency_s)

    @classmethod
    def malformed(cls, *, latency_s: float = 0.0) -> Fault:
        """Answer HTTP 200 with a body that is not JSON, after ``latency_s``."""
        return cls(kind="malformed", latency_s=latency_s)

    @classmethod
    def ok(cls, *, latency_s: float) -> Fault:
        """The normal answer, after ``latency_s`` (a slow success)."""
        return cls(kind="ok", latency_s=latency_s)

    @property
    def retry_after_s(self) -> float | None:
        """The wait this answer asks for, as the SDK adapters read it (``-ms`` first)."""
        if self.kind != "status":
            return None
        for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
            try:
                return float(self.headers[name]) / scale
            except (KeyError, ValueError):
                continue
        return None

    def error_body(self, path: str) -> bytes:
        """The JSON error body of a ``"status"`` fault, in the shape of the API at ``path``."""
        error_type = ERROR_TYPES.get(self.status, "api_error")
        message = f"scripted fault: HTTP {self.status}"
        if path.endswith("/messages"):  # Anthropic
            body: Any = {"type": "error", "error": {"type": error_type, "message": message}}
        else:  # OpenAI and OpenAI-compatible servers
            body = {"error": {"message": message, "type": error_type, "code": None}}
        return json.dumps(body).encode()

    def describe(self) -> str:
        """A short name, for reports: ``"HTTP 429"``, ``"drop"``, ``"timeout"``..."""
        return f"HTTP {self.status}" if self.kind == "status" else self.kind


@attrs.define
class FaultCall:
    """One call the plan answered.

    Attributes:
        key: The request's key (see :class:`FaultPlan`).
        attempt: 1 for the key's first call, 2 for its second...
        fault: The scripted fault, or ``None`` for a normal answer.
        model: The ``model`` field of the request body (the provider's model name).
        started: When the call arrived (the event loop's clock).
        ended: When the answer was sent, the connection dropped, or (``"timeout"``) the client
            gave up; ``None`` while under way (or if the client cancelled the call).
    """

    key: str
    attempt: int
    fault: Fault | None
    model: str | None
    started: float
    ended: float | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the call got a normal answer."""
        return self.fault is None or self.fault.kind == "ok"


def content_text(content: Any) -> str:
    """The text of a message's JSON content: a string, or content blocks (text, tool results)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            content_text(block.get("content"))
            if block.get("type") == "tool_result"
            else block.get("text", "")
            for block in content
            if isinstance(block, dict)
        )
    return ""


def prompt_key(headers: Mapping[str, str], body: bytes) -> str | None:
    """The default key of a request: its ``x-fault-key`` header, else its last message's text.

    The header lets a test key whole models (``provider_options.extra_headers``); the text
    keys single requests with no change to what the gateway sends.
    """
    if "x-fault-key" in headers:
        return headers["x-fault-key"]
    try:
        messages = json.loads(body)["messages"]
        return content_text(messages[-1].get("content"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _model_of(body: bytes) -> str | None:
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


@attrs.define
class FaultPlan:
    """Which calls fail, and how: scripts by request key, or faults by order of arrival.

    A request's key is ``key(headers, body)`` (by default :func:`prompt_key`: the
    ``x-fault-key`` header, else the text of the last message). Its n-th call gets
    ``scripts[key][n - 1]``; calls past the end of its script succeed. Calls whose key has no
    script take ``ordered`` faults in arrival order (``None`` in it, or past its end: success).

    Attributes:
        scripts: Request key -> the faults of its successive calls.
        ordered: Faults for successive calls of requests without a script.
        latency_s: How long a normal answer takes.
        key: A request's key, from its (lower-case) headers and raw body.
        calls: Every call answered, in arrival order.
    """

    scripts: Mapping[str, Sequence[Fault]] = attrs.field(factory=dict)
    ordered: Sequence[Fault | None] = ()
    latency_s: float = 0.0
    key: Callable[[Mapping[str, str], bytes], str | None] = prompt_key
    calls: list[FaultCall] = attrs.field(factory=list, init=False)
    _attempts: defaultdict[str, int] = attrs.field(factory=lambda: defaultdict(int), init=False)
    _unscripted: int = attrs.field(default=0, init=False)

    def next_call(self, headers: Mapping[str, str], body: bytes) -> FaultCall:
        """Record a call arriving now and decide its fault (``FaultCall.fault``)."""
        key = self.key(headers, body)
        key = "" if key is None else key
        self._attempts[key] += 1
        attempt = self._attempts[key]
        script = self.scripts.get(key)
        fault: Fault | None
        if script is not None:
            fault = script[attempt - 1] if attempt <= len(script) else None
        else:
            n = self._unscripted
            self._unscripted += 1
            fault = self.ordered[n] if n < len(self.ordered) else None
        call = FaultCall(key, attempt, fault, _model_of(body), anyio.current_time())
        self.calls.append(call)
        return call

    def calls_by_key(self) -> dict[str, list[FaultCall]]:
        """Every call, grouped by request key, each group in arrival order."""
        grouped: dict[str, list[FaultCall]] = defaultdict(list)
        for call in self.calls:
            grouped[call.key].append(call)
        return dict(grouped)

    def delay_of(self, call: FaultCall) -> float:
        """How long the answer to ``call`` takes."""
        fault = call.fault
        return self.latency_s if fault is None else fault.latency_s
