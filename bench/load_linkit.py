"""LinkIt! load benchmark: create N staff across districts against the stand-in, then a 1%-changed run.

    .venv/bin/python -m bench.load_linkit --people 100000 --districts 4 --concurrency 8

The stand-in runs in its own process (so it does not share the loader's GIL). Conformed tables are
generated in DuckDB SQL; the mart, diff, send and ledger fold are the production code paths.
Prints wall time, peak RSS of the loader process, requests by call and throughput per run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections import Counter

from bench import peak_rss_mb
from staff_pipeline import warehouse
from staff_pipeline.clients.linkit import LinkItClient
from staff_pipeline.loads.linkit import load_district
from staff_pipeline.loads.linkit_mart import build_mart
from staff_pipeline.standins.linkit import LinkItStandIn


def _keys(district: str) -> tuple[str, str]:
    return f"bench-{district}-access", f"bench-{district}-private"


def _serve(districts: list[str], schools: int, conn) -> None:
    standin = LinkItStandIn()
    standin.record_bodies = False
    for n, district in enumerate(districts):
        standin.add_district(district, *_keys(district), [1000 * (n + 1) + s for s in range(schools)])
    standin.start()
    conn.send(standin.url)
    conn.recv()  # run until the parent says stop
    standin.stop()


def _conformed(people: int, districts: int, schools: int) -> None:
    """Staff in SQL: one teacher assignment each, every 10th also a school admin at a second school."""
    with warehouse.connect() as con:
        con.execute(f"""
            CREATE OR REPLACE TABLE staff AS
            SELECT 'p' || i AS person_id, 'W' || i AS wiseid, 'LC' || i AS local_code,
                   'First' || i AS first_name,
                   NULL AS middle_name, NULL AS family_name_prefix, 'Last' || i AS last_name,
                   NULL AS preferred_first_name, 'user' || i || '@bench.example' AS primary_email,
                   'active' AS status, NULL AS leaving_reason, 'bench' AS matched_by, 'bench' AS sources
            FROM range({people}) t(i)""")
        con.execute("""
            CREATE OR REPLACE TABLE staff_contacts (person_id VARCHAR, lea_id BIGINT, school_id BIGINT,
                kind VARCHAR, value VARCHAR, source VARCHAR, is_primary BOOLEAN)""")
        con.execute(f"""
            CREATE OR REPLACE TABLE staff_assignments AS
            SELECT 'p' || i AS person_id, (i % {districts})::BIGINT AS lea_id, NULL::BIGINT AS school_id,
                   NULL AS school_key, 'LC' || i AS local_code, false AS choice_school,
                   'd' || (i % {districts}) AS linkit_district,
                   (1000 * (i % {districts} + 1) + (i // {districts}) % {schools} + k)::BIGINT
                       AS linkit_school_id,
                   'bench' AS source, 'TCH' AS source_role, NULL AS staff_classification,
                   NULL AS contact_title,
                   CASE WHEN k = 0 THEN 'TEACHER' ELSE 'SCHOOL ADMIN' END AS linkit_role,
                   NULL AS position_title, NULL::DATE AS begin_date, NULL::DATE AS end_date, 1.0 AS fte,
                   NULL AS school_period, false AS to_be_deleted, true AS active
            FROM range({people}) t(i), range(2) s(k)
            WHERE k = 0 OR (i % 10 = 0 AND (i // {districts}) % {schools} + 1 < {schools})""")


def _run(label: str, url: str, districts: list[str], concurrency: int) -> dict:
    started = time.perf_counter()
    requests: Counter = Counter()
    outcomes: Counter = Counter()
    for district in districts:
        with warehouse.connect() as con:
            build_mart(con, district, "email_local_part", label)
        client = LinkItClient(url, *_keys(district), timeout=30)
        try:
            report = load_district(district, client, limits={}, run_id=label, concurrency=concurrency)
        finally:
            client.close()
        requests.update(report.requests)
        outcomes.update(report.outcomes)
    wall = time.perf_counter() - started
    return {"label": label, "wall": wall, "requests": requests, "outcomes": outcomes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load_linkit", description=__doc__)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--districts", type=int, default=4)
    parser.add_argument("--schools", type=int, default=20, help="LinkIt schools per district")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per district")
    parser.add_argument("--changed", type=float, default=0.01, help="share of people changed for run 2")
    args = parser.parse_args(argv)
    data_dir = tempfile.mkdtemp(prefix="bench-linkit-")
    os.environ["STAFF_DATA_DIR"] = data_dir
    names = [f"d{n}" for n in range(args.districts)]
    parent, child = mp.Pipe()
    server = mp.get_context("fork").Process(target=_serve, args=(names, args.schools, child), daemon=True)
    server.start()
    url = parent.recv()
    try:
        _conformed(args.people, args.districts, args.schools)
        results = [_run("initial", url, names, args.concurrency)]
        step = max(1, round(1 / args.changed)) if args.changed else 0
        with warehouse.connect() as con:
            con.execute(
                f"UPDATE staff SET first_name = 'Changed' WHERE {step} > 0 AND "
                f"CAST(substr(person_id, 2) AS BIGINT) % {max(step, 1)} = 0"
            )
        results.append(_run("1% changed", url, names, args.concurrency))
        results.append(_run("no change", url, names, args.concurrency))
    finally:
        parent.send("stop")
        server.join(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)
    peak_mb = peak_rss_mb()
    print(f"people={args.people} districts={args.districts} concurrency={args.concurrency}")
    print(
        f"{'run':<12} {'wall s':>8} {'requests':>9} {'writes':>7} {'req/s':>8} {'accounts/s':>11}  outcomes"
    )
    for r in results:
        total = sum(r["requests"].values())
        writes = sum(n for call, n in r["requests"].items() if not call.startswith("GET"))
        touched = sum(n for k, n in r["outcomes"].items() if k != "unchanged")
        print(
            f"{r['label']:<12} {r['wall']:>8.1f} {total:>9} {writes:>7} {total / r['wall']:>8.0f} "
            f"{touched / r['wall']:>11.0f}  {dict(r['outcomes'])}"
        )
        print(f"{'':<12} requests by call: {dict(r['requests'])}")
    print(f"peak RSS (loader process): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
