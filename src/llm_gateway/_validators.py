"""Validators shared by every public value type: one place says what a valid field is.

Each raises the error class its caller passes (``ConfigError`` for configuration,
``RequestValidationError`` for requests), naming the field and the fix.
"""

from __future__ import annotations

from ._exceptions import ConfigError

__all__ = ["check_api_key"]


def check_api_key(value: object, field: str) -> str:
    """``value`` if it can be sent as a key: printable ASCII, no whitespace, not empty.

    The message names ``field`` and never echoes the key (a key read from a file often keeps
    its trailing newline, which HTTP clients then print in their errors).

    Raises:
        ConfigError: The key cannot be sent.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be a str, not a {type(value).__name__}")
    if not value:
        raise ConfigError(f"{field} is empty; give the key, or leave it unset")
    if not all("!" <= ch <= "~" for ch in value):
        raise ConfigError(
            f"{field} has characters a key cannot have (whitespace, a line break, or non-ASCII; "
            "the key itself is not shown); strip the value, e.g. read the key file with "
            ".read().strip()"
        )
    return value
