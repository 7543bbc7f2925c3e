"""Validators shared by every public value type: one place says what a valid field is.

Request-side types (:mod:`._models`) use :data:`REQUEST`, whose checks raise
``RequestValidationError``; configuration types (:mod:`._config`) use :data:`CONFIG`, whose
checks raise ``ConfigError``. Each check is an attrs validator (``validator=`` on a field)
and raises a message of one shape::

    LLMRequest.agent_id must be a str or None, got int; pass a string id

It starts with ``Class.field`` (``load_config`` swaps that for the path in the file, e.g.
``models.fast.batch_size``), says what a valid value is, and what was given. The message shows
numbers and ``None`` as they are, and of anything else only its type, never its text: a field
may hold prompt text or a key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._exceptions import ConfigError, GatewayError, RequestValidationError

__all__ = [
    "CONFIG",
    "REQUEST",
    "Check",
    "Item",
    "Rules",
    "api_key",
    "check_api_key",
    "check_fields",
    "checked",
    "described",
    "did_you_mean",
    "plain_text",
    "surrogate_at",
    "to_tuple",
    "tuple_of",
]

MAX_JSON_DEPTH = 100
"""The deepest JSON a tool schema or tool-call arguments may nest (it also ends cycles)."""


def _article(noun: str) -> str:
    an = noun[:1].lower() in "aeio" or noun.startswith("LLM")
    return f"{'an' if an else 'a'} {noun}"


def described(value: object) -> str:
    """What a message may say of ``value``: numbers and ``None`` as they are, else its type.

    Never the text of a string, nor the items of a container: they may be a prompt or a key.
    """
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        digits = repr(value)
        return digits if len(digits) <= 24 else f"an int of {len(digits)} digits"
    return type(value).__name__


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the known name nearest to ``name``, or ``""``.

    Only a short str is compared (a long one is no typo of a name, and may be a secret).
    """
    if not isinstance(name, str) or len(name) > 40:
        return ""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def surrogate_at(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (which UTF-8 cannot encode), if any.

    Lone surrogates come from bytes decoded with ``errors="surrogateescape"`` (``os.environ``,
    file names, ``sys.argv``) or from JSON escapes such as ``"\\ud800"``.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def to_tuple(value: Any) -> Any:
    """A converter: a list (any iterable but a str, bytes or mapping) becomes a tuple.

    ``None`` becomes ``()``; anything else is left for the field's validator to reject.
    """
    kind = type(value)
    if kind is tuple:
        return value
    if kind is list:
        return tuple(value)
    if value is None:
        return ()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def _owner(instance: object) -> str:
    return type(instance).__name__


def _json_problem(value: object) -> str | None:
    """Why ``value`` is not JSON that encodes as UTF-8 (with where), or ``None`` if it is."""
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        at = f" at {path}" if path else ""
        if depth > MAX_JSON_DEPTH:
            return f"got one nested deeper than {MAX_JSON_DEPTH} levels{at} (a cycle?)"
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"got {item!r}{at}, which JSON cannot hold"
        elif isinstance(item, str):
            index = surrogate_at(item)
            if index is not None:
                return f"got a str with a lone surrogate at index {index}{at}"
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"got {_article(type(key).__name__)} key{at} (JSON keys are strings)"
                index = surrogate_at(key)
                if index is not None:
                    return f"got a key with a lone surrogate at index {index}{at}"
                stack.append((child, f"{path}[{key!r}]", depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            return f"got {_article(type(item).__name__)}{at}, which JSON cannot hold"
    return None


@attrs.frozen
class Item:
    """A problem with one item of a container field: the message names the item.

    Attributes:
        at: The item's place after the field's name (``"[2]"``, ``"['x-api-key']"``), or
            ``""`` for the field itself.
        expected: What a valid item is.
        problem: What was given.
        fix: How to fix it, instead of the field's ``fix`` when not ``None``.
    """

    at: str
    expected: str
    problem: str
    fix: str | None = None

    def inside(self, at: str) -> Item:
        """The same problem, one level deeper (``at`` goes before this item's place)."""
        return Item(at + self.at, self.expected, self.problem, self.fix)


def _item(at: str, expected: str, problem: str | Item) -> Item:
    return problem.inside(at) if isinstance(problem, Item) else Item(at, expected, problem)


@attrs.frozen
class Check:
    """An attrs validator: ``problem(value)`` says what is wrong with a value, ``None`` if valid.

    Attributes:
        error: The exception class raised.
        expected: What a valid value is, completing "must be ..." (e.g. ``"an int >= 1"``).
        problem: ``None`` for a valid value; else what was given (e.g. ``"got str"``), or an
            :class:`Item` naming the wrong item of a container.
        fix: How to fix it, appended after a semicolon (may be empty).
    """

    error: type[GatewayError]
    expected: str
    problem: Callable[[Any], str | Item | None]
    fix: str = ""

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        """Raise ``error`` naming ``Class.field`` when ``value`` is not valid."""
        problem = self.problem(value)
        if problem is None:
            return
        where, expected, fix = f"{_owner(instance)}.{attribute.name}", self.expected, self.fix
        if isinstance(problem, Item):
            where, expected = where + problem.at, problem.expected
            fix = fix if problem.fix is None else problem.fix
            problem = problem.problem
        raise self.error(f"{where} must be {expected}, {problem}{f'; {fix}' if fix else ''}")


def _got(value: object) -> str:
    return f"got {described(value)}"


class Rules:
    """The shared checks, raising one exception class (see :data:`REQUEST` and :data:`CONFIG`).

    Args:
        error: The exception class every check raises.
    """

    def __init__(self, error: type[GatewayError]) -> None:
        self.error = error

    def fail(self, instance: object, field: str, message: str) -> GatewayError:
        """The exception for a rule across fields: ``"Class.field <message>"``."""
        return self.error(f"{_owner(instance)}.{field} {message}")

    def check(self, expected: str, valid: Callable[[Any], bool], fix: str = "") -> Check:
        """A check of ``valid(value)``; the message shows the value (see :func:`described`)."""
        return Check(self.error, expected, lambda v: None if valid(v) else _got(v), fix)

    def text(self, *, non_empty: bool = False, fix: str = "") -> Check:
        """A ``str`` without lone surrogates (so UTF-8 can encode it for the wire and the logs)."""

        def problem(value: object) -> str | Item | None:
            if not isinstance(value, str):
                return _got(value)
            if non_empty and not value:
                return "got ''"
            index = surrogate_at(value)
            if index is not None:
                return Item(
                    "",
                    "text that UTF-8 can encode",
                    f"got a str with a lone surrogate at index {index}",
                    "decode bytes with errors='replace' (not 'surrogateescape'), or drop the "
                    "surrogate",
                )
            return None

        return Check(self.error, "a non-empty str" if non_empty else "a str", problem, fix)

    def optional(self, inner: Check, fix: str | None = None) -> Check:
        """``None``, or a value ``inner`` accepts."""

        def problem(value: object) -> str | Item | None:
            return None if value is None else inner.problem(value)

        return Check(
            self.error, f"{inner.expected} or None", problem, inner.fix if fix is None else fix
        )

    def int_at_least(self, least: int, fix: str = "") -> Check:
        """An ``int`` (not a bool) ``>= least``."""
        return self.check(
            f"an int >= {least}",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least,
            fix,
        )

    @property
    def positive_int(self) -> Check:
        """An ``int`` (not a bool) ``>= 1``."""
        return self.int_at_least(1)

    @property
    def non_negative_int(self) -> Check:
        """An ``int`` (not a bool) ``>= 0``."""
        return self.int_at_least(0)

    def finite_number(
        self,
        *,
        min: float | None = None,
        max: float | None = None,
        allow_zero: bool = True,
        fix: str = "",
    ) -> Check:
        """An ``int`` or ``float`` (not a bool, NaN or infinity) in ``[min, max]``.

        ``allow_zero=False`` also rejects 0 (with ``min=0``: a positive number).
        """
        low = "" if min is None else (f"{min:g}" if allow_zero or min != 0 else "")
        if min is not None and max is not None:
            where = f" from {min:g} to {max:g}" if allow_zero or min != 0 else f" in (0, {max:g}]"
        elif min is not None:
            where = f" >= {low}" if low else " > 0"
        elif max is not None:
            where = f" <= {max:g}"
        else:
            where = ""

        def valid(value: object) -> bool:
            return (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (min is None or value >= min)
                and (max is None or value <= max)
                and (allow_zero or value != 0)
            )

        return self.check(f"a finite number{where}", valid, fix)

    def one_of(self, *choices: str, fix: str = "") -> Check:
        """One of the given strings. The message quotes a wrong string of up to 40 characters."""

        def problem(value: object) -> str | None:
            if isinstance(value, str) and value in choices:
                return None
            if isinstance(value, str) and len(value) <= 40:
                return f"got {value!r}{did_you_mean(value, choices)}"
            return _got(value)

        return Check(self.error, f"one of {', '.join(map(repr, choices))}", problem, fix)

    def instance_of(self, cls: type[Any], fix: str = "") -> Check:
        """An instance of ``cls``."""
        return Check(
            self.error,
            _article(cls.__name__),
            lambda v: None if isinstance(v, cls) else _got(v),
            fix or f"build it with {cls.__name__}(...)",
        )

    def tuple_of(self, cls: type[Any], *, non_empty: bool = False, fix: str = "") -> Check:
        """A tuple of ``cls`` instances (use with the :func:`to_tuple` converter).

        The message names the first wrong item by its index (``messages[2]``).
        """
        name = cls.__name__

        def problem(value: object) -> str | Item | None:
            if not isinstance(value, tuple):
                return _got(value)
            if non_empty and not value:
                return "got an empty list"
            for i, item in enumerate(value):
                if not isinstance(item, cls):
                    return Item(f"[{i}]", _article(name), _got(item), f"build it with {name}(...)")
            return None

        return Check(
            self.error,
            f"a{' non-empty' if non_empty else ''} list of {name}",
            problem,
            fix or f"give a list of {name}(...)",
        )

    def str_tuple(self, fix: str = "") -> Check:
        """A tuple of non-empty strings without lone surrogates."""
        item = self.text(non_empty=True)

        def problem(value: object) -> str | Item | None:
            if not isinstance(value, tuple):
                return _got(value)
            for i, entry in enumerate(value):
                wrong = item.problem(entry)
                if wrong is not None:
                    return _item(f"[{i}]", item.expected, wrong)
            return None

        return Check(self.error, "a list of non-empty str", problem, fix)

    def str_mapping(self, *, values: Check | None = None, fix: str = "") -> Check:
        """A mapping with ``str`` keys (no lone surrogates) and values ``values`` accepts."""
        key = self.text()

        def problem(value: object) -> str | Item | None:
            if not isinstance(value, Mapping):
                return _got(value)
            for k, v in value.items():
                if not isinstance(k, str):
                    return f"got {_article(type(k).__name__)} key"
                wrong = key.problem(k)
                if wrong is not None:
                    return _item(" key", key.expected, wrong)
                wrong = None if values is None else values.problem(v)
                if wrong is not None and values is not None:
                    return _item(f"[{k!r}]", values.expected, wrong)
            return None

        what = "a dict with str keys" + ("" if values is None else f" and {values.expected} values")
        return Check(self.error, what, problem, fix)

    def json_object(self, fix: str = "") -> Check:
        """A JSON object: a mapping of ``str`` keys to JSON values.

        JSON values are ``None``, bools, ints, finite floats, strings without lone surrogates,
        lists or tuples of JSON values, and JSON objects. Not sets, bytes, NaN or infinity.
        """

        def problem(value: object) -> str | None:
            if not isinstance(value, Mapping):
                return _got(value)
            return _json_problem(value)

        return Check(self.error, "a JSON object (a dict of str keys to JSON values)", problem, fix)


_CHECK = "llm_gateway.check"


def checked(check: Check) -> dict[str, Check]:
    """``attrs.field`` metadata: ``check`` validates the field, run by :func:`check_fields`.

    For the types built once per request, instead of ``validator=``: attrs would call every
    field's validator on every construction, where one expression over the common values (see
    :func:`plain_text`) settles most constructions; :func:`check_fields` then runs only for
    the rest, and gives the same errors, in the same order.
    """
    return {_CHECK: check}


def check_fields(instance: Any) -> None:
    """Run each field's :func:`checked` check in field order; the first problem raises."""
    for attribute in attrs.fields(type(instance)):
        check = attribute.metadata.get(_CHECK)
        if check is not None:
            check(instance, attribute, getattr(instance, attribute.name))


def plain_text(value: object) -> bool:
    """Whether ``value`` is a ``str`` (not a subclass) that UTF-8 can encode."""
    return type(value) is str and (value.isascii() or surrogate_at(value) is None)


def tuple_of(value: object, cls: type[Any]) -> bool:
    """Whether ``value`` is a tuple of ``cls`` instances (not subclasses)."""
    if type(value) is not tuple:
        return False
    return all(type(item) is cls for item in value)


REQUEST = Rules(RequestValidationError)
"""The checks of request-side types: they raise ``RequestValidationError``."""

CONFIG = Rules(ConfigError)
"""The checks of configuration types: they raise ``ConfigError``."""


def check_api_key(value: object, field: str) -> str:
    """``value`` if it can be sent as a key: printable ASCII, no whitespace, not empty.

    The message names ``field`` and never echoes the key (a key read from a file often keeps
    its trailing newline, which HTTP clients then print in their errors).

    Raises:
        ConfigError: The key cannot be sent.
    """
    if not isinstance(value, str):
        raise ConfigError(
            f"{field} must be a str, got {type(value).__name__} (the value is not shown); "
            "pass the key as a string"
        )
    if not value:
        raise ConfigError(f"{field} is empty; give the key, or leave it unset")
    if not all("!" <= ch <= "~" for ch in value):
        raise ConfigError(
            f"{field} has characters a key cannot have (whitespace, a line break, or non-ASCII; "
            "the key itself is not shown); strip the value, e.g. read the key file with "
            ".read().strip()"
        )
    return value


def api_key(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: ``None``, or a key :func:`check_api_key` accepts."""
    if value is not None:
        check_api_key(value, f"{_owner(instance)}.{attribute.name}")
