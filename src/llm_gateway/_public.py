"""Public names say where users import them from (``llm_gateway.X``), not the private module."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["publish"]


def publish(module: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Set ``__module__`` of the classes and functions ``names`` (in ``namespace``) to ``module``.

    Tracebacks, reprs and docs then show ``llm_gateway.RequestTimeoutError`` instead of
    ``llm_gateway._exceptions.RequestTimeoutError``; pickling still works, since the name is
    importable from ``module``. Only objects still named after a private module are touched
    (a name re-exported by two packages keeps the first).
    """
    for name in names:
        obj = namespace[name]
        private = obj.__module__.rpartition(".")[2].startswith("_")  # not yet published
        if (isinstance(obj, type) or inspect.isfunction(obj)) and private:
            if isinstance(obj, type) and attrs.has(obj):
                # Resolve the string annotations while their own module still holds the names
                # they use (cattrs and get_type_hints look them up through __module__).
                attrs.resolve_types(obj)
            obj.__module__ = module
