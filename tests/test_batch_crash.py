"""A crash: a child process submits a provider batch and is killed (SIGKILL); a new gateway on
the same state directory resumes the batch from the journal (a real SQLite file) and delivers
every result through ``deferred_result``. Nothing paid for is lost.

Real time and real processes, over the loopback fake server (which lives in this process, so
it outlives the child).
"""

from __future__ import annotations

import math
import sqlite3
import sys
import textwrap
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from llm_gateway import (
    BatchApiPolicy,
    Gateway,
    GatewayConfig,
    ModelConfig,
    UnknownRequestError,
)
from llm_gateway._journal import JOURNAL_FILE
from llm_gateway.testing import fake_answer, open_fake_llm_server

REQUESTS = 20

CHILD = textwrap.dedent(
    """
    import sys

    import anyio

    from llm_gateway import BatchApiPolicy, Gateway, GatewayConfig, LLMMessage, LLMRequest
    from llm_gateway import ModelConfig

    endpoint, state_dir, protocol, count = sys.argv[1:5]


    async def main() -> None:
        model = ModelConfig(
            provider=protocol,
            model_name="crash-model",
            endpoint=endpoint,
            api_key="sk-test-0123456789",
            batch_api=BatchApiPolicy(enabled=True, window_s=0.2, poll_interval_s=0.2),
        )
        config = GatewayConfig(models={"m": model}, log_dir=None, state_dir=state_dir)
        async with Gateway(config) as gw:
            futures = [
                await gw.submit(
                    LLMRequest(
                        model="m",
                        messages=[LLMMessage("user", f"question {i}")],
                        priority="low",
                        request_id=f"r{i}",
                    )
                )
                for i in range(int(count))
            ]
            for fut in futures:
                await fut  # never: the parent kills this process first


    anyio.run(main)
    """
)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real time: a real child process and a real SQLite file."""
    return str(request.param)


def submitted_items(journal: Path) -> int:
    """Items of submitted batches in the journal (read as another process would)."""
    if not journal.exists():
        return 0
    db = sqlite3.connect(journal)
    try:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM items JOIN batches USING (batch_key) "
            "WHERE batches.status = 'submitted'"
        ).fetchone()
    except sqlite3.OperationalError:  # the child has not made its tables yet
        return 0
    finally:
        db.close()
    return int(count)


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
async def test_a_killed_gateway_loses_no_paid_result(protocol: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    state_dir = tmp_path / "state"
    journal = state_dir / JOURNAL_FILE
    async with open_fake_llm_server() as server:
        server.batches.processing_delay_s = math.inf  # until end_all(), after the kill
        endpoint = server.base_url if protocol == "anthropic" else server.openai_base_url
        process = await anyio.open_process(
            [sys.executable, str(script), endpoint, str(state_dir), protocol, str(REQUESTS)]
        )
        try:
            with anyio.fail_after(60):
                while await anyio.to_thread.run_sync(submitted_items, journal) < REQUESTS:
                    assert process.returncode is None, "the child exited early"
                    await anyio.sleep(0.05)
        finally:
            process.kill()  # SIGKILL: no shutdown, no cleanup, nothing flushed
            await process.wait()
            await process.aclose()
        assert process.returncode == -9
        (batch,) = server.batches.batches.values()
        assert len(batch.items) == REQUESTS
        server.batches.end_all()

        model = ModelConfig(
            provider=protocol,
            model_name="crash-model",
            endpoint=endpoint,
            api_key="sk-test-0123456789",
            batch_api=BatchApiPolicy(enabled=True, window_s=0.2, poll_interval_s=0.05),
        )
        config = GatewayConfig(models={"m": model}, log_dir=None, state_dir=str(state_dir))
        async with Gateway(config) as gw:
            with anyio.fail_after(60):
                for i in range(REQUESTS):
                    answer = await gw.deferred_result(f"r{i}")
                    assert answer.request_id == f"r{i}"
                    assert answer.content == fake_answer(f"question {i}")
                    assert answer.batch_id == batch.id
            with pytest.raises(UnknownRequestError):  # collected once, then gone
                await gw.deferred_result("r0")
            assert await gw._journal.counts() == {}  # type: ignore[union-attr]
        assert server.batches.cancelled == []
