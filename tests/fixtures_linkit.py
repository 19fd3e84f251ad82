"""Fixtures for the LinkIt! tests: a running stand-in with two districts, keys in the environment,
and a writer for the conformed tables (the contract's columns) that the mart reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from staff_pipeline import warehouse
from staff_pipeline.clients.linkit import LinkItClient
from staff_pipeline.loads.holds import Limit
from staff_pipeline.loads.linkit import LoadReport, load_district
from staff_pipeline.loads.linkit_mart import build_mart
from staff_pipeline.standins.linkit import LinkItStandIn

# Distinctive values so a leak grep cannot miss them (and cannot match anything else).
LINKIT_KEYS = {
    "lakeview": ("AKlakeview-7c1e55f0a9", "PKlakeview-secret-b81d2e"),
    "riverside": ("AKriverside-0d93ab71c4", "PKriverside-secret-44f0aa"),
}
LINKIT_SCHOOLS = {"lakeview": [501, 502], "riverside": [601, 602, 603]}
LEA_OF = {"lakeview": 100001, "riverside": 100002}


@pytest.fixture
def linkit_standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[LinkItStandIn]:
    """A stand-in with lakeview and riverside provisioned; the per-district keys are in the environment."""
    standin = LinkItStandIn()
    for district, (access, private) in LINKIT_KEYS.items():
        standin.add_district(district, access, private, LINKIT_SCHOOLS[district])
        monkeypatch.setenv(f"LINKIT_ACCESS_KEY_{district.upper()}", access)
        monkeypatch.setenv(f"LINKIT_PRIVATE_KEY_{district.upper()}", private)
    monkeypatch.setenv("STAFF_LINKIT_URL", standin.url)
    with standin:
        yield standin


@pytest.fixture
def linkit_client(linkit_standin: LinkItStandIn) -> Iterator[LinkItClient]:
    client = LinkItClient(linkit_standin.url, *LINKIT_KEYS["lakeview"])
    yield client
    client.close()


def staff_row(person_id: str, local_code: str | None, **values: Any) -> dict[str, Any]:
    row = {
        "person_id": person_id,
        "wiseid": f"W{person_id}",
        "local_code": local_code,
        "first_name": "Ann",
        "middle_name": None,
        "family_name_prefix": None,
        "last_name": f"Last{person_id}",
        "preferred_first_name": None,
        "primary_email": f"user.{person_id}@example.org",
        "status": "active",
        "leaving_reason": None,
        "matched_by": "local_code",
        "sources": "sis",
    }
    return row | values


def assignment(person_id: str, district: str = "lakeview", school: int | None = 501, **values: Any) -> dict:
    row = {
        "person_id": person_id,
        "lea_id": LEA_OF.get(district, 100003),
        "school_id": 1000010001,
        "school_key": "lakeview-elem",
        "choice_school": False,
        "linkit_district": district,
        "linkit_school_id": school,
        "source": "sis",
        "source_role": "TCH",
        "staff_classification": "Elementary Teacher",
        "contact_title": "Teacher",
        "linkit_role": "TEACHER",
        "position_title": "Teacher",
        "begin_date": pd.Timestamp("2024-08-01").date(),
        "end_date": None,
        "fte": 1.0,
        "school_period": "2025-2026",
        "to_be_deleted": False,
        "active": True,
    }
    return row | values


def contact(
    person_id: str, value: str, kind: str = "email", lea_id: int = 100001, primary: bool = True
) -> dict:
    return {
        "person_id": person_id,
        "lea_id": lea_id,
        "school_id": None,
        "kind": kind,
        "value": value,
        "source": "sis",
        "is_primary": primary,
    }


_DDL = {
    "staff": "person_id VARCHAR, wiseid VARCHAR, local_code VARCHAR, first_name VARCHAR, "
    "middle_name VARCHAR, family_name_prefix VARCHAR, last_name VARCHAR, preferred_first_name VARCHAR, "
    "primary_email VARCHAR, "
    "status VARCHAR, leaving_reason VARCHAR, matched_by VARCHAR, sources VARCHAR",
    "staff_contacts": "person_id VARCHAR, lea_id BIGINT, school_id BIGINT, kind VARCHAR, value VARCHAR, "
    "source VARCHAR, is_primary BOOLEAN",
    "staff_assignments": "person_id VARCHAR, lea_id BIGINT, school_id BIGINT, school_key VARCHAR, "
    "local_code VARCHAR, choice_school BOOLEAN, linkit_district VARCHAR, linkit_school_id BIGINT, "
    "source VARCHAR, "
    "source_role VARCHAR, staff_classification VARCHAR, contact_title VARCHAR, linkit_role VARCHAR, "
    "position_title VARCHAR, begin_date DATE, end_date DATE, fte DOUBLE, school_period VARCHAR, "
    "to_be_deleted BOOLEAN, "
    "active BOOLEAN",
}


def write_conformed(staff: list[dict], assignments: list[dict], contacts: list[dict] | None = None) -> None:
    """Replace the three conformed tables with these rows (columns as in ARCHITECTURE.md). An
    assignment without a ``local_code`` takes its person's ``staff.local_code``."""
    codes = {s["person_id"]: s["local_code"] for s in staff}
    assignments = [{"local_code": codes.get(a["person_id"])} | a for a in assignments]
    frames = {"staff": staff, "staff_assignments": assignments, "staff_contacts": contacts or []}
    with warehouse.connect() as con:
        for table, rows in frames.items():
            con.execute(f"CREATE OR REPLACE TABLE {table} ({_DDL[table]})")
            if rows:
                con.register("rows_in", pd.DataFrame(rows))
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM rows_in")
                con.unregister("rows_in")


def mart_and_load(
    standin: LinkItStandIn,
    district: str = "lakeview",
    *,
    rule: str = "email_local_part",
    share: float = 0.5,
    response_format: str = "json",
    **options: Any,
) -> LoadReport:
    """Rebuild the district's mart and run its load against the stand-in (no Dagster)."""
    with warehouse.connect() as con:
        build_mart(con, district, rule, "test-run")
    client = LinkItClient(standin.url, *LINKIT_KEYS[district], response_format=response_format)
    try:
        limits = {"deactivate": Limit(share), **options.pop("limits", {})}
        return load_district(district, client, limits=limits, run_id="test-run", **options)
    finally:
        client.close()


def table(sql: str, *params: Any) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute(sql, list(params)).fetchall()
