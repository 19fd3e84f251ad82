"""Benchmarks: runnable modules (``python -m bench.<name> --people N``) that print a small table.

They are not timed tests: they measure wall time, peak RSS and throughput on the machine at hand.
Shared helpers live here so every benchmark reports the same way.
"""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB, macOS in bytes)."""
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
