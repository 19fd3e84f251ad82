"""Pull generated Edu-V employees from the stand-in and land them; compare with DuckDB alone.

    .venv/bin/python -m bench.extract_eduv --people 1000000
    .venv/bin/python -m bench.extract_eduv --from /tmp/gen1m     # reuse a generator output folder

The stand-in runs in a child process (as a remote server would), serving the generator's files
for the configured schools. The extract is the production code path: token, one streamed request
per school (4 at a time), landing files with sha256, and DuckDB ``read_json_objects`` into
``raw_eduv_employees``. The baseline is DuckDB alone reading the same landed JSON files from disk
into a table in a fresh database file: the least work any landing has to do.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from bench import peak_rss_mb, print_table

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"


def _serve(eduv_dir: str, people: int, ready: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """Child process: generate (when asked) and serve the files until told to stop."""
    from staff_pipeline.config import load_organisations
    from staff_pipeline.generator import generate
    from staff_pipeline.standins.eduv import EduVStandIn

    organisations = load_organisations()
    folder = Path(eduv_dir)
    started = time.perf_counter()
    if people:
        generate(folder.parent, people, organisations=organisations)
    generated = time.perf_counter() - started
    with EduVStandIn() as standin:
        standin.record_bodies = False
        standin.add_client(CLIENT_ID, secret=CLIENT_SECRET)
        standin.load_generated(organisations, folder)
        ready.put((standin.url, generated))
        stop.wait()


def baseline_seconds(files: list[str], database: Path) -> float:
    started = time.perf_counter()
    con = duckdb.connect(str(database))
    try:
        con.execute(
            "CREATE TABLE employees AS SELECT json AS employee FROM read_json_objects(?, format = 'array')",
            [files],
        )
    finally:
        con.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.extract_eduv", description=__doc__)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--from", dest="source", type=Path, help="an existing generator output folder")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-eduv-"))
    os.environ["STAFF_DATA_DIR"] = str(work / "data")
    eduv_dir = args.source / "eduv" if args.source else work / "gen" / "eduv"
    served = sum(1 for f in eduv_dir.glob("*.jsonl") for _ in f.open("rb")) if args.source else None

    from staff_pipeline.clients.eduv import EduVClient
    from staff_pipeline.config import load_organisations
    from staff_pipeline.extract import eduv as extract
    from staff_pipeline.settings import paths
    from staff_pipeline.warehouse import connect

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    people = 0 if args.source else args.people
    server = context.Process(target=_serve, args=(str(eduv_dir), people, ready, stop))
    server.start()
    try:
        url, generate_seconds = ready.get(timeout=3600)
        if served is None:
            served = sum(1 for f in eduv_dir.glob("*.jsonl") for _ in f.open("rb"))
        queries = extract.school_queries(load_organisations())
        started = time.perf_counter()
        with EduVClient(url, CLIENT_ID, client_secret=CLIENT_SECRET, pool_size=args.concurrency) as client:
            fetched = extract.fetch_all(
                client, queries, run_id="bench", landing_dir=paths().landing, concurrency=args.concurrency
            )
        fetch_seconds = time.perf_counter() - started
        with connect() as con:
            landed = extract.land(con, fetched, "bench")
        extract_seconds = time.perf_counter() - started
        extract_rss = peak_rss_mb()
    finally:
        stop.set()
        server.join(timeout=60)
    failed = [r.problem for r in landed if not r.ok]
    if failed:
        raise SystemExit(f"extract failed: {failed}")
    rows = sum(r.employee_count or 0 for r in landed)
    size = sum(r.bytes for r in landed)
    files = [r.response_path for r in landed if r.response_path]
    base = baseline_seconds(files, work / "baseline.duckdb")
    server_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print_table(
        [
            ("people generated", f"{args.people:,}" if not args.source else f"(from {args.source})"),
            ("employee lines served by the stand-in", f"{served:,}"),
            ("generate (child process)", f"{generate_seconds:.1f} s" if not args.source else "-"),
            ("schools queried", str(len(landed))),
            ("rows landed (raw_eduv_employees)", f"{rows:,}"),
            ("bytes landed", f"{size / 1e6:,.0f} MB"),
            ("download (HTTP, stream to disk, sha256)", f"{fetch_seconds:.1f} s"),
            ("extract total (download + DuckDB load)", f"{extract_seconds:.1f} s"),
            ("throughput", f"{rows / extract_seconds:,.0f} rows/s, {size / 1e6 / extract_seconds:,.0f} MB/s"),
            ("baseline: DuckDB alone reading the landed JSON", f"{base:.1f} s"),
            ("ratio extract / baseline", f"{extract_seconds / base:.2f}x"),
            ("peak RSS, extract process", f"{extract_rss:,.0f} MB"),
            ("peak RSS, stand-in process", f"{server_rss:,.0f} MB"),
        ],
        "Edu-V extract",
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
