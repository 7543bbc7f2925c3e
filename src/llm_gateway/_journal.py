"""The batch journal: an SQLite file that remembers every provider batch until it is settled.

It lives in ``GatewayConfig.state_dir`` (``batch_journal.sqlite3``) and holds, per batch: the
provider's batch id, the model, its status; per request in it: the ``custom_id`` sent to the
provider, the gateway's ``request_id``, and, only for a result no caller has collected yet, the
outcome (completion text included). Never a prompt, never a key.

Every access runs in a worker thread, one at a time (a :class:`anyio.CapacityLimiter` of 1),
so a slow disk never blocks the event loop; a write that was started finishes even if the task
that asked for it is cancelled (anyio waits for the thread), so a record is never half made.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ._config import JOURNAL_FILE
from ._exceptions import (
    BatchExpiredError,
    GatewayClosedError,
    ProviderError,
    ProviderResponseError,
    UnknownRequestError,
    status_error_type,
)
from ._models import LLMResponse, ToolCall, Usage

__all__ = ["JOURNAL_FILE", "RETENTION_S", "Journal", "PendingBatch", "open_journal"]

RETENTION_S = 29 * 24 * 3600.0
"""How long an uncollected result is kept after its batch ended (Anthropic keeps results 29
days too); older ones are deleted when a gateway opens the journal."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_key TEXT PRIMARY KEY,
    provider_batch_id TEXT,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS items (
    batch_key TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    structured INTEGER NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    PRIMARY KEY (batch_key, custom_id)
);
CREATE INDEX IF NOT EXISTS items_by_request ON items (request_id);
"""
# batches.status: "submitting" (sent to the provider, id not known yet), "submitted", "ended".
# items.state: "pending" (no result yet) or "ready" (an uncollected result, in items.result).

T = TypeVar("T")


class PendingBatch:
    """A submitted batch whose results have not all been settled (for resuming its polling)."""

    __slots__ = ("batch_id", "batch_key", "items")

    def __init__(self, batch_key: str, batch_id: str, items: dict[str, tuple[str, bool]]) -> None:
        self.batch_key = batch_key
        self.batch_id = batch_id
        self.items = items  # custom_id -> (request_id, structured) of the pending items


class Journal:
    """The open journal (see the module's docstring). Make it with :func:`open_journal`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._ready: dict[str, anyio.Event] = {}  # request_id -> set when its result is kept
        self._open = True

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    # -- the worker thread's side --------------------------------------------------------

    def _connect(self, now: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed record survives a power cut
        db.executescript(_SCHEMA)
        with db:
            # A crash between the provider's answer and the record of its id leaves a batch the
            # journal cannot find again: nothing to poll (docs/batch-api.md names this window).
            stale = "SELECT batch_key FROM batches WHERE status = 'submitting'"
            db.execute(f"DELETE FROM items WHERE batch_key IN ({stale})")
            db.execute("DELETE FROM batches WHERE status = 'submitting'")
            old = "SELECT batch_key FROM batches WHERE status = 'ended' AND ended_at < ?"
            db.execute(f"DELETE FROM items WHERE batch_key IN ({old})", (now - RETENTION_S,))
            db.execute(
                "DELETE FROM batches WHERE status = 'ended' AND ended_at < ?", (now - RETENTION_S,)
            )
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def closed(self) -> None:
        """The gateway closed the journal: wake whoever waits in :meth:`collect`."""
        self._open = False
        for event in self._ready.values():
            event.set()
        self._ready.clear()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the journal is closed"
        return self._db

    def _submitting(
        self, batch_key: str, model_id: str, items: list[tuple[str, str, bool]], now: float
    ) -> None:
        with self.db as db:
            db.execute(
                "INSERT INTO batches VALUES (?, NULL, ?, 'submitting', ?, NULL)",
                (batch_key, model_id, now),
            )
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, 'pending', NULL)",
                [(batch_key, c, r, int(s)) for c, r, s in items],
            )

    def _submitted(self, batch_key: str, batch_id: str) -> None:
        with self.db as db:
            db.execute(
                "UPDATE batches SET provider_batch_id = ?, status = 'submitted' "
                "WHERE batch_key = ?",
                (batch_id, batch_key),
            )

    def _discard(self, batch_key: str) -> None:
        with self.db as db:
            db.execute("DELETE FROM items WHERE batch_key = ?", (batch_key,))
            db.execute("DELETE FROM batches WHERE batch_key = ?", (batch_key,))

    def _settle(
        self,
        batch_key: str,
        done: list[str],
        kept: list[tuple[str, str]],
        ended: bool,
        now: float,
    ) -> None:
        with self.db as db:
            db.executemany(
                "DELETE FROM items WHERE batch_key = ? AND custom_id = ?",
                [(batch_key, c) for c in done],
            )
            db.executemany(
                "UPDATE items SET state = 'ready', result = ? "
                "WHERE batch_key = ? AND custom_id = ?",
                [(result, batch_key, c) for c, result in kept],
            )
            if ended:
                db.execute(
                    "UPDATE batches SET status = 'ended', ended_at = ? WHERE batch_key = ?",
                    (now, batch_key),
                )
            self._drop_if_empty(db, batch_key)

    @staticmethod
    def _drop_if_empty(db: sqlite3.Connection, batch_key: str) -> None:
        left = db.execute("SELECT 1 FROM items WHERE batch_key = ? LIMIT 1", (batch_key,))
        if left.fetchone() is None:
            db.execute("DELETE FROM batches WHERE batch_key = ?", (batch_key,))

    def _unfinished(self, model_id: str) -> list[PendingBatch]:
        rows = self.db.execute(
            "SELECT b.batch_key, b.provider_batch_id, i.custom_id, i.request_id, i.structured "
            "FROM batches b JOIN items i ON i.batch_key = b.batch_key "
            "WHERE b.model_id = ? AND b.status = 'submitted' AND i.state = 'pending' "
            "ORDER BY b.created_at",
            (model_id,),
        ).fetchall()
        batches: dict[str, PendingBatch] = {}
        for batch_key, batch_id, custom_id, request_id, structured in rows:
            batch = batches.setdefault(batch_key, PendingBatch(batch_key, batch_id, {}))
            batch.items[custom_id] = (request_id, bool(structured))
        return list(batches.values())

    def _take(self, request_id: str) -> tuple[str, str | None] | None:
        with self.db as db:
            row = db.execute(
                "SELECT batch_key, custom_id, state, result FROM items WHERE request_id = ? "
                "ORDER BY state = 'ready' DESC LIMIT 1",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            batch_key, custom_id, state, result = row
            if state != "ready":
                return ("pending", None)
            db.execute(
                "DELETE FROM items WHERE batch_key = ? AND custom_id = ?", (batch_key, custom_id)
            )
            ended = db.execute(
                "SELECT status FROM batches WHERE batch_key = ?", (batch_key,)
            ).fetchone()
            if ended is not None and ended[0] == "ended":
                self._drop_if_empty(db, batch_key)
            return ("ready", result)

    def _counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        return dict(rows)

    # -- the event loop's side -------------------------------------------------------------

    async def submitting(
        self, batch_key: str, model_id: str, items: list[tuple[str, str, bool]]
    ) -> None:
        """Record a batch about to be sent: ``(custom_id, request_id, structured)`` per item."""
        await self._run(self._submitting, batch_key, model_id, items, time.time())

    async def submitted(self, batch_key: str, batch_id: str) -> None:
        """Record the provider's id of a batch it accepted."""
        await self._run(self._submitted, batch_key, batch_id)

    async def discard(self, batch_key: str) -> None:
        """Forget a batch (the provider refused it, or it was cancelled with no caller left)."""
        await self._run(self._discard, batch_key)

    async def settle(
        self,
        batch_key: str,
        done: Iterable[str],
        kept: Mapping[str, dict[str, Any]],
        *,
        ended: bool,
        request_ids: Iterable[str] = (),
    ) -> None:
        """Record results: ``done`` items need nothing more (delivered or dropped); ``kept``
        ones wait for ``deferred_result`` (``request_ids`` are theirs, to wake its waiters)."""
        results = [(c, json.dumps(r, ensure_ascii=False)) for c, r in kept.items()]
        await self._run(self._settle, batch_key, list(done), results, ended, time.time())
        for request_id in request_ids:
            event = self._ready.pop(request_id, None)
            if event is not None:
                event.set()

    async def unfinished(self, model_id: str) -> list[PendingBatch]:
        """The model's submitted batches with results still to come (to resume polling)."""
        return await self._run(self._unfinished, model_id)

    async def counts(self) -> dict[str, int]:
        """Items by state (``"pending"``, ``"ready"``): for tests and monitoring."""
        return await self._run(self._counts)

    async def collect(self, request_id: str) -> LLMResponse:
        """The kept result of ``request_id``, removed from the journal; waits while pending."""
        while True:
            if not self._open:
                raise GatewayClosedError(
                    f"the gateway closed while deferred_result({request_id!r}) waited; the "
                    "result stays in the journal for a gateway opened on the same state_dir"
                )
            found = await self._run(self._take, request_id)
            if found is None:
                raise UnknownRequestError(
                    f"the batch journal {str(self.path)!r} holds no request {request_id!r}: it "
                    "never went to a provider batch, its result was already delivered or "
                    "collected, or it is older than the journal's retention (29 days)"
                )
            state, result = found
            if state == "ready":
                assert result is not None
                return outcome_from_json(json.loads(result))
            event = self._ready.get(request_id)
            if event is None:
                event = self._ready[request_id] = anyio.Event()
            await event.wait()


@asynccontextmanager
async def open_journal(state_dir: str) -> AsyncGenerator[Journal]:
    """Open (or create) the journal in ``state_dir``; close it on exit (shielded)."""
    journal = Journal(Path(state_dir) / JOURNAL_FILE)
    await journal._run(journal._connect, time.time())
    try:
        yield journal
    finally:
        journal.closed()
        with anyio.CancelScope(shield=True):
            await journal._run(journal._close)


# -- outcomes as JSON (what the journal keeps for a result nobody has collected yet) ----------


def outcome_to_json(outcome: LLMResponse | BaseException) -> dict[str, Any]:
    """A result as JSON: a response (its text included), or an error's class and metadata."""
    if isinstance(outcome, LLMResponse):
        usage = outcome.usage
        return {
            "kind": "response",
            "request_id": outcome.request_id,
            "content": outcome.content,
            "model": outcome.model,
            "tool_calls": [[c.id, c.name, dict(c.arguments)] for c in outcome.tool_calls],
            "usage": [
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
            ],
            "finish_reason": outcome.finish_reason,
            "provider_request_id": outcome.provider_request_id,
            "parsed": outcome.parsed,
            "cost_usd": outcome.cost_usd,
            "batch_id": outcome.batch_id,
        }
    record: dict[str, Any] = {
        "kind": "expired" if isinstance(outcome, BatchExpiredError) else "error",
        "message": str(outcome),
    }
    if isinstance(outcome, ProviderError):
        record["status_code"] = outcome.status_code
        record["error_type"] = outcome.error_type
        record["provider_request_id"] = outcome.provider_request_id
    return record


def outcome_from_json(record: Mapping[str, Any]) -> LLMResponse:
    """The response a kept result holds; raises the error it holds."""
    kind = record["kind"]
    if kind == "response":
        return LLMResponse(
            request_id=record["request_id"],
            content=record["content"],
            model=record["model"],
            tool_calls=[ToolCall(i, n, a) for i, n, a in record["tool_calls"]],
            usage=Usage(*record["usage"]),
            finish_reason=record["finish_reason"],
            provider_request_id=record["provider_request_id"],
            parsed=record["parsed"],
            cost_usd=record["cost_usd"],
            batch_id=record["batch_id"],
        )
    message = record["message"]
    if kind == "expired":
        raise BatchExpiredError(message)
    status = record.get("status_code")
    info = {
        "status_code": status,
        "error_type": record.get("error_type"),
        "provider_request_id": record.get("provider_request_id"),
    }
    if status is not None and status >= 400:
        raise status_error_type(status)(message, **info)
    raise ProviderResponseError(message, **info)
