"""The LinkIt! mart: who gets an account, with which role, schools, UserName; who does not, and why."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from staff_pipeline import warehouse
from staff_pipeline.loads.linkit_mart import build_mart
from staff_pipeline.schemas.marts_linkit import mart_linkit_staff
from tests.fixtures_linkit import assignment, contact, staff_row, table, write_conformed


def _build(rule: str = "email_local_part", district: str = "lakeview") -> dict[str, int]:
    with warehouse.connect() as con:
        return build_mart(con, district, rule, "r1")


def table_frame(sql: str) -> pd.DataFrame:
    with warehouse.connect() as con:
        return con.execute(sql).df()


def _mart() -> dict[str, tuple]:
    rows = table("SELECT local_code, user_name, role, school_ids, username_suffixed FROM mart_linkit_staff")
    return {r[0]: r[1:] for r in rows}


def _rejected() -> set[tuple]:
    return set(table("SELECT local_code, rule, field FROM mart_linkit_rejected"))


def test_highest_role_all_district_schools_and_district_contacts() -> None:
    write_conformed(
        [staff_row("p1", "L1", primary_email="private@home.example")],
        [
            assignment("p1", school=502),
            assignment("p1", school=501, linkit_role="DISTRICT ADMIN", source_role="SUP"),
            assignment("p1", school=501, linkit_role="SCHOOL ADMIN", source_role="PRN"),
            assignment("p1", district="riverside", school=601, linkit_role="TEACHER"),
        ],
        [
            contact("p1", "zed@lakeview.example", primary=False),
            contact("p1", "anna.de.vries@lakeview.example"),
            contact("p1", "anna@riverside.example", lea_id=100002),
            contact("p1", "+31 6 1234", kind="mobile"),
            contact("p1", "555-0101", kind="phone", primary=False),
        ],
    )
    counts = _build()
    assert counts["accounts"] == 1
    assert _mart() == {"L1": ("anna.de.vries", "DISTRICT ADMIN", [501, 502], False)}
    assert table("SELECT email_address, phone_number, state_code FROM mart_linkit_staff") == [
        ("anna.de.vries@lakeview.example", "555-0101", "Wp1")
    ]
    _build(district="riverside")
    assert table("SELECT role, email_address FROM mart_linkit_staff WHERE district = 'riverside'") == [
        ("TEACHER", "anna@riverside.example")
    ]


def test_usernames_are_normalised_and_collisions_suffixed_deterministically() -> None:
    staff = [
        staff_row("p3", "L3", primary_email="J.Smith@x.example"),
        staff_row("p1", "L1", primary_email="j.smith@y.example"),
        staff_row("p2", "L2", primary_email="Özdemir-van der Berg@x.example"),
        staff_row("p4", "L4", primary_email=None),
        staff_row("p5", "L5", primary_email="j.smith@z.example"),
    ]
    write_conformed(staff, [assignment(s["person_id"]) for s in staff])
    _build()
    mart = _mart()
    assert mart["L1"][0] == "j.smith" and mart["L3"][0] == "j.smith2" and mart["L5"][0] == "j.smith3"
    assert [mart[c][3] for c in ("L1", "L3", "L5")] == [False, True, True]
    assert mart["L2"][0] == "ozdemir-vanderberg"
    assert mart["L4"][0] == "l4"  # no email: falls back to the local code
    # The person who already holds a name in the ledger keeps it when someone earlier arrives.
    table(
        "INSERT INTO ledger_linkit (district, local_code, user_name, status) "
        "VALUES ('lakeview', 'L3', 'j.smith', 'active')"
    )
    _build()
    assert _mart()["L3"][0] == "j.smith" and _mart()["L1"][0] == "j.smith2"
    _build("local_code")
    assert {v[0] for v in _mart().values()} == {"l1", "l2", "l3", "l4", "l5"}


def test_people_not_loaded_each_get_a_reason_and_values_are_never_truncated() -> None:
    staff = [
        staff_row("p1", "L1"),
        staff_row("p2", "L2", status="leaving"),
        staff_row("p3", "L3"),
        staff_row("p4", None),
        staff_row("p5", "L5", first_name="F" * 51),
        staff_row("p6", "L6", primary_email=("u" * 60) + "@x.example"),
        staff_row("p7", "L1"),
        staff_row("p8", "C" * 51),
        staff_row("p9", "L9", wiseid="W" * 101),
    ]
    assignments = [assignment(s["person_id"]) for s in staff]
    assignments[2] = assignment("p3", linkit_role=None, source_role="AIDE")
    write_conformed(staff, assignments)
    counts = _build()
    assert set(_mart()) == {"L1"}
    assert _rejected() == {
        ("L2", "leaving", None),
        ("L3", "no_linkit_role", "Role"),
        (None, "missing_required", "LocalCode"),
        ("L5", "too_long", "FirstName"),
        ("L6", "too_long", "UserName"),
        ("L1", "duplicate_local_code", "LocalCode"),
        ("C" * 51, "too_long", "LocalCode"),
        ("L9", "too_long", "StateCode"),
    }
    assert table("SELECT value, reason FROM mart_linkit_rejected WHERE field = 'FirstName'") == [
        ("F" * 51, "FirstName is 51 characters; LinkIt allows 50")
    ]
    assert counts["too_long"] == 4 and counts["accounts"] == 1
    assert table("SELECT reason FROM mart_linkit_rejected WHERE rule = 'no_linkit_role'") == [
        ("no role maps to LinkIt (roles: AIDE)",)
    ]


def test_rebuilding_one_district_leaves_the_others() -> None:
    write_conformed(
        [staff_row("p1", "L1"), staff_row("p2", "L2")],
        [assignment("p1"), assignment("p2", district="riverside", school=601)],
    )
    _build()
    _build(district="riverside")
    _build()
    assert table("SELECT district, local_code FROM mart_linkit_staff ORDER BY 1") == [
        ("lakeview", "L1"),
        ("riverside", "L2"),
    ]


def test_the_built_mart_meets_its_schema_and_the_schema_catches_contract_breaks() -> None:
    write_conformed(
        [staff_row("p1", "L1"), staff_row("p2", "L2")],
        [assignment("p1"), assignment("p2", linkit_role="DISTRICT ADMIN")],
    )
    _build()
    frame = table_frame("SELECT * FROM mart_linkit_staff ORDER BY local_code")
    mart_linkit_staff.validate(frame, lazy=True)
    # pandera skips the frame-wide checks once a column's enum check has failed: one break at a time.
    broken = frame.copy()
    # p1's name in upper case and the same as p2's ignoring case (the frame is ordered: p1 first).
    broken.loc[0, "user_name"] = "User.P2"
    with pytest.raises(pa.errors.SchemaErrors) as caught:
        mart_linkit_staff.validate(broken, lazy=True)
    checks = " ".join(caught.value.failure_cases["check"].astype(str))
    assert "str_matches" in checks and "case-insensitive" in checks
    broken = frame.copy()
    broken.loc[1, "role"] = "PRINCIPAL"
    with pytest.raises(pa.errors.SchemaErrors) as caught:
        mart_linkit_staff.validate(broken, lazy=True)
    assert "isin" in " ".join(caught.value.failure_cases["check"].astype(str))
