"""Publish the analysts' copy of the warehouse, with views that answer their usual questions.

Analysts never open ``warehouse.duckdb``: in DuckDB even a read-only connection in another process
blocks the pipeline's writer. They read ``analytics.duckdb`` instead, a copy made after each
successful run and swapped in with one ``rename``: whoever holds the old copy open keeps reading it,
the next connection sees the new one. The views are created in the copy *before* the swap, so no
connection ever sees a copy without them and the pipeline never opens the file analysts hold.

Stages are built by different people and not every table exists on every night (a first run, a
target not yet loaded), so each view is assembled from the tables present; a view whose tables are
missing still exists, empty, with its documented columns. ``analytics_catalog`` says which is which.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from staff_pipeline.settings import paths
from staff_pipeline.warehouse import connect, publish_analytics, table_exists

Columns = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class View:
    """A documented analyst view: the union of the parts whose tables exist in the copy."""

    name: str
    description: str
    columns: Columns
    parts: Callable[[duckdb.DuckDBPyConnection], list[str]]


def _columns_of(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'",
        [table],
    ).fetchall()
    return {row[0] for row in rows}


def _when(*tables: str, sql: str) -> Callable[[duckdb.DuckDBPyConnection], list[str]]:
    """A view with one part that needs ``tables``."""
    return lambda con: [sql] if all(table_exists(con, t) for t in tables) else []


def _first(present: set[str], candidates: tuple[str, ...]) -> str:
    """The first candidate column the table has, as SQL text; NULL when it has none."""
    return next((f'CAST("{c}" AS VARCHAR)' for c in candidates if c in present), "CAST(NULL AS VARCHAR)")


def _load_status_parts(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Ledgers grouped by partition and outcome, whatever the loads named those columns.

    The ledgers belong to the load stages and may grow columns; the view looks for the usual names
    rather than pinning a schema it does not own.
    """
    parts = []
    for target, table, partition_cols in (
        ("edfi", "ledger_edfi", ("lea_id", "partition_key", "partition")),
        ("linkit", "ledger_linkit", ("linkit_district", "district", "partition_key", "partition")),
    ):
        if not table_exists(con, table):
            continue
        present = _columns_of(con, table)
        partition = _first(present, partition_cols)
        status = _first(present, ("status", "result", "outcome", "http_status", "action"))
        stamp = next(
            (
                f'max(TRY_CAST("{c}" AS TIMESTAMPTZ))'
                for c in ("sent_at", "loaded_at", "updated_at")
                if c in present
            ),
            "CAST(NULL AS TIMESTAMPTZ)",
        )
        parts.append(
            f"SELECT '{target}' AS target, {partition} AS partition_key, {status} AS status, "
            f'count(*) AS records, {stamp} AS last_sent_at FROM "{table}" GROUP BY ALL'
        )
    return parts


