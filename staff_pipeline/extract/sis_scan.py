"""Reading an SIS export's bytes before DuckDB does: encoding, header, record boundaries, line ends.

Every pass streams the file in chunks and works on whole chunks (``bytes`` methods and numpy), never
per row in Python. Whatever is wrong is raised as :class:`SisFileError` with the physical line
(1-based) where it is, so the message names file, line and problem.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 16 << 20  # bytes per streaming read
DELIMITERS = (",", ";", "\t", "|")
# No staff record is near this long; one that is has lost a quote or a line end (and DuckDB's own
# line limit, 2 MB by default, would refuse it anyway, with less to say).
MAX_RECORD_BYTES = 1 << 20
_QUOTE, _LF, _CR = ord('"'), ord("\n"), ord("\r")


class SisFileError(ValueError):
    """A file that cannot be read as an SIS export; ``line`` is the physical line (1-based), if known."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


@dataclass(frozen=True)
class Fingerprint:
    """SHA-256, size, encoding, and where the file first stops being UTF-8 (for cp1252 files)."""

    sha256: str
    size: int
    encoding: str  # utf-8-sig | utf-8 | cp1252
    not_utf8_line: int | None = None
    not_utf8_byte: int | None = None


def _line_of(data: bytes, offset: int, lines_before: int) -> int:
    return lines_before + data.count(b"\n", 0, offset) + 1


