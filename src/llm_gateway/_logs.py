"""JSON Lines logs of batches and errors, written off the event loop.

Records are metadata only (ids, sizes, timings, statuses, token counts): callers of this module
never pass prompt text, completion text, error messages from providers, or keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

__all__ = ["JsonlLog"]

BATCHES = "batches.jsonl"
ERRORS = "errors.jsonl"


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class JsonlLog:
    """Appends records to ``{log_dir}/gateway/{batches,errors}.jsonl``.

    Callers hand records over with :meth:`write` (non-blocking); the task run by :meth:`run`
    gathers whatever has arrived and appends it in a worker thread, so a slow disk never stalls
    the event loop. With ``log_dir=None`` everything is a no-op.
    """

    def __init__(self, log_dir: str | None) -> None:
        self.directory = None if log_dir is None else Path(log_dir) / "gateway"
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[str, Mapping[str, Any]]
        ](math.inf)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def write(self, file: str, record: Mapping[str, Any]) -> None:
        """Queue ``record`` for ``file`` (:data:`BATCHES` or :data:`ERRORS`)."""
        if self.directory is not None:
            self._send.send_nowait((file, record))

    def close(self) -> None:
        """No more records; :meth:`run` writes what is pending and returns."""
        self._send.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        directory = self.directory
        if directory is not None:
            await anyio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
        task_status.started()
        with self._receive:
            async for first in self._receive:
                pending = [first]
                while True:
                    try:
                        pending.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # Shielded: records already taken off the stream are written even if the
                # gateway is being cancelled.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._append, pending)

    def _append(self, records: list[tuple[str, Mapping[str, Any]]]) -> None:
        assert self.directory is not None
        by_file: dict[str, list[str]] = {}
        for file, record in records:
            line = json.dumps(record, ensure_ascii=False)
            by_file.setdefault(file, []).append(line)
        for file, lines in by_file.items():
            with (self.directory / file).open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
