"""Tests of the research agent with llm_gateway's testing toolkit (see docs/testing.md).

- ``mock_gateway`` (the pytest plugin's fixture), configured by markers, in anyio-style tests
  (both backends, see conftest.py) and a trio-style test (pytest-trio);
- a hand-written fixtures file, a recorded cassette, and turns scripted in the test;
- a Hypothesis property over generated questions and generated model behaviour.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway import LLMMessage, LLMRequest, ToolCall
from llm_gateway.testing import MockFixture, MockLLMGateway, MockMatch
from llm_gateway.testing import strategies as gst

from .agent import GAVE_UP, NOTES, TOOLS, ResearchAgent
from .conftest import virtual_time

HERE = Path(__file__).parent

# Every test here gets the production model configuration; answers come from the mock.
pytestmark = pytest.mark.llm_gateway(config="gateway.toml")


# -- from a hand-written fixtures file -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.llm_gateway(fixtures="fixtures/research.json")
async def test_searches_the_notes_then_answers(mock_gateway: MockLLMGateway) -> None:
    answer = await ResearchAgent(mock_gateway).answer("What is trio?")
    assert answer.text == NOTES["trio"]
    assert (answer.steps, answer.tools_called, answer.gave_up) == (2, ("search_notes",), False)
    # What the agent sent the model on its second turn: the tool result, tied to the call.
    second = mock_gateway.received[1].messages
    assert [m.role for m in second] == ["system", "user", "assistant", "tool"]
    assert second[-1].tool_call_id == "call_search"
    assert second[-1].content.startswith("trio: Trio is a Python library")


@pytest.mark.anyio
@pytest.mark.llm_gateway(fixtures="fixtures/research.json")
async def test_a_rate_limited_model_gets_a_graceful_answer(mock_gateway: MockLLMGateway) -> None:
    answer = await ResearchAgent(mock_gateway).answer("Why do I hit the rate limit?")
    assert (answer.text, answer.gave_up) == (GAVE_UP, True)


# -- replaying a recorded cassette -----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.llm_gateway(cassette="cassettes/research.json")
async def test_replays_a_recorded_session(mock_gateway: MockLLMGateway) -> None:
    agent = ResearchAgent(mock_gateway)
    trio_answer = await agent.answer("What is trio?")
    anyio_answer = await agent.answer("How does anyio relate to asyncio?")
    assert trio_answer.tools_called == anyio_answer.tools_called == ("search_notes",)
    assert "AnyIO runs the same async code" in anyio_answer.text
    assert mock_gateway.misses == []  # every request was in the cassette


@pytest.mark.trio
@pytest.mark.llm_gateway(cassette="cassettes/research.json")
async def test_replays_in_a_trio_style_test(
    autojump_clock: trio.testing.MockClock, mock_gateway: MockLLMGateway
) -> None:
    answer = await ResearchAgent(mock_gateway).answer("What is trio?")
    assert answer.text.startswith("Fake answer to: trio: Trio is")
    assert answer.steps == 2


# -- turns scripted in the test --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_hallucinated_tool_is_reported_back_to_the_model(
    mock_gateway: MockLLMGateway,
) -> None:
    mock_gateway.answer_next(
        MockFixture(tool_calls=(ToolCall("c1", "browse_web", {"url": "x"}),)),
        "Sorry, I can only use the notes.",
    )
    answer = await ResearchAgent(mock_gateway).answer("What is trio?")
    assert answer.text == "Sorry, I can only use the notes."
    tool_result = mock_gateway.received[1].messages[-1]
    assert tool_result.content.startswith("error: unknown tool 'browse_web'")


@pytest.mark.anyio
@pytest.mark.llm_gateway(
    fixtures=[
        MockFixture(
            match=MockMatch(model="research"),
            tool_calls=(ToolCall("again", "read_note", {"title": "trio"}),),
        )
    ]
)
async def test_a_model_that_never_stops_calling_tools_is_cut_off(
    mock_gateway: MockLLMGateway,
) -> None:
    answer = await ResearchAgent(mock_gateway, max_steps=3).answer("What is trio?")
    assert (answer.text, answer.steps, answer.gave_up) == (GAVE_UP, 3, True)
    assert len(mock_gateway.received) == 3


# -- a property over generated questions and generated model behaviour -----------------------


def assert_well_formed(request: LLMRequest) -> None:
    """Every tool message answers a tool call of the assistant message just before it."""
    expected: list[str] = []
    for message in request.messages:
        if message.role == "tool":
            assert expected, "a tool message must answer a tool call"
            assert message.tool_call_id == expected.pop(0)
        else:
            assert not expected
            expected = [call.id for call in message.tool_calls]
    assert not expected


async def run_agent(question: str, answers: list[MockFixture], max_steps: int) -> None:
    async with MockLLMGateway(HERE / "gateway.toml") as gw:
        gw.answer_next(*answers)  # then the deterministic default: a plain text answer
        answer = await ResearchAgent(gw, max_steps=max_steps).answer(question)
    assert 1 <= answer.steps <= max_steps
    assert answer.gave_up == (answer.text == GAVE_UP)
    assert all(isinstance(r, LLMRequest) for r in gw.received)
    for request in gw.received:
        assert_well_formed(request)
        assert request.messages[1] == LLMMessage("user", question)
    if not answer.gave_up:
        # It answered with the model's last words, having run every tool call it got.
        assert len(answer.tools_called) == sum(len(m.tool_calls) for m in gw.received[-1].messages)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@settings(max_examples=40, deadline=None)
@given(
    question=gst.texts(max_size=80),
    answers=st.lists(
        gst.mock_answers(tool_names=[t.name for t in TOOLS], unknown_tools=True), max_size=6
    ),
    max_steps=st.integers(1, 6),
)
def test_the_agent_survives_whatever_the_model_does(
    backend: str, question: str, answers: list[MockFixture], max_steps: int
) -> None:
    anyio.run(partial(run_agent, question, answers, max_steps), **virtual_time(backend))
