"""Benchmarks: runnable modules (``python -m bench.<name> --people N``) that print a small table.

They are not timed tests: they measure wall time, peak RSS and throughput on the machine at hand.
Shared helpers live here so every benchmark reports the same way.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far.

    On Linux ``VmHWM`` (since exec): ``ru_maxrss`` there also counts the pages of the parent this
    process was forked from, so a benchmark started by a big parent would report the parent's size.
    Elsewhere ``ru_maxrss`` (macOS reports bytes).
    """
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text(encoding="ascii").splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def print_table(rows: list[tuple[str, str]], title: str) -> None:
    """A two-column text table, pasteable into bench/README.md."""
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}")
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value in rows:
        print(f"| {label.ljust(width)} | {value} |")
