"""Observers only watch: a failing observer or log disk never fails, delays or drops a request."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from llm_gateway import LLMResponse
from llm_gateway._observe import Event
from llm_gateway._stats import StatsObserver

from ._support import RecordingGateway, ask, mock_model

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool]) -> None:
    """Wait (real time: the log writer works in a thread) until ``condition()`` holds."""
    for _ in range(1000):
        if condition():
            return
        await anyio.to_thread.run_sync(time.sleep, 0.01)
    raise AssertionError("the condition never held")


async def run_requests(gw: RecordingGateway, n: int) -> list[float]:
    """``n`` requests, some failing once; the caller's time for each."""
    times: list[float] = []

    async def one(i: int) -> None:
        start = anyio.current_time()
        response = await gw.request(ask(request_id=f"r{i}"))
        assert isinstance(response, LLMResponse)
        times.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return times


async def test_a_failing_observer_is_counted_and_reported_once_and_harms_no_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: StatsObserver, event: Event) -> None:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(StatsObserver, "observe", broken)
    caplog.set_level(logging.WARNING, logger="llm_gateway")
    async with RecordingGateway({"m": mock_model()}, latency=lambda r: 0.5) as gw:
        times = await run_requests(gw, 20)
    assert times == [0.5] * 20  # not failed, not delayed
    errors = gw.get_stats().observer_errors
    assert errors["stats"] > 20  # every event failed...
    warnings = [r for r in caplog.records if "stats observer failed" in r.getMessage()]
    assert len(warnings) == 1  # ...and was reported once


def full_disk_log_dir(tmp_path: Path) -> str:
    """A log directory whose files are /dev/full: every write fails with ENOSPC."""
    gateway_dir = tmp_path / "gateway"
    gateway_dir.mkdir()
    for name in ("batches.jsonl", "errors.jsonl"):
        os.symlink("/dev/full", gateway_dir / name)
    return str(tmp_path)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
async def test_a_full_disk_is_counted_and_the_gateway_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llm_gateway")
    gw = RecordingGateway(
        {"m": mock_model()}, latency=lambda r: 0.5, log_dir=full_disk_log_dir(tmp_path)
    )
    async with gw:
        first = await run_requests(gw, 10)
        await until(lambda: gw.get_stats().observer_errors["jsonl_log"] >= 1)
        second = await run_requests(gw, 10)
        await until(lambda: gw.get_stats().observer_errors["jsonl_log"] >= 2)
    assert first == second == [0.5] * 10
    stats = gw.get_stats()
    assert stats.total.completed == 20
    assert stats.observer_errors["jsonl_log"] >= 2  # each failed flush is counted
    warnings = [r for r in caplog.records if "jsonl_log observer failed" in r.getMessage()]
    assert len(warnings) == 1


async def test_log_storage_lost_mid_run_then_back_resumes_logging(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    gw = RecordingGateway({"m": mock_model()}, latency=lambda r: 0.5, log_dir=str(logs))
    async with gw:
        await run_requests(gw, 3)
        batches = logs / "gateway" / "batches.jsonl"
        await until(batches.exists)
        # The directory disappears and a file takes its place: every write now fails.
        shutil.rmtree(logs / "gateway")
        (logs / "gateway").write_text("not a directory")
        assert await run_requests(gw, 3) == [0.5] * 3
        await until(lambda: gw.get_stats().observer_errors["jsonl_log"] >= 1)
        # Storage comes back: the next records are written.
        (logs / "gateway").unlink()
        assert await run_requests(gw, 3) == [0.5] * 3
        await until(batches.exists)
    assert gw.get_stats().total.completed == 9
    assert batches.exists()
    assert len(batches.read_text().splitlines()) >= 1
