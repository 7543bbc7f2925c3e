"""The multi-process soak of shared rate limits, short: benchmarks/soak_shared.py as CI runs it.

Four gateway processes (two on trio, two on asyncio) share one Redis and pace to a quota that
the loopback fake server enforces itself; one of them is killed midway. Real time: the limits
give five requests a second, so a run takes about 20 s, and the properties hold with margins
of a window (see the script's docstring). ``nox -s soak-shared`` runs the long version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_shared.py"


def test_four_processes_share_one_quota_with_no_429() -> None:
    command = [sys.executable, str(SCRIPT), "--json", "--duration=16", "--rpm=300", "--tpm=15000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.stdout, done.stderr[-3000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["server_429"] == 0 and figures["gateway_429"] == 0
    limit = figures["limit_rate_per_s"]
    assert figures["rate_per_s"] >= 0.9 * limit
    assert figures["rate_after_kill_per_s"] >= 0.9 * limit
    assert figures["rate_per_s"] <= limit * 1.01  # shared: not four times the quota
    assert len(figures["highs"]) == 3  # the killed process reports nothing
    for high in figures["highs"]:
        assert high["served"] and high["others_lows_before"] == 0, high
        assert high["wait_s"] <= 1.3, high
    assert figures["failures"] == []
    assert done.returncode == 0
