"""The batch lane: a model's LOW requests through the provider's batch API, at half price.

A model whose ``ModelConfig.batch_api`` is enabled has one, inside its :class:`~._lane.Lane`.
The lane hands it the LOW requests that can wait (:meth:`BatchLane.takes`); it gathers them for
``window_s`` (or until ``max_batch_requests``), splits what it gathered to the provider's limits,
records each batch in the :class:`~._journal.Journal` before submitting it, polls it with
backoff, and resolves each request with its result, matched by ``custom_id``.

The lane still owns every entry: the batch lane writes entries only through the lane's own
methods (``_finish``, ``_requeue``), so every request still ends exactly once in
``Lane._finish``. An entry gathering here is ``QUEUED`` (holding its queue slot, in no line of
the queue); one in a submitted batch is ``RUNNING`` with no cancel scope (nothing local to
cancel: the provider holds it). ``Lane._finish`` tells :meth:`BatchLane.forget` of every end.

- A cancelled caller's result is dropped when it arrives; when every caller of a batch has
  gone, the batch is cancelled at the provider.
- Shutdown does not wait for batches: what is gathering is submitted at once, and every request
  in a submitted batch ends with :class:`BatchPendingError`; the journal keeps the batch, and a
  gateway opened later on the same ``state_dir`` resumes polling it and keeps its results for
  ``Gateway.deferred_result``.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import attrs
from anyio.abc import TaskStatus

from ._config import journal_in_use
from ._exceptions import (
    BatchExpiredError,
    BatchPendingError,
    ConfigError,
    GatewayClosedError,
    RequestValidationError,
)
from ._journal import open_journal, outcome_to_json
from ._models import LLMMessage, LLMRequest, LLMResponse, ModelProvider, RequestPriority
from ._queue import DONE, RUNNING

if TYPE_CHECKING:
    from ._batch_policy import BatchApiPolicy
    from ._config import GatewayConfig, ModelConfig
    from ._journal import Journal, PendingBatch
    from ._lane import Lane
    from ._queue import Entry
    from .providers._base import Provider

__all__ = ["BatchApi", "BatchLane", "batch_api_for", "open_batch_apis"]

logger = logging.getLogger("llm_gateway")

T = TypeVar("T")

Outcome = LLMResponse | BaseException | str
"""An item's result: the response, its error, or ``"expired"`` / ``"canceled"``."""


class BatchApi(Protocol):
    """One model's calls to its provider's batch API (``providers/_batch_*.py``)."""

    provider_name: str
    max_requests: int
    max_bytes: int

    def item(self, custom_id: str, request: LLMRequest) -> bytes:
        """The request's entry in a batch, encoded (raises ``RequestValidationError``)."""

    async def create(self, items: Sequence[bytes]) -> str:
        """Submit a batch of encoded items; the provider's batch id."""

    async def ended(self, batch_id: str) -> bool:
        """Whether the batch has ended."""

    async def cancel(self, batch_id: str) -> None:
        """Cancel the batch at the provider."""

    async def results(
        self, batch_id: str, request_for: Callable[[str], LLMRequest | None]
    ) -> tuple[dict[str, Outcome], Outcome]:
        """Each named item's outcome by custom_id, and the outcome of the unnamed ones."""


def batch_api_for(model_id: str, config: ModelConfig, provider: Provider) -> BatchApi:
    """The batch API of a model's opened provider.

    Raises:
        ConfigError: The provider has no batch API here (only the built-in ``anthropic`` and
            ``openai`` adapters do).
    """
    kind = config.provider.kind
    if kind is ModelProvider.ANTHROPIC:
        from .providers._anthropic import AnthropicProvider
        from .providers._batch_anthropic import AnthropicBatchApi

        if isinstance(provider, AnthropicProvider):
            return AnthropicBatchApi(provider)
    elif kind is ModelProvider.OPENAI:
        from .providers._batch_openai import OpenAIBatchApi
        from .providers._openai import OpenAIProvider

        if isinstance(provider, OpenAIProvider):
            return OpenAIBatchApi(provider)
    raise ConfigError(
        f"models.{model_id}.batch_api is enabled, but provider {config.provider.value!r} "
        + (
            "is opened by a custom provider_factory (or wrapped by record_to)"
            if kind in (ModelProvider.ANTHROPIC, ModelProvider.OPENAI)
            else "has no batch API"
        )
        + "; the batch lane needs the built-in 'anthropic' or 'openai' adapter: turn "
        "batch_api off for this model"
    )


