"""Raw-layer rows for the gate, identity and conformed tests, written straight into DuckDB.

The tables are the extract stage's own (``ensure_tables``), filled without HTTP or files; employee
elements are JSON text in the Edu-V Employee shape. Schools are the checked-in ``data/organisations.csv``:
LEA 100001 (lakeview-elem PO by master id, lakeview-high VO by OIE_CODE 12AB), LEA 100002
(riverside-elem PO by V_ID 04XY00, riverside-middle VO, riverside-choice), LEA 100003.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from staff_pipeline.config import SisSettings, load_settings
from staff_pipeline.extract import eduv, sis
from staff_pipeline.extract.sis_columns import CANONICAL
from staff_pipeline.transform.steps import conform, stage

LAKEVIEW_ELEM = {"organisationMasterIdentifier": "6f1c2a7e-3b1d-4c55-9a0e-0b9f1e2d3c41"}
LAKEVIEW_HIGH = {"organisationIds": [{"organisationId": "12AB", "organisationIdType": "OIE_CODE"}]}
RIVERSIDE_ELEM = {"organisationIds": [{"organisationId": "04XY00", "organisationIdType": "V_ID"}]}
UNKNOWN_ORG = {"organisationIds": [{"organisationId": "99ZZ", "organisationIdType": "OIE_CODE"}]}


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
    ids = [
        {"userId": f"eck-{n}", "userIdType": "eckId"},
        {"userId": f"{900000000 + n}", "userIdType": "NEPPI"},
    ]
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
        "local_staff_id": local,
        "state_staff_id": None,
        "first_name": f"First{local}",
        "middle_name": None,
        "last_name": f"Last{local}",
        "email": f"{local.lower()}@district.example.org",
        "alt_email": None,
        "phone": None,
        "school_code": school,
        "position_code": "TCH",
        "position_title": "Teacher",
        "begin_date": "2024-08-15",
        "end_date": None,
        "fte": "1.0",
        "username": None,
    }
    row.update(fields)
    return row


class Raw:
    """Writes raw rows the way the extract stage lands them."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        eduv.ensure_tables(con)
        sis.ensure_tables(con)
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
                "INSERT INTO raw_eduv_employees VALUES (?, 'run', ?, ?, ?, ?)",
                [request_id, school_key, n, text, at],
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
                f"INSERT INTO raw_sis_staff VALUES ('run', ?, ?, ?, ?, {', '.join('?' * len(CANONICAL))}, "
                "NULL, ?)",
                [lea_id, file_name, sha, line, *(row.get(c) for c in CANONICAL), at],
            )
        return file_name


def run_both(
    con: duckdb.DuckDBPyConnection,
    run_id: str = "run",
    today: date = date(2026, 1, 15),
    sis_settings: SisSettings | None = None,
    **gate: float,
):
    """Stage and conform as the assets do; ``gate`` overrides ``[gate]`` thresholds, ``sis_settings``
    the ``[sis]`` section."""
    settings = load_settings()
    settings = dataclasses.replace(
        settings,
        gate=dataclasses.replace(settings.gate, **gate),
        sis=sis_settings or settings.sis,
    )
    staged = stage(con, run_id, settings)
    assert staged.swapped, staged.failures
    return conform(con, run_id, settings, today=today)
