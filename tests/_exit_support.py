"""The exit-path properties' shared harness: a workload of agents, and the block's ending.

``test_exits.py`` (realtime requests and streams) and ``test_batch_exits.py`` (the batch
lane) draw a workload and the moment and manner of the exit, then check what happened to every
accepted request and what left the ``async with`` block.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import attrs

from llm_gateway import Gateway, GatewayClosedError, LLMRequest, ResponseFuture


class UserError(Exception):
    """The block's own exception."""


EXITS = ["raise", "cancel", "keyboard", "shutdown_timeout", "normal"]
"""How the block ends: its own exception, a cancel scope around it, KeyboardInterrupt, a timed
shutdown, or a plain exit once every request has long finished."""


class AcceptingGateway(Gateway):
    """Keeps every future it accepts (``request()`` goes through ``submit``)."""

    accepted: list[ResponseFuture]

    async def submit(self, request: LLMRequest) -> ResponseFuture:
        future = await super().submit(request)
        self.accepted.append(future)
        return future


@contextmanager
def temporary_dir(prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@attrs.frozen
class Exit:
    """How a block ended."""

    raised: BaseException | None  # what the block raised itself
    escaped: BaseException | None  # what left `async with`
    cancelled_caught: bool


async def run_and_exit(
    gw: Gateway,
    *,
    exit: str,
    exit_after_s: float,
    shutdown_timeout_s: float,
    normal_wait_s: float,
    gaps: Sequence[float],
    via_request: Sequence[bool],
    question: Callable[[int], LLMRequest],
    ask_and_wait: Callable[[int], Coroutine[Any, Any, None]],
) -> Exit:
    """Open ``gw``, send request ``i`` after ``gaps[i]`` (by an agent task running
    ``ask_and_wait(i)`` if ``via_request[i]``, else by ``submit()``), and end the block as
    ``exit`` says after ``exit_after_s``.

    The agents' tasks live outside the gateway's block, so what leaves the block is caught
    right at its edge, unwrapped by anything of the test's own.
    """
    raised: BaseException | None = None
    escaped: BaseException | None = None
    cancelled_caught = False

    async def submit_all(agents: anyio.abc.TaskGroup) -> None:
        for i, gap in enumerate(gaps):
            await anyio.sleep(gap)
            if via_request[i]:
                agents.start_soon(ask_and_wait, i)
            else:
                with contextlib.suppress(GatewayClosedError):
                    await gw.submit(question(i))

    async with anyio.create_task_group() as agents:
        try:
            deadline = exit_after_s if exit == "cancel" else math.inf
            with anyio.move_on_after(deadline) as scope:
                async with gw:
                    agents.start_soon(submit_all, agents)
                    await anyio.sleep(exit_after_s)
                    if exit == "raise":
                        raised = UserError("the block failed")
                        raise raised
                    if exit == "keyboard":
                        raised = KeyboardInterrupt()
                        raise raised
                    if exit == "shutdown_timeout":
                        await gw.shutdown(timeout=shutdown_timeout_s)
                    elif exit == "cancel":
                        await anyio.sleep_forever()  # the scope around the block ends it
                    else:  # "normal"
                        await anyio.sleep(normal_wait_s)
            cancelled_caught = scope.cancelled_caught
        except BaseException as exc:  # the property is about exactly what escapes
            escaped = exc
        agents.cancel_scope.cancel()
    return Exit(raised, escaped, cancelled_caught)
