"""Fixtures for the Ed-Fi tests: a running stand-in, and a small conformed model written to DuckDB.

The conformed tables are created here with the contract's columns (ARCHITECTURE.md), so the Ed-Fi
tests do not depend on the conformed stage being built.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pytest

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiClient, forget_tokens
from staff_pipeline.http import RetryPolicy
from staff_pipeline.loads.edfi import RESOURCES, LoadReport, load_resource
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, build_mart
from staff_pipeline.loads.holds import Limit
from staff_pipeline.standins.common import Knobs
from staff_pipeline.standins.edfi import EdFiStandIn
from staff_pipeline.vocab import STAFF_CLASSIFICATION_NAMESPACE

LEA_A, LEA_B = 100001, 100002
SCHOOL_A1, SCHOOL_A2 = 1000010001, 1000010002
SCHOOL_B1, SCHOOL_B_CHOICE = 1000020001, 1000020003

# The conformed stage's contract (docs/ARCHITECTURE.md).
CONFORMED_DDL = {
    "staff": """person_id VARCHAR, wiseid VARCHAR, local_code VARCHAR, first_name VARCHAR,
        middle_name VARCHAR,
        family_name_prefix VARCHAR, last_name VARCHAR, preferred_first_name VARCHAR, primary_email VARCHAR,
        status VARCHAR, leaving_reason VARCHAR, matched_by VARCHAR, sources VARCHAR""",
    "staff_contacts": """person_id VARCHAR, lea_id BIGINT, school_id BIGINT, kind VARCHAR, value VARCHAR,
        source VARCHAR, is_primary BOOLEAN""",
    "staff_assignments": """person_id VARCHAR, lea_id BIGINT, school_id BIGINT, school_key VARCHAR,
        local_code VARCHAR, choice_school BOOLEAN, linkit_district VARCHAR, linkit_school_id BIGINT,
        source VARCHAR, source_role VARCHAR, staff_classification VARCHAR, contact_title VARCHAR,
        linkit_role VARCHAR, position_title VARCHAR, begin_date DATE, end_date DATE, fte DOUBLE,
        school_period VARCHAR, to_be_deleted BOOLEAN, active BOOLEAN""",
}


@dataclass
class Conformed:
    """Rows for ``staff``, ``staff_contacts`` and ``staff_assignments``; :meth:`write` replaces the tables."""

    staff: list[dict] = field(default_factory=list)
    contacts: list[dict] = field(default_factory=list)
    assignments: list[dict] = field(default_factory=list)

    def person(
        self, person_id: str, wiseid: str | None, status: str = "active", leaving_reason: str | None = None
    ) -> Conformed:
        """A person; ``status`` 'leaving' needs a ``leaving_reason`` (tobedeleted | all_roles_ended)."""
        self.staff.append(
            {
                "person_id": person_id,
                "wiseid": wiseid,
                "local_code": None,
                "first_name": "Ann",
                "middle_name": None,
                "family_name_prefix": None,
                "last_name": person_id,
                "preferred_first_name": None,
                "primary_email": None,
                "status": status,
                "leaving_reason": leaving_reason,
                "matched_by": "test",
                "sources": "sis",
            }
        )
        return self

    def assign(
        self,
        person_id: str,
        lea: int,
        school: int,
        classification: str | None = "Elementary Teacher",
        begin: date | None = date(2025, 8, 15),
        *,
        title: str | None = "Teacher",
        contact_title: str = "Teacher",
        fte: float | None = 1.0,
        choice: bool = False,
        end: date | None = None,
        to_be_deleted: bool = False,
    ) -> Conformed:
        self.assignments.append(
            {
                "person_id": person_id,
                "lea_id": lea,
                "school_id": school,
                "school_key": f"school-{school}",
                "choice_school": choice,
                "linkit_district": None,
                "linkit_school_id": None,
                "source": "sis",
                "source_role": "TCH",
                "staff_classification": classification,
                "contact_title": contact_title,
                "linkit_role": "TEACHER",
                "position_title": title,
                "begin_date": begin,
                "end_date": end,
                "fte": fte,
                "school_period": None,
                "to_be_deleted": to_be_deleted,
                "active": not to_be_deleted,
            }
        )
        return self

    def email(
        self, person_id: str, lea: int, school: int | None, value: str, primary: bool = True
    ) -> Conformed:
        self.contacts.append(
            {
                "person_id": person_id,
                "lea_id": lea,
                "school_id": school,
                "kind": "email",
                "value": value,
                "source": "sis",
                "is_primary": primary,
            }
        )
        return self

    def write(self) -> None:
        with warehouse.connect() as con:
            for table, rows in (
                ("staff", self.staff),
                ("staff_contacts", self.contacts),
                ("staff_assignments", self.assignments),
            ):
                con.execute(f"CREATE OR REPLACE TABLE {table} ({CONFORMED_DDL[table]})")
                if rows:
                    con.register("_rows", pd.DataFrame(rows))
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
                    con.unregister("_rows")


@pytest.fixture
def edfi_knobs() -> Knobs:
    return Knobs()


@pytest.fixture
def edfi_standin(edfi_knobs: Knobs) -> Iterator[EdFiStandIn]:
    """A stand-in that knows the checked-in organisations and one key per LEA plus a state key.

    The process-wide token cache is emptied first: a new stand-in may get an earlier one's port.
    """
    forget_tokens()
    standin = EdFiStandIn(knobs=edfi_knobs)
    standin.load_organisations()
    standin.add_client("state", "state-secret")
    standin.add_client(f"lea-{LEA_A}", "secret-a", LEA_A)
    standin.add_client(f"lea-{LEA_B}", "secret-b", LEA_B)
    with standin:
        yield standin


@pytest.fixture
def edfi_env(edfi_standin: EdFiStandIn, monkeypatch: pytest.MonkeyPatch) -> EdFiStandIn:
    """Environment pointing the pipeline's resource at the stand-in with per-LEA keys."""
    monkeypatch.setenv("STAFF_EDFI_URL", edfi_standin.url)
    monkeypatch.setenv("EDFI_CLIENT_ID", "state")
    monkeypatch.setenv("EDFI_CLIENT_SECRET", "state-secret")
    monkeypatch.setenv(f"EDFI_CLIENT_ID_{LEA_A}", f"lea-{LEA_A}")
    monkeypatch.setenv(f"EDFI_CLIENT_SECRET_{LEA_A}", "secret-a")
    monkeypatch.setenv(f"EDFI_CLIENT_ID_{LEA_B}", f"lea-{LEA_B}")
    monkeypatch.setenv(f"EDFI_CLIENT_SECRET_{LEA_B}", "secret-b")
    return edfi_standin


