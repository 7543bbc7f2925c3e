"""One attempt: one provider call, returning what came of it.

The attempt never decides anything and never touches the request's state: it returns an
outcome value, and the lane that owns the request decides what follows (see ``_retry.py``).
The lane stops a call (its deadline, ``cancel()``, an abort) by cancelling the scope it runs in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exceptions import ProviderResponseError
from ._models import LLMResponse

if TYPE_CHECKING:
    from ._models import LLMRequest
    from .providers._base import Provider

__all__ = ["INTERRUPTED", "Answered", "Failed", "Outcome", "call"]


class Answered:
    """The provider answered."""

    __slots__ = ("response",)

    def __init__(self, response: LLMResponse) -> None:
        self.response = response


class Failed:
    """The call raised: a provider error, or any exception a provider let out."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Interrupted:
    """The call was stopped by its cancel scope: the deadline, a cancel, or an abort."""

    __slots__ = ()


INTERRUPTED = _Interrupted()

Outcome = Answered | Failed | _Interrupted


async def call(provider: Provider, request: LLMRequest) -> Answered | Failed:
    """Call ``provider`` for ``request``.

    Cancellation propagates (the lane stops a call by cancelling the scope it runs in);
    everything else becomes an outcome, so no provider can hurt the gateway by what it raises
    or returns.
    """
    try:
        response = await provider.complete(request)
    except Exception as error:
        return Failed(error)
    if not isinstance(response, LLMResponse):
        return Failed(
            ProviderResponseError(
                f"the provider of model {request.model!r} returned a "
                f"{type(response).__name__}, not an LLMResponse"
            )
        )
    return Answered(response)
