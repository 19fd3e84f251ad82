"""The one door into the DuckDB warehouse.

DuckDB lets one process write a file at a time, and even a read-only connection in another process
blocks a writer. So every access goes through :func:`connect`, which waits (bounded) for a lock
held by another run, always closes, and is only ever called inside a run, never at import time (the
webserver and the daemon import this code too). Analysts read :func:`publish_analytics`'s copy.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from staff_pipeline.settings import paths


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse lock for longer than we were willing to wait."""


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


@contextmanager
def connect(
    path: Path | str | None = None, *, read_only: bool = False, wait_seconds: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting with backoff while another process holds its lock.

    ``wait_seconds`` defaults to ``STAFF_WAREHOUSE_WAIT`` (120 s): long enough to sit out another
    LEA's short write, short enough that a stuck process shows up as a clear failure.
    """
    target = Path(path) if path is not None else paths().warehouse
    target.parent.mkdir(parents=True, exist_ok=True)
    budget = float(os.environ.get("STAFF_WAREHOUSE_WAIT", "120")) if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(target), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"warehouse {target} is locked by another process; waited {budget:.0f}s. "
                    "Another run is writing it, or something holds it open (analysts should use "
                    f"{target.with_name('analytics.duckdb').name})."
                ) from None
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
    try:
        if not read_only:
            # Bounded memory for 1M-person runs on a small machine: DuckDB spills to disk past this.
            limit = os.environ.get("STAFF_DUCKDB_MEMORY_LIMIT", "2GB")
            if not limit.replace(".", "").rstrip("KMGTiB").isdigit():
                raise ValueError(f"STAFF_DUCKDB_MEMORY_LIMIT must look like 2GB, got {limit!r}")
            con.execute(f"SET memory_limit = '{limit}'")
        yield con
    finally:
        con.close()


def swap_in(con: duckdb.DuckDBPyConnection, new_table: str, table: str) -> None:
    """Replace ``table`` by ``new_table`` in one transaction: readers see the old or the new, never half."""
    swap_in_all(con, {new_table: table})


def swap_in_all(con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> None:
    """Replace several tables (``{new_table: table}``) in one transaction: a model is swapped whole."""
    con.execute("BEGIN TRANSACTION")
    try:
        for new_table, table in tables.items():
            con.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
            con.execute(f'ALTER TABLE "{new_table}" RENAME TO "{table}"')
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
            [name],
        ).fetchall()[0][0]
    )


def row_count(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return (
        int(con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]) if table_exists(con, name) else 0
    )


def columns_of(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The column names a query returns, without running it over any rows."""
    return [d[0] for d in con.execute(f"SELECT * FROM ({sql}) LIMIT 0").description]


def preview(con: duckdb.DuckDBPyConnection, sql: str, limit: int = 10) -> pd.DataFrame:
    """A small frame for Dagster's preview metadata."""
    return con.execute(f"SELECT * FROM ({sql}) LIMIT {int(limit)}").df()


def publish_analytics(source: Path | None = None, target: Path | None = None) -> Path:
    """Copy the warehouse to the analysts' file and swap it in atomically.

    An analyst holding the previous copy open keeps reading that inode undisturbed; the next
    connection sees the new one. Nobody outside the pipeline ever opens the warehouse itself.
    """
    src = source or paths().warehouse
    dst = target or src.with_name("analytics.duckdb")
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    with connect(src) as con:
        name = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"ATTACH '{tmp}' AS publish")
        try:
            con.execute(f'COPY FROM DATABASE "{name}" TO publish')
        finally:
            con.execute("DETACH publish")
    os.replace(tmp, dst)
    return dst