def fingerprint(path: Path) -> Fingerprint:
    """Hash, size and encoding in one streaming pass; NUL bytes anywhere refuse the file."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = lines = 0
    encoding = "utf-8"
    bad_line = bad_byte = None
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if size == 0:
                if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise SisFileError(
                        "wrong encoding: the file is UTF-16; export it as UTF-8 or Windows-1252", 1
                    )
                if chunk.startswith(codecs.BOM_UTF8):
                    encoding = "utf-8-sig"
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise SisFileError(
                    "wrong encoding: a NUL byte on this line (NUL bytes mean UTF-16, binary or "
                    "damaged text); export it as UTF-8 or Windows-1252 text",
                    _line_of(chunk, nul, lines),
                )
            digest.update(chunk)
            if bad_line is None:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    at = max(exc.start, 0)
                    bad_line, bad_byte = _line_of(chunk, at, lines), chunk[at] if at < len(chunk) else None
            size += len(chunk)
            lines += chunk.count(b"\n")
    if size == 0:
        raise SisFileError("no header: the file is empty", 1)
    if bad_line is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            bad_line = lines + 1
    if bad_line is not None:
        encoding = "cp1252"
    return Fingerprint(digest.hexdigest(), size, encoding, bad_line, bad_byte)


def _utf8_sequence(chunk: bytes, skip: int = 0) -> int | None:
    """Offset of the first UTF-8 multi-byte character (2 or 3 bytes) at or after ``skip``, vectorised.

    In a file that is not valid UTF-8 such bytes mean two encodings were mixed (a UTF-8 line pasted
    into a Windows-1252 export): 'Ã©' is far likelier a broken 'é' than a real name.
    """
    a = np.frombuffer(chunk, dtype=np.uint8)
    cont = np.append((a >= 0x80) & (a <= 0xBF), [False, False])
    lead2 = np.flatnonzero((a >= 0xC2) & (a <= 0xDF))
    lead3 = np.flatnonzero((a >= 0xE0) & (a <= 0xEF))
    hits = np.concatenate((lead2[cont[lead2 + 1]], lead3[cont[lead3 + 1] & cont[lead3 + 2]]))
    hits = hits[hits >= skip]
    return int(hits.min()) if len(hits) else None


def to_utf8(path: Path, target: Path, facts: Fingerprint) -> None:
    """Stream a Windows-1252 file into UTF-8, refusing bytes that are neither it nor plain UTF-8.

    A file holding both UTF-8 characters and bytes that are not UTF-8 mixes encodings: both lines are
    named, the first byte that is not UTF-8 as the place (a UTF-8 byte order mark counts as UTF-8).
    """
    lines = 0
    with path.open("rb") as source, target.open("w", encoding="utf-8", newline="") as out:
        while chunk := source.read(CHUNK):
            mixed = _utf8_sequence(chunk)
            if mixed is not None:
                utf8_line = _line_of(chunk, mixed, lines)
                what = (
                    "a UTF-8 byte order mark"
                    if lines == 0 and mixed == 0 and chunk.startswith(codecs.BOM_UTF8)
                    else f"UTF-8 characters on line {utf8_line}"
                )
                byte = f"byte 0x{facts.not_utf8_byte:02x}" if facts.not_utf8_byte is not None else "a byte"
                raise SisFileError(
                    f"wrong encoding: the file mixes encodings: {byte} here is not UTF-8, yet the file "
                    f"holds {what}. Save the whole file as UTF-8 (or all as Windows-1252)",
                    facts.not_utf8_line,
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
    """The header fields and the delimiter (the candidate splitting line 1 into the most fields).

    The header is line 1 alone: a header field never holds a line end, and reading on from a broken
    quote there would take the rows for header names.
    """
    with path.open("rb") as handle:
        head = handle.read(1 << 20).decode("utf-8", errors="replace").lstrip("\ufeff")
    first_line = head.split("\n", 1)[0].removesuffix("\r")
    if not first_line.strip():
        raise SisFileError("no header: line 1 is empty", 1)
    if "\r" in first_line:
        raise SisFileError(
            "line ends: carriage returns (CR) without line feeds. CR-only line ends (classic Mac "
            '"CSV (Macintosh)") are not supported: export with LF or CRLF line ends',
            1,
        )
    try:
        delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first_line], delimiter=d))))
        header = next(csv.reader([first_line], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise SisFileError(f"broken header: {exc} (a quote on line 1 is never closed?)", 1) from None
    return header, delimiter


@dataclass(frozen=True)
class Layout:
    """Per record after the header (blank lines excluded): its first physical line, its field count.

    ``starts`` is the first physical line of every line DuckDB counts (the header, each record, each
    blank line), to name the line of an error DuckDB reports. ``mixed_line_ends``: some records end
    in CRLF and some in LF, which DuckDB's strict reader refuses (see :func:`strip_record_crs`).
    """

    header_fields: int
    lines: np.ndarray
    fields: np.ndarray
    starts: np.ndarray | None = None
    mixed_line_ends: bool = False


def scan_records(path: Path, delimiter: str) -> Layout:
    """Find record boundaries with numpy: a newline ends a record when an even number of quotes precede it.

    This is how RFC 4180 quoting works (a doubled quote inside a quoted field keeps the parity), so
    quoted newlines stay inside their record, and an odd count at the end is an unterminated quote.
    A carriage return outside quotes must end a line (CRLF): a lone one is refused with its line.
    """
    sep = ord(delimiter)
    parity = newlines = offset = crlf = lf = 0
    open_start, open_line, open_fields = 0, 1, 1
    last_byte = 0
    pending_cr: int | None = None  # the line of an unquoted CR ending the previous chunk
    lines, fields, blank = [], [], []
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            a = np.frombuffer(chunk, dtype=np.uint8)
            if pending_cr is not None and a[0] != _LF:
                raise _lone_cr(pending_cr)
            q = np.flatnonzero(a == _QUOTE)
            nl = np.flatnonzero(a == _LF)
            dl = np.flatnonzero(a == sep)
            cr = np.flatnonzero(a == _CR)
            is_end = ((parity + np.searchsorted(q, nl)) & 1) == 0
            ends = nl[is_end]
            outside = dl[((parity + np.searchsorted(q, dl)) & 1) == 0]
            bare_cr = cr[((parity + np.searchsorted(q, cr)) & 1) == 0]
            after = np.append(a, [_LF])[bare_cr + 1]  # a CR ending the chunk: checked with the next one
            lone = bare_cr[after != _LF]
            if len(lone):
                raise _lone_cr(newlines + int(np.searchsorted(nl, lone[0])) + 1)
            pending_cr = newlines + len(nl) + 1 if len(bare_cr) and bare_cr[-1] == len(a) - 1 else None
            if len(ends):
                cum = np.searchsorted(outside, ends)
                per = np.diff(cum, prepend=0) + 1
                per[0] += open_fields - 1
                global_nl = newlines + np.flatnonzero(is_end)
                starts = np.concatenate(([open_start], offset + ends[:-1] + 1))
                before = np.where(ends > 0, a[np.maximum(ends - 1, 0)], last_byte)
                length = offset + ends - starts - (before == _CR)
                starts_at = np.concatenate(([open_line], global_nl[:-1] + 2))
                _check_length(length, starts_at)
                lines.append(starts_at)
                fields.append(per)
                blank.append(length == 0)
                with_cr = int(np.count_nonzero(before == _CR))
                crlf, lf = crlf + with_cr, lf + len(ends) - with_cr
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
    if offset - open_start - (last_byte == _CR) > 0:  # last record without a final newline
        _check_length(np.array([offset - open_start]), np.array([open_line]))
        lines.append(np.array([open_line]))
        fields.append(np.array([open_fields]))
        blank.append(np.array([False]))
    all_lines, all_fields, all_blank = (np.concatenate(x) for x in (lines, fields, blank))
    keep = ~all_blank
    keep[0] = False  # the header
    return Layout(
        int(all_fields[0]),
        all_lines[keep].astype(np.int32),
        all_fields[keep],
        all_lines.astype(np.int32),
        bool(crlf and lf),
    )


def _lone_cr(line: int) -> SisFileError:
    return SisFileError(
        "line ends: a carriage return (CR) outside quotes that does not end the line (CRLF); "
        "CR-only line ends are not supported and a CR inside a value needs quotes",
        line,
    )


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


def strip_record_crs(path: Path, target: Path) -> None:
    """Copy ``path`` with every record's line end made LF, for a file mixing CRLF and LF line ends.

    Only the CR before a record-ending LF goes (outside quotes, as :func:`scan_records` reads them);
    a line end inside a quoted value is part of the value and stays. Line numbers do not change.
    """
    parity = 0
    carry = b""
    with path.open("rb") as source, target.open("wb") as out:
        while chunk := source.read(CHUNK):
            data = carry + chunk
            carry = b""
            if data.endswith(b"\r"):  # its LF may open the next chunk
                data, carry = data[:-1], b"\r"
            a = np.frombuffer(data, dtype=np.uint8)
            q = np.flatnonzero(a == _QUOTE)
            nl = np.flatnonzero(a == _LF)
            ends = nl[((parity + np.searchsorted(q, nl)) & 1) == 0]
            ends = ends[ends > 0]
            drop = ends[a[ends - 1] == _CR] - 1
            out.write(np.delete(a, drop).tobytes() if len(drop) else data)
            parity = (parity + len(q)) & 1
        out.write(carry)


_DUCKDB_LINE = re.compile(r"CSV Error on Line: (\d+)")


def duckdb_problem(error: str, layout: Layout) -> SisFileError:
    """DuckDB's CSV error as a SisFileError: its reason (not the offending line's content) at the
    physical line of the record it counts (header, records and blank lines, one each)."""
    text = [line.strip() for line in error.split("Possible fixes:")[0].splitlines()]
    # the reason is the last line before the fixes; the offending line's content (which may span
    # lines) is left out
    reason = next((line for line in reversed(text[1:]) if line), text[0] if text else "")
    found = _DUCKDB_LINE.search(error)
    line = None
    if found and layout.starts is not None and 0 < int(found.group(1)) <= len(layout.starts):
        line = int(layout.starts[int(found.group(1)) - 1])
    return SisFileError(f"unreadable CSV: {reason}", line)
