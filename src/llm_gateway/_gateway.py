"""The Gateway: a task-group-scoped front door to every configured model."""

from __future__ import annotations

import enum
import importlib
import importlib.util
import math
import os
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Final, Literal, Self, cast, overload

import anyio
import anyio.lowlevel
import attrs

from ._config import GatewayConfig, ModelConfig, journal_in_use, load_config
from ._exceptions import (
    BatchError,
    ConfigError,
    GatewayClosedError,
    QueueFullError,
    RequestValidationError,
    UnknownModelError,
    UnknownRequestError,
)
from ._future import ResponseFuture
from ._imports import import_off_loop
from ._lane import Lane
from ._logs import JsonlLog
from ._models import LLMRequest, LLMResponse, ModelProvider
from ._observe import Observer, Observers
from ._queue import Entry
from ._ratelimit import Budget, RateLimiter
from ._recording import CassetteRecorder, require_real_time
from ._stats import GatewayStats, LimitGroupStats, StatsObserver
from ._stream import LLMStream
from ._validators import did_you_mean
from .providers._base import ProviderFactory
from .providers._open import open_provider

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from ._journal import Journal
    from ._shared_limits import SharedBooks

__all__ = ["Gateway", "LLMGateway"]


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"  # accepts nothing new; finishing (or aborting) what it accepted
    CLOSED = "closed"


def _ended_by(exc: BaseException) -> str:
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "was cancelled"
    return f"exited with {type(exc).__name__}"