def _history_parts(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One row per delivery, the failed and empty ones too (a header-only export, a school whose
    request failed): the bookkeeping tables record every file and request, the row tables only rows."""
    parts = []
    if table_exists(con, "raw_eduv_requests"):
        parts.append(
            "SELECT 'eduv' AS source, run_id, CAST(school_key AS VARCHAR) AS scope, request_id AS item, "
            "CASE WHEN ok THEN 'landed' ELSE 'failed' END AS status, coalesce(employee_count, 0) AS rows, "
            "extracted_at AS arrived_at, status_message AS message FROM raw_eduv_requests"
        )
    if table_exists(con, "raw_sis_files"):
        parts.append(
            "SELECT 'sis' AS source, run_id, CAST(lea_id AS VARCHAR) AS scope, file_name AS item, status, "
            "rows, landed_at AS arrived_at, nullif(message, '') AS message FROM raw_sis_files"
        )
    return parts


_LOAD_RUNS = """
SELECT target, partition_key, run_id, count(*) AS requests, count(*) FILTER (WHERE ok) AS ok,
       count(*) FILTER (WHERE NOT ok) AS failed, min(event_at) AS first_event_at,
       max(event_at) AS last_event_at
FROM load_events GROUP BY ALL
"""


VIEWS: tuple[View, ...] = (
    View(
        "current_staff",
        "One row per person in the latest conformed model (status 'active' or 'leaving').",
        (
            ("person_id", "VARCHAR"),
            ("wiseid", "VARCHAR"),
            ("local_code", "VARCHAR"),
            ("first_name", "VARCHAR"),
            ("last_name", "VARCHAR"),
            ("preferred_first_name", "VARCHAR"),
            ("primary_email", "VARCHAR"),
            ("status", "VARCHAR"),
            ("leaving_reason", "VARCHAR"),
        ),
        _when(
            "staff",
            sql="SELECT person_id, wiseid, local_code, first_name, last_name, preferred_first_name, "
            "primary_email, status, leaving_reason FROM staff",
        ),
    ),
    View(
        "assignments",
        "Every person x school x role x period, with the person's name.",
        (
            ("person_id", "VARCHAR"),
            ("first_name", "VARCHAR"),
            ("last_name", "VARCHAR"),
            ("lea_id", "BIGINT"),
            ("school_id", "BIGINT"),
            ("staff_classification", "VARCHAR"),
            ("linkit_role", "VARCHAR"),
            ("position_title", "VARCHAR"),
            ("begin_date", "DATE"),
            ("end_date", "DATE"),
            ("active", "BOOLEAN"),
            ("source", "VARCHAR"),
        ),
        _when(
            "staff",
            "staff_assignments",
            sql="SELECT a.person_id, s.first_name, s.last_name, a.lea_id, a.school_id, "
            "a.staff_classification, a.linkit_role, a.position_title, a.begin_date, a.end_date, a.active, "
            "a.source FROM staff_assignments a LEFT JOIN staff s USING (person_id)",
        ),
    ),
    View(
        "assignments_per_lea",
        "Per LEA: people, schools, assignments and how many are active.",
        (
            ("lea_id", "BIGINT"),
            ("people", "BIGINT"),
            ("schools", "BIGINT"),
            ("assignments", "BIGINT"),
            ("active_assignments", "BIGINT"),
        ),
        _when(
            "staff_assignments",
            sql="SELECT lea_id, count(DISTINCT person_id) AS people, count(DISTINCT school_id) AS schools, "
            "count(*) AS assignments, count(*) FILTER (WHERE active) AS active_assignments "
            "FROM staff_assignments GROUP BY lea_id",
        ),
    ),
    View(
        "contacts",
        "Every email and phone number of a person, per LEA, with the person's name.",
        (
            ("person_id", "VARCHAR"),
            ("first_name", "VARCHAR"),
            ("last_name", "VARCHAR"),
            ("lea_id", "BIGINT"),
            ("school_id", "BIGINT"),
            ("kind", "VARCHAR"),
            ("value", "VARCHAR"),
            ("is_primary", "BOOLEAN"),
            ("source", "VARCHAR"),
        ),
        _when(
            "staff",
            "staff_contacts",
            sql="SELECT c.person_id, s.first_name, s.last_name, c.lea_id, c.school_id, c.kind, c.value, "
            "c.is_primary, c.source FROM staff_contacts c LEFT JOIN staff s USING (person_id)",
        ),
    ),
    View(
        "load_status",
        "Per target and partition (LEA or district): what the target holds now (ledger records by "
        "outcome) and the latest successful send; failed requests are in load_runs.",
        (
            ("target", "VARCHAR"),
            ("partition_key", "VARCHAR"),
            ("status", "VARCHAR"),
            ("records", "BIGINT"),
            ("last_sent_at", "TIMESTAMPTZ"),
        ),
        _load_status_parts,
    ),
    View(
        "load_runs",
        "Per target, partition and run: the requests sent, how many succeeded and failed (load_events).",
        (
            ("target", "VARCHAR"),
            ("partition_key", "VARCHAR"),
            ("run_id", "VARCHAR"),
            ("requests", "BIGINT"),
            ("ok", "BIGINT"),
            ("failed", "BIGINT"),
            ("first_event_at", "TIMESTAMPTZ"),
            ("last_event_at", "TIMESTAMPTZ"),
        ),
        _when("load_events", sql=_LOAD_RUNS),
    ),
    View(
        "rejected",
        "Rows the quality gate refused: source, record, where, which column and rule, the value.",
        (
            ("run_id", "VARCHAR"),
            ("source", "VARCHAR"),
            ("table_name", "VARCHAR"),
            ("record_key", "VARCHAR"),
            ("location", "VARCHAR"),
            ("column_name", "VARCHAR"),
            ("rule", "VARCHAR"),
            ("value", "VARCHAR"),
            ("rejected_at", "TIMESTAMPTZ"),
        ),
        _when(
            "rejected_rows",
            sql="SELECT run_id, source, table_name, record_key, location, column_name, rule, "
            "CAST(value AS VARCHAR) AS value, rejected_at FROM rejected_rows",
        ),
    ),
    View(
        "history",
        "Each file and request each run handled, failed and empty ones included (the raw_* tables hold "
        "the rows themselves).",
        (
            ("source", "VARCHAR"),
            ("run_id", "VARCHAR"),
            ("scope", "VARCHAR"),
            ("item", "VARCHAR"),
            ("status", "VARCHAR"),
            ("rows", "BIGINT"),
            ("arrived_at", "TIMESTAMPTZ"),
            ("message", "VARCHAR"),
        ),
        _history_parts,
    ),
)


def _create_view(con: duckdb.DuckDBPyConnection, view: View) -> str:
    """Create ``view``; returns a note for the catalog ('' when complete)."""
    names = ", ".join(f'"{name}"' for name, _ in view.columns)
    casts = ", ".join(f'CAST("{name}" AS {kind}) AS "{name}"' for name, kind in view.columns)
    empty = ", ".join(f'CAST(NULL AS {kind}) AS "{name}"' for name, kind in view.columns)
    parts = view.parts(con)
    if parts:
        union = " UNION ALL BY NAME ".join(f"({sql})" for sql in parts)
        try:
            con.execute(f'CREATE OR REPLACE VIEW "{view.name}" AS SELECT {casts} FROM ({union})')
            con.execute(f'SELECT {names} FROM "{view.name}" LIMIT 0')
            return ""
        except duckdb.Error as exc:
            note = f"source tables do not match: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    else:
        note = "source tables not in the warehouse yet"
    con.execute(f'CREATE OR REPLACE VIEW "{view.name}" AS SELECT {empty} WHERE false')
    return note


def add_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create every analyst view and the ``analytics_catalog`` table describing them."""
    rows = []
    published_at = datetime.now(UTC)
    for view in VIEWS:
        note = _create_view(con, view)
        rows.append((view.name, view.description, not note, note or None, published_at))
    con.execute(
        "CREATE OR REPLACE TABLE analytics_catalog (view_name VARCHAR, description VARCHAR, "
        "available BOOLEAN, note VARCHAR, published_at TIMESTAMPTZ)"
    )
    con.executemany("INSERT INTO analytics_catalog VALUES (?, ?, ?, ?, ?)", rows)


def _set_aside_wal(dst: Path) -> None:
    """An analyst who opened the copy read-write (the CLI's default) and wrote to it leaves
    ``<copy>.wal``: DuckDB would replay it onto the new copy, refuse ("WAL does not match"), and every
    new connection would fail until that session closed. It is that session's scratch work on the old
    copy, so it is moved aside (the session keeps writing to it, undisturbed)."""
    wal = dst.with_name(f"{dst.name}.wal")
    if wal.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        os.replace(wal, wal.with_name(f"{wal.name}.{stamp}.set-aside"))


def publish(source: Path | None = None, target: Path | None = None) -> Path:
    """Copy the warehouse, add the views to the copy, then swap it in as the analysts' file."""
    src = source or paths().warehouse
    dst = target or paths().analytics
    staged = dst.with_name(f"{dst.name}.next{os.getpid()}")
    staged.unlink(missing_ok=True)
    try:
        publish_analytics(src, staged)
        with connect(staged) as con:
            add_views(con)
        _set_aside_wal(dst)
        os.replace(staged, dst)
    finally:
        staged.unlink(missing_ok=True)
    return dst
