"""Land SIS staff export files from ``inbox/<lea_id>/`` into ``raw_sis_staff``, whole or not at all.

A file is landed exactly as offered (every field as text), with the file's name, content hash, the
physical line where each record starts, and the run id. Three passes, none of them per row in
Python: one streaming pass hashes the bytes and decides the encoding (Windows-1252 is converted to a
UTF-8 temporary file), one vectorised numpy pass finds where records start and checks every record
has the header's number of fields (quote-aware, so quoted newlines are fine), and DuckDB's
``read_csv`` reads the text into the table in one transaction. A file that cannot be read is moved
to ``failed/<lea_id>/`` beside a ``.error.txt`` that names file, line and problem; row-level content
(bad emails, unknown codes) is the staging gate's business, not this module's.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from staff_pipeline.extract.sis_columns import CANONICAL, HeaderMap, accepted_headers, map_headers
from staff_pipeline.settings import Paths

CHUNK = 16 << 20  # bytes per streaming read
DELIMITERS = (",", ";", "\t", "|")
# No staff record is near this long; one that is has lost a quote or a line end (and DuckDB's own
# line limit, 2 MB by default, would refuse it anyway, with less to say).
MAX_RECORD_BYTES = 1 << 20
FILE_SUFFIXES = (".csv", ".txt")

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


class SisFileError(ValueError):
    """A file that cannot be read as an SIS export; ``line`` is the physical line (1-based), if known."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


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

    def markdown(self) -> str:
        """Per-file table for Dagster metadata."""
        if not self.files:
            return "(no files in the inbox)"
        frame = pd.DataFrame(
            [(f.lea_id, f.file_name, f.status, f.rows, f.bytes, f.encoding, f.message) for f in self.files],
            columns=["lea_id", "file", "status", "rows", "bytes", "encoding", "message"],
        )
        return frame.to_markdown(index=False)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


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

    ``seen`` maps ``<lea>/<name>`` to ``<mtime_ns>:<size>`` of the files present last time, so it
    stays as small as the inbox (landed files move out). A file modified less than
    ``settle_seconds`` ago may still be being written: it is left for the next look.
    """
    new: dict[str, list[str]] = {}
    current: dict[str, str] = {}
    if not inbox.is_dir():
        return new, current
    for lea, path in inbox_files(inbox):
        stat = path.stat()
        if now - stat.st_mtime < settle_seconds:
            continue
        key, version = f"{lea}/{path.name}", f"{stat.st_mtime_ns}:{stat.st_size}"
        current[key] = version
        if seen.get(key) != version:
            new.setdefault(lea, []).append(f"{path.name}@{version}")
    return new, current


def _line_of(data: bytes, offset: int, lines_before: int) -> int:
    return lines_before + data.count(b"\n", 0, offset) + 1


def fingerprint(path: Path) -> tuple[str, int, str]:
    """SHA-256, size and encoding (``utf-8-sig``, ``utf-8`` or ``cp1252``) in one streaming pass."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    encoding = "utf-8"
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if size == 0:
                if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in chunk[:4096]:
                    raise SisFileError(
                        "wrong encoding: the file is UTF-16 or binary (NUL bytes); "
                        "export it as UTF-8 or Windows-1252 text",
                        1,
                    )
                if chunk.startswith(codecs.BOM_UTF8):
                    encoding = "utf-8-sig"
            digest.update(chunk)
            if encoding != "cp1252":
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    encoding = "cp1252"
            size += len(chunk)
    if size == 0:
        raise SisFileError("no header: the file is empty", 1)
    if encoding != "cp1252":
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            encoding = "cp1252"
    return digest.hexdigest(), size, encoding


