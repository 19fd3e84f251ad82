"""Raw-layer rows for the gate, identity and conformed tests, written straight into DuckDB.

The tables follow ARCHITECTURE.md's raw contract (the extract stage owns the real ones); employee
elements are JSON text in the Edu-V Employee shape. Schools are the checked-in ``data/organisations.csv``:
LEA 100001 (lakeview-elem PO by master id, lakeview-high VO by OIE_CODE 12AB), LEA 100002
(riverside-elem PO by V_ID 04XY00, riverside-middle VO, riverside-choice), LEA 100003.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

LAKEVIEW_ELEM = {"organisationMasterIdentifier": "6f1c2a7e-3b1d-4c55-9a0e-0b9f1e2d3c41"}
LAKEVIEW_HIGH = {"organisationIds": [{"organisationId": "12AB", "organisationIdType": "OIE_CODE"}]}
RIVERSIDE_ELEM = {"organisationIds": [{"organisationId": "04XY00", "organisationIdType": "V_ID"}]}
UNKNOWN_ORG = {"organisationIds": [{"organisationId": "99ZZ", "organisationIdType": "OIE_CODE"}]}

SIS_COLUMNS = (
    "local_staff_id", "state_staff_id", "first_name", "middle_name", "last_name", "email", "alt_email",
    "phone", "school_code", "position_code", "position_title", "begin_date", "end_date", "fte", "username",
)

DDL = f"""
CREATE TABLE IF NOT EXISTS raw_eduv_requests(request_id VARCHAR, run_id VARCHAR, school_key VARCHAR,
    params JSON, http_status INT, ok BOOL, status_message VARCHAR, employee_count INT, bytes BIGINT,
    sha256 VARCHAR, response_path VARCHAR, extracted_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS raw_eduv_employees(request_id VARCHAR, run_id VARCHAR, school_key VARCHAR,
    element_no INT, employee JSON, extracted_at TIMESTAMPTZ);
CREATE OR REPLACE VIEW raw_eduv_employees_latest AS
    SELECT e.* FROM raw_eduv_employees e JOIN (
        SELECT school_key, arg_max(request_id, extracted_at) AS request_id FROM raw_eduv_requests WHERE ok
        GROUP BY school_key) l USING (school_key, request_id);
CREATE TABLE IF NOT EXISTS raw_sis_files(file_sha256 VARCHAR, lea_id BIGINT, file_name VARCHAR,
    archived_path VARCHAR, bytes BIGINT, rows INT, encoding VARCHAR, delimiter VARCHAR, status VARCHAR,
    message VARCHAR, run_id VARCHAR, landed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS raw_sis_staff(run_id VARCHAR, lea_id BIGINT, file_name VARCHAR,
    file_sha256 VARCHAR, line_number INT, {", ".join(f"{c} VARCHAR" for c in SIS_COLUMNS)}, extra JSON,
    landed_at TIMESTAMPTZ);
CREATE OR REPLACE VIEW raw_sis_staff_latest AS
    SELECT s.* FROM raw_sis_staff s JOIN (
        SELECT lea_id, arg_max(file_sha256, landed_at) AS file_sha256 FROM raw_sis_files
        WHERE status = 'landed' GROUP BY lea_id) l USING (lea_id, file_sha256);
"""

_clock = itertools.count()


def _stamp() -> datetime:
    """Strictly increasing timestamps, so "latest" is well defined within a test."""
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_clock))


def role(org: dict, name: str = "leraar", begin: str = "2020-08-01", end: str | None = None) -> dict:
    out: dict[str, Any] = {"organisationRole": name, "beginDate": begin, "organisation": org}
    if end is not None:
        out["endDate"] = end
    return out


def employee(n: int, roles: list[dict] | None = None, asi: str | None = None, **fields: Any) -> dict:
    """A full Edu-V Employee; ``asi`` adds the LAS userId that SIS knows as ``local_staff_id``."""
    ids = [{"userId": f"eck-{n}", "userIdType": "eckId"}, {"userId": f"{900000000 + n}", "userIdType": "NEPPI"}]
    if asi:
        ids.append({"userId": asi, "userIdType": "ASI"})
    out = {
        "givenName": f"Given{n}",
        "familyName": f"Family{n}",
        "email": f"e{n}@school.example.nl",
        "phone": f"+31 20 555 {n:04d}",
        "status": "active",
        "dateCreated": "2023-09-01T08:00:00Z",
        "dateLastModified": "2025-09-01T08:00:00Z",
        "userIds": ids,
        "organisationRoles": roles if roles is not None else [role(LAKEVIEW_ELEM)],
    }
    out.update(fields)
    return out


def sis_row(local: str, school: str = "LVE", **fields: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "local_staff_id": local, "state_staff_id": None, "first_name": f"First{local}", "middle_name": None,
        "last_name": f"Last{local}", "email": f"{local.lower()}@district.example.org", "alt_email": None,
        "phone": None, "school_code": school, "position_code": "TCH", "position_title": "Teacher",
        "begin_date": "2024-08-15", "end_date": None, "fte": "1.0", "username": None,
    }
    row.update(fields)
    return row


class Raw:
    """Writes raw rows the way the extract stage lands them."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.execute(DDL)
        self._ids = itertools.count(1)

    def eduv(self, school_key: str, employees: list[dict | str], ok: bool = True, status: int = 200) -> str:
        """One request for ``school_key``; elements may be dicts or raw JSON text."""
        request_id = f"req{next(self._ids)}"
        at = _stamp()
        self.con.execute(
            "INSERT INTO raw_eduv_requests VALUES (?, 'run', ?, '{}', ?, ?, NULL, ?, 0, NULL, NULL, ?)",
            [request_id, school_key, status, ok, len(employees) if ok else 0, at],
        )
        for n, element in enumerate(employees if ok else []):
            text = element if isinstance(element, str) else json.dumps(element)
            self.con.execute(
                "INSERT INTO raw_eduv_employees VALUES (?, 'run', ?, ?, ?, ?)", [request_id, school_key, n, text, at]
            )
        return request_id

    def sis(self, lea_id: int, rows: list[dict], file_name: str | None = None) -> str:
        file_name = file_name or f"staff_{lea_id}_{next(self._ids)}.csv"
        sha = f"sha-{file_name}"
        at = _stamp()
        self.con.execute(
            "INSERT INTO raw_sis_files VALUES (?, ?, ?, NULL, 0, ?, 'utf-8', ',', 'landed', NULL, 'run', ?)",
            [sha, lea_id, file_name, len(rows), at],
        )
        for line, row in enumerate(rows, start=2):
            self.con.execute(
                f"INSERT INTO raw_sis_staff VALUES ('run', ?, ?, ?, ?, {', '.join('?' * len(SIS_COLUMNS))}, NULL, ?)",
                [lea_id, file_name, sha, line, *(row.get(c) for c in SIS_COLUMNS), at],
            )
        return file_name
