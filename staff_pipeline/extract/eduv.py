"""Edu-V Employees extract: one request per configured school, landed exactly as received.

Edu-V has no paging and no delta query, so every night each school is pulled in full. The body is
streamed to ``landing/eduv/<run>/`` (kept: the original is never lost) and DuckDB reads it from
there with ``read_json_objects(format='array')``: one raw row per array element, the element as
received, with its request's lineage. A school whose pull failed keeps its earlier snapshot in
``raw_eduv_employees_latest`` (latest *ok* request per school), so a failure never reads as
"everyone left"; the failed request itself is recorded in ``raw_eduv_requests`` with the reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from staff_pipeline.clients.eduv import Download, EduVClient
from staff_pipeline.config import ConfigError
from staff_pipeline.http import ApiError
from staff_pipeline.schemas.config import SCHOOL_PERIOD_RULE, is_school_period_id
from staff_pipeline.vocab import ORG_ID_TYPES

DDL = """
CREATE TABLE IF NOT EXISTS raw_eduv_requests (
    request_id VARCHAR, run_id VARCHAR, school_key VARCHAR, params JSON, http_status INTEGER,
    ok BOOLEAN, status_message VARCHAR, employee_count INTEGER, bytes BIGINT, sha256 VARCHAR,
    response_path VARCHAR, extracted_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS raw_eduv_employees (
    request_id VARCHAR, run_id VARCHAR, school_key VARCHAR, element_no INTEGER, employee JSON,
    extracted_at TIMESTAMPTZ
);
CREATE OR REPLACE VIEW raw_eduv_employees_latest AS
SELECT e.*
FROM raw_eduv_employees AS e
JOIN (
    SELECT request_id FROM raw_eduv_requests WHERE ok
    QUALIFY row_number() OVER (PARTITION BY school_key ORDER BY extracted_at DESC, request_id DESC) = 1
) AS latest USING (request_id);
"""

_LOAD = """
INSERT INTO raw_eduv_employees
SELECT ?, ?, ?, ordinality::INTEGER, json, ?
FROM read_json_objects(?, format = 'array') WITH ORDINALITY
"""


class EduVConfigError(ConfigError):
    """An organisations line that would break an Edu-V request rule."""


@dataclass(frozen=True)
class SchoolQuery:
    """One Employees request: the school it is for, where it is configured, its query parameters."""

    school_key: str
    lea_id: int
    line: int  # line in organisations.csv (the header is line 1)
    params: dict[str, str]


@dataclass(frozen=True)
class Fetched:
    """What one request brought back: a landed answer, or why there was none."""

    query: SchoolQuery
    request_id: str
    extracted_at: datetime
    download: Download | None
    error: str | None = None


@dataclass(frozen=True)
class Landed:
    """The outcome per school, as recorded in ``raw_eduv_requests``."""

    school_key: str
    lea_id: int
    request_id: str
    http_status: int | None
    ok: bool
    status_message: str | None
    employee_count: int | None
    bytes: int
    response_path: str | None

    @property
    def problem(self) -> str | None:
        """A one-line reason naming the school, for failed requests."""
        if self.ok:
            return None
        if self.http_status is None:  # no answer, or no token: the message says which
            return f"{self.school_key}: {self.status_message}"
        return f"{self.school_key}: HTTP {self.http_status}: {self.status_message}"


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool | None:
    if _text(value) is None:
        return None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return bool(value)


def request_params(row: Mapping[str, Any]) -> dict[str, str] | None:
    """The Employees query for one organisations row, or None when it has no Edu-V ids.

    Enforces the reference's rules before anything is sent: ``orgMasterId`` xor ``orgId`` +
    ``orgIdType`` (a known type); ``filterByOrgId`` only with ``orgId`` and only where the source
    supports it (it is not sent with ``orgMasterId``, where it could only be absent or false);
    ``schoolPeriodId`` a school year of consecutive years (``2024-2025``) or a UUID. Raises
    ValueError naming the field.
    """
    master = _text(row.get("eduv_org_master_id"))
    org_id, org_type = _text(row.get("eduv_org_id")), _text(row.get("eduv_org_id_type"))
    flag, period = row.get("eduv_filter_by_org_id"), _text(row.get("eduv_school_period_id"))
    filter_by = _flag(flag)
    if _text(flag) is not None and filter_by is None:
        raise ValueError(f"eduv_filter_by_org_id must be true, false or empty, got {flag!r}")
    if master is None and org_id is None and org_type is None:
        return None
    if master is not None and (org_id is not None or org_type is not None):
        raise ValueError("eduv_org_master_id and eduv_org_id/eduv_org_id_type are exclusive: give one")
    params: dict[str, str] = {}
    if master is not None:
        if filter_by:
            raise ValueError("eduv_filter_by_org_id must be empty or false with eduv_org_master_id")
        params["orgMasterId"] = master
    else:
        if org_id is None or org_type is None:
            raise ValueError("eduv_org_id and eduv_org_id_type must be given together")
        if org_type not in ORG_ID_TYPES:
            raise ValueError(f"eduv_org_id_type {org_type!r} is not one of {', '.join(ORG_ID_TYPES)}")
        params.update(orgId=org_id, orgIdType=org_type)
        if filter_by is not None:
            if not _flag(row.get("eduv_supports_filter")):
                raise ValueError("eduv_filter_by_org_id is set but the source does not support filtering")
            params["filterByOrgId"] = "true" if filter_by else "false"
    if period is not None:
        if not is_school_period_id(period):
            raise ValueError(f"eduv_school_period_id {period!r} must be {SCHOOL_PERIOD_RULE}")
        params["schoolPeriodId"] = period
    return params


def school_queries(organisations: pd.DataFrame, source: str = "organisations.csv") -> list[SchoolQuery]:
    """One query per configured school with Edu-V ids; a bad line raises naming file, line, school."""
    queries, problems = [], []
    for index, row in zip(organisations.index, organisations.to_dict("records"), strict=True):
        line = int(index) + 2
        try:
            params = request_params(row)
        except ValueError as exc:
            problems.append(f"{source} line {line} (school {row.get('school_key')}): {exc}")
            continue
        if params is not None:
            queries.append(SchoolQuery(str(row["school_key"]), int(row["lea_id"]), line, params))
    if problems:
        raise EduVConfigError("\n".join(problems))
    return queries


def fetch_all(
    client: EduVClient,
    queries: Sequence[SchoolQuery],
    *,
    run_id: str,
    landing_dir: Path,
    concurrency: int = 4,
) -> list[Fetched]:
    """Download every school's answer into ``landing_dir/eduv/<run_id>/`` (a few at a time).

    Whatever goes wrong for one school (no answer, a token that cannot be used, a disk error
    writing its landing file, a malformed answer) becomes that school's failed request, so the
    other schools still land and the failed one keeps its previous snapshot.
    """
    folder = landing_dir / "eduv" / run_id

    def fetch(query: SchoolQuery) -> Fetched:
        request_id = uuid.uuid4().hex
        dest = folder / f"{query.school_key}-{request_id}.json"
        describe = f"Edu-V employees of school {query.school_key}"
        try:
            download = client.download_employees(query.params, dest, describe=describe)
        except ApiError as exc:  # already names the request, secrets removed
            return Fetched(query, request_id, datetime.now(UTC), None, str(exc))
        except Exception as exc:  # one school's failure must not stop the others
            error = client.redact(f"{describe}: {type(exc).__name__}: {exc}")
            return Fetched(query, request_id, datetime.now(UTC), None, error)
        return Fetched(query, request_id, datetime.now(UTC), download)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="eduv") as pool:
        return list(pool.map(fetch, queries))


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


def land(con: duckdb.DuckDBPyConnection, fetched: Sequence[Fetched], run_id: str) -> list[Landed]:
    """Append each answer to the raw tables; each school in its own transaction."""
    ensure_tables(con)
    return [_land_one(con, item, run_id) for item in fetched]


def _land_one(con: duckdb.DuckDBPyConnection, item: Fetched, run_id: str) -> Landed:
    download, key = item.download, item.query.school_key
    message, count = item.error, None
    if download is not None and download.status != 200:
        message = download.status_message
    elif download is not None and download.bytes == 0:
        message = "HTTP 200 with an empty body; expected a JSON array of employees"
    con.execute("BEGIN TRANSACTION")
    try:
        if download is not None and message is None:
            try:
                params = [item.request_id, run_id, key, item.extracted_at, str(download.path)]
                count = int(con.execute(_LOAD, params).fetchone()[0])
            except duckdb.Error as exc:  # not a JSON array: the request failed, its body stays on disk
                con.execute("ROLLBACK")
                con.execute("BEGIN TRANSACTION")
                reason = str(exc).splitlines()[0].replace("Invalid Input Error: ", "")
                message = (
                    f"HTTP 200 but the body is not a JSON array of employees "
                    f"({download.content_type or 'no content type'}, {download.bytes} bytes): {reason}"
                )
        landed = Landed(
            key,
            item.query.lea_id,
            item.request_id,
            download.status if download else None,
            count is not None,
            message,
            count,
            download.bytes if download else 0,
            str(download.path) if download else None,
        )
        con.execute(
            "INSERT INTO raw_eduv_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                landed.request_id,
                run_id,
                key,
                json.dumps(item.query.params),
                landed.http_status,
                landed.ok,
                message,
                count,
                landed.bytes,
                download.sha256 if download else None,
                landed.response_path,
                item.extracted_at,
            ],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return landed


def results_frame(landed: Sequence[Landed]) -> pd.DataFrame:
    """Per-LEA and school outcome, for the run's metadata."""
    columns = ["lea_id", "school_key", "http_status", "ok", "employee_count", "bytes", "status_message"]
    frame = pd.DataFrame([{c: getattr(r, c) for c in columns} for r in landed], columns=columns)
    frame = frame.astype({"http_status": "Int64", "employee_count": "Int64"}).fillna({"status_message": ""})
    return frame.sort_values(["lea_id", "school_key"], ignore_index=True)


def preview_sql(landed: Sequence[Landed]) -> str:
    """A few landed rows of this run (names and status only) for the metadata preview."""
    ids = ", ".join(f"'{r.request_id}'" for r in landed if r.ok) or "NULL"
    return f"""
        SELECT school_key, element_no, employee->>'givenName' AS given_name,
               employee->>'familyNamePrefix' AS family_name_prefix,
               employee->>'familyName' AS family_name, employee->>'status' AS status
        FROM raw_eduv_employees WHERE request_id IN ({ids}) ORDER BY school_key, element_no
    """
