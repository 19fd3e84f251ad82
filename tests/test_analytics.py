"""Analysts read a published copy: holding it open never blocks the pipeline, and its views answer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from assets.analytics import publish_analytics_job
from staff_pipeline.extract import eduv, sis
from staff_pipeline.loads.journal import ensure_events
from staff_pipeline.publish import VIEWS, publish
from staff_pipeline.settings import paths
from staff_pipeline.warehouse import WarehouseBusyError, connect

ANALYST = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT count(*) FROM current_staff").fetchone()[0], flush=True)
sys.stdin.readline()
print(con.execute("SELECT count(*) FROM current_staff").fetchone()[0], flush=True)
con.close()
"""


@contextmanager
def analyst_session(path: Path, script: str = ANALYST) -> Iterator[subprocess.Popen]:
    """Another process holding ``path`` open (read-only unless ``script`` says otherwise), as the
    duckdb CLI would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _seed(con: duckdb.DuckDBPyConnection, people: int) -> None:
    con.execute(
        "CREATE OR REPLACE TABLE staff AS SELECT 'p' || i AS person_id, 'W' || i AS wiseid, "
        "'L' || i AS local_code, 'First' || i AS first_name, NULL AS middle_name, "
        "NULL AS family_name_prefix, 'Last' || i AS last_name, "
        "NULL AS preferred_first_name, 'p' || i || '@example.org' AS primary_email, "
        "CASE WHEN i % 5 = 0 THEN 'leaving' ELSE 'active' END AS status, NULL AS leaving_reason, "
        "'wiseid' AS matched_by, ['eduv'] AS sources FROM range(?) t(i)",
        [people],
    )


def _seed_everything(con: duckdb.DuckDBPyConnection) -> None:
    _seed(con, 10)
    con.execute(
        "CREATE TABLE staff_assignments AS SELECT 'p' || i AS person_id, 100001 + i % 2 AS lea_id, "
        "1000010001 + i % 3 AS school_id, 'k' AS school_key, false AS choice_school, "
        "'lakeview' AS linkit_district, "
        "501 AS linkit_school_id, 'sis' AS source, 'T' AS source_role, 'Teacher' AS staff_classification, "
        "'Teacher' AS contact_title, 'TEACHER' AS linkit_role, 'Teacher' AS position_title, "
        "DATE '2025-08-01' AS begin_date, NULL::DATE AS end_date, 1.0 AS fte, '2025-2026' AS school_period, "
        "i < 8 AS active FROM range(10) t(i)"
    )
    con.execute(
        "CREATE TABLE staff_contacts AS SELECT 'p' || i AS person_id, 100001 AS lea_id, "
        "1000010001 AS school_id, "
        "'email' AS kind, 'p' || i || '@lea.example.org' AS value, 'sis' AS source, true AS is_primary "
        "FROM range(10) t(i)"
    )
    con.execute(
        "CREATE TABLE ledger_edfi AS SELECT CAST(100001 AS BIGINT) AS lea_id, 'sent' AS status, "
        "now() AS sent_at FROM range(3)"
    )
    con.execute(
        "CREATE TABLE rejected_rows AS SELECT 'r1' AS run_id, 'sis' AS source, "
        "'raw_sis_staff' AS table_name, "
        "'sis:100001:7' AS record_key, 'staff.csv:8' AS location, 'email' AS column_name, "
        "'email_format' AS rule, 'not-an-email' AS value, now() AS rejected_at"
    )
    sis.ensure_tables(con)
    eduv.ensure_tables(con)
    con.execute(
        "INSERT INTO raw_sis_files (file_sha256, lea_id, file_name, rows, status, message, run_id, "
        "landed_at) "
        "VALUES ('a', 100001, 'staff.csv', 3, 'landed', '', 'r0', now() - INTERVAL 1 DAY), "
        "('b', 100001, 'empty.csv', 0, 'landed', '', 'r1', now()), "
        "('c', 100002, 'broken.csv', 0, 'failed', 'line 3: broken quoting', 'r1', now())"
    )
    con.execute(
        "INSERT INTO raw_eduv_requests (request_id, run_id, school_key, ok, status_message, employee_count, "
        "extracted_at) VALUES ('q1', 'r1', 'lakeview-elem', false, 'HTTP 500', NULL, now())"
    )
    ensure_events(con)
    con.execute(
        "INSERT INTO load_events (run_id, target, partition_key, record_key, action, ok, http_status, "
        "error, event_at) VALUES ('r1', 'edfi', '100001', 'x/1', 'create', true, 201, NULL, now()), "
        "('r1', 'edfi', '100001', 'x/2', 'create', false, 500, 'boom', now())"
    )


def test_an_analyst_holding_the_copy_open_does_not_block_a_write_and_a_new_publish() -> None:
    with connect() as con:
        _seed(con, 10)
    published = publish()
    assert published == paths().analytics

    with analyst_session(published) as analyst:
        assert analyst.stdout.readline().strip() == "10"  # the analyst holds the copy open now

        with connect(wait_seconds=2) as con:  # would raise WarehouseBusyError if the analyst blocked it
            _seed(con, 20)
        publish()

        with duckdb.connect(str(published), read_only=True) as fresh:
            assert fresh.execute("SELECT count(*) FROM current_staff").fetchone()[0] == 20
        analyst.stdin.write("\n")
        analyst.stdin.flush()
        assert analyst.stdout.readline().strip() == "10"  # the open session keeps its consistent copy


def test_the_same_analyst_on_the_warehouse_itself_would_block_the_pipeline() -> None:
    with connect() as con:
        _seed(con, 10)
        con.execute("CREATE VIEW current_staff AS SELECT * FROM staff")
    with analyst_session(paths().warehouse) as analyst:
        assert analyst.stdout.readline().strip() == "10"
        with pytest.raises(WarehouseBusyError), connect(wait_seconds=1):
            pass


def test_views_answer_the_analysts_questions() -> None:
    with connect() as con:
        _seed_everything(con)
    publish_analytics_job.execute_in_process()  # the job the publish sensor starts

    with duckdb.connect(str(paths().analytics), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM current_staff WHERE status = 'active'").fetchone()[0] == 8
        per_lea = con.execute(
            "SELECT lea_id, people, active_assignments FROM assignments_per_lea ORDER BY lea_id"
        ).fetchall()
        assert per_lea == [(100001, 5, 4), (100002, 5, 4)]
        assert con.execute("SELECT first_name FROM contacts WHERE person_id = 'p3'").fetchone()[0] == "First3"
        assert con.execute("SELECT target, partition_key, status, records FROM load_status").fetchall() == [
            ("edfi", "100001", "sent", 3)
        ]
        assert con.execute("SELECT rule, value FROM rejected").fetchall() == [
            ("email_format", "not-an-email")
        ]
        # every delivery, the empty and failed ones too
        assert con.execute(
            "SELECT run_id, source, scope, item, status, rows, message FROM history ORDER BY run_id, item"
        ).fetchall() == [
            ("r0", "sis", "100001", "staff.csv", "landed", 3, None),
            ("r1", "sis", "100002", "broken.csv", "failed", 0, "line 3: broken quoting"),
            ("r1", "sis", "100001", "empty.csv", "landed", 0, None),
            ("r1", "eduv", "lakeview-elem", "q1", "failed", 0, "HTTP 500"),
        ]
        # the failed request is in the run's counts (the ledgers hold successful sends only)
        assert con.execute(
            "SELECT target, partition_key, run_id, requests, ok, failed FROM load_runs"
        ).fetchall() == [("edfi", "100001", "r1", 2, 1, 1)]
        catalog = dict(con.execute("SELECT view_name, available FROM analytics_catalog").fetchall())
    assert catalog == {view.name: True for view in VIEWS}


def test_views_exist_and_are_empty_when_their_tables_do_not_yet() -> None:
    with connect() as con:
        _seed(con, 3)
        con.execute("CREATE TABLE ledger_linkit (district VARCHAR, result VARCHAR)")  # a shape we do not own
        con.execute("INSERT INTO ledger_linkit VALUES ('riverside', 'SUCCESS'), ('riverside', 'SUCCESS')")
    publish()

    with duckdb.connect(str(paths().analytics), read_only=True) as con:
        for view in VIEWS:
            con.execute(f"SELECT * FROM {view.name}").fetchall()
        assert con.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
        assert con.execute("SELECT target, partition_key, status, records FROM load_status").fetchall() == [
            ("linkit", "riverside", "SUCCESS", 2)
        ]
        missing = con.execute(
            "SELECT view_name FROM analytics_catalog WHERE NOT available ORDER BY 1"
        ).fetchall()
    assert [name for (name,) in missing] == [
        "assignments",
        "assignments_per_lea",
        "contacts",
        "history",
        "load_runs",
        "rejected",
    ]


ANALYST_WRITING = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])  # read-write: the CLI's default without -readonly
con.execute("SET checkpoint_threshold = '1GB'")  # keep the scratch table in the WAL
con.execute("CREATE TABLE my_scratch AS SELECT * FROM current_staff")
print("ready", flush=True)
sys.stdin.readline()
con.close()
print("closed", flush=True)
"""


def test_an_analyst_writing_to_the_copy_does_not_lock_the_others_out_of_the_next_one() -> None:
    """Its WAL would be replayed onto the new copy and refused ("WAL does not match"): every new
    connection failed until that session closed. The WAL is set aside with the old copy."""
    with connect() as con:
        _seed(con, 10)
    published = publish()
    with analyst_session(published, ANALYST_WRITING) as proc:
        assert proc.stdout.readline().strip() == "ready"
        assert published.with_name(f"{published.name}.wal").exists()
        with connect() as con:
            _seed(con, 20)
        publish()
        with duckdb.connect(str(published), read_only=True) as other:
            assert other.execute("SELECT count(*) FROM current_staff").fetchone()[0] == 20
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
    with duckdb.connect(str(published), read_only=True) as later:  # after the writer closed, too
        assert later.execute("SELECT count(*) FROM current_staff").fetchone()[0] == 20
