"""Recording a gateway's answers to a cassette: what ``Gateway(record_to=...)`` does.

A cassette is a fixtures file (``docs/testing.md``) whose entries each hold one request's
content, its answer, and metadata, and match by ``request_hash``;
``llm_gateway.testing.MockLLMGateway(cassette=...)`` replays it. What is recorded is what the
gateway's provider interface sees: request content and response content. Keys, headers and
endpoints never reach this level, so they cannot be written.
"""

from __future__ import annotations

import datetime
import os

import anyio
import attrs

from ._clock import virtual_clock
from ._config import ModelConfig
from ._exceptions import ConfigError
from ._models import LLMRequest, LLMResponse
from ._stream import ChunkSink
from .providers._base import Provider
from .providers._mock import MockFixture, MockFixtures, MockRecording, RequestContent

__all__ = ["CassetteRecorder", "require_real_time"]

_REAL_TIME_HINT = (
    "recording needs real time: this code runs on a virtual clock ({clock}), which jumps ahead "
    "while a real provider's network I/O is pending, so every recorded call would time out. "
    "Record on the real clock: with the anyio_backend fixture of docs/testing.md, run pytest "
    "with --llm-gateway-record (it picks the real clock then); in a pytest-trio test, drop the "
    "autojump_clock fixture while recording; outside pytest, call anyio.run() without a "
    "virtual clock or loop_factory"
)


def require_real_time() -> None:
    """Refuse to record real providers on a virtual clock (trio's ``MockClock``, looptime's loop).

    Call it on the event loop that will make the calls. A provider doing real network I/O
    cannot run on a virtual clock: the clock jumps to the next deadline (the request timeout)
    whenever every task waits, and the I/O is a wait. In-process providers (the mock, test
    doubles) can, so this is not checked for every recording.

    Raises:
        ConfigError: The running event loop's clock is virtual; the message says what to do.
    """
    clock = virtual_clock()
    if clock is not None:
        raise ConfigError(_REAL_TIME_HINT.format(clock=clock))


class CassetteRecorder:
    """Collects the request -> response pairs of one gateway and writes them as a cassette.

    The first answer to each distinct request content is kept (replay is deterministic: one
    answer per request). Failed and cancelled calls are not recorded.

    Args:
        path: The cassette file; written (replaced) by :meth:`write`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.entries: dict[str, MockFixture] = {}

    def wrap(self, model_id: str, config: ModelConfig, provider: Provider) -> Provider:
        """``provider``, recording every answer it gives."""
        return _RecordingProvider(self, model_id, config, provider)

    def add(
        self,
        model_id: str,
        config: ModelConfig,
        request: LLMRequest,
        response: LLMResponse,
        latency_s: float,
    ) -> None:
        """Record ``response`` as the answer to ``request``."""
        content = RequestContent.of(request)
        digest = content.digest()
        if digest in self.entries:
            return
        recorded = MockRecording(
            recorded_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            latency_ms=round(latency_s * 1000, 3),
            model=model_id,
            model_name=config.model_name,
            provider=config.provider.value,
            request_id=request.request_id,
        )
        self.entries[digest] = MockFixture.from_response(
            response, request=content, recorded=recorded
        )

    def write(self) -> None:
        """Write every recorded pair to :attr:`path`, replacing the file.

        The cassette is written to a temporary file next to it and renamed over it only once
        complete, so a write that fails (a full disk, an interrupted run) leaves the previous
        cassette as it was. A run that recorded nothing (every call failed) writes nothing.

        Raises:
            OSError: The file could not be written; the previous cassette is unchanged.
        """
        if self.entries:
            MockFixtures(fixtures=tuple(self.entries.values())).dump(self.path)


@attrs.frozen
class _RecordingProvider:
    recorder: CassetteRecorder
    model_id: str
    config: ModelConfig
    provider: Provider

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = anyio.current_time()
        response = await self.provider.complete(request)
        self.recorder.add(
            self.model_id, self.config, request, response, anyio.current_time() - started
        )
        return response

    async def stream(self, request: LLMRequest, sink: ChunkSink) -> LLMResponse:
        """Stream through the wrapped provider; the whole answer is recorded (and replayed
        in the mock's chunks)."""
        started = anyio.current_time()
        response: LLMResponse = await self.provider.stream(request, sink)  # type: ignore[attr-defined]
        self.recorder.add(
            self.model_id, self.config, request, response, anyio.current_time() - started
        )
        return response
