"""Benchmark: send N people's Ed-Fi associations (one assignment + one contact each) to the stand-in.

    .venv/bin/python -m bench.load_edfi --people 50000      # 100,000 association records

The stand-in runs in its own process (its own GIL, as a real server would be). Prints the first
run's throughput, then a second, no-change run's time and write-request count (must be zero).
With Education Analytics' lightbeam installed in its own venv (``bench/.venv-lightbeam``, see
docs/edfi.md), it also sends the same bodies with lightbeam to a fresh stand-in and prints the ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from bench import peak_rss_mb
from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiClient
from staff_pipeline.config import load_organisations
from staff_pipeline.loads.edfi import RESOURCES, load_resource
from staff_pipeline.loads.edfi_mart import build_mart
from staff_pipeline.settings import REPO_ROOT, paths

CLIENT, SECRET = "bench", "bench-secret"


def _serve(people: int, queue: mp.Queue, stop: mp.Event) -> None:
    from staff_pipeline.standins.edfi import EdFiStandIn

    standin = EdFiStandIn()
    standin.record_bodies = False
    standin.load_organisations()
    standin.add_client(CLIENT, SECRET)
    for i in range(people):
        standin.add_staff(None, f"B{i:07d}")
    with standin:
        queue.put(standin.url)
        stop.wait()
        queue.put(len(standin.writes()))


def _conformed(people: int) -> list[int]:
    """People spread over the configured LEAs' regular schools, built in SQL."""
    orgs = load_organisations()
    schools = orgs[~orgs["choice_school"]][["lea_id", "school_id"]].reset_index(drop=True)
    with warehouse.connect() as con:
        con.register("schools", schools.assign(n=range(len(schools))))
        con.execute(
            f"""CREATE OR REPLACE TABLE staff AS SELECT 'p' || i AS person_id, printf('B%07d', i) AS wiseid,
                   'active' AS status, NULL::VARCHAR AS leaving_reason FROM range({people}) t(i)"""
        )
        con.execute(
            f"""CREATE OR REPLACE TABLE staff_assignments AS
            SELECT 'p' || i AS person_id, s.lea_id::BIGINT AS lea_id, s.school_id::BIGINT AS school_id,
                   'school' AS school_key, false AS choice_school,
                   'Elementary Teacher' AS staff_classification,
                   'Teacher' AS contact_title, 'Teacher' AS position_title, DATE '2025-08-15' AS begin_date,
                   NULL::DATE AS end_date, 1.0 AS fte, false AS to_be_deleted, true AS active
            FROM range({people}) t(i) JOIN schools s ON s.n = i % {len(schools)}"""
        )
        con.execute(
            """CREATE OR REPLACE TABLE staff_contacts AS
            SELECT person_id, lea_id, school_id, 'email' AS kind, person_id || '@bench.example.org' AS value,
                   'sis' AS source, true AS is_primary FROM staff_assignments"""
        )
        con.unregister("schools")
    return sorted({int(v) for v in schools["lea_id"]})


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _run(url: str, leas: list[int], concurrency: int, label: str) -> tuple[str, int, float, float]:
    client = EdFiClient(url, CLIENT, SECRET, pool_size=concurrency)
    sent = 0
    cpu = _cpu(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for lea in leas:
        with warehouse.connect() as con:
            build_mart(con, lea)
        for name in RESOURCES:
            report, _ = load_resource(
                warehouse.connect,
                client,
                lea,
                name,
                run_id=label,
                max_concurrency=concurrency,
                limits={},
            )
            sent += report.sent
            assert not report.failed, report.failed
    client.close()
    return label, sent, time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu


def _lightbeam(people: int, concurrency: int, lightbeam: Path) -> tuple[str, int, float, float]:
    """The same bodies as JSONL files, sent by lightbeam to a fresh stand-in with the same pool size."""
    work = Path(tempfile.mkdtemp(prefix="bench-lightbeam-"))
    with warehouse.connect() as con:
        for table, name in (("mart_edfi_assignments", RESOURCES[0]), ("mart_edfi_contacts", RESOURCES[1])):
            bodies = con.execute(f"SELECT body FROM {table} ORDER BY lea_id, identity_hash").fetchall()
            (work / f"{name}.jsonl").write_text("".join(b[0] + "\n" for b in bodies), encoding="utf-8")
    queue: mp.Queue = mp.Queue()
    stop = mp.Event()
    server = mp.Process(target=_serve, args=(people, queue, stop), daemon=True)
    server.start()
    url = queue.get(timeout=300)
    config = work / "lightbeam.yaml"
    config.write_text(
        f"data_dir: {work}\nnamespace: ed-fi\nedfi_api:\n  base_url: {url}\n  version: 3\n"
        f"  mode: sandbox\n  client_id: {CLIENT}\n  client_secret: {SECRET}\n"
        f"connection:\n  pool_size: {concurrency}\n  timeout: 60\n  num_retries: 5\n"
        "  backoff_factor: 1.5\n  retry_statuses: [429, 500, 502, 503, 504]\n  verify_ssl: true\n"
        "log_level: WARNING\n",
        encoding="utf-8",
    )
    cpu = _cpu(resource.RUSAGE_CHILDREN)  # the stand-in is a child too, but not reaped until after
    start = time.perf_counter()
    try:
        subprocess.run([str(lightbeam), "send", "-c", str(config)], check=True, timeout=3600)
    finally:
        wall = time.perf_counter() - start
        cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu
        stop.set()
        writes = queue.get(timeout=30)
        server.join(timeout=10)
    return "lightbeam", writes, wall, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lightbeam", type=Path, default=REPO_ROOT / "bench/.venv-lightbeam/bin/lightbeam")
    args = parser.parse_args(argv)
    os.environ["STAFF_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-edfi-")
    leas = _conformed(args.people)
    queue: mp.Queue = mp.Queue()
    stop = mp.Event()
    server = mp.Process(target=_serve, args=(args.people, queue, stop), daemon=True)
    server.start()
    url = queue.get(timeout=300)
    try:
        rows = [
            _run(url, leas, args.concurrency, "first run"),
            _run(url, leas, args.concurrency, "no-change run"),
        ]
    finally:
        stop.set()
        server_writes = queue.get(timeout=30)
        server.join(timeout=10)
    if args.lightbeam.exists():
        rows.append(_lightbeam(args.people, args.concurrency, args.lightbeam))
    rss_mb = peak_rss_mb()
    print(
        f"people={args.people} LEAs={len(leas)} concurrency={args.concurrency} warehouse={paths().warehouse}"
    )
    # Client CPU (user + system, all threads; ours includes the DuckDB plan and fold) is the steadier
    # figure on a loaded machine, where wall time swings with whatever else runs.
    print(f"{'run':<15}{'requests':>10}{'wall s':>10}{'req/s':>10}{'client CPU s':>14}{'peak RSS MB':>13}")
    for label, sent, wall, cpu in rows:
        rate = sent / wall if wall else 0
        print(f"{label:<15}{sent:>10}{wall:>10.1f}{rate:>10.0f}{cpu:>14.1f}{rss_mb:>13.0f}")
    print(f"write requests the stand-in received in all: {server_writes}")
    if len(rows) == 3:
        ours, theirs = rows[0][1] / rows[0][2], rows[2][1] / rows[2][2]
        print(f"throughput ours / lightbeam: {ours:.0f} / {theirs:.0f} req/s = {ours / theirs:.2f}x")
        ours_ms, theirs_ms = (1000 * row[3] / row[1] if row[1] else 0.0 for row in (rows[0], rows[2]))
        print(
            f"client CPU per request ours / lightbeam: {ours_ms:.2f} / {theirs_ms:.2f} ms"
            f" (lightbeam uses {theirs_ms / ours_ms if ours_ms else 0:.2f}x ours)"
        )


if __name__ == "__main__":
    main()
