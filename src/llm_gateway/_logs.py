"""JSON Lines logs of batches and errors: an observer, written off the event loop.

Records are metadata only (ids, sizes, timings, statuses, token counts): never prompt text,
completion text, provider error messages or keys. Logging only watches: a record that cannot be
built, or a disk that fails (full, read-only, gone), is counted in
``get_stats().observer_errors["jsonl_log"]`` and reported once through :mod:`logging`, and the
gateway keeps serving; the writer tries again with the next records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ._exceptions import ProviderError, RequestCancelledError, RequestTimeoutError
from ._observe import AttemptFailed, BatchFinished, Event, Finished
from ._queue import Entry

__all__ = ["BATCHES", "ERRORS", "JsonlLog"]

BATCHES = "batches.jsonl"
ERRORS = "errors.jsonl"

GATHER_S = 0.05
"""How long the writer lets records gather before it hands them to a worker thread."""

FLUSH_ON_EXIT_S = 5.0
"""How long a closing gateway waits for its last records to reach the disk."""


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def outcome_name(error: BaseException | None) -> str:
    """How a request ended, as the logs say it."""
    if error is None:
        return "ok"
    if isinstance(error, RequestCancelledError):
        return "cancelled"
    if isinstance(error, RequestTimeoutError):
        return "timeout"
    return "error"


def _ttft_ms(entry: Entry) -> float | None:
    stream = entry.stream
    if stream is None or not stream.committed:
        return None
    return _ms(stream.committed_at - entry.enqueued_at)


def _stream_fields(entries: Sequence[Entry]) -> dict[str, Any]:
    """A batch record's stream figures, per entry, when the batch holds a stream."""
    if all(e.stream is None for e in entries):
        return {}
    return {
        "stream": [e.stream is not None for e in entries],
        "ttft_ms": [_ttft_ms(e) for e in entries],
        "chunks": [None if e.stream is None else e.stream.chunks for e in entries],
    }


class JsonlLog:
    """Appends records to ``{log_dir}/gateway/{batches,errors}.jsonl``.

    :meth:`observe` turns events into records and hands them over without blocking; the task
    run by :meth:`run` gathers whatever has arrived and appends it in a worker thread, so a
    slow disk never stalls the event loop.

    Args:
        log_dir: The log directory.
        report: Called (with this observer's name) for each failure to write.
    """

    name = "jsonl_log"

    def __init__(self, log_dir: str, report: Callable[[str], None]) -> None:
        self.directory = Path(log_dir) / "gateway"
        self._report = report
        self._pending: list[tuple[str, str]] = []  # (file, line) not yet handed to the thread
        self._arrived = anyio.Event()

    def observe(self, event: Event) -> None:
        if isinstance(event, BatchFinished):
            self._add(BATCHES, self._batch_record(event))
        elif isinstance(event, AttemptFailed):
            record = self._error_record(event.entry, event.error, event.phase, event.decision)
            self._add(ERRORS, record)
        elif (
            isinstance(event, Finished)
            and event.error is not None
            and not event.reported  # already logged as a failed attempt's decision
            and not isinstance(event.error, RequestCancelledError)
        ):
            self._add(ERRORS, self._error_record(event.entry, event.error, event.phase))

    def _add(self, file: str, record: dict[str, Any]) -> None:
        # ensure_ascii: any text a record holds is written as valid JSON, lone surrogates too.
        self._pending.append((file, json.dumps(record, default=str)))
        self._arrived.set()

    def _batch_record(self, event: BatchFinished) -> dict[str, Any]:
        entries = event.entries
        statuses = set(event.outcomes)
        status = statuses.pop() if len(statuses) == 1 else "partial"
        usage = [e.future._value.usage for e in entries if e.future._value is not None]
        requests = [e.request for e in entries]
        return {
            "timestamp": utc_timestamp(),
            "model": event.model_id,
            "batch_size": len(entries),
            "request_ids": [r.request_id for r in requests],
            "priorities": [r.priority.name for r in requests],
            "agent_ids": [r.agent_id for r in requests],
            "trace_ids": [r.trace_id for r in requests],
            "queue_wait_ms": [_ms(event.dispatched_at - e.enqueued_at) for e in entries],
            "latency_ms": _ms(event.at - event.dispatched_at),
            "status": status,
            "outcomes": list(event.outcomes),
            "input_tokens": sum(u.input_tokens for u in usage),
            "output_tokens": sum(u.output_tokens for u in usage),
        } | _stream_fields(entries)

    def _error_record(
        self, entry: Entry, error: BaseException | None, phase: str, decision: str = "fail"
    ) -> dict[str, Any]:
        request = entry.request
        record: dict[str, Any] = {
            "timestamp": utc_timestamp(),
            "model": entry.model_id,
            "request_id": request.request_id,
            "agent_id": request.agent_id,
            "trace_id": request.trace_id,
            "priority": request.priority.name,
            "phase": phase,
            "attempt": len(entry.failures),
            "error": type(error).__name__ if error is not None else "CooldownPastDeadline",
            "decision": decision,
        }
        stream = entry.stream
        if stream is not None:
            record["stream"] = True
            record["ttft_ms"] = _ttft_ms(entry)
            record["chunks"] = stream.chunks
        if isinstance(error, ProviderError):
            record["status_code"] = error.status_code
            record["provider_request_id"] = error.provider_request_id
            record["retry_after_s"] = error.retry_after_s
        return record

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write records as they arrive, until cancelled; then write what is left (bounded)."""
        task_status.started()
        try:
            while True:
                await self._arrived.wait()
                # Let records gather: one hop to the worker thread for many of them.
                await anyio.sleep(GATHER_S)
                self._arrived = anyio.Event()
                await self._flush()
        finally:
            with anyio.move_on_after(FLUSH_ON_EXIT_S, shield=True):
                await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            # Shielded: records taken off the list are written even if the gateway closes.
            with anyio.CancelScope(shield=True):
                failed = await anyio.to_thread.run_sync(self._append, batch)
            if failed:
                self._report(self.name)

    def _append(self, lines: list[tuple[str, str]]) -> bool:
        """Append ``lines``; return whether the disk refused them (they are dropped)."""
        by_file: dict[str, list[str]] = {}
        for file, line in lines:
            by_file.setdefault(file, []).append(line)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for file, text in by_file.items():
                with (self.directory / file).open("a", encoding="utf-8") as f:
                    f.write("\n".join(text) + "\n")
        except (OSError, ValueError):
            return True
        return False
