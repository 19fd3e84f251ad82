"""SIS export landing over real files and a real DuckDB file: messy files, duplicates, failures, lineage."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dagster import Failure, build_asset_context, materialize

from assets.extract_sis import SisInboxConfig, raw_sis_staff
from staff_pipeline.config import lea_ids
from staff_pipeline.extract import sis, sis_scan
from staff_pipeline.extract.sis_columns import ALIASES, REQUIRED, map_headers, normalise
from staff_pipeline.generator import SIS_VARIANTS, generate
from staff_pipeline.resources import WarehouseResource
from staff_pipeline.settings import Paths
from staff_pipeline.warehouse import connect
from tests.fixtures_sis import HEADER, ROW_1, ROW_2, Drop

LEAS = lea_ids()


class Wh:
    """The test's warehouse connection and the landing under test."""

    def __init__(self, con: duckdb.DuckDBPyConnection, where: Paths) -> None:
        self.con, self.where = con, where

    def land(self, run_id: str = "run-1", lea_id: str | None = None) -> sis.LandingResult:
        return sis.land_inbox(self.con, self.where, run_id, known_leas=LEAS, lea_id=lea_id)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def staff(self, columns: str = "line_number, local_staff_id, first_name, last_name") -> list[tuple]:
        return self.query(f"SELECT {columns} FROM raw_sis_staff ORDER BY lea_id, file_name, line_number")


@pytest.fixture
def wh(where: Paths) -> Iterator[Wh]:
    """One connection per test to the real warehouse file under the test's STAFF_DATA_DIR."""
    with connect() as con:
        yield Wh(con, where)


def test_clean_file_lands_with_lineage_and_moves_to_archive(where: Paths, drop: Drop, wh: Wh) -> None:
    content = f"{HEADER}\n{ROW_1}\n{ROW_2}\n"
    path = drop("100001", "staff.csv", content)
    result = wh.land("run-42")
    assert [(f.status, f.rows) for f in result.files] == [("landed", 2)]
    sha = hashlib.sha256(content.encode()).hexdigest()
    assert wh.staff("run_id, lea_id, file_name, file_sha256, line_number, local_staff_id, last_name") == [
        ("run-42", 100001, "staff.csv", sha, 2, "T1", "van der Berg-Özdemir"),
        ("run-42", 100001, "staff.csv", sha, 3, "T2", "O'Brien"),
    ]
    (row,) = wh.query("SELECT * FROM raw_sis_staff WHERE line_number = 3")
    assert row[5:20] == tuple(None if v == "" else v for v in ROW_2.split(","))
    assert row[20] is None and row[21].tzinfo is not None  # no extra columns; landed_at is TIMESTAMPTZ
    assert not path.exists()
    archived = where.archive / "100001" / "staff.csv"
    assert archived.read_text(encoding="utf-8") == content
    assert wh.query("SELECT status, rows, bytes, encoding, delimiter, archived_path FROM raw_sis_files") == [
        ("landed", 2, len(content.encode()), "utf-8", ",", str(archived))
    ]


def test_utf8_bom_crlf_and_headers_in_other_case_with_spaces(where: Paths, drop: Drop, wh: Wh) -> None:
    header = "STAFF ID, WISEid ,first_NAME,Last Name,E-Mail,School Code,POSITION CODE,Start Date"
    drop(
        "100001",
        "bom.csv",
        f"{header}\r\nT1,1000000001,Zoë,Çelik,z@x.org,LVE,TCH,2024-08-15\r\n",
        "utf-8-sig",
    )
    result = wh.land()
    assert result.files[0].encoding == "utf-8-sig"
    assert wh.staff(
        "local_staff_id, state_staff_id, first_name, last_name, email, school_code, begin_date"
    ) == [("T1", "1000000001", "Zoë", "Çelik", "z@x.org", "LVE", "2024-08-15")]


def test_windows_1252_with_semicolons_is_stored_as_the_same_text(where: Paths, drop: Drop, wh: Wh) -> None:
    title = "Café “Leraar” – €"  # curly quotes, dash and euro differ between cp1252 and latin-1
    text = f"{HEADER.replace(',', ';')}\r\n" + f"T1;;Noë;;Özdemir;;;;LVE;TCH;{title};2024-08-15;;;\r\n"
    drop("100002", "cp.csv", text, "cp1252")
    result = wh.land()
    assert (result.files[0].encoding, result.files[0].delimiter) == ("cp1252", ";")
    assert wh.staff("first_name, last_name, position_title") == [("Noë", "Özdemir", title)]
    archived = where.archive / "100002" / "cp.csv"
    assert archived.read_bytes() == text.encode("cp1252")  # the original is kept unchanged


