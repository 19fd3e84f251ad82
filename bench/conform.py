"""Gate + conform for N people: staging with the pandera row gate, then identity and the staff model.

    .venv/bin/python -m bench.conform --people 1000000

The raw layer is written straight into DuckDB SQL (the extract stage's own tables): Edu-V holds
85% of the people (one employee element each, in one of the configured schools, with eckId and the
ASI local code), SIS holds 85% (one row each), 70% are in both and match by local code; 1% of each
source is spoiled (bad email, bad date) so the gate has rows to reject. Each step runs in its own
process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from bench import peak_rss_mb, print_table
from staff_pipeline.config import load_organisations, load_settings
from staff_pipeline.extract import eduv, sis
from staff_pipeline.transform.steps import conform, stage
from staff_pipeline.warehouse import connect

_SCHOOLS = """
CREATE OR REPLACE TABLE bench_schools AS
SELECT row_number() OVER (ORDER BY school_key) - 1 AS k, school_key, lea_id, sis_school_code,
       CASE WHEN eduv_org_master_id IS NOT NULL
            THEN json_object('organisationMasterIdentifier', eduv_org_master_id)
            ELSE json_object('organisationIds', json_array(json_object(
                 'organisationId', eduv_org_id, 'organisationIdType', eduv_org_id_type))) END AS org
FROM orgs
"""
_EDUV = """
INSERT INTO raw_eduv_employees
SELECT 'req-' || s.school_key, 'bench', s.school_key, i::INT, json_object(
    'givenName', 'Given' || i, 'familyName', 'Family' || i,
    'email', CASE WHEN i % 100 = 7 THEN 'not-an-email' ELSE 'p' || i || '@school.example.nl' END,
    'phone', '+31 20 555 ' || lpad((i % 10000)::VARCHAR, 4, '0'),
    'status', CASE WHEN i % 50 = 0 THEN 'tobedeleted' ELSE 'active' END,
    'dateCreated', '2023-09-01T08:00:00Z', 'dateLastModified', '2025-09-01T08:00:00Z',
    'userIds', json_array(json_object('userId', 'eck-' || i, 'userIdType', 'eckId'),
                          json_object('userId', 'L' || i, 'userIdType', 'ASI')),
    'organisationRoles', json_array(json_object(
        'organisationRole', CASE WHEN i % 20 = 0 THEN 'onderwijsdirecteur' ELSE 'leraar' END,
        'beginDate', '2020-08-01', 'organisation', s.org))), now()
FROM range($eduv) t(i) JOIN bench_schools s ON s.k = i % $schools
"""
_EDUV_REQUESTS = """
INSERT INTO raw_eduv_requests
SELECT 'req-' || school_key, 'bench', school_key, '{}', 200, true, NULL, count(*), 0, NULL, NULL, now()
FROM raw_eduv_employees GROUP BY school_key
"""
_SIS = """
INSERT INTO raw_sis_staff
SELECT 'bench', s.lea_id, 'staff_' || s.lea_id || '.csv', 'sha-' || s.lea_id, (i + 2)::INT,
       'L' || i, (1000000000 + i)::VARCHAR, 'First' || i, NULL, 'Last' || i,
       'p' || i || '@school.example.nl', NULL, NULL, s.sis_school_code, 'TCH', 'Teacher',
       CASE WHEN i % 100 = 3 THEN '31/02/2025' ELSE '2024-08-15' END, NULL, '1.0', NULL, NULL, now()
FROM range($first, $last) t(i) JOIN bench_schools s ON s.k = i % $schools
"""
_SIS_FILES = """
INSERT INTO raw_sis_files
SELECT DISTINCT file_sha256, lea_id, file_name, NULL, 0, 0, 'utf-8', ',', 'landed', NULL, 'bench', now()
FROM raw_sis_staff
"""


_COUNTED = (
    "rejected_rows",
    "stg_eduv_employees",
    "stg_sis_staff_assignments",
    "staff",
    "staff_contacts",
    "staff_assignments",
    "staff_match_issues",
)


def build_raw(people: int) -> None:
    """85% Edu-V (0 .. 0.85N), 85% SIS (0.15N .. N): 70% of the people are in both."""
    orgs = load_organisations()
    with connect() as con:
        eduv.ensure_tables(con)
        sis.ensure_tables(con)
        con.register("orgs", orgs)
        con.execute(_SCHOOLS)
        schools = len(orgs)
        con.execute(_EDUV, {"eduv": int(people * 0.85), "schools": schools})
        con.execute(_EDUV_REQUESTS)
        con.execute(_SIS, {"first": int(people * 0.15), "last": people, "schools": schools})
        con.execute(_SIS_FILES)


def _stage() -> None:
    with connect() as con:
        result = stage(con, "bench", load_settings())
        if not result.swapped:
            raise SystemExit(f"staging refused: {sorted(result.failures)}")


def _conform() -> None:
    settings = load_settings()
    with connect() as con:
        result = conform(con, "bench", settings, today=date(2026, 1, 15))
        if not result.swapped:
            raise SystemExit(f"conformed model refused: {sorted(result.failures)}")


def _child(step: Callable[[], None], out: multiprocessing.Queue) -> None:
    started = time.perf_counter()
    step()
    out.put((time.perf_counter() - started, peak_rss_mb()))


def timed(step: Callable[[], None]) -> tuple[float, float]:
    """Run ``step`` in a fresh process: (wall seconds, that process's peak RSS in MB)."""
    out: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(step, out))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{step.__name__} failed (exit {proc.exitcode})")
    return out.get()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.conform", description=__doc__)
    parser.add_argument("--people", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-conform-"))
    os.environ["STAFF_DATA_DIR"] = str(work)
    steps = {"raw (setup, SQL)": lambda: build_raw(args.people), "gate + stage": _stage, "conform": _conform}
    rows = []
    try:
        for name, step in steps.items():
            wall, rss = timed(step)
            rows.append((f"{name}: wall", f"{wall:,.1f} s"))
            rows.append((f"{name}: peak RSS", f"{rss:,.0f} MB"))
            if name != "raw (setup, SQL)":
                rows.append((f"{name}: throughput", f"{args.people / wall:,.0f} people/s"))
        with connect() as con:
            for table in _COUNTED:
                count = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                rows.append((f"rows {table}", f"{count:,}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, f"bench.conform --people {args.people:,}")


if __name__ == "__main__":
    main()
