"""The demo the README runs: plain and live output, both backends, Ctrl+C, no rich, no trio."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from llm_gateway import demo
from llm_gateway._stats import GatewayStats

from .conftest import virtual_time_backend

BACKENDS = ["trio", "asyncio"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """A StringIO that says it is a terminal, as a user's shell is."""

    def isatty(self) -> bool:
        return True


def run_demo(
    backend: str, *args: str, out: io.StringIO | None = None, console: Any = None
) -> tuple[int, str]:
    out = io.StringIO() if out is None else out
    name, options = virtual_time_backend(backend)
    argv = ["--no-logs", "--requests", "2", "--backend", name, *args]
    code = demo.run(argv, out=out, console=console, backend_options=options)
    return code, out.getvalue()


def table(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the plain table titled ``title`` in ``text``, by first cell."""
    lines = text.splitlines()
    start = lines.index(title) + 4  # title, two header lines, the rule
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


PRIORITY_TABLE = "Per priority: the HIGH user's answers stay fast"


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_run_reaches_its_summary_with_every_request_answered(backend: str) -> None:
    code, out = run_demo(backend, "--no-live")
    assert code == 0
    assert f"llm_gateway demo on {backend}" in out
    assert "Summary: finished after" in out
    by_priority = table(out, PRIORITY_TABLE)
    # --requests 2: the user sends 2, each of 2 workers 3 x 2, the indexer 6 x 2.
    sent_done_failed_queued_inflight = {p: cells[:5] for p, cells in by_priority.items()}
    assert sent_done_failed_queued_inflight == {
        "HIGH (user)": ["2", "2", "0", "0", "0"],
        "NORMAL (workers)": ["12", "12", "0", "0", "0"],
        "LOW (indexer)": ["12", "12", "0", "0", "0"],
    }
    results = table(out, "Results per model")
    assert results["TOTAL"][-2:] == ["26", "0"]  # done, failed: the gateway agrees
    queues = table(out, "Queues per model")
    assert queues["fast"][-1] != "none" and queues["smart"][-1] == "none"  # budget left
    assert "t=" in out  # the running lines came before the summary


@pytest.mark.parametrize("backend", BACKENDS)
def test_high_answers_stay_fast_while_low_waits(backend: str) -> None:
    code, out = run_demo(backend, "--no-live", "--requests", "8")
    assert code == 0
    answer_ms = {
        p: [float(x) for x in cells[-3:]] for p, cells in table(out, PRIORITY_TABLE).items()
    }
    high_p95 = answer_ms["HIGH (user)"][1]
    low_p50 = answer_ms["LOW (indexer)"][0]
    assert high_p95 < low_p50, answer_ms


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_dashboard_renders_and_fits_80_columns(backend: str) -> None:
    from rich.console import Console

    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=80, color_system=None)
    code, plain = run_demo(backend, out=io.StringIO(), console=console)
    assert code == 0
    screen = ANSI.sub("", file.getvalue())
    for title in ("Queues per model", "Results per model", PRIORITY_TABLE, "Summary: finished"):
        assert title in screen
    assert "llm_gateway demo · t = " in screen  # a live frame before the summary
    assert "…" not in screen  # no column cut short
    assert max(len(line) for line in screen.splitlines()) <= 80
    assert "t=" not in plain  # the dashboard replaces the plain lines


@pytest.mark.parametrize("height", [24, 50])
def test_every_live_frame_fits_the_terminal_height(
    height: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    heights: list[int] = []
    frames: list[str] = []
    update = demo.RichScreen.update

    def measuring(self: demo.RichScreen, stats: GatewayStats, tally: demo.Tally) -> None:
        update(self, stats, tally)
        assert self._live is not None
        lines = self._console.render_lines(self._live.renderable, pad=False)
        heights.append(len(lines))
        frames.append("\n".join("".join(seg.text for seg in line) for line in lines))

    monkeypatch.setattr(demo.RichScreen, "update", measuring)
    console = Console(file=io.StringIO(), force_terminal=True, width=80, height=height)
    assert run_demo("trio", console=console)[0] == 0
    assert heights and max(heights) <= height
    assert ("mean batch: requests per dispatched batch" in frames[-1]) == (height >= 34)
    assert PRIORITY_TABLE in frames[-1]  # the last table is on screen in both


@pytest.mark.parametrize("backend", BACKENDS)
def test_interrupt_mid_run_resolves_everything_and_prints_the_summary(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[GatewayStats] = []
    update = demo.PlainScreen.update

    def interrupting(self: demo.PlainScreen, stats: GatewayStats, tally: demo.Tally) -> None:
        update(self, stats, tally)
        seen.append(stats)
        if stats.uptime_s >= 2.0:
            raise KeyboardInterrupt

    monkeypatch.setattr(demo.PlainScreen, "update", interrupting)
    code, out = run_demo(backend, "--no-live", "--requests", "10")
    assert code == demo.INTERRUPTED_EXIT == 130
    assert "Summary: interrupted (Ctrl+C) after 2.0 s" in out
    assert seen[-1].total.queued > 0  # it was interrupted with work pending
    rows = table(out, PRIORITY_TABLE)
    for cells in rows.values():
        sent, done, failed, queued, in_flight = map(int, cells[:5])
        assert done + failed == sent and queued == in_flight == 0, rows
    assert int(rows["LOW (indexer)"][2]) > 0  # pending LOW work was aborted, and counted
    done, failed = map(int, table(out, "Results per model")["TOTAL"][-2:])
    assert done + failed == sum(int(cells[0]) for cells in rows.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_in_a_terminal_run_ends_with_the_summary_and_no_traceback(backend: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_gateway.demo", "--no-logs", "--no-live", "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # As from a terminal: a suite started in the background (`pytest &` in a script)
        # passes SIGINT on ignored, and the demo would never hear the Ctrl+C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the demo has started: the gateway opens next
    assert first.startswith("llm_gateway demo on")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and err == ""
    assert proc.returncode == 130
    assert "Summary: interrupted (Ctrl+C)" in out
    assert PRIORITY_TABLE in out


def test_without_rich_it_prints_plain_lines_and_says_how_to_get_the_dashboard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    code, out = run_demo("trio", out=Terminal())
    assert code == 0
    hints = [line for line in out.splitlines() if "rich" in line]
    assert hints == ["No rich, plain output; dashboard: pip install -e '.[demo]' in the checkout"]
    assert max(len(line) for line in out.splitlines()) <= 80  # fits a default terminal
    assert "Summary: finished" in out and "t=" in out


def test_without_trio_it_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)  # find_spec("trio") is None, as uninstalled
    assert demo.pick_backend("auto") == "asyncio"
    out = io.StringIO()
    _, options = virtual_time_backend("asyncio")
    code = demo.run(["--no-logs", "--no-live", "--requests", "1"], out=out, backend_options=options)
    assert code == 0
    assert "llm_gateway demo on asyncio" in out.getvalue()


def test_asking_for_trio_without_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)
    assert demo.run(["--no-logs", "--backend", "trio"], out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: --backend trio: trio is not installed; pip install -e '.[demo]' in the checkout\n"
    )


def test_auto_backend_prefers_trio_when_installed() -> None:
    assert demo.pick_backend("auto") == "trio"
    assert demo.pick_backend("asyncio") == "asyncio"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--requests", "0"], "--requests must be >= 1, got 0"),
        (["--duration", "nan"], "--duration must be a number of seconds > 0, got nan"),
        (["--duration", "0"], "--duration must be a number of seconds > 0, got 0.0"),
    ],
)
def test_bad_options_are_refused_by_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
