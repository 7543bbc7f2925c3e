"""JSON Lines logs: one line per batch and per failure, metadata only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from llm_gateway import LLMRequest, ProviderError, RequestPriority

from ._support import RecordingGateway, ask, mock_model

pytestmark = pytest.mark.anyio

SECRET_PROMPT = "my-secret-prompt-text"
SECRET_KEY = "sk-ant-secret-key"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_batches_and_errors_are_logged_without_content(tmp_path: Path) -> None:
    def fail(request: LLMRequest) -> BaseException | None:
        if request.request_id == "bad":
            return ProviderError(f"provider echoed {SECRET_PROMPT}", status_code=400)
        return None

    config = mock_model(batch_size=3, api_key=SECRET_KEY)
    gateway = RecordingGateway(
        {"m": config}, latency=lambda r: 0.2, fail=fail, log_dir=str(tmp_path)
    )
    async with gateway as gw:
        requests = [
            ask(text=SECRET_PROMPT, request_id="good", agent_id="planner", trace_id="t-1"),
            ask(text=SECRET_PROMPT, request_id="bad", priority=RequestPriority.HIGH),
            ask(text=SECRET_PROMPT, request_id="other", priority=RequestPriority.LOW),
        ]
        # submit_nowait never yields, so all three are queued before the batcher runs.
        futures = [gw.submit_nowait(r) for r in requests]
        with pytest.raises(ProviderError):
            await futures[1]
        assert [(await f).request_id for f in (futures[0], futures[2])] == ["good", "other"]
    directory = tmp_path / "gateway"
    everything = "".join(p.read_text() for p in directory.iterdir())
    assert SECRET_PROMPT not in everything
    assert SECRET_KEY not in everything
    assert "answer to" not in everything  # completion text

    (batch,) = read_lines(directory / "batches.jsonl")
    assert batch["model"] == "m"
    assert batch["batch_size"] == 3
    # Taken in priority order: HIGH, NORMAL, LOW.
    assert batch["request_ids"] == ["bad", "good", "other"]
    assert batch["priorities"] == ["HIGH", "NORMAL", "LOW"]
    assert batch["agent_ids"] == [None, "planner", None]
    assert batch["trace_ids"] == [None, "t-1", None]
    assert batch["outcomes"] == ["error", "ok", "ok"]
    assert batch["status"] == "partial"
    assert batch["latency_ms"] == pytest.approx(200, abs=1)
    assert batch["queue_wait_ms"] == [0.0, 0.0, 0.0]
    assert (batch["input_tokens"], batch["output_tokens"]) == (6, 10)
    assert "timestamp" in batch

    (error,) = read_lines(directory / "errors.jsonl")
    assert error["request_id"] == "bad"
    assert error["error"] == "ProviderError"
    assert error["status_code"] == 400
    assert error["phase"] == "in_flight"


async def test_timeouts_in_the_queue_are_logged(tmp_path: Path) -> None:
    config = mock_model(max_concurrency=1)
    gateway = RecordingGateway({"m": config}, latency=lambda r: 5.0, log_dir=str(tmp_path))
    async with gateway as gw:
        await gw.submit(ask(priority=RequestPriority.HIGH))
        late = await gw.submit(ask(request_id="late", timeout_s=1.0))
        with pytest.raises(Exception, match="timed out"):
            await late
    (error,) = read_lines(tmp_path / "gateway" / "errors.jsonl")
    assert (error["request_id"], error["error"], error["phase"]) == (
        "late",
        "RequestTimeoutError",
        "queued",
    )


async def test_log_dir_none_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.1) as gw:
        await gw.request(ask())
    assert list(tmp_path.iterdir()) == []


async def test_default_log_dir_is_04_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_gateway import Gateway

    monkeypatch.chdir(tmp_path)
    async with Gateway({"models": {"m": {"provider": "mock", "model_name": "x"}}}) as gw:
        await gw.request(ask())
    await anyio.lowlevel.checkpoint()
    assert (tmp_path / "04_logs" / "gateway" / "batches.jsonl").exists()


async def test_a_deadline_in_flight_is_logged_as_in_flight(tmp_path: Path) -> None:
    config = mock_model(timeout_s=1.0)
    gateway = RecordingGateway({"m": config}, latency=lambda r: 5.0, log_dir=str(tmp_path))
    async with gateway as gw:
        with pytest.raises(Exception, match="timed out"):
            await gw.request(ask(request_id="slow", priority=RequestPriority.HIGH))
    (error,) = read_lines(tmp_path / "gateway" / "errors.jsonl")
    assert (error["request_id"], error["phase"], error["decision"]) == ("slow", "in_flight", "fail")
