"""A per-request write-ahead journal for API loads, shared by every target.

A load appends one JSON line per completed request (flushed at once, so a killed process loses at
most the request in flight) and folds the file into its DuckDB ledger at the start and end of a
run. That keeps the warehouse lock short (other partitions keep writing) while a crash still
resends nothing that succeeded. Flushing hands each line to the operating system, which survives a
killed process; it does not fsync, so a power cut may lose the last lines (they are then resent,
and the targets' upserts make that harmless).

Usage::

    journal = Journal("edfi", "100001")
    journal.append({"identity_hash": "...", "status": 201, ...})
    with connect() as con:
        journal.to_table(con, "journal_rows", {"identity_hash": "VARCHAR", "status": "INTEGER"})
        ...merge journal_rows into the ledger...
    journal.clear()
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import duckdb

from staff_pipeline.settings import paths


class Journal:
    """The JSONL journal of one target and partition: ``<journal dir>/<target>/<partition>.jsonl``.

    Thread-safe: concurrent senders append through one open handle. Every entry gets a
    ``journaled_at`` UTC timestamp unless it brings its own.
    """

    def __init__(self, target: str, partition: str, root: Path | None = None) -> None:
        self.path = (root or paths().journal) / target / f"{partition}.jsonl"
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None

    def append(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps({"journaled_at": datetime.now(UTC).isoformat(), **entry}, default=str)
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry, oldest first; a line torn by a kill mid-write is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def to_table(self, con: duckdb.DuckDBPyConnection, table: str, columns: Mapping[str, str]) -> int:
        """(Re)create temp table ``table`` with ``columns`` (name -> DuckDB type) from the journal.

        DuckDB reads the file itself (no Python object per line), so folding a 100k-request journal
        is cheap. Keys missing from an entry become NULL; extra keys are ignored; torn lines skipped.
        A ``journaled_at TIMESTAMPTZ`` column is always included. Returns the number of entries.
        """
        self.close()
        columns = {"journaled_at": "TIMESTAMPTZ", **columns}
        cols = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" ({cols})')
        if self.path.exists() and self.path.stat().st_size:
            spec = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"
            names = ", ".join(f'"{name}"' for name in columns)
            con.execute(
                f"INSERT INTO \"{table}\" SELECT {names} FROM read_json(?, format = 'newline_delimited', "
                f"columns = {spec}, ignore_errors = true) WHERE journaled_at IS NOT NULL",
                [str(self.path)],
            )
        return int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def clear(self) -> None:
        """Forget the entries (call only after they are folded into the ledger and committed)."""
        self.close()
        self.path.unlink(missing_ok=True)


# One row per request a load sent (both targets): with the target's id, the content hash sent and,
# for a delete or a failure, the body (the record removed, or what was refused): the ledger keeps
# only what the target holds now, so without it a deleted record could not be told afterwards.
EVENTS_DDL = """CREATE TABLE IF NOT EXISTS load_events (run_id VARCHAR, target VARCHAR, partition_key VARCHAR,
    record_key VARCHAR, action VARCHAR, ok BOOLEAN, http_status INTEGER, error VARCHAR,
    event_at TIMESTAMPTZ, target_id VARCHAR, content_hash VARCHAR, body VARCHAR)"""
_EVENTS_ADDED = {"target_id": "VARCHAR", "content_hash": "VARCHAR", "body": "VARCHAR"}
EVENT_COLUMNS = (
    "run_id, target, partition_key, record_key, action, ok, http_status, error, event_at, target_id, "
    "content_hash, body"
)


def ensure_events(con: duckdb.DuckDBPyConnection) -> None:
    """``load_events``, with the columns added since (a warehouse from before gains them, empty)."""
    con.execute(EVENTS_DDL)
    for column, kind in _EVENTS_ADDED.items():
        con.execute(f"ALTER TABLE load_events ADD COLUMN IF NOT EXISTS {column} {kind}")


def append_events(con: duckdb.DuckDBPyConnection, rows_sql: str, params: Mapping[str, Any]) -> None:
    """Append the journal's requests (``rows_sql``, giving :data:`EVENT_COLUMNS`) to ``load_events``,
    each once: a fold repeated because the process died between its commit and the journal's
    removal adds no second row. Only the runs being folded are compared, not the whole history."""
    con.execute(
        f"""
        INSERT INTO load_events ({EVENT_COLUMNS})
        WITH new AS ({rows_sql})
        SELECT {EVENT_COLUMNS} FROM new
        ANTI JOIN (SELECT run_id, target, partition_key, record_key, action, event_at FROM load_events
                   WHERE run_id IN (SELECT DISTINCT run_id FROM new)) USING
            (run_id, target, partition_key, record_key, action, event_at)
        """,
        params,
    )
