"""One pipeline stage (or one baseline) in a process of its own, so its peak RSS is its own.

    python -m bench.stages startup | extract | gate | conform | edfi <lea> | linkit <district>
                           | duckdb_raw <generated dir> | duckdb_copy | duckdb_parse | checksums
                           | naive_edfi <lea>

Run by ``python -m bench`` with the stand-ins' URLs and keys in the environment (as the demo sets
them) and ``STAFF_DATA_DIR`` pointing at the benchmark's warehouse. The stages call the same plain
functions the Dagster assets call; the last line printed is a JSON object of counts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import requests

from bench import peak_rss_mb
from staff_pipeline.clients.edfi import EdFiResource
from staff_pipeline.clients.eduv import EduVResource
from staff_pipeline.clients.linkit import LinkItResource
from staff_pipeline.config import lea_ids, load_organisations, load_settings
from staff_pipeline.extract import eduv, sis
from staff_pipeline.loads import edfi, edfi_mart, linkit, linkit_mart
from staff_pipeline.settings import paths
from staff_pipeline.transform import steps
from staff_pipeline.transform.conformed import CONFORMED
from staff_pipeline.transform.staging import EMPLOYEE_SHAPE, STAGED
from staff_pipeline.warehouse import connect

RUN_ID = os.environ.get("BENCH_RUN_ID", "bench")
OUTPUT_TABLES = (*STAGED, *CONFORMED)  # what the gate and the model write


def extract() -> dict[str, Any]:
    """Pull every Edu-V school and land every SIS export waiting in the inbox."""
    resource = EduVResource(
        base_url=os.environ["STAFF_EDUV_URL"],
        client_id=os.environ["EDUV_CLIENT_ID"],
        client_secret=os.environ["EDUV_CLIENT_SECRET"],
    )
    with resource.client() as client:
        queries = eduv.school_queries(load_organisations())
        fetched = eduv.fetch_all(client, queries, run_id=RUN_ID, landing_dir=paths().landing)
    with connect() as con:
        landed = eduv.land(con, fetched, RUN_ID)
        files = sis.land_inbox(con, paths(), RUN_ID, known_leas=lea_ids())
    return {
        "eduv_employees": sum(r.employee_count or 0 for r in landed),
        "eduv_failed": sum(not r.ok for r in landed),
        "sis_rows": files.rows,
        "sis_failed": files.count("failed"),
    }


def gate() -> dict[str, Any]:
    """The row gate (rejected rows) and the staged tables with their blocking schemas."""
    with connect() as con:
        staged = steps.stage(con, RUN_ID, load_settings())
    if not staged.swapped:
        raise SystemExit(f"staging refused: {sorted(staged.failures)}")
    return {"rejected": int(staged.rejected.counts["rows"].sum()), **staged.rows}


def conform() -> dict[str, Any]:
    """Identity matching, the conformed model, the per-LEA gate and the model's blocking schemas."""
    with connect() as con:
        conformed = steps.conform(con, RUN_ID, load_settings())
    if not conformed.swapped:
        raise SystemExit(f"conformed model refused: {sorted(conformed.failures)}")
    return dict(conformed.rows)


def edfi_load(lea: str) -> dict[str, Any]:
    """Build one LEA's Ed-Fi mart and send its difference (both resources, as the assets do)."""
    settings = load_settings().edfi
    client = EdFiResource(base_url=os.environ["STAFF_EDFI_URL"]).client_for(lea, settings.max_concurrency)
    out: dict[str, Any] = {}
    try:
        with connect() as con:
            edfi_mart.build_mart(con, int(lea))
        for resource in edfi.RESOURCES:
            report, _ = edfi.load_resource(
                connect, client, int(lea), resource, run_id=RUN_ID,
                max_concurrency=settings.max_concurrency, limits={},
            )  # fmt: skip
            out[f"{resource}_sent"] = report.sent
            out[f"{resource}_failed"] = report.failed_total
    finally:
        client.close()
    return out


def linkit_load(district: str) -> dict[str, Any]:
    """Build one district's LinkIt mart and send its difference."""
    settings = load_settings().linkit
    resource = LinkItResource(base_url=os.environ["STAFF_LINKIT_URL"])
    client = resource.client_for(district)
    try:
        with connect() as con:
            linkit_mart.build_mart(con, district, settings.username_rule, RUN_ID)
        report = linkit.load_district(
            district, client, limits={}, run_id=RUN_ID, concurrency=resource.concurrency
        )
    finally:
        client.close()
    return {"write_requests": report.write_requests, **{k: int(v) for k, v in report.outcomes.items()}}