class _ProviderBatch:
    """One batch at the provider, until its results are settled."""

    __slots__ = ("batch_id", "entries", "gone", "handed_off", "key", "live", "orphans")

    def __init__(self, key: str) -> None:
        self.key = key  # the journal's key (the provider's id is known only after create)
        self.batch_id: str | None = None
        self.entries: dict[str, Entry] = {}  # custom_id -> entry of a caller in this process
        self.orphans: dict[str, tuple[str, bool]] = {}  # custom_id -> (request_id, structured)
        self.live = 0  # entries not yet resolved
        self.gone = anyio.Event()  # set when the last caller has gone
        self.handed_off = False  # the gateway closed: the journal keeps the results


class BatchLane:
    """The batch lane of one model's lane (see the module's docstring).

    Args:
        lane: The model's lane (the owner of every entry).
        api: The provider's batch API.
        journal: Where batches are recorded.
        policy: The model's ``batch_api``.
    """

    def __init__(self, lane: Lane, api: BatchApi, journal: Journal, policy: BatchApiPolicy) -> None:
        self._lane = lane
        self._api = api
        self._journal = journal
        self.policy = policy
        self.max_requests = min(policy.max_batch_requests, api.max_requests)
        self.max_bytes = min(policy.max_batch_bytes or api.max_bytes, api.max_bytes)
        self._waiting: dict[Entry, None] = {}  # gathering, in arrival order
        self._first_at = math.inf
        self._owner: dict[Entry, _ProviderBatch] = {}  # entries in a submitted batch
        self._batches: dict[str, _ProviderBatch] = {}
        self._wakeup: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        pricing = lane.config.pricing
        self._cost = None if pricing is None else pricing.cost_usd

    # -- what the lane asks -----------------------------------------------------------------

    def takes(self, request: LLMRequest) -> bool:
        """Whether ``request`` goes to the batch lane: LOW, and its deadline allows it."""
        timeout = request.timeout_s
        return request.priority is RequestPriority.LOW and (
            timeout is None or timeout >= self.policy.min_timeout_s
        )

    @property
    def quiet(self) -> bool:
        """Nothing gathering, and no caller waiting for a submitted batch."""
        return not self._waiting and not self._owner

    @property
    def pending(self) -> int:
        """Requests gathering or waiting for their provider batch."""
        return len(self._waiting) + len(self._owner)

    def add(self, entry: Entry, now: float) -> None:
        """Gather ``entry`` (just accepted, ``QUEUED``) for the next batch."""
        if entry.request.timeout_s is None:
            entry.deadline = math.inf  # the provider answers within its own 24 h window
        if not self._waiting:
            self._first_at = now
        self._waiting[entry] = None
        if len(self._waiting) == 1 or len(self._waiting) >= self.max_requests:
            self.wake()

    def forget(self, entry: Entry) -> None:
        """``entry`` has ended (``Lane._finish``): it needs nothing more from the batch lane."""
        if self._waiting:
            self._waiting.pop(entry, None)
        batch = self._owner.pop(entry, None)
        if batch is not None:
            batch.live -= 1
            if batch.live == 0:
                batch.gone.set()
            self._lane._router.lane_changed()

    def wake(self) -> None:
        """Look again (something arrived, or the lane is closing)."""
        if self._wakeup is not None:
            self._wakeup.set()

    def abort(self, reason: str) -> None:
        """Fail every request the batch lane holds (synchronous, as ``Lane.abort``)."""
        lane = self._lane
        for entry in list(self._waiting):
            lane._finish(entry, error=GatewayClosedError(entry.describe(f"was aborted: {reason}")))
        for batch in self._batches.values():
            batch.handed_off = True  # its callers are told to collect it: never cancel it
        for entry, batch in list(self._owner.items()):
            lane._finish(entry, error=self._left_error(entry, batch, f"was aborted: {reason}"))

    def _left_error(self, entry: Entry, batch: _ProviderBatch, what: str) -> GatewayClosedError:
        if batch.batch_id is None:  # still being submitted: its fate is not known yet
            return GatewayClosedError(
                entry.describe(
                    f"{what} while its batch was being submitted; if the provider accepted it, "
                    "the journal keeps it: `await gw.deferred_result(request_id)` on a gateway "
                    "opened on the same state_dir returns its result"
                )
            )
        return BatchPendingError(
            entry.describe(
                f"{what}; it waits in provider batch {batch.batch_id}, which the batch journal "
                "keeps: collect it with `await gw.deferred_result(request_id)` from a gateway "
                "opened on the same state_dir"
            ),
            request_id=entry.request.request_id,
            batch_id=batch.batch_id,
        )

    # -- the tasks ----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Resume the journal's batches of this model, then gather and submit until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            model_id = self._lane.model_id
            unfinished = await self._record("read", lambda: self._journal.unfinished(model_id))
            for pending in unfinished or []:
                tg.start_soon(self._poll, self._resumed(pending))
            await self._gather_forever()

    async def _record(self, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """A journal call, shielded (a record is never half made); a failing disk is logged
        and survived (``None``), never the gateway's end."""
        result: T | None = None
        try:
            with anyio.CancelScope(shield=True):
                result = await call()
        except Exception as error:
            logger.warning(
                "llm_gateway: model %r: the batch journal could not %s (%s)",
                self._lane.model_id,
                what,
                type(error).__name__,
            )
        return result

    def _resumed(self, pending: PendingBatch) -> _ProviderBatch:
        batch = _ProviderBatch(pending.batch_key)
        batch.batch_id = pending.batch_id
        batch.orphans = dict(pending.items)
        batch.handed_off = True  # no caller here: its results go to the journal
        self._batches[batch.key] = batch
        return batch

    async def _sleep(self, deadline: float) -> None:
        self._wakeup = event = anyio.Event()
        try:
            with anyio.CancelScope(deadline=deadline):
                await event.wait()
        finally:
            self._wakeup = None

    async def _gather_forever(self) -> None:
        lane = self._lane
        while True:
            if lane.closing:
                self._flush()
                for batch in list(self._batches.values()):
                    if batch.batch_id is not None:
                        self._hand_off(batch)
                await self._sleep(math.inf)
                continue
            if not self._waiting:
                await self._sleep(math.inf)
                continue
            due = self._first_at + self.policy.window_s
            if len(self._waiting) < self.max_requests and anyio.current_time() < due:
                await self._sleep(due)
                continue
            self._flush()

    def _flush(self) -> None:
        """Submit everything gathered, split to the limits."""
        taken = list(self._waiting)
        self._waiting.clear()
        self._first_at = math.inf
        chunk: list[tuple[str, Entry, bytes]] = []
        size = 0
        for entry in taken:
            custom_id = uuid.uuid4().hex
            try:
                item = self._api.item(custom_id, entry.request)
            except RequestValidationError as error:
                self._lane._finish(entry, error=error)
                continue
            if chunk and (len(chunk) >= self.max_requests or size + len(item) > self.max_bytes):
                self._launch(chunk)
                chunk, size = [], 0
            chunk.append((custom_id, entry, item))
            size += len(item) + 1  # a separator
        if chunk:
            self._launch(chunk)

    def _launch(self, chunk: list[tuple[str, Entry, bytes]]) -> None:
        batch = _ProviderBatch(uuid.uuid4().hex)
        now = anyio.current_time()
        slots = self._lane._slots
        for custom_id, entry, _ in chunk:
            entry.state = RUNNING
            entry.dispatched_at = now
            if entry.holds_slot:
                entry.holds_slot = False
                slots.release()
            batch.entries[custom_id] = entry
            self._owner[entry] = batch
        batch.live = len(chunk)
        self._batches[batch.key] = batch
        assert self._tg is not None
        self._tg.start_soon(self._submit, batch, [item for _, _, item in chunk])

    async def _submit(self, batch: _ProviderBatch, items: list[bytes]) -> None:
        model_id = self._lane.model_id
        records = [
            (c, e.request.request_id, e.request.response_format is not None)
            for c, e in batch.entries.items()
        ]
        # Shielded, so that a gateway aborting meanwhile cannot cut a batch the provider
        # accepted off from its record in the journal (it would be paid for and lost). The
        # SDK's timeout (the model's timeout_s) bounds how long a silent provider holds it.
        failure: BaseException | None = None
        with anyio.CancelScope(shield=True):
            try:
                await self._journal.submitting(batch.key, model_id, records)
                batch.batch_id = await self._api.create(items)
            except Exception as error:
                failure = error
            else:
                try:
                    await self._journal.submitted(batch.key, batch.batch_id)
                except Exception as error:  # the batch is at the provider: poll it here
                    logger.warning(
                        "llm_gateway: model %r: batch %s could not be recorded in the journal (%s)",
                        model_id,
                        batch.batch_id,
                        type(error).__name__,
                    )
        if batch.batch_id is None:
            # Refused, not answered in time, or the journal could not record it: these
            # requests go realtime (the ones still waiting; an abort has ended the others).
            logger.warning(
                "llm_gateway: model %r: a batch of %d requests could not be submitted (%s); "
                "they are sent as ordinary requests",
                model_id,
                len(items),
                type(failure).__name__,
            )
            self._batches.pop(batch.key, None)
            await self._record("forget a batch", lambda: self._journal.discard(batch.key))
            for entry in list(batch.entries.values()):
                self._to_realtime(entry, batch)
            return
        if self._lane.closing:
            self._hand_off(batch)
        await self._poll(batch)

    def _to_realtime(self, entry: Entry, batch: _ProviderBatch) -> None:
        if entry.state is DONE or self._owner.pop(entry, None) is None:
            return
        batch.live -= 1
        self._lane._requeue(entry)

    def _hand_off(self, batch: _ProviderBatch) -> None:
        """The gateway is closing: the journal keeps the batch; its callers are told so."""
        batch.handed_off = True
        for entry in list(batch.entries.values()):
            if entry.state is not DONE:
                self._lane._finish(
                    entry, error=self._left_error(entry, batch, "was left to the batch journal")
                )

    async def _poll(self, batch: _ProviderBatch) -> None:
        """Poll ``batch`` with backoff until it ends, then settle its results."""
        assert batch.batch_id is not None
        delay = self.policy.poll_interval_s
        while True:
            if batch.handed_off:
                await anyio.sleep(delay)
            else:
                with anyio.move_on_after(delay):
                    await batch.gone.wait()
                if batch.gone.is_set() and not batch.handed_off:
                    await self._cancel(batch)
                    return
            try:
                if await self._api.ended(batch.batch_id):
                    outcomes = await self._api.results(batch.batch_id, self._request_for(batch))
                    break
            except Exception as error:  # the provider failed to answer: ask again later
                logger.warning(
                    "llm_gateway: model %r: polling batch %s failed (%s); trying again in %g s",
                    self._lane.model_id,
                    batch.batch_id,
                    type(error).__name__,
                    delay,
                )
            delay = min(delay * 2, self.policy.max_poll_interval_s)
        await self._settle(batch, *outcomes)

    async def _cancel(self, batch: _ProviderBatch) -> None:
        """Every caller of ``batch`` has gone: cancel it at the provider and forget it."""
        assert batch.batch_id is not None
        self._batches.pop(batch.key, None)
        try:
            await self._api.cancel(batch.batch_id)
        except Exception as error:
            logger.warning(
                "llm_gateway: model %r: cancelling batch %s failed (%s)",
                self._lane.model_id,
                batch.batch_id,
                type(error).__name__,
            )
        await self._record(
            "record a cancelled batch",
            lambda: self._journal.settle(
                batch.key,
                batch.entries,
                {},
                ended=True,
                request_ids=[e.request.request_id for e in batch.entries.values()],
            ),
        )

    def _request_for(self, batch: _ProviderBatch) -> Callable[[str], LLMRequest | None]:
        model_id = self._lane.model_id

        def request_for(custom_id: str) -> LLMRequest | None:
            entry = batch.entries.get(custom_id)
            if entry is not None:
                return entry.request
            orphan = batch.orphans.get(custom_id)
            if orphan is None:
                return None
            request_id, structured = orphan
            # A stand-in: parsing needs only the id and whether a JSON answer was asked for.
            return LLMRequest(
                model=model_id,
                messages=[LLMMessage("user", "")],
                request_id=request_id,
                response_format={} if structured else None,
            )

        return request_for

    def _answer(self, response: LLMResponse, batch_id: str, entry: Entry | None) -> LLMResponse:
        cost = None if self._cost is None else self._cost(response.usage, batch=True)
        answer = attrs.evolve(response, batch_id=batch_id, cost_usd=cost)
        if entry is None:
            return answer
        now = anyio.current_time()
        return answer._timed(
            latency_ms=round((now - entry.dispatched_at) * 1000.0, 3),
            queue_wait_ms=round((entry.dispatched_at - entry.enqueued_at) * 1000.0, 3),
        )

    async def _settle(
        self, batch: _ProviderBatch, outcomes: dict[str, Outcome], missing: Outcome
    ) -> None:
        """Give each result to its caller, or to the journal when its caller is not here."""
        batch_id = batch.batch_id
        assert batch_id is not None
        lane = self._lane
        done: list[str] = []
        kept: dict[str, dict[str, object]] = {}
        request_ids: list[str] = []
        for custom_id in [*batch.entries, *batch.orphans]:
            outcome = outcomes.get(custom_id, missing)
            entry = batch.entries.get(custom_id)
            if isinstance(outcome, LLMResponse):
                outcome = self._answer(outcome, batch_id, entry)
            request_id = (
                entry.request.request_id if entry is not None else batch.orphans[custom_id][0]
            )
            request_ids.append(request_id)
            if entry is not None and entry.state is not DONE:
                self._deliver(entry, batch, outcome)
                done.append(custom_id)
            elif entry is not None and not isinstance(entry.future._error, GatewayClosedError):
                done.append(custom_id)  # its caller cancelled it, or gave up waiting: dropped
            else:  # nobody here waits for it: kept for deferred_result
                if isinstance(outcome, str):
                    outcome = self._expired(request_id, batch_id, outcome)
                kept[custom_id] = outcome_to_json(outcome)
        self._batches.pop(batch.key, None)
        await self._record(
            "record results",
            lambda: self._journal.settle(
                batch.key, done, kept, ended=True, request_ids=request_ids
            ),
        )
        lane._router.lane_changed()

    def _expired(self, request_id: str, batch_id: str, kind: str) -> BatchExpiredError:
        what = "expired" if kind == "expired" else "was cancelled at the provider"
        return BatchExpiredError(
            f"request {request_id!r} to model {self._lane.model_id!r}: provider batch "
            f"{batch_id} {what} before processing it",
            error_type=kind,
        )

    def _deliver(self, entry: Entry, batch: _ProviderBatch, outcome: Outcome) -> None:
        lane = self._lane
        if entry.deadline <= anyio.current_time():
            lane.expire(entry)  # nobody awaited it: its deadline is noticed only now
        elif isinstance(outcome, LLMResponse):
            lane._finish(entry, outcome)
        elif isinstance(outcome, BaseException):
            lane._finish(entry, error=outcome, reported=False)
        elif self.policy.on_expired == "realtime":
            self._to_realtime(entry, batch)
        else:
            assert batch.batch_id is not None
            lane._finish(
                entry, error=self._expired(entry.request.request_id, batch.batch_id, outcome)
            )


async def open_batch_apis(
    stack: AsyncExitStack, config: GatewayConfig, opened: Mapping[str, Provider]
) -> tuple[Journal | None, dict[str, BatchApi]]:
    """The journal (opened on ``stack``) and each batch model's batch API.

    The journal is opened when some model has ``batch_api`` enabled, or when the state
    directory already holds one (its results stay collectable); otherwise nothing is created.
    """
    apis = {
        model_id: batch_api_for(model_id, model, opened[model_id])
        for model_id, model in config.models.items()
        if model.batch_api.enabled
    }
    directory = config.journal_dir
    if directory is None or not journal_in_use(config):
        return None, apis
    return await stack.enter_async_context(open_journal(directory)), apis
