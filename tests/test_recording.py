"""Writing cassettes never ruins a good one: the write is atomic, an empty run writes nothing.

The recorder lives in the core (``llm_gateway._recording``) because ``Gateway(record_to=...)``
uses it; the core never imports ``llm_gateway.testing`` (see test_layout.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from llm_gateway import Gateway, LLMResponse, ModelConfig, ProviderError, RequestPriority
from llm_gateway._recording import CassetteRecorder
from llm_gateway.providers import MockProvider, MockScript
from llm_gateway.testing import MockError, MockFixture, MockFixtures, MockMatch

from ._support import ask

pytestmark = pytest.mark.anyio

MODEL = ModelConfig(provider="mock", model_name="m")


def recorder_of(path: Path, question: str, answer: str) -> CassetteRecorder:
    """A recorder holding one answered question."""
    recorder = CassetteRecorder(path)
    request = ask("m", question)
    response = LLMResponse(request_id=request.request_id, content=answer, model="m")
    recorder.add("m", MODEL, request, response, 0.1)
    return recorder


def good_cassette(path: Path) -> bytes:
    recorder_of(path, "hello", "hi").write()
    return path.read_bytes()


class _FullDisk:
    """A text file whose writes stop half-way with ENOSPC, as on a full disk."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, text: str) -> int:
        self.file.write(text[: len(text) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_failing_half_way_leaves_the_previous_cassette_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cassette = tmp_path / "session.json"
    before = good_cassette(cassette)
    recorder = recorder_of(cassette, "a new question", "new")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space left"):
        recorder.write()
    monkeypatch.undo()
    assert cassette.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["session.json"]
    (entry,) = MockFixtures.load(cassette).fixtures
    assert entry.content == "hi"


def test_a_successful_write_replaces_the_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "session.json"
    good_cassette(cassette)
    recorder = recorder_of(cassette, "another", "other")
    recorder.write()
    assert [f.content for f in MockFixtures.load(cassette).fixtures] == ["other"]
    assert [p.name for p in tmp_path.iterdir()] == ["session.json"]


async def test_a_run_whose_calls_all_failed_leaves_the_cassette_as_it_was(tmp_path: Path) -> None:
    cassette = tmp_path / "session.json"
    before = good_cassette(cassette)
    outage = tmp_path / "outage.json"
    MockFixtures(fixtures=[MockFixture(error=MockError(status_code=400))]).dump(outage)
    broken = ModelConfig(provider="mock", model_name="m", provider_options={"fixtures": outage})
    async with Gateway(models={"m": broken}, log_dir=None, record_to=cassette) as gw:
        with pytest.raises(ProviderError):
            await gw.request(ask("m", "hello", priority=RequestPriority.HIGH))
    assert cassette.read_bytes() == before


async def test_the_recorder_wraps_any_provider_and_records_its_answers(tmp_path: Path) -> None:
    fixtures = MockFixtures(
        fixtures=[MockFixture(match=MockMatch(last_user_message="hello"), content="recorded")]
    )
    recorder = CassetteRecorder(tmp_path / "c.json")
    provider = recorder.wrap("m", MODEL, MockProvider("m", "m", MockScript(fixtures=fixtures)))
    response = await provider.complete(ask("m", "hello"))
    assert response.content == "recorded"
    recorder.write()
    (entry,) = MockFixtures.load(tmp_path / "c.json").fixtures
    assert entry.content == "recorded" and entry.recorded is not None