def test_quoted_newlines_blank_lines_and_physical_line_numbers(where: Paths, drop: Drop, wh: Wh) -> None:
    text = (
        f"{HEADER}\n"
        'T1,,Ann,,"Smith, Jr.",,,,LVE,TCH,"Teacher\nand ""mentor""\n(part-time)",2024-08-15,,,\n'
        "\n"
        "T2,,Bob,,Jones,,,,LVE,TCH,,2024-08-15,,,\n"
        "T3,,Cy,,Lee,,,,LVE,TCH,,2024-08-15,,,\n"
        "\n\n\n"
    )
    drop("100001", "quoted.csv", text)
    wh.land()
    assert wh.staff("line_number, local_staff_id, last_name, position_title") == [
        (2, "T1", "Smith, Jr.", 'Teacher\nand "mentor"\n(part-time)'),
        (6, "T2", "Jones", None),
        (7, "T3", "Lee", None),
    ]


def test_last_line_without_newline_and_crlf_inside_quotes(where: Paths, drop: Drop, wh: Wh) -> None:
    text = (
        f'{HEADER}\r\nT1,,Ann,,"A\r\nB",,,,LVE,TCH,,2024-08-15,,,\r\nT2,,Bob,,Jones,,,,LVE,TCH,,2024-08-15,,,'
    )
    drop("100001", "noeol.csv", text)
    wh.land()
    assert wh.staff("line_number, last_name") == [(2, "A\r\nB"), (4, "Jones")]


def test_duplicate_and_unknown_headers_are_kept_in_extra(where: Paths, drop: Drop, wh: Wh) -> None:
    header = f"{HEADER},Email,Notes,Notes"
    drop("100001", "dup.csv", f"{header}\n{ROW_1},second@x.org,n1,n2\n")
    wh.land()
    (row,) = wh.staff("email, extra")
    assert row[0] == "jose@lakeview.example.org"
    assert json.loads(row[1]) == {"Email": "second@x.org", "Notes": "n1", "Notes#2": "n2"}


def test_same_content_twice_lands_once_and_the_copy_is_archived(where: Paths, drop: Drop, wh: Wh) -> None:
    content = f"{HEADER}\n{ROW_1}\n"
    drop("100001", "monday.csv", content)
    wh.land("run-1")
    drop("100001", "monday-again.csv", content)
    result = wh.land("run-2")
    assert [(f.status, f.rows) for f in result.files] == [("skipped", 0)]
    assert "same content" in result.files[0].message
    assert len(wh.staff()) == 1
    assert (where.archive / "100001" / "monday-again.csv").exists()
    assert wh.query("SELECT status, run_id FROM raw_sis_files ORDER BY landed_at") == [
        ("landed", "run-1"),
        ("skipped", "run-2"),
    ]


def test_latest_view_is_each_leas_newest_file(where: Paths, drop: Drop, wh: Wh) -> None:
    monday = f"{HEADER}\n{ROW_1}\n{ROW_2}\n"
    drop("100001", "monday.csv", monday)
    drop("100002", "other.csv", f"{HEADER}\nT9,,Eva,,Bos,,,,RSE,TCH,,2024-08-15,,,\n")
    wh.land("run-1")
    drop("100001", "tuesday.csv", f"{HEADER}\n{ROW_2}\n")
    wh.land("run-2")
    latest = "SELECT lea_id, file_name, local_staff_id FROM raw_sis_staff_latest ORDER BY 1, 3"
    assert wh.query(latest) == [(100001, "tuesday.csv", "T2"), (100002, "other.csv", "T9")]
    assert wh.query("SELECT count(*) FROM raw_sis_staff")[0][0] == 4  # history is kept
    drop("100001", "wednesday.csv", monday)  # the SIS went back to Monday's content
    wh.land("run-3")
    assert wh.query(latest) == [
        (100001, "monday.csv", "T1"),
        (100001, "monday.csv", "T2"),
        (100002, "other.csv", "T9"),
    ]