def _utf8_sequence(chunk: bytes) -> int | None:
    """Offset of the first UTF-8 multi-byte character (2 or 3 bytes), vectorised.

    In a file that is not valid UTF-8 such bytes mean two encodings were mixed (a UTF-8 line pasted
    into a Windows-1252 export): 'Ã©' is far likelier a broken 'é' than a real name.
    """
    a = np.frombuffer(chunk, dtype=np.uint8)
    cont = np.append((a >= 0x80) & (a <= 0xBF), [False, False])
    lead2 = np.flatnonzero((a >= 0xC2) & (a <= 0xDF))
    lead3 = np.flatnonzero((a >= 0xE0) & (a <= 0xEF))
    hits = np.concatenate((lead2[cont[lead2 + 1]], lead3[cont[lead3 + 1] & cont[lead3 + 2]]))
    return int(hits.min()) if len(hits) else None


def to_utf8(path: Path, target: Path) -> None:
    """Stream a Windows-1252 file into UTF-8, refusing bytes that are neither it nor plain UTF-8."""
    lines = 0
    with path.open("rb") as source, target.open("w", encoding="utf-8", newline="") as out:
        while chunk := source.read(CHUNK):
            mixed = _utf8_sequence(chunk)
            if mixed is not None:
                raise SisFileError(
                    "wrong encoding: the file is not valid UTF-8, yet this line holds UTF-8 characters; "
                    "it mixes encodings. Save the whole file as UTF-8 (or all as Windows-1252)",
                    _line_of(chunk, mixed, lines),
                )
            try:
                out.write(chunk.decode("cp1252"))
            except UnicodeDecodeError as exc:
                raise SisFileError(
                    f"wrong encoding: byte 0x{chunk[exc.start]:02x} is neither UTF-8 nor Windows-1252",
                    _line_of(chunk, exc.start, lines),
                ) from None
            lines += chunk.count(b"\n")


def read_header(path: Path) -> tuple[list[str], str]:
    """The header fields and the delimiter (the candidate splitting line 1 into the most fields)."""
    with path.open("rb") as handle:
        head = handle.read(1 << 20).decode("utf-8", errors="replace").lstrip("\ufeff")
    first_line = head.split("\n", 1)[0].rstrip("\r")
    if not first_line.strip():
        raise SisFileError("no header: line 1 is empty", 1)
    delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first_line], delimiter=d))))
    header = next(csv.reader(io.StringIO(head, newline=""), delimiter=delimiter))
    return header, delimiter


@dataclass(frozen=True)
class Layout:
    """Per record after the header (blank lines excluded): its first physical line, its field count."""

    header_fields: int
    lines: np.ndarray
    fields: np.ndarray


def scan_records(path: Path, delimiter: str) -> Layout:
    """Find record boundaries with numpy: a newline ends a record when an even number of quotes precede it.

    This is how RFC 4180 quoting works (a doubled quote inside a quoted field keeps the parity), so
    quoted newlines stay inside their record, and an odd count at the end is an unterminated quote.
    """
    quote, newline, sep = ord('"'), ord("\n"), ord(delimiter)
    parity = newlines = offset = 0
    open_start, open_line, open_fields = 0, 1, 1
    last_byte = 0
    lines, fields, blank = [], [], []
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            a = np.frombuffer(chunk, dtype=np.uint8)
            q = np.flatnonzero(a == quote)
            nl = np.flatnonzero(a == newline)
            dl = np.flatnonzero(a == sep)
            is_end = ((parity + np.searchsorted(q, nl)) & 1) == 0
            ends = nl[is_end]
            outside = dl[((parity + np.searchsorted(q, dl)) & 1) == 0]
            if len(ends):
                cum = np.searchsorted(outside, ends)
                per = np.diff(cum, prepend=0) + 1
                per[0] += open_fields - 1
                global_nl = newlines + np.flatnonzero(is_end)
                starts = np.concatenate(([open_start], offset + ends[:-1] + 1))
                before = np.where(ends > 0, a[np.maximum(ends - 1, 0)], last_byte)
                length = offset + ends - starts - (before == ord("\r"))
                starts_at = np.concatenate(([open_line], global_nl[:-1] + 2))
                _check_length(length, starts_at)
                lines.append(starts_at)
                fields.append(per)
                blank.append(length == 0)
                open_start, open_line = offset + int(ends[-1]) + 1, int(global_nl[-1]) + 2
                open_fields = 1 + len(outside) - int(cum[-1])
            else:
                open_fields += len(outside)
            parity = (parity + len(q)) & 1
            newlines += len(nl)
            offset += len(a)
            last_byte = int(a[-1])
    if parity:
        raise SisFileError("broken quoting: a quoted field is never closed (unterminated quote)", open_line)
    if offset - open_start - (last_byte == ord("\r")) > 0:  # last record without a final newline
        _check_length(np.array([offset - open_start]), np.array([open_line]))
        lines.append(np.array([open_line]))
        fields.append(np.array([open_fields]))
        blank.append(np.array([False]))
    all_lines, all_fields, all_blank = (np.concatenate(x) for x in (lines, fields, blank))
    keep = ~all_blank
    keep[0] = False  # the header
    return Layout(int(all_fields[0]), all_lines[keep].astype(np.int32), all_fields[keep])


