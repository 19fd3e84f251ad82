"""Land SIS staff export files from ``inbox/<lea_id>/`` into ``raw_sis_staff``, whole or not at all.

A file is landed exactly as offered (every field as text), with the file's name, content hash, the
physical line where each record starts, and the run id. Three passes, none of them per row in
Python (:mod:`staff_pipeline.extract.sis_scan`): one streaming pass hashes the bytes and decides the
encoding (Windows-1252 is converted to a UTF-8 temporary file), one vectorised numpy pass finds
where records start and checks every record has the header's number of fields (quote-aware, so
quoted newlines are fine), and DuckDB's ``read_csv`` reads the text into the table in one
transaction (from a copy with LF line ends when the file mixes CRLF and LF, and always from a path
DuckDB reads literally, never as a glob). A file that cannot be read is moved
to ``failed/<lea_id>/`` beside a ``.error.txt`` that names file, line and problem; row-level content
(bad emails, unknown codes) is the staging gate's business, not this module's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from staff_pipeline.extract.sis_columns import CANONICAL, HeaderMap, accepted_headers, map_headers
from staff_pipeline.extract.sis_scan import (
    Fingerprint,
    Layout,
    SisFileError,
    check_layout,
    duckdb_problem,
    fingerprint,
    read_header,
    scan_records,
    strip_record_crs,
    to_utf8,
)
from staff_pipeline.settings import Paths

FILE_SUFFIXES = (".csv", ".txt")
# A file younger than this may still be being copied in: the sensor leaves it for a later tick, and
# the run it starts lands only the files it saw settled.
SETTLE_SECONDS = 10.0
_GLOB_CHARACTERS = frozenset("*?[]{}")

DDL = [
    """CREATE TABLE IF NOT EXISTS raw_sis_files (
        file_sha256 VARCHAR, lea_id BIGINT, file_name VARCHAR, archived_path VARCHAR, bytes BIGINT,
        rows BIGINT, encoding VARCHAR, delimiter VARCHAR, status VARCHAR, message VARCHAR,
        run_id VARCHAR, landed_at TIMESTAMPTZ)""",
    "CREATE TABLE IF NOT EXISTS raw_sis_staff (run_id VARCHAR, lea_id BIGINT, file_name VARCHAR, "
    "file_sha256 VARCHAR, line_number INTEGER, "
    + ", ".join(f"{name} VARCHAR" for name in CANONICAL)
    + ", extra JSON, landed_at TIMESTAMPTZ)",
    # The current snapshot: the rows of each LEA's most recent file. A re-dropped copy of an older
    # export (status 'skipped') makes that older content current again without landing it twice.
    """CREATE OR REPLACE VIEW raw_sis_staff_latest AS
    WITH latest AS (
        SELECT lea_id, file_sha256 FROM raw_sis_files
        WHERE status IN ('landed', 'skipped')
        QUALIFY row_number() OVER (PARTITION BY lea_id ORDER BY landed_at DESC, file_name DESC) = 1)
    SELECT s.* FROM raw_sis_staff s JOIN latest USING (lea_id, file_sha256)""",
]


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one inbox file."""

    lea_id: str
    file_name: str
    status: str  # landed | skipped | failed
    sha256: str
    bytes: int
    rows: int = 0
    encoding: str | None = None
    delimiter: str | None = None
    message: str = ""
    kept_at: Path | None = None


@dataclass
class LandingResult:
    files: list[FileOutcome] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # <lea>/<name> left for a later run

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def failures(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "failed"]

    def frame(self) -> pd.DataFrame:
        """One row per file, for Dagster metadata."""
        return pd.DataFrame(
            [(f.lea_id, f.file_name, f.status, f.rows, f.bytes, f.encoding, f.message) for f in self.files],
            columns=["lea_id", "file", "status", "rows", "bytes", "encoding", "message"],
        )


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


def file_version(path: Path) -> str:
    """``<name>@<mtime_ns>:<size>:<ctime_ns>``: a file as the sensor saw it. A rewrite differs, and so
    does the same file moved back into the inbox (a move keeps the mtime but sets the ctime)."""
    stat = path.stat()
    return f"{path.name}@{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ctime_ns}"


