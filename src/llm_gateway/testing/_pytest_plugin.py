"""The pytest plugin (entry point ``pytest11``): a ``mock_gateway`` fixture for agent tests.

``mock_gateway`` is an async generator fixture. pytest-trio runs async fixtures of
``@pytest.mark.trio`` tests inside the test's ``trio.run``; anyio's plugin runs those of
``@pytest.mark.anyio`` tests on the test's backend. Both leave a fixture alone when the test is
not theirs, so one plain async fixture serves both styles; the gateway is opened and closed in
the same task, as its task group requires.

Configuration, weakest first: the ``mock_gateway_options`` fixture (override it in a conftest,
module or class), then ``@pytest.mark.llm_gateway(...)`` markers from the outermost (module)
to the closest (function). ``pytest --llm-gateway-record`` makes ``mock_gateway`` of tests
that have a ``cassette`` a real :class:`~llm_gateway.Gateway` recording to it. See
``docs/testing.md``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from .._config import ModelConfig
from .._exceptions import ConfigError
from .._gateway import Gateway
from .._models import ModelProvider
from .._recording import CassetteRecorder, require_real_time
from ..providers import Provider, open_provider
from ._mock_gateway import MockLLMGateway

MARKER = "llm_gateway"
RECORD_OPTION = "--llm-gateway-record"
OPTIONS = frozenset(
    {
        "config",
        "models",
        "fixtures",
        "cassette",
        "on_missing",
        "latency_s",
        "log_dir",
        "keep_history",
    }
)
_PATH_OPTIONS = ("config", "fixtures", "cassette")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm_gateway", "llm_gateway testing toolkit")
    group.addoption(
        RECORD_OPTION,
        action="store_true",
        default=False,
        help=(
            "in tests with a cassette=, make the mock_gateway fixture a real Gateway (the test's "
            "config= or models=) that records every answer to it (real providers: keys needed)"
        ),
    )


# looptime's pytest plugin (installed with looptime, which users install for virtual time on
# asyncio) only acts on pytest-asyncio's event loops, and its fixture hook crashes on every
# fixture of every test when pytest-asyncio is not loaded (AttributeError on None.__name__).
LOOPTIME_PLUGIN = "looptime_plugin"
PYTEST_ASYNCIO_PLUGIN = "asyncio"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # By pytest_configure every entry-point plugin, every -p and the root conftests'
    # pytest_plugins are registered, and no fixture has run: the last safe moment to decide.
    # Without pytest-asyncio, looptime's plugin has nothing to do, so unregistering it changes
    # nothing but the crash; looptime.new_event_loop (what the docs use) does not need it.
    manager = config.pluginmanager
    if manager.get_plugin(PYTEST_ASYNCIO_PLUGIN) is None and manager.has_plugin(LOOPTIME_PLUGIN):
        manager.set_blocked(LOOPTIME_PLUGIN)
    config.addinivalue_line(
        "markers",
        f"{MARKER}(config=None, models=None, fixtures=None, cassette=None, on_missing=None, "
        "latency_s=0.0, keep_history=True): configure the mock_gateway fixture "
        "(MockLLMGateway arguments; relative paths are relative to the test file)",
    )


@pytest.fixture
def mock_gateway_options() -> dict[str, Any]:
    """Keyword arguments of ``mock_gateway``'s :class:`MockLLMGateway` (none by default).

    Override it (in a conftest, a module or a class) to configure many tests at once;
    ``@pytest.mark.llm_gateway(...)`` arguments override its entries.
    """
    return {}


def _options(request: pytest.FixtureRequest, base: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(base)
    here = request.path.parent
    # iter_markers yields the closest first: apply them outermost first, so the closest wins.
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            raise ConfigError(
                f"@pytest.mark.{MARKER} takes keyword arguments only, got {marker.args!r}"
            )
        given = dict(marker.kwargs)
        for name in _PATH_OPTIONS:
            value = given.get(name)
            if isinstance(value, str | os.PathLike) and not Path(value).is_absolute():
                given[name] = here / value
        options.update(given)
    unknown = set(options) - OPTIONS
    if unknown:
        raise ConfigError(
            f"mock_gateway options {sorted(unknown)} are unknown; use {sorted(OPTIONS)}"
        )
    return options


_RECORDED: pytest.StashKey[dict[Path, str]] = pytest.StashKey()
_CALL_REPORT: pytest.StashKey[pytest.TestReport] = pytest.StashKey()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # mock_gateway's teardown writes a recording only if the test itself passed.
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


def _check_recordable(options: Mapping[str, Any]) -> None:
    if options.get("config") is None and options.get("models") is None:
        raise ConfigError(
            f"{RECORD_OPTION}: this test gives no config= or models= naming real models to record"
        )


@asynccontextmanager
async def _recording_gateway(
    options: Mapping[str, Any], recorder: CassetteRecorder
) -> AsyncIterator[Gateway]:
    @asynccontextmanager
    async def open_recording(model_id: str, config: ModelConfig) -> AsyncIterator[Provider]:
        if config.provider is not ModelProvider.MOCK:
            require_real_time()  # the network I/O of a real provider needs a real clock
        async with open_provider(model_id, config) as provider:
            yield recorder.wrap(model_id, config, provider)

    async with Gateway(
        options.get("config"),
        options.get("log_dir"),
        models=options.get("models"),
        provider_factory=open_recording,
    ) as gateway:
        yield gateway


@pytest.fixture
async def mock_gateway(
    request: pytest.FixtureRequest, mock_gateway_options: dict[str, Any]
) -> AsyncGenerator[MockLLMGateway]:
    """An open :class:`MockLLMGateway`, closed (gracefully) after the test.

    Works in ``@pytest.mark.trio`` tests (pytest-trio) and ``@pytest.mark.anyio`` tests (both
    backends). Configure it with ``@pytest.mark.llm_gateway(fixtures=..., cassette=...,
    models=..., config=..., on_missing=..., latency_s=..., keep_history=...)`` or by overriding
    ``mock_gateway_options``.

    With ``pytest --llm-gateway-record``, in a test with a ``cassette``, it is a real
    :class:`Gateway` recording to that cassette instead, on a real clock (a virtual one is a
    ``ConfigError``). The cassette is replaced only if the test passes, and only the first test
    of the run using it records: later ones (the same test on the other backend) replay it.
    """
    options = _options(request, mock_gateway_options)
    cassette = options.get("cassette")
    recorded = request.config.stash.setdefault(_RECORDED, {})
    # Only tests that replay a cassette record; the others keep their scripted mock.
    if request.config.getoption(RECORD_OPTION) and cassette is not None:
        path = Path(cassette)  # marker paths are already absolute (see _options)
        if path not in recorded:
            _check_recordable(options)
            recorder = CassetteRecorder(path)
            async with _recording_gateway(options, recorder) as recording:
                # While recording, tests get the real gateway; MockLLMGateway's extras
                # (received, answer_next, fail_next) do not exist on it.
                yield recording  # type: ignore[misc]
            report = request.node.stash.get(_CALL_REPORT, None)
            if report is not None and report.passed:
                # A failed test's answers may be partial or wrong: keep the previous cassette.
                recorder.write()
                recorded[path] = request.node.nodeid
            return
    async with MockLLMGateway(**options) as gateway:
        yield gateway
