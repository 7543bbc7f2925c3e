"""A user's project set up exactly as docs/testing.md says, run by a separate pytest process.

Nothing here uses this repository's pytest configuration: each project is a temporary directory
with the conftest copied from docs/testing.md, and pytest loads the plugins a user gets from
their installation (entry points), looptime's included. Recording runs real SDK adapters
against the fake LLM server on a loopback socket (nothing leaves 127.0.0.1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def documented_conftest() -> str:
    """The conftest.py code block of docs/testing.md, as a user would paste it."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S)
    (block,) = [
        "\n".join(line.removeprefix(indent) for line in code.splitlines())
        for indent, code in blocks
        if code.lstrip().startswith("# conftest.py")
    ]
    return block


USES_A_FIXTURE = """
import pytest
from llm_gateway import LLMMessage, LLMRequest


@pytest.mark.anyio
async def test_agent(tmp_path, mock_gateway):
    (tmp_path / "note.txt").write_text("hi")
    response = await mock_gateway.request(
        LLMRequest(model="mock", messages=[LLMMessage("user", "hi")])
    )
    assert response.content.startswith("Mock answer ")


@pytest.mark.trio
async def test_trio_style(tmp_path, autojump_clock, mock_gateway):
    response = await mock_gateway.request(
        LLMRequest(model="mock", messages=[LLMMessage("user", "hi")])
    )
    assert response.content.startswith("Mock answer ")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    # No ini options at all: the plugins load as they do for a user (no -p no:looptime_plugin).
    pytester.makepyprojecttoml('[project]\nname = "user-agent"\nversion = "0"\n')
    pytester.makeconftest(documented_conftest())
    return pytester


def test_the_documented_conftest_is_the_one_used(project: pytest.Pytester) -> None:
    assert "--llm-gateway-record" in documented_conftest()
    assert "MockClock" in (project.path / "conftest.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("extra", [[], ["-p", "no:looptime_plugin"]], ids=["looptime", "none"])
def test_fixtures_work_with_or_without_looptimes_plugin(
    project: pytest.Pytester, extra: list[str]
) -> None:
    project.makepyfile(test_agent=USES_A_FIXTURE)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *extra)
    result.assert_outcomes(passed=3)


SERVER_CONFTEST = """

from anyio.from_thread import start_blocking_portal
from llm_gateway import ModelConfig
from llm_gateway.testing import open_fake_llm_server


@pytest.fixture(scope="session")
def fake_server():
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(open_fake_llm_server()) as server:
            yield server
        print(f"@@ server received {len(server.received)} @@")


@pytest.fixture
def mock_gateway_options(fake_server):
    model = ModelConfig(
        provider="gpt-4o-mini",
        model_name="gpt-4o-mini",
        endpoint=fake_server.openai_base_url,
        api_key="sk-user-project-secret",
    )
    return {"models": {"gpt": model}}
"""

RECORDED_TESTS = """
import pytest
from llm_gateway import LLMMessage, LLMRequest


async def ask(gateway, text):
    response = await gateway.request(LLMRequest(model="gpt", messages=[LLMMessage("user", text)]))
    print(f"@@ {type(gateway).__name__}: {response.content} @@")
    return response


@pytest.mark.anyio
@pytest.mark.llm_gateway(cassette="cassettes/good.json")
async def test_recorded(mock_gateway):
    await ask(mock_gateway, "What is trio?")


@pytest.mark.anyio
@pytest.mark.llm_gateway(cassette="cassettes/failing.json")
async def test_recorded_but_failing(mock_gateway):
    await ask(mock_gateway, "What is anyio?")
    raise AssertionError("the agent misbehaved")
"""

VIRTUAL_TIME_CONFTEST = """
import looptime
import pytest
from trio.testing import MockClock


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return ("asyncio", {"loop_factory": looptime.new_event_loop})
"""


def test_recording_under_the_documented_conftest_records_once_and_keeps_good_cassettes(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(documented_conftest() + SERVER_CONFTEST)
    project.makepyfile(test_agent=RECORDED_TESTS)
    failing = project.path / "cassettes" / "failing.json"
    failing.parent.mkdir()
    failing.write_text('{"version": 1, "fixtures": [{"content": "good"}]}\n', encoding="utf-8")
    before = failing.read_bytes()

    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--llm-gateway-record", "-s")
    # good.json is recorded by its first test (trio) and replayed by the asyncio run; a failed
    # recording does not count, so the asyncio run of the failing test records again.
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert out.count("@@ Gateway: ") == 3, out
    assert out.count("@@ MockLLMGateway: Fake answer to: What is trio? @@") == 1, out
    assert "@@ server received 3 @@" in out
    good = json.loads((project.path / "cassettes" / "good.json").read_text(encoding="utf-8"))
    assert [f["request"]["messages"][0]["content"] for f in good["fixtures"]] == ["What is trio?"]
    assert "sk-user-project-secret" not in json.dumps(good)
    assert failing.read_bytes() == before  # a failed test's recording replaces nothing

    # Without the flag, the tests replay on virtual time; the server gets nothing.
    replay = project.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-k", "not failing")
    replay.assert_outcomes(passed=2)
    assert "@@ server received 0 @@" in replay.stdout.str()


def test_recording_on_a_virtual_clock_is_refused_saying_what_to_do(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(VIRTUAL_TIME_CONFTEST + SERVER_CONFTEST)
    project.makepyfile(test_agent=RECORDED_TESTS)
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llm-gateway-record", "-k", "not failing"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ConfigError: recording needs real time: this code runs on a virtual clock"
            " (trio clock MockClock)*",
            "*ConfigError: recording needs real time: this code runs on a virtual clock"
            " (looptime's event loop)*",
        ],
        consecutive=False,
    )
    assert not (project.path / "cassettes" / "good.json").exists()
