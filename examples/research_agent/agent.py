"""A small research agent: it asks a model, runs the tools the model calls, and answers.

The agent only knows the :class:`~llm_gateway.Gateway` interface, so its tests can hand it a
``MockLLMGateway`` (fixtures, a recorded cassette, or scripted turns) instead of a real one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from llm_gateway import (
    Gateway,
    LLMMessage,
    LLMRequest,
    LLMResponse,
    LLMTool,
    ProviderError,
    RequestPriority,
    ToolCall,
)

SYSTEM = (
    "You answer questions about Python async libraries. Search the notes first, read what "
    "you need, then answer in two sentences at most."
)

NOTES: Mapping[str, str] = {
    "trio": "Trio is a Python library for async concurrency built on structured concurrency.",
    "anyio": "AnyIO runs the same async code on trio or asyncio.",
    "asyncio": "asyncio is the async framework in Python's standard library.",
}

TOOLS = (
    LLMTool(
        "search_notes",
        "Find notes about a topic; returns matching titles with a snippet each.",
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    ),
    LLMTool(
        "read_note",
        "Read one note in full by its title.",
        {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
    ),
)

GAVE_UP = "I could not finish researching this; please ask again later."


@attrs.frozen
class Answer:
    """What the agent concluded.

    Attributes:
        text: The answer.
        steps: Model calls made.
        tools_called: The tools the model called, in order.
        gave_up: True if the agent ran out of steps or the model was unavailable.
    """

    text: str
    steps: int
    tools_called: tuple[str, ...] = ()
    gave_up: bool = False


class ResearchAgent:
    """Answers a question with the model ``model`` of ``gateway`` and the notes tools.

    Args:
        gateway: An open gateway (a real one, or a ``MockLLMGateway`` in tests).
        model: The model id to ask.
        max_steps: The most model calls for one question.
        notes: The notes the tools search.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        model: str = "research",
        max_steps: int = 5,
        notes: Mapping[str, str] = NOTES,
    ) -> None:
        self.gateway = gateway
        self.model = model
        self.max_steps = max_steps
        self.notes = notes

    async def answer(self, question: str) -> Answer:
        """Research ``question``; never raises for what the model does or fails to do."""
        messages = [LLMMessage("system", SYSTEM), LLMMessage("user", question)]
        called: list[str] = []
        for step in range(1, self.max_steps + 1):
            try:
                response = await self._ask(messages)
            except ProviderError:
                # The gateway already retried what was worth retrying: give a clear answer
                # instead of crashing the caller.
                return Answer(GAVE_UP, step, tuple(called), gave_up=True)
            if not response.tool_calls:
                return Answer(response.content, step, tuple(called))
            messages.append(
                LLMMessage("assistant", response.content, tool_calls=response.tool_calls)
            )
            for call in response.tool_calls:
                called.append(call.name)
                messages.append(LLMMessage("tool", self.run_tool(call), tool_call_id=call.id))
        return Answer(GAVE_UP, self.max_steps, tuple(called), gave_up=True)

    async def _ask(self, messages: list[LLMMessage]) -> LLMResponse:
        return await self.gateway.request(
            LLMRequest(
                model=self.model,
                messages=messages,
                tools=TOOLS,
                priority=RequestPriority.HIGH,  # a user is waiting
                agent_id="research-agent",
            )
        )

    def run_tool(self, call: ToolCall) -> str:
        """The result of a tool call, as text for the model (errors included, never raised)."""
        arguments: Mapping[str, Any] = call.arguments
        if call.name == "search_notes":
            query = arguments.get("query")
            if not isinstance(query, str) or not query.strip():
                return "error: search_notes needs a non-empty string 'query'"
            words = [w.strip("?!.,;:'\"") for w in query.lower().split()]
            words = [w for w in words if len(w) >= 3]
            hits = [
                f"{title}: {text[:60]}"
                for title, text in self.notes.items()
                if any(word in title or word in text.lower() for word in words)
            ]
            return "\n".join(hits) if hits else "no notes found"
        if call.name == "read_note":
            title = arguments.get("title")
            if not isinstance(title, str) or title not in self.notes:
                return f"error: no note titled {title!r}; titles: {', '.join(self.notes)}"
            return self.notes[title]
        return f"error: unknown tool {call.name!r}; use search_notes or read_note"
