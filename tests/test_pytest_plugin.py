"""The pytest plugin: ``mock_gateway`` in trio-style and anyio-style tests, and its configuration.

The plugin is loaded in this run through its ``pytest11`` entry point, exactly as for users.
anyio tests run on both backends on virtual time (tests/conftest.py); trio tests use
pytest-trio's ``autojump_clock``. Behaviour that needs a separate pytest run (the record flag,
errors, teardown) is checked with ``pytester``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from llm_gateway import (
    ConfigError,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    ProviderError,
    RequestPriority,
    ToolCall,
)
from llm_gateway.testing import MockFixture, MockLLMGateway

from ._support import ask

pytest_plugins = ["pytester"]

HIGH = RequestPriority.HIGH


def weather_turns() -> tuple[LLMRequest, LLMRequest]:
    question = LLMMessage("user", "What's the weather in Oslo?")
    first = LLMRequest(model="mock", messages=[question], priority=HIGH)
    call = ToolCall("call_1", "get_weather", {"city": "Oslo"})
    second = LLMRequest(
        model="mock",
        messages=[
            question,
            LLMMessage("assistant", "", tool_calls=[call]),
            LLMMessage("tool", "sunny", tool_call_id="call_1"),
        ],
        priority=HIGH,
    )
    return first, second


# -- anyio style: both backends ------------------------------------------------------------


@pytest.mark.anyio
async def test_anyio_style_gets_an_open_mock_gateway(mock_gateway: MockLLMGateway) -> None:
    response = await mock_gateway.request(ask("mock", "hi", priority=HIGH))
    assert response.content.startswith("Mock answer ")
    assert [r.messages[0].content for r in mock_gateway.received] == ["hi"]


@pytest.mark.anyio
@pytest.mark.llm_gateway(fixtures="fixtures/toolkit.json")
async def test_anyio_style_with_a_fixtures_file_from_the_marker(
    mock_gateway: MockLLMGateway,
) -> None:
    first, second = weather_turns()
    assert (await mock_gateway.request(first)).tool_calls[0].arguments == {"city": "Oslo"}
    assert (await mock_gateway.request(second)).content == "It is sunny in Oslo."


@pytest.mark.anyio
@pytest.mark.llm_gateway(keep_history=False)
async def test_the_marker_can_turn_the_request_history_off(mock_gateway: MockLLMGateway) -> None:
    await mock_gateway.request(ask("mock", "hi", priority=HIGH))
    with pytest.raises(ConfigError, match="keep_history=True"):
        mock_gateway.received  # noqa: B018


# -- trio style: pytest-trio ---------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.llm_gateway(latency_s=60.0)
async def test_trio_style_gets_an_open_mock_gateway(
    autojump_clock: trio.testing.MockClock, mock_gateway: MockLLMGateway
) -> None:
    response = await mock_gateway.request(ask("mock", "hi", priority=HIGH))
    assert response.content.startswith("Mock answer ")
    assert trio.current_time() == pytest.approx(60.0, abs=1e-6)  # a minute of virtual time


@pytest.mark.trio
@pytest.mark.llm_gateway(fixtures="fixtures/toolkit.json", latency_s=3.0)
async def test_trio_style_with_the_marker(
    autojump_clock: trio.testing.MockClock, mock_gateway: MockLLMGateway
) -> None:
    first, second = weather_turns()
    start = trio.current_time()
    assert (await mock_gateway.request(first)).finish_reason == "tool_calls"
    assert trio.current_time() - start == pytest.approx(3.0)  # the marker's latency
    start = trio.current_time()
    assert (await mock_gateway.request(second)).content == "It is sunny in Oslo."
    assert trio.current_time() - start == pytest.approx(0.25)  # the fixture's own latency


# -- configuration: options fixture, class and function markers ------------------------------


@pytest.mark.llm_gateway(latency_s=1.0, on_missing="error")
class TestConfiguration:
    @pytest.fixture
    def mock_gateway_options(self) -> dict[str, Any]:
        return {
            "models": {"smart": ModelConfig(provider="mock", model_name="smart-1")},
            "fixtures": [MockFixture(content="from the options fixture")],
            "latency_s": 5.0,
        }

    @pytest.mark.anyio
    async def test_the_options_fixture_and_the_class_marker(
        self, mock_gateway: MockLLMGateway
    ) -> None:
        assert list(mock_gateway.config.models) == ["smart"]
        assert mock_gateway.script.latency_s == 1.0  # the marker overrides the options
        assert mock_gateway.script.on_missing == "error"
        response = await mock_gateway.request(ask("smart", "anything", priority=HIGH))
        assert response.content == "from the options fixture"

    @pytest.mark.anyio
    @pytest.mark.llm_gateway(fixtures="fixtures/toolkit.json", latency_s=0.0)
    async def test_the_closest_marker_wins(self, mock_gateway: MockLLMGateway) -> None:
        assert mock_gateway.script.latency_s == 0.0
        assert mock_gateway.script.on_missing == "error"  # still the class marker's
        with pytest.raises(ProviderError, match="overloaded"):
            await mock_gateway.request(ask("smart", "overload me", priority=HIGH))


# -- in a separate pytest run ----------------------------------------------------------------

INI = """
[pytest]
addopts = -p no:looptime_plugin --strict-markers -p no:cacheprovider
filterwarnings = error
"""

CONFTEST = """
import pytest