def _check_length(lengths: np.ndarray, lines: np.ndarray) -> None:
    too_long = np.flatnonzero(lengths > MAX_RECORD_BYTES)
    if len(too_long):
        first = int(too_long[0])
        raise SisFileError(
            f"record too long: {int(lengths[first]):,} bytes where at most {MAX_RECORD_BYTES:,} are "
            "accepted (a quote or line end may be missing)",
            int(lines[first]),
        )


def check_layout(layout: Layout) -> None:
    wrong = np.flatnonzero(layout.fields != layout.header_fields)
    if len(wrong):
        first = int(wrong[0])
        others = f" (and {len(wrong) - 1} more lines)" if len(wrong) > 1 else ""
        raise SisFileError(
            f"broken quoting or delimiters: {int(layout.fields[first])} fields where the header has "
            f"{layout.header_fields}{others}",
            int(layout.lines[first]),
        )


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
        raise SisFileError(f"unreadable CSV: {str(exc).splitlines()[0]}") from None
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


@contextmanager
def _utf8_copy(path: Path, encoding: str, work_dir: Path) -> Iterator[Path]:
    """The file itself when it is UTF-8 already, else a temporary UTF-8 copy (removed afterwards)."""
    if encoding != "cp1252":
        yield path
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="sis-") as tmp:
        target = Path(tmp) / f"{path.stem}.utf8.csv"
        to_utf8(path, target)
        yield target


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
        facts["sha256"], facts["bytes"], facts["encoding"] = fingerprint(path)
        lea_id, sha = int(lea), facts["sha256"]
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
        with _utf8_copy(path, facts["encoding"], where.landing / "tmp") as utf8_path:
            header, facts["delimiter"] = read_header(utf8_path)
            mapping = check_header(header)
            layout = scan_records(utf8_path, facts["delimiter"])
            check_layout(layout)
            if layout.header_fields != len(header):
                raise SisFileError("broken quoting: the header line could not be split consistently", 1)
            landed_at = clock.now()
            con.execute("BEGIN TRANSACTION")
            try:
                rows = _land_rows(con, utf8_path, facts["delimiter"], mapping, layout,
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
) -> LandingResult:
    """Land every waiting file (or one LEA's); a failed file never stops the others."""
    ensure_tables(con)
    result = LandingResult()
    if not where.inbox.is_dir():
        return result
    clock = _Clock()
    for lea, path in list(inbox_files(where.inbox, lea_id)):
        result.files.append(land_file(con, path, lea, run_id, where, known_leas=known_leas, clock=clock))
    return result


def preview_sql(run_id: str) -> str:
    """This run's first landed rows (names and codes only) for the Dagster preview."""
    quoted = run_id.replace("'", "''")
    return (
        "SELECT lea_id, file_name, line_number, local_staff_id, first_name, last_name, school_code, "
        f"position_code, begin_date FROM raw_sis_staff WHERE run_id = '{quoted}' ORDER BY lea_id, line_number"
    )