UNREADABLE = {
    "utf16": ("x.csv", f"{HEADER}\n{ROW_1}\n".encode("utf-16"), 1, "wrong encoding"),
    "mixed_encodings": (
        "x.csv",
        f"{HEADER}\n".encode() + "T1,,Zoë".encode("cp1252") + b",,B,,,,LVE,TCH,,2024-08-15,,,\n"
        + "T2,,Zoë".encode() + b",,B,,,,LVE,TCH,,2024-08-15,,,\n",
        2,
        "mixes encodings: byte 0xeb here is not UTF-8, yet the file holds UTF-8 characters on line 3",
    ),
    "undefined_byte": ("x.csv", f"{HEADER}\n".encode() + b"T1,,A\x81,,B,,,,LVE,TCH,,2024,,,\n", 2, "0x81"),
    "unterminated_quote": ("x.csv", f'{HEADER}\n{ROW_1}\nT2,,"Bo,,B,,,,,,,,,,\n{ROW_2}\n', 3, "unterminated"),
    "too_many_fields": ("x.csv", f"{HEADER}\n{ROW_1}\n{ROW_2},x\n", 3, "16 fields where the header has 15"),
    "too_long": ("x.csv", f"{HEADER}\n{ROW_1}\nT2,,{'A' * 1_100_000},,,,,,,,,,,,\n", 3, "record too long"),
    "empty": ("x.csv", b"", 1, "no header: the file is empty"),
    "blank_first_line": ("x.csv", f"\n{HEADER}\n{ROW_1}\n", 1, "no header: line 1 is empty"),
    "data_instead_of_header": ("x.csv", f"{ROW_1}\n{ROW_2}\n", 1, "none of the fields on line 1"),
    "nul_after_4k": (
        "x.csv", f"{HEADER}\n" + f"{ROW_1}\n" * 60 + "T\x0099,,A,,B,,,,LVE,TCH,,2024,,,\n", 62, "a NUL byte",
    ),
    "cr_only_line_ends": ("x.csv", f"{HEADER}\r{ROW_1}\r", 1, "CR-only line ends"),
    "lone_cr": ("x.csv", f"{HEADER}\n{ROW_1}\nT2,,A\rB,,B,,,,LVE,TCH,,2024-08-15,,,\n", 3, "carriage return"),
    "header_quote": ("x.csv", f'"{HEADER}\n' + f"{ROW_1}\n" * 3000, 1, "broken header"),
    "text_after_closing_quote": (
        "x.csv",
        f'{HEADER}\nT1,,"A\nB",,B,,,,LVE,TCH,,2024-08-15,,,\n\n"T2"x,,A,,B,,,,LVE,TCH,,2024-08-15,,,\n',
        5,
        "unreadable CSV: Value with unterminated quote found",
    ),
    "missing_required": (
        "x.csv",
        "Staff ID,First Name,Last Name,Begin Date\nT1,A,B,2024-01-01\n",
        1,
        "missing required columns: school_code (accepted: school_code, School, Building Code",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_file_is_kept_in_failed_with_its_message(
    where: Paths, drop: Drop, case: str, wh: Wh
) -> None:
    name, content, line, problem = UNREADABLE[case]
    original = content if isinstance(content, bytes) else content.encode()
    drop("100001", name, original)
    result = wh.land()
    (outcome,) = result.files
    assert outcome.status == "failed"
    assert outcome.message.startswith(f"SIS export 100001/{name}, line {line}: ")
    assert problem in outcome.message
    kept = where.failed / "100001" / name
    assert kept.read_bytes() == original
    assert outcome.message in (where.failed / "100001" / f"{name}.error.txt").read_text(encoding="utf-8")
    assert not (where.inbox / "100001" / name).exists()
    assert wh.staff() == []
    assert wh.query("SELECT status, message FROM raw_sis_files") == [("failed", outcome.message)]


def test_paired_quotes_inside_a_field_land_as_offered(where: Paths, drop: Drop, wh: Wh) -> None:
    drop("100001", "stray.csv", f'{HEADER}\nT2,,Bo"b"x,,B,,,,LVE,TCH,,2024-08-15,,,\n')
    wh.land()
    assert wh.staff("first_name") == [('Bo"b"x',)]


def test_a_file_failing_inside_its_transaction_lands_nothing(
    where: Paths, drop: Drop, monkeypatch: pytest.MonkeyPatch, wh: Wh
) -> None:
    """DuckDB reads a different number of records than the scan found: roll back, keep the file."""
    real_scan = sis.scan_records

    def one_line_too_many(path: Path, delimiter: str) -> sis.Layout:
        layout = real_scan(path, delimiter)
        return sis.Layout(layout.header_fields, np.append(layout.lines, 99), np.append(layout.fields, 15))

    monkeypatch.setattr(sis, "scan_records", one_line_too_many)
    drop("100001", "x.csv", f"{HEADER}\n{ROW_1}\n{ROW_2}\n")
    (outcome,) = wh.land().files
    assert outcome.status == "failed" and "DuckDB read 2 records where the file has 3" in outcome.message
    assert wh.staff() == []
    assert (where.failed / "100001" / "x.csv").exists()


def test_unknown_lea_folder_fails_the_file(where: Paths, drop: Drop, wh: Wh) -> None:
    drop("999", "x.csv", f"{HEADER}\n{ROW_1}\n")
    (outcome,) = wh.land().files
    assert outcome.status == "failed" and "'999' is not a configured LEA id" in outcome.message
    assert (where.failed / "999" / "x.csv").exists()


def test_a_failed_file_does_not_stop_the_others(where: Paths, drop: Drop, wh: Wh) -> None:
    drop("100001", "a-bad.csv", f"{ROW_1}\n")
    drop("100001", "b-good.csv", f"{HEADER}\n{ROW_1}\n")
    drop("100002", "c-good.csv", f"{HEADER}\n{ROW_2}\n")
    result = wh.land()
    assert sorted((f.file_name, f.status) for f in result.files) == [
        ("a-bad.csv", "failed"),
        ("b-good.csv", "landed"),
        ("c-good.csv", "landed"),
    ]
    assert (result.count("landed"), result.count("failed"), result.rows) == (2, 1, 2)


def test_line_numbers_match_the_csv_module_across_chunk_borders(
    where: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wh: Wh
) -> None:
    """Generated files (BOM, cp1252, quoted newlines, trailing blanks) scanned in 4 KiB chunks."""
    monkeypatch.setattr(sis_scan, "CHUNK", 4096)
    generated = generate(where.data_dir, 400, seed=3, today=date(2026, 1, 15))
    expected = []
    for index, lea in enumerate(lea_ids()):
        variant = SIS_VARIANTS[index % len(SIS_VARIANTS)]
        (path,) = (generated.inbox_dir / lea).glob("*.csv")
        text = path.read_bytes().decode(variant.encoding).lstrip("\ufeff")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=variant.delimiter)
        header, start = next(reader), reader.line_num + 1
        positions = map_headers(header).canonical
        for record in reader:
            if record:
                expected.append((int(lea), start, record[positions["local_staff_id"]] or None))
            start = reader.line_num + 1
    result = wh.land()
    assert result.count("landed") == 3 and result.rows == generated.sis_rows
    assert wh.staff("lea_id, line_number, local_staff_id") == sorted(expected)


def test_restricting_to_one_lea_leaves_the_others_waiting(where: Paths, drop: Drop, wh: Wh) -> None:
    drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n")
    other = drop("100002", "b.csv", f"{HEADER}\n{ROW_2}\n")
    result = wh.land(lea_id="100001")
    assert [f.lea_id for f in result.files] == ["100001"]
    assert other.exists()


def test_asset_lands_the_configured_lea_and_fails_naming_the_bad_file(where: Paths, drop: Drop) -> None:
    drop("100001", "waiting.csv", f"{HEADER}\n{ROW_1}\n")
    drop("100002", "a-good.csv", f"{HEADER}\n{ROW_1}\n{ROW_2}\n")
    drop("100002", "b-bad.csv", f"{HEADER}\n{ROW_1},x\n")
    result = materialize(
        [raw_sis_staff],
        resources={"warehouse": WarehouseResource()},
        run_config={"ops": {"raw_sis_staff": {"config": {"lea_id": "100002"}}}},  # as the sensor asks
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data
    assert (
        "SIS export 100002/b-bad.csv, line 2: broken quoting or delimiters"
        in failure.user_failure_data.description
    )
    meta = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    counts = (meta["rows_landed"], meta["files_landed"], meta["files_failed"], meta["files_skipped"])
    assert counts == (2, 1, 1, 0)
    assert "a-good.csv" in meta["files"] and "O'Brien" in meta["preview"]
    assert (where.inbox / "100001" / "waiting.csv").exists()  # another LEA: not this run's business
    with connect() as check:
        assert check.execute("SELECT count(*) FROM raw_sis_staff").fetchone()[0] == 2


def test_asset_fails_the_files_of_an_unconfigured_lea_folder(where: Paths, drop: Drop) -> None:
    """The sensor asks for every folder with new files: one not configured (yet) is failed and
    recorded, not left in the inbox unseen."""
    drop("42", "x.csv", f"{HEADER}\n{ROW_1}\n")
    with pytest.raises(Failure, match=r"SIS export 42/x\.csv, file: folder '42' is not a configured LEA id"):
        raw_sis_staff(
            context=build_asset_context(), config=SisInboxConfig(lea_id="42"), warehouse=WarehouseResource()
        )
    assert (where.failed / "42" / "x.csv").exists() and not (where.inbox / "42" / "x.csv").exists()
    with connect() as check:
        assert check.execute("SELECT file_name, status FROM raw_sis_files").fetchall() == [
            ("x.csv", "failed")
        ]
    with pytest.raises(Failure, match="not an inbox folder name"):
        raw_sis_staff(
            context=build_asset_context(), config=SisInboxConfig(lea_id=".."), warehouse=WarehouseResource()
        )


def test_a_run_lands_only_the_files_the_sensor_saw_settled(where: Paths, drop: Drop, wh: Wh) -> None:
    settled = drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n")
    seen = [sis.file_version(settled)]
    drop("100001", "b.csv", f"{HEADER}\n{ROW_1}\n{ROW_2}\n", age=0)  # still being copied in
    result = sis.land_inbox(wh.con, where, "run", known_leas=LEAS, lea_id="100001", files=seen)
    assert [(f.file_name, f.status) for f in result.files] == [("a.csv", "landed")]
    assert result.waiting == ["100001/b.csv"] and (where.inbox / "100001" / "b.csv").exists()


def test_a_file_named_like_a_glob_lands_its_own_rows(where: Paths, drop: Drop, wh: Wh) -> None:
    drop("100001", "staff1.csv", f"{HEADER}\n{ROW_1}\n")
    drop("100001", "staff[12].csv", f"{HEADER}\n{ROW_2}\n", age=30)
    result = wh.land()
    assert sorted((f.file_name, f.status, f.rows) for f in result.files) == [
        ("staff1.csv", "landed", 1),
        ("staff[12].csv", "landed", 1),
    ]
    assert sorted(wh.query("SELECT file_name, local_staff_id FROM raw_sis_staff")) == [
        ("staff1.csv", "T1"),
        ("staff[12].csv", "T2"),
    ]


def test_mixed_crlf_and_lf_line_ends_land_with_values_unchanged(where: Paths, drop: Drop, wh: Wh) -> None:
    text = f'{HEADER}\r\n{ROW_1}\nT2,,Ann,,"A\r\nB",,,,LVE,TCH,,2024-08-15,,,\r\n\r\n'
    drop("100001", "mixed.csv", text)
    (outcome,) = wh.land().files
    assert (outcome.status, outcome.rows) == ("landed", 2)
    assert wh.staff("line_number, local_staff_id, last_name") == [
        (2, "T1", "van der Berg-Özdemir"),
        (3, "T2", "A\r\nB"),
    ]
    assert (where.archive / "100001" / "mixed.csv").read_bytes() == text.encode()


def test_a_file_that_cannot_be_read_for_another_reason_fails_alone(
    where: Paths, drop: Drop, monkeypatch: pytest.MonkeyPatch, wh: Wh
) -> None:
    """Whatever reading one file raises is that file's failure, not the landing's."""
    real = sis.read_header

    def broken(path: Path) -> tuple[list[str], str]:
        if "bad" in str(path):
            raise MemoryError("no room")
        return real(path)

    monkeypatch.setattr(sis, "read_header", broken)
    drop("100001", "a-bad.csv", f"{HEADER}\n{ROW_1}\n")
    drop("100002", "b-good.csv", f"{HEADER}\n{ROW_2}\n")
    result = wh.land()
    assert sorted((f.file_name, f.status) for f in result.files) == [
        ("a-bad.csv", "failed"),
        ("b-good.csv", "landed"),
    ]
    assert "could not be read: MemoryError: no room" in result.failures[0].message


@pytest.mark.parametrize("page", ["docs/sis-exports.md", "README.md"])
def test_docs_list_exactly_the_columns_and_aliases_of_sis_columns(page: str) -> None:
    doc = (Path(__file__).resolve().parent.parent / page).read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (
                cells[1] == "yes",
                [a.strip().strip("`") for a in cells[2].split(",")],
            )
    assert rows == {name: (name in REQUIRED, list(ALIASES[name])) for name in ALIASES}
    meanings: dict[str, set[str]] = {}
    for name, spellings in ALIASES.items():
        for spelling in (name, *spellings):
            meanings.setdefault(normalise(spelling), set()).add(name)
    assert all(len(names) == 1 for names in meanings.values())  # no spelling means two columns
