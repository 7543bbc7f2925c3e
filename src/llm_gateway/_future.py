"""ResponseFuture: the awaitable handle ``Gateway.submit()`` returns."""

from __future__ import annotations

import enum
import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._exceptions import RequestCancelledError

if TYPE_CHECKING:
    from ._batcher import ModelBatcher
    from ._models import LLMRequest, LLMResponse
    from ._ratelimit import Admission

__all__ = ["ResponseFuture"]


class _State(enum.Enum):
    QUEUED = "queued"  # accepted, waiting in the model's intake stream or queue
    RUNNING = "running"  # taken off the queue by the batcher; its provider call may be under way
    BACKOFF = "backoff"  # a failed attempt will be retried; waiting, holding no capacity
    DONE = "done"  # has its response or its exception; never changes again


QUEUED, RUNNING, BACKOFF, DONE = _State.QUEUED, _State.RUNNING, _State.BACKOFF, _State.DONE


class ResponseFuture:
    """The pending result of one submitted request.

    ``await fut`` (or ``await fut.wait()``) gives the :class:`LLMResponse` or raises the
    request's error. Every accepted request ends in exactly one of the two.

    Awaiting is only watching: if the awaiting task is cancelled, the request goes on. Call
    :meth:`cancel` to cancel the request itself (``Gateway.request()`` does that for you when
    its caller is cancelled).
    """

    # The future is also the batcher's queue entry: one object per request keeps the
    # per-request cost (and memory) low.
    __slots__ = (
        "__weakref__",
        "_batcher",
        "_error",
        "_event",
        "_scope",
        "_state",
        "_value",
        "admission",
        "deadline",
        "dispatched_at",
        "enqueued_at",
        "estimate",
        "failures",
        "fallbacks_left",
        "holds_slot",
        "in_queue",
        "model_start",
        "rank",
        "rank_since",
        "request",
    )

    def __init__(
        self, request: LLMRequest, batcher: ModelBatcher, enqueued_at: float, deadline: float
    ) -> None:
        self.request: LLMRequest = request
        """The request this future answers."""
        self._batcher = batcher
        self._state = QUEUED
        self._value: LLMResponse | None = None
        self._error: BaseException | None = None
        self._event: anyio.Event | None = None  # made only when someone waits before it is done
        # The provider call's (or the backoff wait's) cancel scope, while there is one.
        self._scope: anyio.CancelScope | None = None
        self.enqueued_at = enqueued_at
        self.deadline = deadline
        self.dispatched_at = math.nan
        self.in_queue = False  # in the batcher's priority queue (not just the intake stream)
        self.holds_slot = True  # a queue slot, until first dispatched (retries take none)
        self.failures: list[BaseException] = []  # every failed attempt, on every model
        self.fallbacks_left: tuple[str, ...] = ()  # models still to try after this one
        self.model_start = 0  # index in `failures` where the current model's attempts begin
        self.estimate = 0  # tokens the rate limiter books for each attempt
        self.admission: Admission | None = None  # the current attempt's entry in those books
        self.rank = 0
        self.rank_since = 0.0

    def __repr__(self) -> str:
        return f"<ResponseFuture request_id={self.request.request_id!r} {self._state.value}>"

    def done(self) -> bool:
        """Whether the request has finished (with a response, an error, or cancelled)."""
        return self._state is DONE

    def cancelled(self) -> bool:
        """Whether the request ended by being cancelled."""
        return isinstance(self._error, RequestCancelledError)

    def cancel(self) -> bool:
        """Cancel the request.

        A request still queued never reaches the provider; one in flight has its provider call
        cancelled. Either way the future raises :class:`RequestCancelledError`.

        Returns:
            ``True`` if this call cancelled it, ``False`` if it had already finished.
        """
        if self._state is DONE:
            return False
        self._batcher.resolve(self, error=RequestCancelledError(self._describe("was cancelled")))
        return True

    def result(self) -> LLMResponse:
        """The response, or raise the request's error.

        Raises:
            RuntimeError: The request has not finished yet; await the future instead.
        """
        if self._error is not None:
            raise self._error
        if self._value is None:
            raise RuntimeError(f"{self!r} has not finished; await it instead")
        return self._value

    def exception(self) -> BaseException | None:
        """The request's error, or ``None`` if it succeeded.

        Raises:
            RuntimeError: The request has not finished yet.
        """
        if self._state is not DONE:
            raise RuntimeError(f"{self!r} has not finished; await it instead")
        return self._error

    async def wait(self) -> LLMResponse:
        """Wait for the request to finish; return its response or raise its error.

        Waiting enforces the request's deadline: if it passes first, the request is failed with
        :class:`RequestTimeoutError` (and cancelled wherever it is).
        """
        if self._state is DONE:
            await anyio.lowlevel.checkpoint()
            return self.result()
        if self._event is None:
            self._event = anyio.Event()
        if self.deadline == math.inf:
            await self._event.wait()
        else:
            with anyio.CancelScope(deadline=self.deadline):
                await self._event.wait()
            if self._state is not DONE:  # our own deadline cancelled the wait
                self._batcher.expire(self)
        return self.result()

    def __await__(self) -> Generator[Any, None, LLMResponse]:
        return self.wait().__await__()

    def _describe(self, what: str) -> str:
        request = self.request
        return f"request {request.request_id!r} to model {request.model!r} {what}"
