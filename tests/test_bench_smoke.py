"""The stage benchmarks still run against today's table contracts (they write conformed tables of
their own, so a new column would otherwise only show up as a failed ``make bench``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("stage", ["bench.load_edfi", "bench.load_linkit"])
def test_a_stage_benchmark_runs_at_a_tiny_size(stage: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", stage, "--people", "60"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "requests" in done.stdout
