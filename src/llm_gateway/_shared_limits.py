"""Rate-limit books shared by every gateway on one Redis server and key prefix.

With ``GatewayConfig.shared_state`` set, each model's and limit group's books (sliding windows,
the HIGH reserve, token reservations and their settlement, the provider's header hints) and each
model's 429 pause live in Redis, so gateways in several processes or hosts pace together to one
quota. The rules are those of :mod:`._ratelimit`; each decision is one server-side Lua script
(``_shared_books.lua``, sent once and then called by its SHA), so no two processes can book the
same budget. The lane admits a whole batch in one round trip (:meth:`SharedBudget.admit_many`).
Settlements, hints and pauses ride along with the next decision; a background task sends what
no decision took within :data:`CHANGES_WAIT_S`.

Time is the server's clock: processes on several hosts agree on it without synchronised clocks.

**When Redis is unreachable** (refused, timed out, or any error), the gateway keeps serving with
its local books, at the limits divided by ``GatewayConfig.expected_processes``. It counts the
failures (``GatewayStats.shared_state``), logs one warning per outage (never the URL's
password), tries the server again at most every second, and rejoins the shared books when it
answers. Admissions made locally meanwhile stay local. A process that dies holds its
reservations only until they leave the windows (at most a minute): nothing else to clean.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import secrets
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._config import redact_url
from ._models import RequestPriority
from ._ratelimit import Admission, Budget, RateLimiter, _usage_tokens, read_rate_limit_headers
from ._stats import SharedStateStats

if TYPE_CHECKING:
    from ._config import GatewayConfig

__all__ = ["SharedBooks", "SharedBudget", "SharedLimiter"]

logger = logging.getLogger("llm_gateway")

POLL_S = 0.25
"""The longest a throttled lane waits before asking again (another process may free budget)."""
TIMEOUT_S = 2.0
"""The longest one call to Redis may take before the gateway paces locally."""
RETRY_S = 1.0
"""While Redis is unreachable, how often it is tried again."""
CHANGES_WAIT_S = 0.02
"""How long changes wait for a decision to ride along with before they travel alone."""


def _script(name: str) -> str:
    return importlib.resources.files(__package__).joinpath(name).read_text("utf-8")


BOOKS_LUA = _script("_shared_books.lua")


class SharedAdmission(Admission):
    """An admission booked in the shared books (its id there)."""

    __slots__ = ("_id",)

    def __init__(self, at: float, tokens: int, admission_id: str) -> None:
        super().__init__(at, tokens)
        self._id = admission_id


class SharedLimiter(RateLimiter):
    """One budget's books in Redis, with a local copy for when Redis is unreachable.

    The inherited books are the local fallback, at the limits divided by
    ``expected_processes``; :attr:`spec` holds the whole limits (what is refused up front, and
    the caps sent to the server).
    """

    def __init__(
        self,
        books: SharedBooks,
        key: str,
        name: str,
        rpm: int | None,
        tpm: int | None,
        window_s: float,
    ) -> None:
        n = books.expected_processes
        super().__init__(
            name,
            None if rpm is None else max(1, rpm // n),
            None if tpm is None else max(1, tpm // n),
            window_s,
        )
        self.spec = RateLimiter(name, rpm, tpm, window_s)
        self.books = books
        base = f"{books.prefix}:{key}"
        self.keys = (f"{base}:a", f"{base}:t", f"{base}:s")
        self.max_stay_s = max((stay for _, stay, _, _ in self.spec.caps(0.0)), default=0.0)
        self.snapshot: tuple[int | None, int | None] = (rpm, tpm)

    def too_large(self, tokens: int, priority: RequestPriority, reserve: float) -> str | None:
        return self.spec.too_large(tokens, priority, reserve)

    def remaining(self, now: float) -> tuple[int | None, int | None]:
        """What the server said at the last decision (the local books' while unreachable)."""
        if self.books.connected:
            return self.snapshot
        return super().remaining(now)


class SharedBudget(Budget):
    """A model's :class:`Budget` on shared books: awaited by the lane (``shared = True``)."""

    shared = True

    def __init__(
        self,
        books: SharedBooks,
        model_id: str,
        limiters: tuple[SharedLimiter, ...],
        *,
        high_reserve: float,
        max_reset_s: float,
    ) -> None:
        super().__init__(limiters, high_reserve=high_reserve, max_reset_s=max_reset_s)
        self._books = books
        self._shared_limiters = limiters
        base = f"{books.prefix}:model {model_id!r}"
        self._model_keys = (f"{base}:w", f"{base}:p")
        self._keys = [*self._model_keys, *(k for lim in limiters for k in lim.keys)]
        self._ready_at: float | None = None  # the last refusal's answer, on the local clock
        ttl_s = max([max_reset_s, *(lim.max_stay_s for lim in limiters)]) + 60.0
        books.ttl_ms = max(books.ttl_ms, math.ceil(ttl_s * 1000))
        # The windows' caps do not change: the script's arguments for them are made once.
        specs = []
        for lim in limiters:
            fields = [_num(lim.max_stay_s)]
            for kind, stay, cap_high, cap_other in lim.spec.caps(high_reserve):
                fields += ["1" if kind == "requests" else "2", _num(stay)]
                fields += [str(cap_high), str(cap_other)]
            specs.append(" ".join(fields))
        self._spec_args = [str(len(limiters)), ";".join(specs)]
        self._tokens_limited = [lim for lim in limiters if lim.spec.tpm is not None]

    async def admit_many(
        self, wanted: Sequence[tuple[int, RequestPriority, int]], now: float
    ) -> list[Admission]:
        books = self._books
        args = await books.admit(self, wanted)
        if args is None:  # Redis is unreachable: the local books decide
            admissions: list[Admission] = []
            for tokens, priority, _rank in wanted:
                if super().ready_at(tokens, priority, now) > now:
                    break
                admissions.append(self.admit(tokens, now))
            self._ready_at = None
            books.local_admissions += len(admissions)
            return admissions
        admitted, ready_in, first = args
        later = anyio.current_time()
        self._ready_at = None if ready_in < 0 else later + ready_in
        return [
            SharedAdmission(later, max(0, tokens), f"{books.lane_id}:{first + i}")
            for i, (tokens, _priority, _rank) in enumerate(wanted[:admitted])
        ]

    def ready_at(self, tokens: int, priority: RequestPriority, now: float) -> float:
        """When to ask again: the last refusal's answer, at most :data:`POLL_S` from now."""
        if not self._books.connected:
            when = super().ready_at(tokens, priority, now)
            return min(when, max(now, self._books.retry_at))
        if self._ready_at is None:
            return now
        return min(self._ready_at, now + POLL_S)

    def release(self, admissions: Sequence[Admission]) -> None:
        for admission in admissions:
            if isinstance(admission, SharedAdmission):
                for lim in self._shared_limiters:
                    self._books.change("R", lim.keys, admission._id)
            else:  # booked locally: it stays in the local books, at no tokens
                super().settle(admission, 0, {}, anyio.current_time())

    def settle(
        self, admission: Admission, used_tokens: object, headers: Mapping[str, str], now: float
    ) -> None:
        if not isinstance(admission, SharedAdmission):
            super().settle(admission, used_tokens, headers, now)
            return
        if admission.settled:
            return
        admission._settled = True
        tokens = _usage_tokens(used_tokens)
        if tokens is not None and tokens != admission.tokens:
            freed = tokens < admission.tokens
            admission._tokens = tokens
            for lim in self._tokens_limited:
                self._books.change("S", lim.keys, admission._id, str(tokens))
            if freed:  # this process's lanes may go now; the others see it when they ask
                for lim in self._shared_limiters:
                    for wake in tuple(lim._listeners):
                        wake()
        self.observe(headers, now)

    def observe(self, headers: Mapping[str, str], now: float) -> None:
        hints = read_rate_limit_headers(headers) if headers else {}
        if not hints:
            return
        super().observe(headers, now)  # the local books too, for when Redis is unreachable
        for kind, (remaining, reset_s) in hints.items():
            seconds = min(reset_s, self._max_reset_s)
            if seconds > 0:
                for lim in self._shared_limiters:
                    self._books.change("H", lim.keys[2:], kind[0], str(remaining), _num(seconds))

    def record_rate_limited(self, retry_after_s: float | None = None) -> None:
        super().record_rate_limited(retry_after_s)
        if retry_after_s is not None and retry_after_s > 0:
            seconds = min(retry_after_s, self._max_reset_s)
            self._books.change("P", self._model_keys[1:], _num(seconds))


def _closing_connection(base: type[Any]) -> type[Any]:
    """``base`` (a coredis connection class) closing its buffers when it fails to connect.

    coredis 6.9 closes them only once connected: every refused attempt (Redis down) would leave
    them to be collected unclosed, a ``ResourceWarning`` each.
    """

    class ClosingConnection(base):  # type: ignore[misc]
        async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                await super().run(task_status=task_status)
            finally:
                for value in vars(self).values():
                    if isinstance(value, MemoryObjectSendStream | MemoryObjectReceiveStream):
                        value.close()

    return ClosingConnection


def _sole(exc: BaseException) -> BaseException:
    """The one exception inside nested one-exception groups (or ``exc`` itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _num(value: float) -> str:
    return f"{value:.6f}"


class SharedBooks:
    """One gateway's link to the shared books: its Redis client and what it owes the server.

    Made by the gateway when ``shared_state`` is set; :meth:`connect` opens the client and the
    background task that sends settlements, hints and pauses.

    Args:
        url: The Redis URL (may hold a password: never shown).
        prefix: The key prefix (``GatewayConfig.shared_prefix``).
        expected_processes: How many gateways share the limits (the local fallback's divisor).
    """

    def __init__(self, url: str, prefix: str, expected_processes: int | None) -> None:
        self._url = url
        self.shown_url = redact_url(url)
        # A hash tag: the keys of one prefix would share a slot (one server is used, though).
        self.prefix = "{" + prefix + "}"
        self.expected_processes = expected_processes or 1
        self.lane_id = secrets.token_hex(8)  # this gateway, in admission ids and waiting heads
        self._next_id = 0
        self._script: Any = None
        self.ttl_ms = 0  # how long keys outlive their last use: the longest of any budget
        self._pending: list[str] = []
        self._pending_since = math.inf  # when the oldest change not yet sent was queued
        self._pending_keys: dict[str, int] = {}
        self._flush = anyio.Event()
        self.connected = True
        self.retry_at = -math.inf
        self.now_override: float | None = None  # tests drive the server's clock with this
        self.errors = 0
        self.outages = 0
        self.local_admissions = 0  # admitted by the local books while Redis was unreachable
        self.timeout_s = TIMEOUT_S

    @classmethod
    def from_config(cls, config: GatewayConfig) -> SharedBooks | None:
        """The gateway's shared books, or None when ``shared_state`` is not set."""
        if config.shared_state is None:
            return None
        return cls(config.shared_state, config.shared_prefix, config.expected_processes)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "unreachable"
        return f"<SharedBooks {self.shown_url} prefix={self.prefix} {state}>"

    def limiter(
        self, key: str, name: str, rpm: int | None, tpm: int | None, window_s: float
    ) -> SharedLimiter:
        """The shared books of one budget (``key``: ``"model 'fast'"``, ``"group 'org'"``)."""
        return SharedLimiter(self, key, name, rpm, tpm, window_s)

    def budget(
        self,
        model_id: str,
        limiters: Sequence[RateLimiter],
        *,
        high_reserve: float,
        max_reset_s: float,
    ) -> Budget:
        """A model's budget over shared limiters (in-memory when it has no limits at all)."""
        shared = tuple(lim for lim in limiters if isinstance(lim, SharedLimiter))
        if not shared:
            return Budget((), high_reserve=high_reserve, max_reset_s=max_reset_s)
        return SharedBudget(
            self, model_id, shared, high_reserve=high_reserve, max_reset_s=max_reset_s
        )

    def stats(self) -> SharedStateStats:
        """Figures for ``GatewayStats.shared_state``."""
        return SharedStateStats(
            connected=self.connected,
            errors=self.errors,
            outages=self.outages,
            local_admissions=self.local_admissions,
        )

    @asynccontextmanager
    async def connect(self) -> AsyncGenerator[SharedBooks]:
        """Open the Redis client and the task that sends changes; flush them at the end."""
        try:
            import coredis
            from coredis.retry import NoRetryPolicy
        except ImportError:
            from ._exceptions import ConfigError

            raise ConfigError(
                "GatewayConfig.shared_state needs the redis extra; install it from the project's "
                "checkout with: pip install -e '.[redis]' (or: pip install coredis)"
            ) from None
        client = coredis.Redis.from_url(
            self._url,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self.timeout_s,
            stream_timeout=self.timeout_s,
        )
        client.connection_pool.connection_class = _closing_connection(
            client.connection_pool.connection_class
        )
        raised: BaseException | None = None
        try:
            async with client, anyio.create_task_group() as tg:
                self._script = client.register_script(BOOKS_LUA)
                await tg.start(self._send_changes)
                try:
                    yield self
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    with anyio.move_on_after(self.timeout_s, shield=True):
                        await self._send_pending()
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The client's and our task groups wrap what the gateway's block raised: hand it
            # back as it came, for the gateway to unwrap as usual.
            if raised is not None and _sole(group) is _sole(raised):
                raise raised from raised.__cause__
            raise

    # -- calls ------------------------------------------------------------------------------

    def _clock(self) -> str:
        return "" if self.now_override is None else _num(self.now_override)

    async def _call(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The script's answer, or None when Redis is unreachable (the caller paces locally)."""
        if not self.connected and anyio.current_time() < self.retry_at:
            return None
        try:
            with anyio.fail_after(self.timeout_s):
                result = await self._script(keys=keys, args=args)
        except Exception as exc:  # any failure: pace locally rather than stop serving
            self._unreachable(exc)
            return None
        if not self.connected:
            self.connected = True
            logger.warning(
                "shared rate limits: %s answers again; pacing with the shared books",
                self.shown_url,
            )
        return result

    def _unreachable(self, exc: BaseException) -> None:
        self.errors += 1
        self.retry_at = anyio.current_time() + RETRY_S
        if self.connected:
            self.connected = False
            self.outages += 1
            # The exception's text may quote the address; its class is enough to act on.
            logger.warning(
                "shared rate limits: %s is unreachable (%s); pacing with the local books "
                "(limits / expected_processes=%d) until it answers",
                self.shown_url,
                type(exc).__name__,
                self.expected_processes,
            )

    async def admit(
        self, budget: SharedBudget, wanted: Sequence[tuple[int, RequestPriority, int]]
    ) -> tuple[int, float, int] | None:
        """One decision for ``wanted``: (admitted, seconds until the rest fits or -1, first id).

        None when Redis is unreachable.
        """
        first = self._next_id
        self._next_id = first + len(wanted)  # before the await: other lanes ask meanwhile
        keys, args = self._with_changes(str(first))
        keys += budget._keys
        args += budget._spec_args
        high = RequestPriority.HIGH
        args.append(
            ";".join(
                f"{max(0, tokens)} {1 if priority is high else 0} {rank}"
                for tokens, priority, rank in wanted
            )
        )
        result = await self._call(keys, args)
        if result is None:
            return None
        admitted = int(result[0])
        for i, lim in enumerate(budget._shared_limiters):
            requests, tokens = (int(x) for x in result[3 + 2 * i : 5 + 2 * i])
            lim.snapshot = (
                None if requests < 0 else requests,
                None if tokens < 0 else tokens,
            )
        return admitted, float(result[1]), first

    def change(self, op: str, keys: Sequence[str], *values: str) -> None:
        """Queue a change for the server (sent with the next decision, or soon alone)."""
        if not self.connected:
            return  # admissions made meanwhile are local; shared ones expire with the windows
        pending, indexes = self._pending, self._pending_keys
        if not pending:
            self._pending_since = anyio.current_time()
            self._flush.set()
        at = [str(indexes.setdefault(key, len(indexes) + 1)) for key in keys]
        pending.append(" ".join([op, *at, *values]))

    def _with_changes(self, first: str) -> tuple[list[str], list[str]]:
        """The keys and arguments of a call, starting with the changes queued so far."""
        changes, keys = self._pending, list(self._pending_keys)
        self._pending, self._pending_keys = [], {}
        args = [self.lane_id, first, str(self.ttl_ms), self._clock(), _num(POLL_S)]
        args += [str(len(keys)), ";".join(changes)]
        return keys, args

    async def _send_pending(self) -> None:
        if self._pending:
            keys, args = self._with_changes("0")
            await self._call(keys, [*args, "-1", "", ""])

    async def _send_changes(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await self._flush.wait()
            self._flush = anyio.Event()
            # A decision may take the changes along meanwhile (then newer ones wait anew).
            while self._pending:
                due = self._pending_since + CHANGES_WAIT_S
                if anyio.current_time() >= due:
                    await self._send_pending()
                else:
                    await anyio.sleep_until(due)
