"""Record ``cassettes/research.json``: the agent answering questions through real SDK adapters.

Run ``python examples/research_agent/record_cassette.py`` (add ``--live`` to record against the
real provider of ``gateway.toml``, with ``OPENAI_API_KEY`` set). By default it records against
the fake LLM server of ``llm_gateway.testing`` on a loopback socket, so it needs no key and no
network: the answers come through the real OpenAI adapter, HTTP and all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from llm_gateway import Gateway, ModelConfig, load_config
from llm_gateway.testing import open_fake_llm_server

if __package__:
    from .agent import ResearchAgent
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from research_agent.agent import ResearchAgent

HERE = Path(__file__).parent
CASSETTE = HERE / "cassettes" / "research.json"
QUESTIONS = ("What is trio?", "How does anyio relate to asyncio?")


async def record(live: bool) -> None:
    config = load_config(HERE / "gateway.toml")
    if live:
        async with Gateway(config, log_dir=None, record_to=CASSETTE) as gw:
            await ask_all(gw)
        return
    async with open_fake_llm_server() as server:
        fake = ModelConfig(
            provider="gpt-4o-mini",
            model_name="gpt-4o-mini",
            endpoint=server.openai_base_url,
            api_key="sk-fake-key-never-written",
        )
        async with Gateway(models={"research": fake}, log_dir=None, record_to=CASSETTE) as gw:
            await ask_all(gw)


async def ask_all(gw: Gateway) -> None:
    agent = ResearchAgent(gw)
    for question in QUESTIONS:
        answer = await agent.answer(question)
        print(f"{question!r} -> {answer.text!r} ({answer.steps} steps)")


if __name__ == "__main__":
    anyio.run(record, "--live" in sys.argv[1:])
    print(f"wrote {CASSETTE}")
