"""Resilience bugs found while testing, each as a minimal test (virtual time, both backends).

A fixed bug's test stays as a regression test. An open one is marked ``xfail(strict=True)``:
the suite stays green while it is open, and a fix turns its test into an unexpected pass,
which fails the run until the marker is removed.
"""

from __future__ import annotations

import anyio
import pytest

from llm_gateway import CooldownPolicy, RequestPriority, RetriesExhaustedError, RetryPolicy

from ._support import RecordingGateway, ask, mock_model
from .test_resilience import failing, http

pytestmark = pytest.mark.anyio

HIGH = RequestPriority.HIGH


async def test_a_retry_requeued_into_a_cooldown_past_its_deadline_falls_back() -> None:
    _, fail = failing({"r": [http(500)], "s": [http(500)]})
    models = {
        "primary": mock_model(
            fallbacks=("backup",),
            max_concurrency=2,
            cooldown=CooldownPolicy(failure_threshold=2, cooldown_s=30.0),
            retry=RetryPolicy(backoff_base_s=0.5),
        ),
        "backup": mock_model(),
    }
    async with RecordingGateway(models, latency=lambda r: 1.0, fail=fail) as gw:
        r = await gw.submit(ask("primary", request_id="r", timeout_s=10, priority=HIGH))
        await gw.submit(ask("primary", request_id="s", priority=HIGH))
        await anyio.sleep(0.5)
        # q waits in the queue (no capacity): at 1.0, when r and s fail and the model cools
        # down until 31.0, the batcher scans its queue once (q has no deadline: it stays).
        await gw.submit(ask("primary", request_id="q", priority=HIGH))
        # r's retry comes back at about 1.4, into the cooldown, with a deadline at 10.0: it
        # should move to backup, as a new arrival would; it waits and times out instead.
        response = await r
        assert response.model == "backup"
        await gw.shutdown(timeout=0)


async def test_a_graceful_shutdown_still_lets_a_request_fall_back() -> None:
    _, fail = failing({"r": [http(529), http(529)]})
    models = {
        "primary": mock_model(fallbacks=("backup",), retry=RetryPolicy(max_attempts=2)),
        "backup": mock_model(),
    }
    async with RecordingGateway(models, latency=lambda r: 1.0, fail=fail) as gw:
        r = await gw.submit(ask("primary", request_id="r", priority=HIGH))
        await anyio.sleep(0.5)
    # Leaving the block shut down gracefully at 0.5, with r in flight: without the shutdown,
    # r is answered by backup after its two attempts on primary.
    assert [c.model_id for c in gw.calls] == ["primary", "primary", "backup"]
    assert r.result().model == "backup"


async def test_a_retry_after_beyond_the_cap_does_not_pause_the_model_longer() -> None:
    _, fail = failing({"limited": [http(429, retry_after=3600.0)]})
    config = mock_model(retry=RetryPolicy(max_retry_after_s=5.0))
    async with RecordingGateway({"m": config}, latency=lambda r: 1.0, fail=fail) as gw:
        with pytest.raises(RetriesExhaustedError, match="more than max_retry_after_s=5"):
            await gw.request(ask(request_id="limited", priority=HIGH))  # fails fast: good
        # Its model now waits an hour before it sends anything: "next" times out in the
        # queue after its default 600 s instead of being sent within the 5 s cap.
        await gw.request(ask(request_id="next", priority=HIGH))
        assert anyio.current_time() <= 1.0 + 5.0 + 1.0 + 1e-3
