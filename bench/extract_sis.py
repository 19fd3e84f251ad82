"""Land generated SIS exports and compare with DuckDB alone reading the same CSV files.

    .venv/bin/python -m bench.extract_sis --people 890000      # about 1,000,000 SIS rows
    .venv/bin/python -m bench.extract_sis --from /tmp/gen1m    # reuse a generator output folder

The baseline is DuckDB's own ``read_csv`` (auto-detected dialect) copying the same files into a table
in a fresh database file: the least work any landing has to do. The landing adds hashing, encoding
checks, the quote-aware line scan, lineage columns and the archive move.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from bench import peak_rss_mb, print_table
from staff_pipeline.config import lea_ids
from staff_pipeline.extract import sis
from staff_pipeline.generator import generate
from staff_pipeline.settings import paths
from staff_pipeline.warehouse import connect


def baseline_seconds(files: list[Path], database: Path) -> float:
    """DuckDB alone: read every file into one table (cp1252 read as latin-1, DuckDB's nearest)."""
    started = time.perf_counter()
    con = duckdb.connect(str(database))
    try:
        for index, path in enumerate(files):
            head = path.read_bytes()[:65536]
            encoding = "utf-8"
            try:
                head.decode("utf-8")
            except UnicodeDecodeError:
                encoding = "latin-1"
            con.execute(
                f"CREATE TABLE t{index} AS SELECT * FROM read_csv(?, all_varchar = true, "
                f"encoding = '{encoding}')",
                [str(path)],
            )
    finally:
        con.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=890_000)
    parser.add_argument("--from", dest="source", type=Path, help="an existing generator output folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-sis-"))
    os.environ["STAFF_DATA_DIR"] = str(work / "data")
    where = paths()
    try:
        if args.source:
            shutil.copytree(args.source / "inbox", where.inbox)
        else:
            generate(work / "gen", args.people)
            shutil.copytree(work / "gen" / "inbox", where.inbox)
            shutil.rmtree(work / "gen")
        files = [path for _, path in sis.inbox_files(where.inbox)]
        size = sum(p.stat().st_size for p in files)
        base = baseline_seconds(files, work / "baseline.duckdb")
        started = time.perf_counter()
        with connect() as con:
            result = sis.land_inbox(con, where, "bench", known_leas=lea_ids())
        wall = time.perf_counter() - started
        if result.failures:
            raise SystemExit("\n".join(f.message for f in result.failures))
        print_table(
            [
                ("files landed", str(result.count("landed"))),
                ("rows landed", f"{result.rows:,}"),
                ("bytes", f"{size / 1e6:,.0f} MB"),
                ("landing wall time", f"{wall:.1f} s"),
                ("DuckDB read_csv alone", f"{base:.1f} s"),
                ("ratio landing / DuckDB", f"{wall / base:.2f}x"),
                ("throughput", f"{result.rows / wall:,.0f} rows/s"),
                ("peak RSS", f"{peak_rss_mb():.0f} MB"),
            ],
            f"bench.extract_sis ({result.rows:,} rows)",
        )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
