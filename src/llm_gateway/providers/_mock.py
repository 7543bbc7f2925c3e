"""The deterministic built-in provider: no network, the same request always gets the same answer."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import cattrs
from cattrs.errors import ClassValidationError

from .._exceptions import ConfigError, ProviderError
from .._models import LLMRequest, LLMResponse, ToolCall, Usage

__all__ = ["MockError", "MockFixture", "MockFixtures", "MockMatch", "MockProvider", "MockScript"]


@attrs.frozen(kw_only=True)
class MockError:
    """A failure the mock raises as :class:`ProviderError`.

    Attributes:
        status_code: The HTTP status it pretends the provider answered (e.g. 429, 529).
        message: The error's message.
        retry_after_s: The ``retry-after`` hint it carries.
    """

    status_code: int = 500
    message: str = "mock provider error"
    retry_after_s: float | None = None

    def to_exception(self) -> ProviderError:
        return ProviderError(
            f"{self.message} (HTTP {self.status_code}, scripted by the mock provider)",
            status_code=self.status_code,
            retry_after_s=self.retry_after_s,
        )


@attrs.frozen(kw_only=True)
class MockMatch:
    """Which requests a fixture answers; every field given must match.

    Attributes:
        model: The configured model id.
        last_user_message: The exact text of the last user message.
        last_user_regex: A regular expression searched for in the last user message.
    """

    model: str | None = None
    last_user_message: str | None = None
    last_user_regex: str | None = None

    def matches(self, model_id: str, request: LLMRequest) -> bool:
        if self.model is not None and self.model != model_id:
            return False
        if self.last_user_message is None and self.last_user_regex is None:
            return True
        last = _last_user_message(request)
        if self.last_user_message is not None and last != self.last_user_message:
            return False
        return self.last_user_regex is None or re.search(self.last_user_regex, last) is not None


@attrs.frozen(kw_only=True)
class MockFixture:
    """A scripted answer: what to match, and what to answer with.

    Attributes:
        match: Which requests it answers.
        content: The response text.
        tool_calls: Tool calls to answer with.
        usage: Token usage to report (estimated from the text when absent).
        finish_reason: The finish reason (``"tool_calls"`` when there are tool calls, else
            ``"stop"``, when absent).
        latency_s: Simulated latency (the mock's default when absent).
        error: Fail with this instead of answering.
    """

    match: MockMatch = attrs.field(factory=MockMatch)
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    latency_s: float | None = None
    error: MockError | None = None


_fixtures_converter = cattrs.Converter(forbid_extra_keys=True)


@attrs.frozen(kw_only=True)
class MockFixtures:
    """An ordered list of fixtures; the first that matches a request answers it.

    The JSON form is ``{"fixtures": [{"match": {...}, "content": "...", ...}, ...]}`` (see
    ``docs/testing.md``). Requests no fixture matches get the deterministic default answer.
    """

    fixtures: tuple[MockFixture, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MockFixtures:
        try:
            fixtures: MockFixtures = _fixtures_converter.structure(data, cls)
        except ClassValidationError as exc:
            problems = "; ".join(cattrs.transform_error(exc))
            raise ConfigError(f"invalid mock fixtures: {problems}") from None
        for fixture in fixtures.fixtures:
            if fixture.match.last_user_regex is not None:
                try:
                    re.compile(fixture.match.last_user_regex)
                except re.error as exc:
                    raise ConfigError(
                        f"invalid mock fixtures: last_user_regex "
                        f"{fixture.match.last_user_regex!r} is not a valid regex: {exc}"
                    ) from None
        return fixtures

    @classmethod
    def load(cls, path: str | Path) -> MockFixtures:
        """Read a fixtures JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read mock fixtures from {str(path)!r}: {exc}") from None
        return cls.from_dict(data)

    def find(self, model_id: str, request: LLMRequest) -> MockFixture | None:
        for fixture in self.fixtures:
            if fixture.match.matches(model_id, request):
                return fixture
        return None


@attrs.define
class MockScript:
    """What every mock provider of one gateway shares: fixtures, latency, failures, records.

    Attributes:
        fixtures: Scripted answers.
        latency_s: Default simulated latency of every call.
        received: Every request that reached a mock provider, in arrival order (requests
            cancelled before dispatch never get here).
    """

    fixtures: MockFixtures = attrs.field(factory=MockFixtures)
    latency_s: float = 0.0
    received: list[LLMRequest] = attrs.field(factory=list)
    _failures: deque[tuple[str | None, MockError]] = attrs.field(factory=deque, alias="_failures")

    def fail_next(
        self, count: int = 1, *, error: MockError | None = None, model: str | None = None
    ) -> None:
        """Make the next ``count`` calls (to ``model``, or to any model) fail with ``error``."""
        for _ in range(count):
            self._failures.append((model, error or MockError()))

    def _take_failure(self, model_id: str) -> MockError | None:
        for i, (model, error) in enumerate(self._failures):
            if model is None or model == model_id:
                del self._failures[i]
                return error
        return None


def _last_user_message(request: LLMRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token)."""
    return math.ceil(len(text) / 4)


def request_digest(request: LLMRequest) -> str:
    """A hash of what determines a request's answer (not its id, priority or tracing)."""
    canonical = {
        "model": request.model,
        "messages": [attrs.asdict(m) for m in request.messages],
        "tools": [[t.name, t.description, t.input_schema] for t in request.tools],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class MockProvider:
    """A provider that answers from fixtures or a deterministic default, without a network.

    The default answer is ``"Mock answer <digest> from <model_name>."``, where the digest
    hashes the request's model, messages, tools, temperature and max_tokens.
    """

    def __init__(self, model_id: str, model_name: str, script: MockScript) -> None:
        self.model_id = model_id
        self.model_name = model_name
        self.script = script

    async def complete(self, request: LLMRequest) -> LLMResponse:
        script = self.script
        script.received.append(request)
        fixture = script.fixtures.find(self.model_id, request)
        latency = script.latency_s
        if fixture is not None and fixture.latency_s is not None:
            latency = fixture.latency_s
        if latency > 0:
            await anyio.sleep(latency)
        else:
            await anyio.lowlevel.checkpoint()
        error = script._take_failure(self.model_id)
        if error is None and fixture is not None:
            error = fixture.error
        if error is not None:
            raise error.to_exception()
        digest = request_digest(request)
        if fixture is None:
            content = f"Mock answer {digest[:12]} from {self.model_name}."
            tool_calls: tuple[ToolCall, ...] = ()
            usage = None
            finish_reason = None
        else:
            content, tool_calls = fixture.content, fixture.tool_calls
            usage, finish_reason = fixture.usage, fixture.finish_reason
        if usage is None:
            prompt = sum(estimate_tokens(m.content) + 4 for m in request.messages)
            usage = Usage(input_tokens=prompt, output_tokens=estimate_tokens(content))
        return LLMResponse(
            request_id=request.request_id,
            content=content,
            model=self.model_id,
            tool_calls=tool_calls,
            usage=usage,
            finish_reason=finish_reason or ("tool_calls" if tool_calls else "stop"),
            provider_request_id=f"mock-{digest[:16]}",
        )
