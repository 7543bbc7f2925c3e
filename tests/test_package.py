"""The package surface: lazy imports and re-exports (the demo: tests/test_demo.py)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import traceback

import pytest

import llm_gateway


def test_import_loads_no_provider_sdk_or_test_tooling() -> None:
    code = (
        "import sys, llm_gateway, llm_gateway.testing\n"
        "heavy = ('anthropic', 'openai', 'httpx', 'httpx2', 'trio', 'hypothesis', 'pytest')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_loads_no_optional_capability_until_a_gateway_uses_it() -> None:
    # The batch lane and its journal, the shared books and telemetry load when a gateway that
    # uses them opens (or is built, for the shared books): `import llm_gateway` stays lean.
    lazy = (
        "llm_gateway._batch_lane",
        "llm_gateway._journal",
        "llm_gateway._shared_limits",
        "llm_gateway._telemetry",
        "sqlite3",
        "coredis",
        "opentelemetry",
        "aiohttp",
    )
    code = (
        "import sys, llm_gateway\n"
        f"lazy = {lazy!r}\n"
        "print(sorted(m for m in sys.modules if m in lazy or m.split('.')[0] in lazy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_exported() -> None:
    for name in llm_gateway.__all__:
        assert getattr(llm_gateway, name) is not None
    assert not [n for n in llm_gateway.__all__ if n.startswith("_")]


@pytest.mark.parametrize("package", ["llm_gateway", "llm_gateway.providers", "llm_gateway.testing"])
def test_public_classes_and_functions_say_where_to_import_them_from(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            home = obj.__module__
            assert not any(part.startswith("_") for part in home.split(".")), name
            assert getattr(importlib.import_module(home), name) is obj


def test_a_traceback_names_the_public_class() -> None:
    try:
        llm_gateway.LLMRequest(model="m", messages=[])
    except llm_gateway.RequestValidationError as exc:
        text = "".join(traceback.format_exception_only(exc))
    assert text.startswith("llm_gateway.RequestValidationError: LLMRequest.messages")