def inbox_files(inbox: Path, lea_id: str | None = None) -> Iterator[tuple[str, Path]]:
    """``(lea folder, file)`` for every export waiting, oldest first so the newest lands last.

    Hidden files and other suffixes are ignored: an SIS should upload ``name.csv.part`` and rename.
    """
    folders = [inbox / lea_id] if lea_id else sorted(p for p in inbox.iterdir() if p.is_dir())
    for folder in folders:
        if not folder.is_dir():
            continue
        files = [
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FILE_SUFFIXES
        ]
        for path in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name)):
            yield folder.name, path


def new_inbox_files(
    inbox: Path, seen: dict[str, str], now: float, settle_seconds: float
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Files that appeared or changed since ``seen``, per LEA, and the next ``seen``.

    ``seen`` maps ``<lea>/<name>`` to the version of the files present last time, so it stays as
    small as the inbox (landed files move out, and a file moved back in is new again). A
    file modified less than ``settle_seconds`` ago may still be being written: it is left for the
    next look. The files come as :func:`file_version` strings.
    """
    new: dict[str, list[str]] = {}
    current: dict[str, str] = {}
    if not inbox.is_dir():
        return new, current
    for lea, path in inbox_files(inbox):
        if now - path.stat().st_mtime < settle_seconds:
            continue
        version = file_version(path)
        key = f"{lea}/{path.name}"
        current[key] = version.rsplit("@", 1)[1]
        if seen.get(key) != current[key]:
            new.setdefault(lea, []).append(version)
    return new, current


def check_header(header: list[str]) -> HeaderMap:
    mapping = map_headers(header)
    shown = ", ".join(repr(h) for h in header[:8]) + (", ..." if len(header) > 8 else "")
    if not mapping.canonical:
        raise SisFileError(f"no header: none of the fields on line 1 names a known SIS column ({shown})", 1)
    if mapping.missing_required:
        wanted = "; ".join(
            f"{name} (accepted: {accepted_headers(name)})" for name in mapping.missing_required
        )
        raise SisFileError(f"missing required columns: {wanted}. The header has {shown}", 1)
    return mapping


def _insert_sql(mapping: HeaderMap, field_count: int) -> tuple[str, list[str]]:
    """The one INSERT that reads the file with DuckDB and pairs each record with its line number.

    ``POSITIONAL JOIN`` pairs the n-th record with the n-th scanned line; ``__from_csv`` makes a
    length mismatch on either side show up as a NULL line number instead of a silent shift.
    """
    columns = ", ".join(
        f'r."c{mapping.canonical[name]:04d}"' if name in mapping.canonical else "NULL" for name in CANONICAL
    )
    keys = list(mapping.extra)
    pairs = ", ".join(f'?, r."c{mapping.extra[key]:04d}"' for key in keys)
    extra = f"json_object({pairs})" if keys else "NULL"
    read_columns = "{" + ", ".join(f"'c{i:04d}': 'VARCHAR'" for i in range(field_count)) + "}"
    sql = f"""
        INSERT INTO raw_sis_staff (run_id, lea_id, file_name, file_sha256, line_number,
                                   {", ".join(CANONICAL)}, extra, landed_at)
        SELECT ?, ?, ?, ?, CASE WHEN r.__from_csv THEN l.line_number END, {columns}, {extra}, ?
        FROM (SELECT true AS __from_csv, * FROM read_csv(?, header = true, auto_detect = false,
              delim = ?, quote = '"', escape = '"', strict_mode = true, encoding = 'utf-8',
              columns = {read_columns})) r
        POSITIONAL JOIN sis_lines l"""
    return sql, keys


def _land_rows(
    con: duckdb.DuckDBPyConnection,
    utf8_path: Path,
    delimiter: str,
    mapping: HeaderMap,
    layout: Layout,
    lineage: tuple[str, int, str, str, datetime],
) -> int:
    """Insert the file's records (caller holds the transaction); verify DuckDB saw what the scan saw."""
    sql, keys = _insert_sql(mapping, layout.header_fields)
    run_id, lea_id, name, sha, landed_at = lineage
    con.register("sis_lines", pd.DataFrame({"line_number": layout.lines}))
    try:
        con.execute(sql, [run_id, lea_id, name, sha, *keys, landed_at, str(utf8_path), delimiter])
    except duckdb.Error as exc:
        raise duckdb_problem(str(exc), layout) from None
    finally:
        with suppress(duckdb.Error):  # refused in an aborted transaction; the caller rolls back
            con.unregister("sis_lines")
    landed, unmatched = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE line_number IS NULL) FROM raw_sis_staff "
        "WHERE run_id = ? AND lea_id = ? AND file_sha256 = ?",
        [run_id, lea_id, sha],
    ).fetchone()
    if unmatched or landed != len(layout.lines):
        raise SisFileError(
            f"unreadable CSV: DuckDB read {landed - unmatched} records where the file has {len(layout.lines)}"
        )
    return int(landed)


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or a UTC-stamped variant when an earlier file of that name is kept there."""
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / name, 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    while target.exists() or target.with_name(f"{target.name}.error.txt").exists():
        target = folder / f"{stamp}{f'-{n}' if n > 1 else ''}-{name}"
        n += 1
    return target


class _Clock:
    """Strictly increasing UTC timestamps, so 'latest file per LEA' is never a tie."""

    def __init__(self) -> None:
        self.last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        self.last = max(datetime.now(UTC), self.last + timedelta(microseconds=1))
        return self.last


def _utf8_text(path: Path, facts: Fingerprint, tmp: Path) -> Path:
    """The file as UTF-8 text to scan: itself, or a UTF-8 copy of a Windows-1252 file in ``tmp``."""
    if facts.encoding != "cp1252":
        return path
    target = tmp / "export.utf8.csv"
    to_utf8(path, target, facts)
    return target


def _duckdb_input(path: Path, layout: Layout, tmp: Path) -> Path:
    """The path DuckDB reads: ``path``, or a copy with LF line ends when the file mixes CRLF and LF
    (DuckDB's strict reader refuses that), or a link without the glob characters DuckDB would expand
    (``staff[1].csv`` would read ``staff1.csv``)."""
    if layout.mixed_line_ends:
        target = tmp / "export.lf.csv"
        strip_record_crs(path, target)
        return target
    if _GLOB_CHARACTERS.intersection(str(path)):
        target = tmp / "export.csv"
        os.symlink(path.resolve(), target)
        return target
    return path


def _work_dir(work_dir: Path) -> Path | None:
    """Where temporary copies go: the landing folder, unless its own path holds glob characters."""
    if _GLOB_CHARACTERS.intersection(str(work_dir)):
        return None
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def _record(con: duckdb.DuckDBPyConnection, outcome: FileOutcome, run_id: str, landed_at: datetime) -> None:
    con.execute(
        "INSERT INTO raw_sis_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            outcome.sha256 or None,
            int(outcome.lea_id) if outcome.lea_id.isdigit() else None,
            outcome.file_name,
            str(outcome.kept_at),
            outcome.bytes,
            outcome.rows,
            outcome.encoding,
            outcome.delimiter,
            outcome.status,
            outcome.message,
            run_id,
            landed_at,
        ],
    )


def land_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    lea: str,
    run_id: str,
    where: Paths,
    *,
    known_leas: Collection[str],
    clock: _Clock | None = None,
) -> FileOutcome:
    """Land one file in its own transaction, then move it to archive/ (or failed/, with its message).

    The move comes after the commit: a crash in between leaves the file in the inbox, and the next
    run finds its hash landed and archives it as skipped, so nothing is lost or landed twice.
    """
    clock = clock or _Clock()
    facts = {"sha256": "", "bytes": path.stat().st_size, "encoding": None, "delimiter": None}
    try:
        if lea not in known_leas:
            raise SisFileError(
                f"folder {lea!r} is not a configured LEA id (organisations.csv has {', '.join(known_leas)})"
            )
        printed = fingerprint(path)
        facts.update(sha256=printed.sha256, bytes=printed.size, encoding=printed.encoding)
        lea_id, sha = int(lea), printed.sha256
        if con.execute(
            "SELECT count(*) FROM raw_sis_files WHERE lea_id = ? AND file_sha256 = ? AND status = 'landed'",
            [lea_id, sha],
        ).fetchone()[0]:
            message = "skipped: the same content (sha256) was landed before"
            outcome = FileOutcome(lea, path.name, "skipped", **facts, message=message,
                                  kept_at=_free_path(where.archive / lea, path.name))  # fmt: skip
            _record(con, outcome, run_id, clock.now())
            shutil.move(path, outcome.kept_at)
            return outcome
        with tempfile.TemporaryDirectory(dir=_work_dir(where.landing / "tmp"), prefix="sis-") as tmp:
            try:
                text = _utf8_text(path, printed, Path(tmp))
                header, facts["delimiter"] = read_header(text)
                mapping = check_header(header)
                layout = scan_records(text, facts["delimiter"])
                check_layout(layout)
                if layout.header_fields != len(header):
                    raise SisFileError("broken quoting: the header line could not be split consistently", 1)
                readable = _duckdb_input(text, layout, Path(tmp))
            except SisFileError:
                raise
            except Exception as exc:  # whatever else reading it raised is about this file only
                raise SisFileError(f"could not be read: {type(exc).__name__}: {exc}") from exc
            landed_at = clock.now()
            con.execute("BEGIN TRANSACTION")
            try:
                rows = _land_rows(con, readable, facts["delimiter"], mapping, layout,
                                  (run_id, lea_id, path.name, sha, landed_at))  # fmt: skip
                outcome = FileOutcome(lea, path.name, "landed", **facts, rows=rows,
                                      kept_at=_free_path(where.archive / lea, path.name))  # fmt: skip
                _record(con, outcome, run_id, landed_at)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        shutil.move(path, outcome.kept_at)
        return outcome
    except SisFileError as exc:
        place = f"line {exc.line}" if exc.line else "file"
        message = f"SIS export {lea}/{path.name}, {place}: {exc.problem}"
        outcome = FileOutcome(lea, path.name, "failed", **facts, message=message,
                              kept_at=_free_path(where.failed / lea, path.name))  # fmt: skip
        shutil.move(path, outcome.kept_at)
        outcome.kept_at.with_name(f"{outcome.kept_at.name}.error.txt").write_text(
            f"{message}\n\nfile: {path}\nkept at: {outcome.kept_at}\nsha256: {facts['sha256'] or '-'}\n"
            f"run: {run_id}\nFix the export and drop it into the inbox again.\n",
            encoding="utf-8",
        )
        _record(con, outcome, run_id, clock.now())
        return outcome


def land_inbox(
    con: duckdb.DuckDBPyConnection,
    where: Paths,
    run_id: str,
    *,
    known_leas: Collection[str],
    lea_id: str | None = None,
    files: Collection[str] | None = None,
) -> LandingResult:
    """Land every waiting file (or one LEA's); a failed file never stops the others.

    ``files`` (:func:`file_version` strings: the files the sensor saw settled) lands only those, as
    they were then: a file written since, or still being written, is left for the sensor's next tick
    (``LandingResult.waiting``).
    """
    ensure_tables(con)
    result = LandingResult()
    if not where.inbox.is_dir():
        return result
    clock = _Clock()
    for lea, path in list(inbox_files(where.inbox, lea_id)):
        if files is not None and file_version(path) not in files:
            result.waiting.append(f"{lea}/{path.name}")
            continue
        result.files.append(land_file(con, path, lea, run_id, where, known_leas=known_leas, clock=clock))
    return result


def preview_sql(run_id: str) -> str:
    """This run's first landed rows (names and codes only) for the Dagster preview."""
    quoted = run_id.replace("'", "''")
    return (
        "SELECT lea_id, file_name, line_number, local_staff_id, first_name, last_name, school_code, "
        f"position_code, begin_date FROM raw_sis_staff WHERE run_id = '{quoted}' ORDER BY lea_id, line_number"
    )