def load_lea(
    client: EdFiClient,
    lea: int,
    *,
    dry_run: bool = False,
    limits: Mapping[str, Limit] | None = None,
    confirmed: Collection[str] = (),
    on_entry: Callable[[dict], None] | None = None,
) -> dict[str, LoadReport]:
    """Build the LEA's mart and load both resources in order, as the two assets do (no limits unless
    given)."""
    with warehouse.connect() as con:
        build_mart(con, lea)
    return {
        resource: load_resource(
            warehouse.connect,
            client,
            lea,
            resource,
            run_id="test-run",
            max_concurrency=4,
            limits=limits or {},
            confirmed=confirmed,
            dry_run=dry_run,
            on_entry=on_entry,
        )[0]
        for resource in RESOURCES
    }


@pytest.fixture
def lea_a_client(edfi_standin: EdFiStandIn) -> Iterator[EdFiClient]:
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a", policy=RetryPolicy(5, 0.01, 0.05))
    yield client
    client.close()


def one_school_world(standin: EdFiStandIn, people: int, prefix: str) -> None:
    """``people`` staff known to WISEid, each with one assignment and one email at school A1."""
    world = Conformed()
    for i in range(people):
        standin.add_staff(None, f"{prefix.upper()}{i:03d}")
        world.person(f"{prefix}{i}", f"{prefix.upper()}{i:03d}").assign(f"{prefix}{i}", LEA_A, SCHOOL_A1)
        world.email(f"{prefix}{i}", LEA_A, SCHOOL_A1, f"{prefix}{i}@lea1.com")
    world.write()


def post_as_another_system(url: str, records: list[tuple[str, int]]) -> None:
    """Assignments that another system (the state's key) wrote: (WISEid, school) each."""
    state = EdFiClient(url, "state", "state-secret")
    try:
        for wiseid, school in records:
            body = {
                "staffReference": {"staffUniqueId": wiseid},
                "educationOrganizationReference": {"educationOrganizationId": school},
                "staffClassificationDescriptor": f"{STAFF_CLASSIFICATION_NAMESPACE}#Secondary Teacher",
                "beginDate": "2025-08-15",
            }
            assert state.upsert(ASSIGNMENTS, json.dumps(body)).status == 201
    finally:
        state.close()