@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    return request.param
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


RECORDED_TEST = """
import pytest
from llm_gateway import Gateway, LLMMessage, LLMRequest, ModelConfig, RequestPriority
from llm_gateway.testing import MockLLMGateway

pytestmark = pytest.mark.llm_gateway(
    models={"m": ModelConfig(provider="mock", model_name="m", api_key="sk-plugin-secret")},
    cassette="cassettes/agent.json",
)

@pytest.mark.anyio
async def test_agent(mock_gateway):
    request = LLMRequest(
        model="m", messages=[LLMMessage("user", "hello")], priority=RequestPriority.HIGH
    )
    response = await mock_gateway.request(request)
    kind = "mock" if isinstance(mock_gateway, MockLLMGateway) else "real"
    print(f"@@ {kind} {response.content} @@")
"""


def test_record_flag_records_with_a_real_gateway_then_tests_replay(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_agent=RECORDED_TEST)
    recorded = project.runpytest("--llm-gateway-record", "-s")
    recorded.assert_outcomes(passed=2)
    assert "@@ real Mock answer" in recorded.stdout.str()
    cassette = project.path / "cassettes" / "agent.json"
    data = json.loads(cassette.read_text(encoding="utf-8"))
    assert len(data["fixtures"]) == 1
    assert "sk-plugin-secret" not in cassette.read_text(encoding="utf-8")
    replayed = project.runpytest("-s")
    replayed.assert_outcomes(passed=2)
    assert "@@ mock Mock answer" in replayed.stdout.str()
    # Edit the cassette: replay must answer from it, not from the mock's default.
    data["fixtures"][0]["content"] = "edited answer"
    cassette.write_text(json.dumps(data), encoding="utf-8")
    project.runpytest("-s").stdout.fnmatch_lines(["*@@ mock edited answer @@*"])


def test_a_cassette_miss_fails_the_test_naming_the_request(project: pytest.Pytester) -> None:
    cassette = project.path / "empty.json"
    cassette.write_text('{"version": 1, "fixtures": []}', encoding="utf-8")
    project.makepyfile(
        """
        import pytest
        from llm_gateway import LLMMessage, LLMRequest

        @pytest.mark.anyio
        @pytest.mark.llm_gateway(cassette="empty.json")
        async def test_agent(mock_gateway):
            await mock_gateway.request(
                LLMRequest(model="mock", messages=[LLMMessage("user", "x")], request_id="r-1")
            )
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*CassetteMissError: no fixture or cassette entry*'r-1'*"])


def test_bad_configuration_and_recording_without_real_models_are_clear_errors(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import pytest
        from llm_gateway.testing import MockLLMGateway

        @pytest.mark.anyio
        @pytest.mark.llm_gateway(fixturs="typo.json")
        async def test_typo(mock_gateway):
            pass

        @pytest.mark.trio
        @pytest.mark.llm_gateway(cassette="c.json")
        async def test_no_models(mock_gateway):
            pass

        @pytest.mark.trio
        async def test_without_a_cassette_stays_on_the_mock(mock_gateway):
            assert isinstance(mock_gateway, MockLLMGateway)
        """
    )
    result = project.runpytest("--llm-gateway-record")
    # pytest-trio reports a failed fixture of a trio test as the test's failure.
    result.assert_outcomes(errors=2, failed=1, passed=1)
    result.stdout.re_match_lines(
        [
            r".*ConfigError: mock_gateway options \['fixturs'\] are unknown",
            r".*ConfigError: --llm-gateway-record: this test gives no config= or models=",
        ]
    )


def test_the_gateway_is_closed_after_the_test_in_both_styles(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        seen = []

        @pytest.mark.trio
        async def test_trio(mock_gateway):
            seen.append(mock_gateway)
            assert "open" in repr(mock_gateway)

        @pytest.mark.anyio
        async def test_anyio(mock_gateway):
            seen.append(mock_gateway)

        def test_all_closed():
            assert len(seen) == 3
            assert all("closed" in repr(gw) for gw in seen)
        """
    )
    project.runpytest("-p", "no:randomly").assert_outcomes(passed=4)


def test_the_marker_is_registered(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.llm_gateway(*): configure the mock_gateway*"])


def test_paths_in_the_marker_are_relative_to_the_test_file(project: pytest.Pytester) -> None:
    sub = project.mkpydir("agents")
    (sub / "answers.json").write_text(
        '{"version": 1, "fixtures": [{"content": "from the sub directory"}]}', encoding="utf-8"
    )
    (sub / "test_sub.py").write_text(
        "import pytest\n"
        "from llm_gateway import LLMMessage, LLMRequest\n"
        "@pytest.mark.anyio\n"
        "@pytest.mark.llm_gateway(fixtures='answers.json')\n"
        "async def test_it(mock_gateway):\n"
        "    r = await mock_gateway.request(\n"
        "        LLMRequest(model='mock', messages=[LLMMessage('user', 'x')]))\n"
        "    assert r.content == 'from the sub directory'\n",
        encoding="utf-8",
    )
    assert Path(sub).is_dir()
    project.runpytest().assert_outcomes(passed=2)