def duckdb_raw(generated: str) -> dict[str, Any]:
    """Baseline: DuckDB alone reading the same raw files (Edu-V JSON lines, SIS exports), nothing else."""
    root = Path(generated)
    con = duckdb.connect()
    try:
        employees = con.execute(
            "SELECT count(*) FROM read_json(?, format = 'newline_delimited', records = false)",
            [str(root / "eduv" / "*.jsonl")],
        ).fetchone()[0]
        rows = 0
        for path in sorted((root / "inbox").glob("*/*.csv")):
            for encoding in ("utf-8", "latin-1"):  # the exports are UTF-8 or Windows-1252
                try:
                    sql = "SELECT count(*) FROM read_csv(?, all_varchar = true, encoding = ?)"
                    rows += con.execute(sql, [str(path), encoding]).fetchone()[0]
                    break
                except duckdb.InvalidInputException:
                    continue
    finally:
        con.close()
    return {"eduv_employees": employees, "sis_rows": rows}


def duckdb_copy() -> dict[str, Any]:
    """Baseline: DuckDB alone copying the tables the gate and the model write (staged and conformed)
    into a new database file, no logic: each table read once and written once, as plain CTAS.

    It is the floor under the two steps for output of this size: whatever they compute, they at least
    read their inputs and write these rows, compressed as DuckDB compresses every table."""
    target = paths().warehouse.with_name("copy_baseline.duckdb")
    target.unlink(missing_ok=True)
    rows = 0
    with connect() as con:
        con.execute("ATTACH ? AS copy", [str(target)])
        try:
            for table in OUTPUT_TABLES:
                con.execute(f"CREATE TABLE copy.{table} AS SELECT * FROM main.{table}")
                rows += con.execute(f"SELECT count(*) FROM copy.{table}").fetchone()[0]
            con.execute("CHECKPOINT copy")
        finally:
            con.execute("DETACH copy")
            target.unlink(missing_ok=True)
    return {"tables": len(OUTPUT_TABLES), "rows": rows}


def duckdb_parse() -> dict[str, Any]:
    """Baseline: DuckDB alone parsing every landed Edu-V element with the staging's JSON shape
    (``json_transform`` into a temp table), nothing else: the one read of the answers that any gate
    has to make. With the copy, the floor under the two steps."""
    with connect() as con:
        con.execute(
            "CREATE TEMP TABLE parsed AS "
            f"SELECT json_transform(employee, '{EMPLOYEE_SHAPE}') AS e FROM raw_eduv_employees"
        )
        return {"elements": con.execute("SELECT count(*) FROM parsed").fetchone()[0]}


def checksums() -> dict[str, Any]:
    """Not timed work: an order-independent checksum of every staged and conformed table, so trials
    of the same night can be compared for content, not only row counts. ``record_no`` is left out:
    it numbers records by their raw rows, whose order follows the order the answers landed in."""
    out: dict[str, Any] = {}
    with connect(read_only=True) as con:
        for table in OUTPUT_TABLES:
            columns = [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
            picked = ", ".join(f'"{c}"' for c in columns if c != "record_no")
            out[table] = con.execute(
                f"SELECT sum(hash(struct_pack({picked}))::HUGEINT)::VARCHAR FROM {table}"
            ).fetchone()[0]
    return out


def naive_edfi(lea: str) -> dict[str, Any]:
    """Baseline: a plain ``requests`` loop, one POST per record, no concurrency, no retries."""
    base = os.environ["STAFF_EDFI_URL"]
    credentials = (os.environ[f"EDFI_CLIENT_ID_{lea}"], os.environ[f"EDFI_CLIENT_SECRET_{lea}"])
    with connect() as con:
        bodies = con.execute(
            f"SELECT '{edfi.RESOURCES[0]}', body FROM mart_edfi_assignments WHERE lea_id = ? UNION ALL "
            f"SELECT '{edfi.RESOURCES[1]}', body FROM mart_edfi_contacts WHERE lea_id = ?",
            [int(lea), int(lea)],
        ).fetchall()
    token = requests.post(
        f"{base}/oauth/token", data={"grant_type": "client_credentials"}, auth=credentials, timeout=30
    ).json()["access_token"]
    ok = 0
    with requests.Session() as session:
        for resource, body in bodies:
            answer = session.post(
                f"{base}/data/v3/ed-fi/{resource}",
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=30,
            )
            ok += answer.status_code in (200, 201)
    return {"requests": len(bodies), "ok": ok}


def startup() -> dict[str, Any]:
    """Nothing: the interpreter and imports every stage process pays before it starts."""
    return {}


STAGES = {
    "startup": startup,
    "extract": extract,
    "gate": gate,
    "conform": conform,
    "edfi": edfi_load,
    "linkit": linkit_load,
    "duckdb_raw": duckdb_raw,
    "duckdb_copy": duckdb_copy,
    "duckdb_parse": duckdb_parse,
    "checksums": checksums,
    "naive_edfi": naive_edfi,
}

if __name__ == "__main__":
    started = time.perf_counter()
    counts = STAGES[sys.argv[1]](*sys.argv[2:])
    work = time.perf_counter() - started
    print(json.dumps({"work_seconds": work, "peak_rss_mb": peak_rss_mb(), **counts}, default=str))
