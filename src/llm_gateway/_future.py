"""ResponseFuture: the awaitable handle ``Gateway.submit()`` returns."""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._exceptions import RequestCancelledError

if TYPE_CHECKING:
    from ._lane import Lane
    from ._models import LLMRequest, LLMResponse
    from ._queue import Entry

__all__ = ["ResponseFuture"]


class ResponseFuture:
    """The pending result of one submitted request.

    ``await fut`` (or ``await fut.wait()``) gives the :class:`LLMResponse` or raises the
    request's error. Every accepted request ends in exactly one of the two.

    Awaiting is only watching: if the awaiting task is cancelled, the request goes on. Call
    :meth:`cancel` to cancel the request itself (``Gateway.request()`` does that for you when
    its caller is cancelled).
    """

    __slots__ = ("__weakref__", "_done", "_entry", "_error", "_event", "_lanes", "_value")

    def __init__(self, lanes: Mapping[str, Lane]) -> None:
        self._lanes = lanes  # where cancel() and an expired wait() find the request's lane
        self._entry: Entry | None = None  # the scheduler's record; set once, right after
        self._done = False
        self._value: LLMResponse | None = None
        self._error: BaseException | None = None
        self._event: anyio.Event | None = None  # made only when someone waits before it is done

    @property
    def request(self) -> LLMRequest:
        """The request this future answers."""
        assert self._entry is not None
        return self._entry.request

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<ResponseFuture request_id={self.request.request_id!r} {state}>"

    def done(self) -> bool:
        """Whether the request has finished (with a response, an error, or cancelled)."""
        return self._done

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
        if self._done:
            return False
        entry = self._entry
        assert entry is not None
        self._lanes[entry.model_id].cancel(entry)
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
        if not self._done:
            raise RuntimeError(f"{self!r} has not finished; await it instead")
        return self._error

    async def wait(self) -> LLMResponse:
        """Wait for the request to finish; return its response or raise its error.

        Waiting enforces the request's deadline: if it passes first, the request is failed with
        :class:`RequestTimeoutError` (and cancelled wherever it is).
        """
        if self._done:
            await anyio.lowlevel.checkpoint()
            return self.result()
        if self._event is None:
            self._event = anyio.Event()
        entry = self._entry
        assert entry is not None
        if entry.deadline == math.inf:
            await self._event.wait()
        else:
            with anyio.CancelScope(deadline=entry.deadline):
                await self._event.wait()
            if not self._done:  # our own deadline cancelled the wait
                self._lanes[entry.model_id].expire(entry)
        return self.result()

    def __await__(self) -> Generator[Any, None, LLMResponse]:
        return self.wait().__await__()

    def _resolve(self, value: LLMResponse | None, error: BaseException | None) -> None:
        """Set the outcome (the owning lane calls this exactly once)."""
        self._done = True
        self._value = value
        self._error = error
        if self._event is not None:
            self._event.set()