class Gateway(anyio.AsyncContextManagerMixin):
    """The gateway every agent reaches its LLMs through.

    Use it as ``async with Gateway(config) as gw:``. Entering opens each model's provider and
    starts, inside the gateway's own task group, one lane per model (its queue and dispatcher)
    and the log writer; leaving the block shuts down gracefully (every accepted request
    finishes) and closes the providers. If the block exits with an exception (cancellation,
    KeyboardInterrupt included), every request still pending fails at once with
    :class:`GatewayClosedError` saying why, and that same exception leaves the block. A gateway
    is opened at most once.

    Args:
        config: A :class:`GatewayConfig`, a dict (``{"models": {id: {...}}, "log_dir": ...}``,
            or ``{id: ModelConfig}``), or the path of a TOML file of the same shape.
        log_dir: Overrides the configuration's ``log_dir`` (``None`` turns logs off).
        models: Model id -> :class:`ModelConfig`, instead of ``config``.
        record_to: Opt-in recording: write every successful request -> response pair to this
            cassette file (JSON) when the gateway closes normally (a block that raises or is
            cancelled leaves the previous cassette as it was), for
            ``MockLLMGateway(cassette=...)`` to replay. Keys and headers are never written.
            Real providers record on real time only (a virtual clock is refused with a
            :class:`ConfigError`). See ``docs/testing.md``.
        provider_factory: Opens each model's provider (see
            :data:`llm_gateway.providers.ProviderFactory`); the built-in adapters by default.
            Test doubles such as ``MockLLMGateway`` plug their providers in here.
        tracer_provider: With telemetry on (``GatewayConfig.telemetry``): where the spans
            go, instead of OpenTelemetry's global tracer provider (see ``docs/telemetry.md``).
        meter_provider: With telemetry on: where the metrics go, instead of the global meter
            provider.

    Raises:
        ConfigError: The configuration is invalid (the message names the field), or
            ``telemetry = "on"`` without ``opentelemetry-api`` installed.
    """

    def __init__(
        self,
        config: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | _Unset | None = _UNSET,
        *,
        models: Mapping[str, ModelConfig | Mapping[str, Any]] | None = None,
        record_to: str | os.PathLike[str] | None = None,
        provider_factory: ProviderFactory | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if (config is None) == (models is None):
            raise ConfigError("give the gateway either a config or models=, exactly one of them")
        loaded = load_config(config if config is not None else dict(models or {}))
        if not isinstance(log_dir, _Unset):
            loaded = attrs.evolve(loaded, log_dir=None if log_dir is None else os.fspath(log_dir))
        self.config: GatewayConfig = loaded
        """The gateway's configuration."""
        self._state = _State.NEW
        self._record_to = None if record_to is None else os.fspath(record_to)
        self._provider_factory: ProviderFactory = provider_factory or open_provider
        self._lanes: dict[str, Lane] = {}
        self._journal: Journal | None = None  # the batch journal (_journal.py), when in use
        self._quiet = anyio.Event()  # set when, shutting down, every lane has gone quiet
        self._stats = StatsObserver(loaded.models, {m: c.pricing for m, c in loaded.models.items()})
        # The observers start with the gateway; their failure counts exist from the start.
        names = ["stats"] if loaded.log_dir is None else ["stats", JsonlLog.name]
        # Telemetry needs the OpenTelemetry API; it is imported only when the gateway opens.
        self._telemetry = loaded.telemetry != "off" and _otel_installed()
        if loaded.telemetry == "on" and not self._telemetry:
            raise ConfigError(
                "GatewayConfig.telemetry is 'on' but opentelemetry-api is not installed; "
                "install it from the project's checkout (pip install -e '.[otel]'; or: pip install "
                "opentelemetry-api) or set telemetry to 'auto'"
            )
        if self._telemetry:
            names.append("telemetry")
        self._otel_providers = (tracer_provider, meter_provider)
        self._observers = Observers([], names=names)
        self._opened_at = self._closed_at = math.nan
        # Rate-limit books in Redis (shared by every gateway on it), or None: in this process.
        self._shared: SharedBooks | None = None
        if loaded.shared_state is not None:
            # Imported for the shared mode only: `import llm_gateway` stays lean without it.
            from ._shared_limits import SharedBooks

            self._shared = SharedBooks.from_config(loaded)
        self._group_limiters = {
            name: self._limiter(
                f"group {name!r}",
                f"limit group {name!r}",
                g.max_requests_per_minute,
                g.max_tokens_per_minute,
                g.window_s,
            )
            for name, g in loaded.limit_groups.items()
        }
        # A request may name a ModelProvider instead of a model id when exactly one model uses it.
        by_provider: dict[str, list[str]] = {}
        for model_id, model in loaded.models.items():
            by_provider.setdefault(model.provider.value, []).append(model_id)
        self._unique_provider_ids = {p: ids[0] for p, ids in by_provider.items() if len(ids) == 1}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.value} models={list(self.config.models)}>"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._state is not _State.NEW:
            raise RuntimeError(
                f"{self!r} cannot be opened: a Gateway is opened once; make a new one"
            )
        self._state = _State.OPEN
        try:
            async with _closing_shielded(AsyncExitStack()) as providers:
                opened = {
                    model_id: await providers.enter_async_context(
                        self._provider_factory(model_id, model)
                    )
                    for model_id, model in self.config.models.items()
                }
                batch_apis: dict[str, Any] = {}
                if journal_in_use(self.config):
                    batch_lane = await import_off_loop(f"{__package__}._batch_lane")
                    self._journal, batch_apis = await batch_lane.open_batch_apis(
                        providers, self.config, opened
                    )
                recorder = None
                if self._record_to is not None:
                    if self._provider_factory is open_provider and any(
                        m.provider is not ModelProvider.MOCK for m in self.config.models.values()
                    ):
                        require_real_time()  # real network calls cannot run on a virtual clock
                    recorder = CassetteRecorder(self._record_to)
                    opened = {
                        m: recorder.wrap(m, self.config.models[m], p) for m, p in opened.items()
                    }
                # The shared books' client (if any) outlives the lanes that use it.
                shared = nullcontext() if self._shared is None else self._shared.connect()
                async with shared, anyio.create_task_group() as tg:
                    observers: list[Observer] = [self._stats]
                    if self.config.log_dir is not None:
                        log = JsonlLog(self.config.log_dir, self._observers.report)
                        observers.append(log)
                        await tg.start(log.run)
                    if self._telemetry:
                        observers.extend(await self._open_telemetry())
                    self._observers.set(observers)
                    for model_id, model in self.config.models.items():
                        self._lanes[model_id] = Lane(
                            model_id,
                            model,
                            opened[model_id],
                            self._budget_for(model_id, model),
                            self._observers,
                            self,
                            self._lanes,
                        )
                    for model_id, api in batch_apis.items():
                        assert self._journal is not None  # opened for every batch model
                        lane = self._lanes[model_id]
                        policy = self.config.models[model_id].batch_api
                        lane.use_batch_api(batch_lane.BatchLane(lane, api, self._journal, policy))
                    for lane in self._lanes.values():
                        await tg.start(lane.run)
                    self._opened_at = anyio.current_time()
                    try:
                        yield self
                    except BaseException as exc:
                        self._abort(f"the gateway's `async with` block {_ended_by(exc)}")
                        raise
                    else:
                        await self.shutdown()
                        if recorder is not None:  # only a recording that ended well is kept
                            recorder.write()
                    finally:
                        self._state = _State.CLOSED
                        self._closed_at = anyio.current_time()
                        # Every request is resolved by now; the lanes and the log writer stop
                        # (the writer flushing what is pending).
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The lanes and the writer never raise: the group holds the block's own exception.
            # Callers catch plain exceptions, so unwrap it.
            if len(group.exceptions) == 1:
                only = group.exceptions[0]
                raise only from only.__cause__
            raise
        finally:
            self._state = _State.CLOSED

    async def _open_telemetry(self) -> list[Observer]:
        """The telemetry observer; none if it cannot start (counted, like its failures)."""
        tracer_provider, meter_provider = self._otel_providers
        try:
            name = f"{__package__}._telemetry"
            # Off the loop: the OpenTelemetry API's first import takes some 20 ms.
            telemetry = await import_off_loop(name)
            return [
                telemetry.Telemetry(
                    self.config.models,
                    self._lanes,
                    self._unique_provider_ids,
                    content=self.config.telemetry_content,
                    tracer_provider=tracer_provider,
                    meter_provider=meter_provider,
                )
            ]
        except Exception:
            self._observers.report("telemetry", exc_info=True)
            return []

    def _limiter(
        self, key: str, name: str, rpm: int | None, tpm: int | None, window_s: float
    ) -> RateLimiter:
        if self._shared is not None:
            return self._shared.limiter(key, name, rpm, tpm, window_s)
        return RateLimiter(name, rpm, tpm, window_s)

    def _budget_for(self, model_id: str, model: ModelConfig) -> Budget:
        limiters = []
        if model.max_requests_per_minute or model.max_tokens_per_minute:
            limiters.append(
                self._limiter(
                    f"model {model_id!r}",
                    f"model {model_id!r}",
                    model.max_requests_per_minute,
                    model.max_tokens_per_minute,
                    model.rate_limit.window_s,
                )
            )
        if model.limit_group is not None:
            limiters.append(self._group_limiters[model.limit_group])
        if self._shared is not None:
            return self._shared.budget(
                model_id,
                limiters,
                high_reserve=model.rate_limit.high_reserve,
                max_reset_s=model.retry.max_retry_after_s,
            )
        return Budget(
            tuple(limiters),
            high_reserve=model.rate_limit.high_reserve,
            max_reset_s=model.retry.max_retry_after_s,
        )

    # -- routing between lanes (the lanes' Router) -----------------------------------------

    def fall_back(self, entry: Entry) -> str | None:
        """Give ``entry`` to the first of its fallback models that takes it."""
        chain = entry.fallbacks_left
        for i, target_id in enumerate(chain):
            if self._lanes[target_id].adopt(entry, chain[i + 1 :]):
                return target_id
        return None

    def lane_changed(self) -> None:
        """While shutting down, notice when every lane has gone quiet."""
        if self._state is _State.CLOSING and all(lane.quiet for lane in self._lanes.values()):
            self._quiet.set()

    # -- submitting ---------------------------------------------------------------------------

    def _lane_for(self, request: LLMRequest) -> Lane:
        if not isinstance(request, LLMRequest):
            raise RequestValidationError(
                f"expected an LLMRequest, got {type(request).__name__}; build one with "
                "LLMRequest(model=..., messages=[LLMMessage('user', '...')])"
            )
        if self._state is not _State.OPEN:
            raise GatewayClosedError(
                "the gateway is not open; use it inside `async with Gateway(...) as gw:`"
                if self._state is _State.NEW
                else "the gateway is closed; it accepts no new requests"
                if self._state is _State.CLOSED
                else "the gateway is shutting down; it accepts no new requests"
            )
        lane = self._lanes.get(request.model)
        if lane is None:
            model_id = self._unique_provider_ids.get(request.model)
            if model_id is None:
                raise UnknownModelError(
                    f"LLMRequest.model is {request.model!r}, which is not a configured model"
                    f"{did_you_mean(request.model, self._lanes)}; use one of {sorted(self._lanes)}"
                )
            lane = self._lanes[model_id]
        return lane

    async def submit(self, request: LLMRequest) -> ResponseFuture:
        """Queue ``request`` and return as soon as it is queued.

        Waits while the model's queue is full (backpressure).

        Returns:
            A :class:`ResponseFuture`: ``await fut`` gives the response.

        Raises:
            RequestValidationError: The request names no configured model.
            GatewayClosedError: The gateway is not open or is shutting down.
            RequestTimeoutError: The request's deadline passed while waiting for queue room.
        """
        return await self._lane_for(request).submit(request)

    def submit_nowait(self, request: LLMRequest) -> ResponseFuture:
        """Like :meth:`submit`, without waiting.

        Raises:
            QueueFullError: The model's queue is at ``queue_capacity``.
        """
        return self._lane_for(request).submit_nowait(request)

    async def request(self, request: LLMRequest) -> LLMResponse:
        """Send ``request`` and wait for its response.

        If the caller is cancelled, so is the request: still queued, it never reaches the
        provider; in flight, its provider call is cancelled.

        Raises:
            GatewayError: The request failed; see the subclasses.
        """
        fut = await self.submit(request)
        try:
            return await fut.wait()
        except BaseException:
            fut.cancel()
            raise

    def stream(self, request: LLMRequest) -> LLMStream:
        """Stream ``request``: ``async with gw.stream(request) as stream:``.

        The request is queued, prioritised, rate-limited and retried exactly as by
        :meth:`request` (retries and fallbacks only before its first chunk); entering the block
        queues it (waiting for queue room, like :meth:`submit`). Iterate ``stream`` for
        :class:`~llm_gateway.StreamChunk` values; after the loop, ``stream.response`` is the
        whole :class:`LLMResponse`. Leaving the block early cancels the request and closes the
        provider's connection. See ``docs/streaming.md``.

        Raises:
            RequestValidationError: Not an ``LLMRequest``, or no configured model.
            GatewayClosedError: The gateway is not open (use it inside its ``async with``
                block) or is shutting down.
        """
        return LLMStream(self._lane_for(request), request)

    @overload
    async def batch(
        self, requests: Iterable[LLMRequest], *, return_exceptions: Literal[False] = False
    ) -> list[LLMResponse]: ...

    @overload
    async def batch(
        self, requests: Iterable[LLMRequest], *, return_exceptions: bool
    ) -> list[LLMResponse | BaseException]: ...

    async def batch(
        self, requests: Iterable[LLMRequest], *, return_exceptions: bool = False
    ) -> list[LLMResponse] | list[LLMResponse | BaseException]:
        """Send several requests (any mix of models) and wait for all of them.

        Every request is checked before any is queued. When some fail, the others still run to
        the end; nothing is lost.

        Args:
            requests: The requests.
            return_exceptions: If true, a failed request's exception takes its place in the
                result instead of raising.

        Returns:
            One response per request, in input order (or its exception, see above).

        Raises:
            BatchError: Some requests failed (and ``return_exceptions`` is false); its
                ``results`` holds every response and exception in input order.
        """
        requests = list(requests)
        lanes = [self._lane_for(request) for request in requests]
        futures: list[ResponseFuture] = []
        try:
            # All at once where there is room, so the lanes see the whole batch together.
            for lane, request in zip(lanes, requests, strict=True):
                try:
                    futures.append(lane.submit_nowait(request))
                except QueueFullError:
                    futures.append(await lane.submit(request))
            await anyio.lowlevel.checkpoint()
            results: list[LLMResponse | BaseException] = []
            for fut in futures:
                try:
                    # A finished request's outcome is taken as it is: the checkpoint above let
                    # cancellation in, and one checkpoint per answer would cost every request.
                    results.append(fut.result() if fut.done() else await fut.wait())
                except Exception as exc:
                    if not fut.done():  # not the request's own outcome
                        raise
                    results.append(exc)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        if return_exceptions:
            return results
        if any(isinstance(r, BaseException) for r in results):
            raise BatchError(results)
        return cast(list[LLMResponse], results)

    async def deferred_result(self, request_id: str) -> LLMResponse:
        """The result of a request that its provider batch answered after its caller had gone.

        A request of the batch lane whose gateway closed (or crashed) before its batch ended
        (its caller got :class:`BatchPendingError`, or nothing) is kept in the batch journal
        (``GatewayConfig.state_dir``); a gateway opened on the same state directory polls the
        batch and keeps its result until collected here, at most 29 days after the batch
        ended. Collecting removes it from the journal. Waits while the batch is still running.
        See ``docs/batch-api.md``.

        Returns:
            The response (``batch_id`` set).

        Raises:
            UnknownRequestError: The journal holds no such request (never batched, already
                collected or delivered, or past its retention), or there is no journal.
            ProviderError: The provider answered this request with an error
                (:class:`BatchExpiredError` if its batch expired first).
            GatewayClosedError: The gateway is not open (or closed while waiting).
        """
        if self._state is not _State.OPEN:
            raise GatewayClosedError(
                "deferred_result() needs an open gateway: call it inside `async with`"
            )
        if self._journal is None:
            raise UnknownRequestError(
                f"no batch journal to find request {request_id!r} in: no model has batch_api "
                "enabled and the state directory holds no journal"
            )
        return await self._journal.collect(request_id)

    # -- closing ------------------------------------------------------------------------------

    # The specification names this parameter `timeout`; it is a deadline for draining, not a
    # cancel-scope substitute, so ASYNC109's advice does not apply.
    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Stop accepting requests and finish every accepted one.

        New requests get :class:`GatewayClosedError` at once. Queued requests are dispatched
        without waiting for their batches to fill. If ``timeout`` seconds pass first, the
        requests still queued or in flight fail with :class:`GatewayClosedError` (in-flight
        provider calls are cancelled). Safe to call more than once. Leaving the ``async with``
        block calls it too.

        Args:
            timeout: Seconds to wait for accepted requests (>= 0); ``None`` waits as long as
                they take.

        Raises:
            ValueError: ``timeout`` is not ``None`` or a number >= 0.
        """
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or math.isnan(timeout)
            or timeout < 0
        ):
            raise ValueError(
                f"shutdown(timeout={timeout!r}): use a number of seconds >= 0, or None to wait "
                "as long as the accepted requests take"
            )
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            for lane in self._lanes.values():
                lane.close()
            self.lane_changed()
        if self._state is not _State.CLOSING:
            return
        try:
            with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await self._quiet.wait()
            if scope.cancelled_caught:
                self._abort(f"shutdown(timeout={timeout:g}) expired before it finished")
        except BaseException:
            self._abort("the shutdown was cancelled before it finished")
            raise

    async def aclose(self) -> None:
        """The same as :meth:`shutdown` with no timeout: finish every accepted request."""
        await self.shutdown()

    def _abort(self, reason: str) -> None:
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
        for lane in self._lanes.values():
            lane.abort(reason)

    # -- monitoring -----------------------------------------------------------------------

    def get_stats(self) -> GatewayStats:
        """Figures for monitoring: per model and in total, plus uptime."""
        if math.isnan(self._opened_at):
            now = uptime = 0.0
        else:  # after closing, the figures stay readable (even outside the event loop)
            now = anyio.current_time() if math.isnan(self._closed_at) else self._closed_at
            uptime = now - self._opened_at
        stats = self._stats
        models = {
            model_id: stats.model(model_id, lane.live(now))
            for model_id, lane in self._lanes.items()
        }
        groups = {}
        for name, limiter in self._group_limiters.items():
            left_r, left_t = limiter.remaining(now)
            groups[name] = LimitGroupStats(
                remaining_requests=left_r,
                remaining_tokens=left_t,
                throttled_s=limiter.throttled_s,
                rate_limited=limiter.rate_limited,
            )
        return GatewayStats(
            models=models,
            total=stats.total(models.values()),
            uptime_s=uptime,
            limit_groups=groups,
            observer_errors=dict(self._observers.errors),
            shared_state=None if self._shared is None else self._shared.stats(),
        )


LLMGateway = Gateway
"""The name the specification uses."""


def _otel_installed() -> bool:
    """Whether the OpenTelemetry API can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


@asynccontextmanager
async def _closing_shielded(stack: AsyncExitStack) -> AsyncGenerator[AsyncExitStack]:
    """Close ``stack`` (the providers) even while cancelled: unclosed SDK clients leak sockets."""
    try:
        yield stack
    finally:
        with anyio.move_on_after(10, shield=True):
            await stack.aclose()
