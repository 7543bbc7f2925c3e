"""The deterministic built-in provider: no network, the same request always gets the same answer.

This module also defines the fixtures file format (``"version": 1``) that
:class:`~llm_gateway.testing.MockLLMGateway` reads and that recorded cassettes are written in:
one format, one loader, one matcher. ``docs/testing.md`` documents it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import anyio
import anyio.lowlevel
import attrs
import cattrs
import cattrs.v
from cattrs.errors import ClassValidationError

from .._exceptions import (
    ConfigError,
    GatewayError,
    ProviderError,
    ProviderResponseError,
    status_error_type,
)
from .._models import ROLES, LLMMessage, LLMRequest, LLMResponse, LLMTool, ToolCall, Usage
from .._stream import ChunkSink, ToolCallDelta
from .._tokens import heuristic_count
from ._base import structured_answer

__all__ = [
    "FORMAT_VERSION",
    "CassetteMissError",
    "MockError",
    "MockFixture",
    "MockFixtures",
    "MockMatch",
    "MockProvider",
    "MockRecording",
    "MockScript",
    "RequestContent",
    "request_digest",
]

FORMAT_VERSION: Final = 1
"""The version of the fixtures (and cassette) file format this library reads and writes."""

OnMissing = Literal["error", "default"]

_HASH = re.compile(r"[0-9a-f]{64}")
_T = TypeVar("_T")


class CassetteMissError(GatewayError):
    """A request matched no fixture or cassette entry, and the mock was told to fail on misses.

    It is not a :class:`ProviderError` on purpose: an agent that retries provider errors must not
    retry (and so hide) a request its cassette lacks. The message names the request id, the
    model and the request's hash, never its text.

    Attributes:
        request_id: The request's id.
        model: The configured model id the request went to.
        request_hash: The request's :func:`request_digest`: a fixture whose
            ``match.request_hash`` is this answers it.
        source: The fixtures or cassette file, when the fixtures came from one.
    """

    def __init__(
        self, *, request_id: str, model: str, request_hash: str, source: str | None = None
    ) -> None:
        where = f" in {source!r}" if source is not None else ""
        super().__init__(
            f"no fixture or cassette entry{where} matches request {request_id!r} to model "
            f"{model!r} (request_hash {request_hash}); record it again with "
            "Gateway(..., record_to=...), add a fixture with this request_hash, or pass "
            "on_missing='default' for the deterministic default answer"
        )
        self.request_id = request_id
        self.model = model
        self.request_hash = request_hash
        self.source = source


@attrs.frozen(kw_only=True)
class MockError:
    """A failure the mock raises, as the SDK adapters would for that HTTP status.

    A 429 raises :class:`RateLimitError`, 401 and 403 :class:`AuthenticationError`, any other
    status :class:`ProviderStatusError` (all are :class:`ProviderError`), so an agent's error
    handling is tested against the classes it meets in production.

    Attributes:
        status_code: The HTTP status it pretends the provider answered (e.g. 429, 529).
        message: The error's message.
        retry_after_s: The ``retry-after`` hint it carries (also as a ``retry-after`` header).
    """

    status_code: int = 500
    message: str = "mock provider error"
    retry_after_s: float | None = None

    def to_exception(self) -> ProviderError:
        """The exception the mock raises."""
        headers = {} if self.retry_after_s is None else {"retry-after": f"{self.retry_after_s:g}"}
        return status_error_type(self.status_code)(
            f"{self.message} (HTTP {self.status_code}, scripted by the mock provider)",
            status_code=self.status_code,
            retry_after_s=self.retry_after_s,
            headers=headers,
        )


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-like data (mappings -> dicts, sequences -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@attrs.frozen(kw_only=True)
class RequestContent:
    """What determines a request's answer: its model, messages, tools, sampling and format.

    Not its id, priority, agent, trace or timeout: those change from run to run, or do not
    change what a model answers. Cassettes store it next to each answer.

    Attributes:
        model: The request's ``model`` as the caller wrote it (a model id, or a provider name).
        messages: The conversation.
        tools: The tools offered.
        temperature: Sampling temperature.
        max_tokens: The most tokens to generate, or ``None``.
        stop: The stop sequences.
        top_p: Nucleus sampling, or ``None``.
        seed: The sampling seed, or ``None``.
        tool_choice: Which tool the model must (or may not) call, or ``None``.
        response_format: The JSON Schema of a structured answer, or ``None``.
    """

    model: str
    messages: tuple[LLMMessage, ...]
    tools: tuple[LLMTool, ...] = ()
    temperature: float = 0.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    top_p: float | None = None
    seed: int | None = None
    tool_choice: str | None = None
    response_format: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, request: LLMRequest) -> RequestContent:
        """The content of ``request``."""
        return cls(
            model=request.model,
            messages=request.messages,
            tools=request.tools,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop=request.stop,
            top_p=request.top_p,
            seed=request.seed,
            tool_choice=request.tool_choice,
            response_format=request.response_format,
        )

    def digest(self) -> str:
        """The SHA-256 hex digest of the content (what ``match.request_hash`` compares)."""
        canonical = {
            "model": self.model,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "tool_call_id": m.tool_call_id,
                    "tool_calls": [
                        {"id": c.id, "name": c.name, "arguments": _plain(c.arguments)}
                        for c in m.tool_calls
                    ],
                }
                for m in self.messages
            ],
            "tools": [[t.name, t.description, _plain(t.input_schema)] for t in self.tools],
            # 1 and 1.0 are the same temperature, and a cassette reads every temperature back
            # as a float: hash the float.
            "temperature": float(self.temperature),
            "max_tokens": self.max_tokens,
        }
        # The request parameters are hashed only when set, so digests (and cassettes) of
        # requests without them stay what they were.
        for name, value in (
            ("stop", list(self.stop)),
            ("top_p", self.top_p),
            ("seed", self.seed),
            ("tool_choice", self.tool_choice),
            ("response_format", _plain(self.response_format)),
        ):
            if value not in (None, []):
                canonical[name] = value
        blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=str)
        # surrogatepass: a lone surrogate in a message must still hash, not crash the mock.
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def request_digest(request: LLMRequest) -> str:
    """A hash of what determines a request's answer (not its id, priority or tracing).

    It hashes the request's model, messages, tools, temperature and max_tokens, and stop,
    top_p, seed, tool_choice and response_format when they are set (see
    :class:`RequestContent`); a fixture's ``match.request_hash`` is compared with it.
    """
    return RequestContent.of(request).digest()


def _last_user_message(request: LLMRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


@attrs.frozen(kw_only=True)
class MockMatch:
    """Which requests a fixture answers; every field given must match (none given: all do).

    Attributes:
        request_hash: The request's :func:`request_digest` (an exact content match; what
            recorded cassettes use).
        model: The configured model id.
        last_role: The role of the conversation's last message (e.g. ``"tool"`` for the turn
            after a tool result, ``"user"`` for a new question).
        last_user_message: The exact text of the last user message.
        last_user_regex: A regular expression searched for in the last user message.
    """

    request_hash: str | None = None
    model: str | None = None
    last_role: str | None = None
    last_user_message: str | None = None
    last_user_regex: str | None = None

    def matches(self, model_id: str, request: LLMRequest, *, digest: str | None = None) -> bool:
        """Whether this answers ``request`` sent to the model ``model_id``.

        Args:
            model_id: The configured model id the request went to.
            request: The request.
            digest: ``request_digest(request)``, if already computed.
        """
        if self.model is not None and self.model != model_id:
            return False
        if self.last_role is not None and request.messages[-1].role != self.last_role:
            return False
        if self.request_hash is not None and self.request_hash != (
            digest if digest is not None else request_digest(request)
        ):
            return False
        if self.last_user_message is None and self.last_user_regex is None:
            return True
        last = _last_user_message(request)
        if self.last_user_message is not None and last != self.last_user_message:
            return False
        return self.last_user_regex is None or re.search(self.last_user_regex, last) is not None


@attrs.frozen(kw_only=True)
class MockRecording:
    """Where a recorded cassette entry came from (metadata; replay does not depend on it).

    Attributes:
        recorded_at: When the answer arrived, ISO 8601 in UTC.
        latency_ms: How long the provider took to answer, in milliseconds.
        model: The configured model id.
        model_name: The provider's name for the model.
        provider: The model's provider (a :class:`ModelProvider` value).
        request_id: The recorded request's id (to find it in the gateway's logs).
    """

    recorded_at: str
    latency_ms: float
    model: str
    model_name: str
    provider: str
    request_id: str


@attrs.frozen(kw_only=True)
class MockFixture:
    """A scripted answer: what to match, and what to answer with.

    Attributes:
        match: Which requests it answers.
        request: The full content of the one request it answers; its hash becomes
            ``match.request_hash`` (cassettes write it; it may be written by hand too).
        content: The response text.
        tool_calls: Tool calls to answer with.
        usage: Token usage to report (estimated from the text when absent).
        finish_reason: The finish reason (``"tool_calls"`` when there are tool calls, else
            ``"stop"``, when absent).
        provider_request_id: The provider's id for the call (``"mock-<hash>"`` when absent).
        latency_s: Simulated latency (the mock's default when absent).
        error: Fail with this instead of answering.
        recorded: Metadata of a recorded answer.
    """

    match: MockMatch = attrs.field(factory=MockMatch)
    request: RequestContent | None = None
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    provider_request_id: str | None = None
    latency_s: float | None = None
    error: MockError | None = None
    recorded: MockRecording | None = None

    @classmethod
    def from_response(
        cls,
        response: LLMResponse,
        *,
        match: MockMatch | None = None,
        request: RequestContent | None = None,
        recorded: MockRecording | None = None,
    ) -> MockFixture:
        """A fixture answering with ``response``'s content, tool calls, usage and finish reason.

        Args:
            response: The answer to script.
            match: Which requests it answers (all, when absent).
            request: The exact request it answers (sets ``match.request_hash``).
            recorded: Recording metadata.
        """
        match = match or MockMatch()
        if request is not None:
            match = attrs.evolve(match, request_hash=request.digest())
        return cls(
            match=match,
            request=request,
            content=response.content,
            tool_calls=response.tool_calls,
            usage=response.usage,
            finish_reason=response.finish_reason,
            provider_request_id=response.provider_request_id,
            recorded=recorded,
        )


def _structure_tool(data: Any, _: type[Any]) -> LLMTool:
    # LLMTool has a hand-written __init__ (it also takes `parameters=`), so cattrs cannot
    # generate its hook; this one keeps the same field names and the same strictness.
    if not isinstance(data, Mapping):
        raise TypeError(f"a tool is a JSON object, got {type(data).__name__}")
    extra = set(data) - {"name", "description", "input_schema"}
    if extra:
        raise ValueError(f"extra fields found ({', '.join(sorted(extra))})")
    return LLMTool(data["name"], data.get("description", ""), data.get("input_schema"))


# Reading rejects unknown keys (a typo must not silently match everything); writing omits
# defaults so files stay short and readable.
_fixtures_converter = cattrs.Converter(forbid_extra_keys=True)
_fixtures_converter.register_structure_hook(LLMTool, _structure_tool)
_writer = cattrs.Converter(omit_if_default=True)


def _describe(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, GatewayError | ValueError) and not isinstance(exc, KeyError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_fixture(fixture: MockFixture, where: str) -> MockFixture:
    """Check what cattrs cannot; fill ``match.request_hash`` from ``request``."""

    def fail(field: str, value: object, fix: str) -> ConfigError:
        return ConfigError(f"{where}.{field} is {value!r}; {fix}")

    match = fixture.match
    if match.request_hash is not None and not _HASH.fullmatch(match.request_hash):
        raise fail(
            "match.request_hash",
            match.request_hash,
            "use the 64 lower-case hex digits of request_digest(request)",
        )
    if match.last_user_regex is not None:
        try:
            re.compile(match.last_user_regex)
        except re.error as exc:
            raise fail(
                "match.last_user_regex", match.last_user_regex, f"not a regex: {exc}"
            ) from None
    if match.last_role is not None and match.last_role not in ROLES:
        raise fail("match.last_role", match.last_role, f"use one of {', '.join(sorted(ROLES))}")
    if fixture.latency_s is not None and not (
        _is_number(fixture.latency_s) and fixture.latency_s >= 0
    ):
        raise fail("latency_s", fixture.latency_s, "use a number of seconds >= 0")
    if fixture.usage is not None:
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            value = getattr(fixture.usage, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise fail(f"usage.{name}", value, "use an int >= 0")
    if fixture.error is not None:
        error = fixture.error
        if isinstance(error.status_code, bool) or error.status_code not in range(100, 600):
            raise fail("error.status_code", error.status_code, "use an HTTP status, 100 to 599")
        if error.retry_after_s is not None and not (
            _is_number(error.retry_after_s) and error.retry_after_s >= 0
        ):
            raise fail("error.retry_after_s", error.retry_after_s, "use seconds >= 0, or null")
    if fixture.request is not None:
        content = fixture.request
        if not content.messages:
            raise fail("request.messages", [], "give at least one message")
        if not (_is_number(content.temperature) and 0 <= content.temperature <= 2):
            raise fail("request.temperature", content.temperature, "use a number from 0 to 2")
        digest = content.digest()
        if match.request_hash is None:
            return attrs.evolve(fixture, match=attrs.evolve(match, request_hash=digest))
        if match.request_hash != digest:
            raise fail(
                "match.request_hash",
                match.request_hash,
                f"it differs from the hash of this entry's request ({digest}); an edited "
                "request needs its hash removed (it is then computed) or updated",
            )
    return fixture


def _checked_fixtures(value: Iterable[MockFixture]) -> tuple[MockFixture, ...]:
    return tuple(_check_fixture(f, f"fixtures[{i}]") for i, f in enumerate(value))


@attrs.frozen(kw_only=True)
class MockFixtures:
    """An ordered list of fixtures; the first that matches a request answers it.

    The JSON form is ``{"version": 1, "fixtures": [{"match": {...}, "content": "...", ...}]}``
    (see ``docs/testing.md``); a recorded cassette is a file of the same form whose entries
    match by ``request_hash``. Requests no fixture matches get the deterministic default answer,
    or fail with :class:`CassetteMissError` when the mock is told to.

    Attributes:
        version: The file format's version; only ``1`` exists.
        fixtures: The fixtures, in matching order.
    """

    version: int = FORMAT_VERSION
    fixtures: tuple[MockFixture, ...] = attrs.field(default=(), converter=_checked_fixtures)

    def __add__(self, other: MockFixtures) -> MockFixtures:
        """The fixtures of ``self``, then those of ``other`` (``self``'s win a tie)."""
        return MockFixtures(fixtures=self.fixtures + other.fixtures)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> MockFixtures:
        """Build fixtures from their JSON form.

        Args:
            data: The decoded JSON.
            source: Where ``data`` came from, for error messages.

        Raises:
            ConfigError: The data is not a valid fixtures document; the message names the field.
        """
        what = "mock fixtures" if source is None else f"mock fixtures in {source!r}"
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"invalid {what}: expected a JSON object {{'version': 1, 'fixtures': [...]}}, "
                f"got {type(data).__name__}"
            )
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise ConfigError(
                f"invalid {what}: version is {version!r}; this llm_gateway reads version "
                f"{FORMAT_VERSION} files"
            )
        try:
            fixtures: MockFixtures = _fixtures_converter.structure(data, cls)
        except ClassValidationError as exc:
            problems = "; ".join(cattrs.transform_error(exc, format_exception=_describe))
            raise ConfigError(f"invalid {what}: {problems}") from None
        except ConfigError as exc:  # from _checked_fixtures, which names the field
            raise ConfigError(f"invalid {what}: {exc}") from None
        return fixtures

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MockFixtures:
        """Read a fixtures (or cassette) JSON file.

        Raises:
            ConfigError: The file cannot be read or is invalid; the message names the field.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read mock fixtures from {os.fspath(path)!r}: {exc}"
            ) from None
        return cls.from_dict(data, source=os.fspath(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (fields at their defaults are left out)."""
        return {
            "version": self.version,
            "fixtures": [_writer.unstructure(f, MockFixture) for f in self.fixtures],
        }

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form to ``path`` atomically.

        It is written to a temporary file in the same directory, then renamed over ``path``: a
        reader never sees half a file, and a failed write leaves the previous file unchanged.
        """
        path = Path(path)
        data = self.to_dict()
        try:
            text = json.dumps(data, indent=2, ensure_ascii=False)
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escape everything instead
            text = json.dumps(data, indent=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
                # On disk before the rename: a crash then leaves the old file or the new one.
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def find(
        self, model_id: str, request: LLMRequest, *, digest: str | None = None
    ) -> MockFixture | None:
        """The first fixture that answers ``request`` sent to ``model_id``, or ``None``."""
        if digest is None and any(f.match.request_hash is not None for f in self.fixtures):
            digest = request_digest(request)
        for fixture in self.fixtures:
            if fixture.match.matches(model_id, request, digest=digest):
                return fixture
        return None

    def recorded_models(self) -> dict[str, tuple[str, str]]:
        """Model id -> (provider, model name), for every model a recorded entry names."""
        return {
            f.recorded.model: (f.recorded.provider, f.recorded.model_name)
            for f in self.fixtures
            if f.recorded is not None
        }


def _kept(history: list[_T] | None, name: str) -> list[_T]:
    if history is None:
        raise ConfigError(
            f"this mock keeps no request history, so it has no {name}; construct it with "
            "keep_history=True (MockLLMGateway's default) to read it"
        )
    return history


@attrs.define
class MockScript:
    """What every mock provider of one gateway shares: fixtures, latency, failures, history.

    Attributes:
        keep_history: Keep :attr:`received` and :attr:`misses`. Off by default: a long-running
            gateway on the mock provider must not keep every request it served.
        fixtures: Scripted answers.
        latency_s: Default simulated latency of every call.
        on_missing: What a request no fixture matches gets: ``"default"``, the deterministic
            default answer; ``"error"``, a :class:`CassetteMissError`.
        source: The file the fixtures came from, for error messages.
    """

    fixtures: MockFixtures = attrs.field(factory=MockFixtures)
    latency_s: float = 0.0
    on_missing: OnMissing = "default"
    source: str | None = None
    keep_history: bool = attrs.field(default=False, kw_only=True)
    _received: list[LLMRequest] | None = attrs.field(init=False, repr=False)
    _misses: list[CassetteMissError] | None = attrs.field(init=False, repr=False)
    _failures: deque[tuple[str | None, MockError]] = attrs.field(factory=deque, init=False)
    _answers: deque[tuple[str | None, MockFixture]] = attrs.field(factory=deque, init=False)

    @_received.default
    def _received_default(self) -> list[LLMRequest] | None:
        return [] if self.keep_history else None

    @_misses.default
    def _misses_default(self) -> list[CassetteMissError] | None:
        return [] if self.keep_history else None

    @property
    def received(self) -> list[LLMRequest]:
        """Every request that reached a mock provider, in arrival order (requests cancelled
        before dispatch never get here).

        Raises:
            ConfigError: The script was made without ``keep_history=True``.
        """
        return _kept(self._received, "received requests")

    @property
    def misses(self) -> list[CassetteMissError]:
        """Every :class:`CassetteMissError` raised, in order (also when the code under test
        caught it).

        Raises:
            ConfigError: The script was made without ``keep_history=True``.
        """
        return _kept(self._misses, "misses")

    def fail_next(
        self, count: int = 1, *, error: MockError | None = None, model: str | None = None
    ) -> None:
        """Make the next ``count`` calls (to ``model``, or to any model) fail with ``error``."""
        for _ in range(count):
            self._failures.append((model, error or MockError()))

    def answer_next(
        self, *answers: MockFixture | LLMResponse | str, model: str | None = None
    ) -> None:
        """Answer the next calls (to ``model``, or to any model) with ``answers``, in order.

        A queued answer comes before any fixture, whatever the request; its ``match`` is
        ignored. It is how a test scripts a whole conversation turn by turn.

        Args:
            answers: Each a :class:`MockFixture`, an :class:`LLMResponse` (its content, tool
                calls, usage and finish reason), or a plain text answer.
            model: Only calls to this configured model id take them.
        """
        for answer in answers:
            if isinstance(answer, str):
                answer = MockFixture(content=answer)
            elif isinstance(answer, LLMResponse):
                answer = MockFixture.from_response(answer)
            self._answers.append((model, answer))

    @staticmethod
    def _take(queue: deque[tuple[str | None, Any]], model_id: str) -> Any:
        for i, (model, item) in enumerate(queue):
            if model is None or model == model_id:
                del queue[i]
                return item
        return None

    def _take_failure(self, model_id: str) -> MockError | None:
        failure: MockError | None = self._take(self._failures, model_id)
        return failure

    def _take_answer(self, model_id: str) -> MockFixture | None:
        answer: MockFixture | None = self._take(self._answers, model_id)
        return answer

    def _served(self, request: LLMRequest) -> None:
        if self._received is not None:
            self._received.append(request)

    def _missed(self, miss: CassetteMissError) -> None:
        if self._misses is not None:
            self._misses.append(miss)


_PIECE = re.compile(r"\s*\S+\s*|\s+")


def mock_chunks(text: str) -> list[str]:
    """How the mock streams ``text``: word by word, each word with the spaces around it.

    Deterministic, and joining the pieces gives ``text`` back.
    """
    return _PIECE.findall(text)


def default_answer(digest: str, model_name: str) -> str:
    """The text the mock answers a request no fixture matches."""
    return f"Mock answer {digest[:12]} from {model_name}."


class MockProvider:
    """A provider that answers from fixtures or a deterministic default, without a network.

    An answer is chosen in this order: a queued answer (:meth:`MockScript.answer_next`), the
    first matching fixture, then the default, ``"Mock answer <digest> from <model_name>."``,
    where the digest hashes the request's model, messages, tools, temperature and max_tokens
    (and stop, top_p, seed, tool_choice and response_format when set), or a
    :class:`CassetteMissError` when ``on_missing`` is ``"error"``. With ``response_format``
    the default answer is the JSON ``{"mock_answer": "Mock answer ..."}``, and a fixture's
    content must be JSON (``LLMResponse.parsed`` holds it; otherwise the request fails with
    ``ProviderResponseError``, as from a real provider). A failure queued with
    :meth:`MockScript.fail_next` replaces whatever was chosen.
    """

    def __init__(self, model_id: str, model_name: str, script: MockScript) -> None:
        self.model_id = model_id
        self.model_name = model_name
        self.script = script

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request`` as described in the class docstring."""
        script = self.script
        script._served(request)
        digest = request_digest(request)
        fixture = script._take_answer(self.model_id)
        if fixture is None:
            fixture = script.fixtures.find(self.model_id, request, digest=digest)
        if fixture is None and script.on_missing == "error":
            await anyio.lowlevel.checkpoint()
            miss = CassetteMissError(
                request_id=request.request_id,
                model=self.model_id,
                request_hash=digest,
                source=script.source,
            )
            script._missed(miss)
            raise miss
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
        provider_request_id = f"mock-{digest[:16]}"
        if fixture is None:
            content = default_answer(digest, self.model_name)
            tool_calls: tuple[ToolCall, ...] = ()
            usage = None
            finish_reason = None
        else:
            content, tool_calls = fixture.content, fixture.tool_calls
            usage, finish_reason = fixture.usage, fixture.finish_reason
            provider_request_id = fixture.provider_request_id or provider_request_id
        if fixture is None and request.response_format is not None:
            # Structured output asked for: the default answer is JSON too.
            content = json.dumps({"mock_answer": content})
        try:
            parsed = structured_answer(request, content)
        except ValueError as exc:
            raise ProviderResponseError(f"the mock's answer is unusable: {exc}") from None
        if usage is None:
            prompt = sum(heuristic_count(m.content) + 4 for m in request.messages)
            usage = Usage(input_tokens=prompt, output_tokens=heuristic_count(content))
        return LLMResponse(
            request_id=request.request_id,
            content=content,
            parsed=parsed,
            model=self.model_id,
            tool_calls=tool_calls,
            usage=usage,
            finish_reason=finish_reason or ("tool_calls" if tool_calls else "stop"),
            provider_request_id=provider_request_id,
        )

    async def stream(self, request: LLMRequest, sink: ChunkSink) -> LLMResponse:
        """Stream the answer :meth:`complete` gives, word by word (see :func:`stream_response`).

        The latency and any scripted failure come before the first chunk.
        """
        return await stream_response(await self.complete(request), sink)


async def stream_response(response: LLMResponse, sink: ChunkSink) -> LLMResponse:
    """Stream a whole ``response`` to ``sink`` as the mock does, and return it.

    The text goes word by word (:func:`mock_chunks`), then each tool call as one
    :class:`ToolCallDelta` with its whole arguments.
    """
    for piece in mock_chunks(response.content):
        await sink.send(piece)
    for i, call in enumerate(response.tool_calls):
        arguments = json.dumps(_plain(call.arguments), ensure_ascii=False)
        await sink.send("", (ToolCallDelta(i, call.id, call.name, arguments),))
    return response


def as_fixtures(
    value: MockFixtures | Mapping[str, Any] | str | os.PathLike[str] | Iterable[MockFixture],
) -> MockFixtures:
    """Fixtures from a :class:`MockFixtures`, their dict form, a file path, or fixture objects."""
    if isinstance(value, MockFixtures):
        return value
    if isinstance(value, str | os.PathLike):
        return MockFixtures.load(value)
    if isinstance(value, Mapping):
        return MockFixtures.from_dict(value)
    return MockFixtures(fixtures=value)
