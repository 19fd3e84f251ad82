"""Generate N synthetic people and report wall time, peak RSS and throughput.

.venv/bin/python -m bench.generate --people 1000000 [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench import peak_rss_mb, print_table
from staff_pipeline.generator import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary output")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    started = time.perf_counter()
    result = generate(out, args.people, seed=args.seed)
    wall = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print_table(
        [
            ("people", f"{result.people:,}"),
            ("Edu-V employees", f"{result.eduv_employees:,}"),
            ("SIS rows", f"{result.sis_rows:,}"),
            ("bytes written", f"{size / 1e6:,.0f} MB"),
            ("wall time", f"{wall:.1f} s"),
            ("peak RSS", f"{peak_rss_mb():.0f} MB"),
            ("throughput", f"{result.people / wall:,.0f} people/s"),
        ],
        f"bench.generate --people {args.people}",
    )
    if args.out is None and not args.keep:
        shutil.rmtree(out)
    else:
        print(f"output kept in {out}")


if __name__ == "__main__":
    main()
