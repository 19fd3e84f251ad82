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


def test_a_run_without_the_stage_benchmarks_keeps_their_latest_section(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.__main__ as bench_main

    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Benchmarks\n\nhow to read\n\n{bench_main.MARK}\nold tables\n\n"
        f"{bench_main.STAGE_HEAD}`python -m bench.<stage> --people 10`), as they print them\n\n"
        "### bench.generate (1 s)\n| people | 10 |\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(bench_main, "README", readme)

    kept = bench_main.kept_stage_benches()
    bench_main.write_readme(f"new tables\n\n{kept}")

    text = readme.read_text(encoding="utf-8")
    assert "old tables" not in text and "new tables" in text
    assert text.count(bench_main.STAGE_HEAD) == 1 and "### bench.generate (1 s)" in text
