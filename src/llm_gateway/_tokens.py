"""Token counts: the estimate the rate limiter books before a call, and the heuristic behind it."""

from __future__ import annotations

import math
from collections.abc import Callable

from ._exceptions import ConfigError
from ._models import LLMRequest

__all__ = ["estimate_tokens", "heuristic_count", "token_counter"]


def heuristic_count(text: str) -> int:
    return math.ceil(len(text) / 4)


def token_counter(tokenizer: str, model_name: str) -> Callable[[str], int]:
    """A function counting the tokens of a text."""
    if tokenizer == "heuristic":
        return heuristic_count
    try:
        import tiktoken
    except ImportError:
        raise ConfigError(
            "RateLimitPolicy.tokenizer is 'tiktoken' but tiktoken is not installed; "
            "pip install tiktoken, or use tokenizer = 'heuristic'"
        ) from None
    try:
        encoding = tiktoken.encoding_for_model(model_name)
    except KeyError:
        encoding = tiktoken.get_encoding("o200k_base")
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def estimate_tokens(
    request: LLMRequest, count: Callable[[str], int], default_output_tokens: int
) -> int:
    """Tokens a request is expected to use: its input, tools, and the output it may produce."""
    total = 3  # reply priming
    for message in request.messages:
        total += 4 + count(message.content)
        for call in message.tool_calls:
            total += count(call.name) + count(str(dict(call.arguments)))
    for tool in request.tools:
        total += count(tool.name) + count(tool.description) + count(str(dict(tool.input_schema)))
    output = request.max_tokens if request.max_tokens is not None else default_output_tokens
    return total + output
