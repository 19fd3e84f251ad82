"""The conformed model: crosswalks, active periods, leaving people, contacts, and the per-LEA gate."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import duckdb
import pytest

from staff_pipeline.config import SisSettings, load_settings
from staff_pipeline.loads.edfi_mart import build_mart
from staff_pipeline.transform.steps import stage
from staff_pipeline.warehouse import connect
from tests.raw_tables import (
    LAKEVIEW_ELEM,
    LAKEVIEW_HIGH,
    RIVERSIDE_ELEM,
    Raw,
    employee,
    role,
    run_both,
    sis_row,
)

TODAY = date(2026, 1, 15)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with connect() as c:
        yield c


def _person(con: duckdb.DuckDBPyConnection, record_key: str) -> str:
    return con.execute(
        "SELECT person_id FROM staff_identifiers WHERE id_type = 'record_key' AND id_value = ?", [record_key]
    ).fetchall()[0][0]


def test_assignments_contacts_and_status(con) -> None:
    raw = Raw(con)
    raw.eduv(
        "lakeview-elem",
        [
            employee(
                1,
                asi="T1",
                mobile="+31 6 1234 5678",
                roles=[
                    role(LAKEVIEW_ELEM, "leraar", begin="2026-01-15"),  # starts today: active
                    role(
                        LAKEVIEW_HIGH, "leraar", begin="2020-08-01", end="2026-01-15"
                    ),  # ended today (exclusive)
                ],
            ),
            employee(2, status="tobedeleted"),
            employee(
                3, roles=[role(LAKEVIEW_ELEM, "onderwijsdirecteur", begin="2019-08-01", end="2025-08-01")]
            ),
        ],
    )
    raw.sis(
        100001,
        [
            sis_row(
                "T1",
                state_staff_id="1000000001",
                school="LVH",
                position_code="TCH",
                fte="0.5",
                email="t1@district.example.org",
                alt_email="t1.home@example.org",
                phone="(608) 555-0101",
            ),
        ],
    )
    assert run_both(con, today=TODAY).swapped
    one, two, three = (_person(con, f"eduv:eckId:eck-{n}") for n in (1, 2, 3))

    rows = con.execute(
        "SELECT school_key, source, source_role, staff_classification, contact_title, linkit_role, fte, "
        "active "
        "FROM staff_assignments WHERE person_id = ? ORDER BY school_key, source, begin_date",
        [one],
    ).fetchall()
    assert rows == [
        ("lakeview-elem", "eduv", "leraar", "Elementary Teacher", "Teacher", "TEACHER", None, True),
        ("lakeview-high", "eduv", "leraar", "Secondary Teacher", "Teacher", "TEACHER", None, False),
        ("lakeview-high", "sis", "TCH", "Secondary Teacher", "Teacher", "TEACHER", 0.5, True),
    ]
    status = dict(
        (p, (s, r))
        for p, s, r in con.execute("SELECT person_id, status, leaving_reason FROM staff").fetchall()
    )
    assert status[one] == ("active", None)
    assert status[two] == ("leaving", "tobedeleted")
    assert status[three] == ("leaving", "all_roles_ended")

    contacts = con.execute(
        "SELECT DISTINCT kind, value, source, is_primary FROM staff_contacts "
        "WHERE person_id = ? ORDER BY ALL",
        [one],
    ).fetchall()
    assert contacts == [
        ("email", "e1@school.example.nl", "eduv", True),
        ("email", "t1.home@example.org", "sis", False),
        ("email", "t1@district.example.org", "sis", False),
        ("mobile", "+31 6 1234 5678", "eduv", True),
        ("phone", "(608) 555-0101", "sis", False),
        ("phone", "+31 20 555 0001", "eduv", True),
    ]
    assert {r[0] for r in con.execute("SELECT lea_id FROM staff_contacts").fetchall()} == {100001}
    assert con.execute("SELECT primary_email FROM staff WHERE person_id = ?", [one]).fetchall() == [
        ("e1@school.example.nl",)
    ]


def test_same_assignment_from_both_sources_is_kept_once_from_sis(con) -> None:
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, asi="T1", roles=[role(LAKEVIEW_ELEM, begin="2024-08-15")])])
    raw.sis(100001, [sis_row("T1", position_title="Grade 3 Teacher")])
    run_both(con)
    assert con.execute("SELECT source, position_title FROM staff_assignments").fetchall() == [
        ("sis", "Grade 3 Teacher")
    ]


def _lea_rows(con: duckdb.DuckDBPyConnection, lea: int) -> list:
    return sorted(con.execute("SELECT * FROM staff_assignments WHERE lea_id = ?", [lea]).fetchall(), key=str)


def test_threshold_stops_a_mass_delete_for_that_lea_only(con) -> None:
    raw = Raw(con)
    raw.sis(100001, [sis_row(f"T{n}") for n in range(20)])
    raw.sis(100002, [sis_row(f"R{n}", school="RSE") for n in range(5)])
    run_both(con, "run-1")
    lakeview_before = _lea_rows(con, 100001)
    staff_before = con.execute("SELECT count(*) FROM staff").fetchall()[0][0]

    # A truncated Lakeview export (2 of 20 people) and a normal Riverside one with a new hire.
    raw.sis(100001, [sis_row("T0"), sis_row("T1")])
    raw.sis(100002, [sis_row(f"R{n}", school="RSE") for n in range(6)])
    result = run_both(con, "run-2")

    assert result.swapped
    gate = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT lea_id, staff_before, disappeared, passed, reason FROM gate_results "
            "WHERE run_id = 'run-2'"
        ).fetchall()
    }
    assert gate[100001] == (20, 18, False, "18 of 20 staff gone since the last accepted run (90.0% > 10.0%)")
    assert gate[100002][:3] == (5, 0, True)
    assert _lea_rows(con, 100001) == lakeview_before  # nobody deleted downstream
    assert len(_lea_rows(con, 100002)) == 6
    assert con.execute("SELECT count(*) FROM staff").fetchall()[0][0] == staff_before + 1


def test_an_empty_sis_export_cannot_strip_people_who_are_still_in_edu_v(con) -> None:
    """The people stay in the model through Edu-V, so nobody "disappears" from the LEA; but every
    WISEid and SIS assignment would go. Staff gone from one source count too."""
    raw = Raw(con)
    people = [employee(n, asi=f"T{n}") for n in range(1, 21)]
    sis = [sis_row(f"T{n}", state_staff_id=f"{1000000000 + n}") for n in range(1, 21)]
    raw.eduv("lakeview-elem", people)
    raw.sis(100001, sis)
    run_both(con, "night-1")
    before = _lea_rows(con, 100001)
    raw.eduv("lakeview-elem", people)
    raw.sis(100001, [])  # a header-only export
    result = run_both(con, "night-2")
    assert result.swapped
    gate = con.execute(
        "SELECT staff_before, disappeared, passed, reason FROM gate_results "
        "WHERE run_id = 'night-2' AND lea_id = 100001"
    ).fetchall()
    reason = "20 of 20 staff gone from SIS since the last accepted run (100.0% > 10.0%)"
    assert gate == [(20, 0, False, reason)]
    assert _lea_rows(con, 100001) == before
    assert con.execute("SELECT count(wiseid) FROM staff").fetchall() == [(20,)]


def test_rejected_share_fails_the_lea_and_keeps_its_previous_rows(con) -> None:
    raw = Raw(con)
    raw.sis(100001, [sis_row(f"T{n}") for n in range(10)])
    run_both(con, "run-1")
    before = _lea_rows(con, 100001)

    raw.sis(100001, [sis_row(f"T{n}", begin_date="2024-13-01" if n < 3 else "2024-08-15") for n in range(10)])
    run_both(con, "run-2", max_disappeared_share=1.0)

    assert con.execute(
        "SELECT rows, rejected, passed FROM gate_results WHERE run_id = 'run-2' AND lea_id = 100001"
    ).fetchall() == [(10, 3, False)]
    assert _lea_rows(con, 100001) == before


def test_school_whose_pull_failed_or_came_back_empty_is_carried_over(con) -> None:
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(n) for n in range(1, 6)])
    raw.eduv("lakeview-high", [employee(9, roles=[role(LAKEVIEW_HIGH)])])
    run_both(con, "run-1")
    before = _lea_rows(con, 100001)
    assert len(before) == 6

    raw.eduv("lakeview-elem", [], ok=False, status=503)  # failed pull
    raw.eduv("lakeview-high", [])  # answered, but with nobody
    run_both(con, "run-2")

    assert _lea_rows(con, 100001) == before
    assert con.execute(
        "SELECT disappeared, passed FROM gate_results WHERE run_id = 'run-2' AND lea_id = 100001"
    ).fetchall() == [(0, True)]

    # A later good pull is used again, and someone who really left is gone.
    raw.eduv("lakeview-elem", [employee(n) for n in range(1, 6)])
    raw.eduv(
        "lakeview-high", [employee(9, roles=[role(LAKEVIEW_HIGH)]), employee(10, roles=[role(LAKEVIEW_HIGH)])]
    )
    run_both(con, "run-3")
    assert len(_lea_rows(con, 100001)) == 7


def test_an_answer_naming_no_configured_school_is_a_suspiciously_empty_pull(con) -> None:
    """lakeview-high's answer (the whole board: filterByOrgId false) one night names every role's
    school by a master id the organisation file does not know: each role would be out of scope and
    the school would empty. The answer is set aside and the last accepted one read instead; on a first
    night there is none, and nothing comes from the school. Riverside's filtered answer, likewise:
    there every role would have been an unknown_school reject."""
    renamed = {"organisationMasterIdentifier": "0d1e2f3a-0000-4000-8000-00000000beef"}
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(n) for n in range(1, 6)])
    first = raw.eduv("riverside-elem", [employee(30, roles=[role(renamed)])])
    raw.eduv("lakeview-high", [employee(n, roles=[role(LAKEVIEW_HIGH)]) for n in range(9, 12)])
    night1 = stage(con, "run-1", load_settings())
    assert night1.unnamed.to_dict("records") == [
        {"school_key": "riverside-elem", "set_aside": first, "read_instead": None}
    ]
    assert con.execute("SELECT count(*) FROM rejected_rows").fetchall() == [(0,)]
    run_both(con, "run-1")
    before = _lea_rows(con, 100001)
    assert len(before) == 8

    accepted = con.execute(
        "SELECT request_id FROM eduv_accepted_requests WHERE school_key = 'lakeview-high'"
    ).fetchall()
    renamed_answer = raw.eduv("lakeview-high", [employee(n, roles=[role(renamed)]) for n in range(9, 12)])
    night2 = stage(con, "run-2", load_settings())
    assert night2.unnamed.to_dict("records") == [
        {"school_key": "lakeview-high", "set_aside": renamed_answer, "read_instead": accepted[0][0]},
        {"school_key": "riverside-elem", "set_aside": first, "read_instead": None},
    ]
    run_both(con, "run-2")
    assert _lea_rows(con, 100001) == before
    assert con.execute(
        "SELECT disappeared, passed FROM gate_results WHERE run_id = 'run-2' AND lea_id = 100001"
    ).fetchall() == [(0, True)]
    # the set-aside answer never becomes the one to fall back on
    assert (
        con.execute(
            "SELECT request_id FROM eduv_accepted_requests WHERE school_key = 'lakeview-high'"
        ).fetchall()
        == accepted
    )


def test_a_contact_or_assignment_of_a_person_missing_from_staff_blocks_the_model(con) -> None:
    """The blocking check names the row whose person is not in ``staff`` (and only that one)."""
    from staff_pipeline.transform.steps import _validate_conformed

    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, asi="T1"), employee(2)])
    assert run_both(con).swapped
    for table in ("staff", "staff_contacts", "staff_assignments"):
        con.execute(f"CREATE OR REPLACE TABLE {table}__next AS SELECT * FROM {table}")
    assert _validate_conformed(con) == {}

    person = _person(con, "eduv:eckId:eck-2")
    con.execute("DELETE FROM staff__next WHERE person_id = ?", [person])
    failures = _validate_conformed(con)
    assert set(failures) == {"staff_contacts", "staff_assignments"}
    for cases in failures.values():
        unknown = cases[cases["check"] == "unknown_person"]
        assert set(unknown["failure_case"]) == {person}


def test_local_codes_belong_to_an_lea_and_linkit_gets_each_districts_own(con) -> None:
    """One person (one WISEid) is T1 in Lakeview and R1 in Riverside; Riverside's own T1 is someone
    else. Nothing is ambiguous: the model swaps, and each LinkIt district gets its LEA's code."""
    from staff_pipeline.loads import linkit_mart

    raw = Raw(con)
    raw.sis(100001, [sis_row("T1", state_staff_id="1000000001")])
    raw.sis(
        100002,
        [
            sis_row("R1", school="RSE", state_staff_id="1000000001"),
            sis_row("T1", school="RSE", email="other.t1@riverside.example.org"),
        ],
    )
    result = run_both(con)
    assert result.swapped, result.failures
    one = _person(con, "sis:100001:T1")
    assert _person(con, "sis:100002:R1") == one != _person(con, "sis:100002:T1")
    codes = con.execute(
        "SELECT lea_id, local_code FROM staff_assignments WHERE person_id = ? ORDER BY 1", [one]
    ).fetchall()
    assert codes == [(100001, "T1"), (100002, "R1")]
    for district in ("lakeview", "riverside"):
        linkit_mart.build_mart(con, district, "email_local_part", "run")
    assert con.execute(
        "SELECT district, local_code FROM mart_linkit_staff WHERE person_id = ? ORDER BY 1", [one]
    ).fetchall() == [("lakeview", "T1"), ("riverside", "R1")]


def test_an_edu_v_person_keeps_each_leas_own_email(con) -> None:
    """Listed by a Lakeview school (email a@) and a Riverside school (email b@), each with a role
    there: one contact per LEA, each with its own email (the Ed-Fi use case), from each answer."""
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, email="a@lakeview.example.org", roles=[role(LAKEVIEW_ELEM)])])
    raw.eduv("riverside-elem", [employee(1, email="b@riverside.example.org", roles=[role(RIVERSIDE_ELEM)])])
    assert run_both(con).swapped
    assert con.execute(
        "SELECT lea_id, value, is_primary FROM staff_contacts WHERE kind = 'email' ORDER BY 1"
    ).fetchall() == [(100001, "a@lakeview.example.org", True), (100002, "b@riverside.example.org", True)]


def test_one_schools_tobedeleted_removes_its_roles_not_the_person(con) -> None:
    """Lakeview's Edu-V answer says tobedeleted; Riverside's says active with a current role, and
    Riverside's SIS has them too. Only the Lakeview roles go; the person stays active."""
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, status="tobedeleted", roles=[role(LAKEVIEW_ELEM)])])
    raw.eduv("riverside-elem", [employee(1, asi="R1", roles=[role(RIVERSIDE_ELEM)])])
    raw.sis(100002, [sis_row("R1", school="RSE")])
    assert run_both(con).swapped
    person = _person(con, "eduv:eckId:eck-1")
    assert con.execute(
        "SELECT status, leaving_reason FROM staff WHERE person_id = ?", [person]
    ).fetchall() == [("active", None)]
    rows = con.execute(
        "SELECT lea_id, source, to_be_deleted, active FROM staff_assignments WHERE person_id = ? "
        "ORDER BY ALL",
        [person],
    ).fetchall()
    assert rows == [
        (100001, "eduv", True, False),
        (100002, "eduv", False, True),
        (100002, "sis", False, True),
    ]
    assert {lea for (lea,) in con.execute("SELECT lea_id FROM staff_contacts").fetchall()} == {100002}


def test_a_person_every_source_wants_removed_is_leaving_tobedeleted(con) -> None:
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, status="tobedeleted", roles=[role(LAKEVIEW_ELEM)])])
    assert run_both(con).swapped
    assert con.execute("SELECT status, leaving_reason FROM staff").fetchall() == [("leaving", "tobedeleted")]
    assert con.execute("SELECT to_be_deleted, active FROM staff_assignments").fetchall() == [(True, False)]


def test_an_sis_that_writes_the_last_day_worked_has_its_end_dates_read_so(con) -> None:
    """Lakeview's SIS writes the last day worked, Riverside's the first day after (the default): both
    become the model's exclusive end date, and Ed-Fi gets the last day back."""
    raw = Raw(con)
    raw.sis(
        100001,
        [
            sis_row("T1", state_staff_id="1000000001", begin_date="2026-01-15", end_date="2026-01-15"),
            sis_row("T2", state_staff_id="1000000002", end_date="2026-01-14"),
        ],
    )
    raw.sis(
        100002,
        [
            sis_row("R1", school="RSE", begin_date="2026-01-15", end_date="2026-01-15"),
            sis_row("R2", school="RSE", end_date="2026-01-15"),
        ],
    )
    sis = SisSettings(end_date_by_lea=((100001, "last_day"),))
    assert run_both(con, today=TODAY, sis_settings=sis, max_rejected_share=1.0).swapped
    staged = con.execute(
        "SELECT local_staff_id, begin_date, end_date FROM stg_sis_staff_assignments ORDER BY 1"
    ).fetchall()
    assert staged == [
        ("R2", date(2024, 8, 15), date(2026, 1, 15)),
        ("T1", date(2026, 1, 15), date(2026, 1, 16)),  # a one-day assignment, today
        ("T2", date(2024, 8, 15), date(2026, 1, 15)),
    ]
    rejected = con.execute(
        "SELECT record_key, column_name, rule FROM rejected_rows WHERE source = 'sis'"
    ).fetchall()
    assert rejected == [("sis:100002:R1", "end_date", "date_order")]  # no day at all when exclusive
    active = con.execute("SELECT local_code, active FROM staff_assignments ORDER BY 1").fetchall()
    assert active == [("R2", False), ("T1", True), ("T2", False)]
    with con.cursor() as cur:
        build_mart(cur, 100001)
    sent = con.execute(
        "SELECT staff_unique_id, json_extract_string(body, '$.endDate') FROM mart_edfi_assignments ORDER BY 1"
    ).fetchall()
    assert sent == [("1000000001", "2026-01-15"), ("1000000002", "2026-01-14")]


def test_a_provider_wide_answer_leaves_the_providers_other_schools_out_not_rejected(con) -> None:
    """lakeview-high is asked by OIE_CODE with filterByOrgId false: the answer lists the whole board
    (Onderwijsaanbieder), colleagues at its school 34CD (not configured here) included. They are out
    of scope, not rejects: counted as such, they would fail the LEA's gate every night."""
    other = {"organisationIds": [{"organisationId": "34CD", "organisationIdType": "OIE_CODE"}]}
    raw = Raw(con)
    raw.eduv(
        "lakeview-high",
        [
            *(employee(n, roles=[role(LAKEVIEW_HIGH)]) for n in range(1, 11)),
            *(employee(n, roles=[role(other)]) for n in range(11, 14)),  # the board's other school
            employee(14, roles=[role(LAKEVIEW_HIGH), role(other, "mentor")]),  # at both
        ],
    )
    raw.eduv(
        "riverside-elem", [employee(20, roles=[role(RIVERSIDE_ELEM)]), employee(21, roles=[role(other)])]
    )
    staged = run_both(con, today=TODAY, max_rejected_share=1.0)
    assert staged.swapped
    rejected = con.execute("SELECT record_key, rule FROM rejected_rows").fetchall()
    # riverside-elem filters to its own school (filterByOrgId true): a role elsewhere is unexpected
    assert rejected == [("eduv:eckId:eck-21", "unknown_school")]
    people = {r[0] for r in con.execute("SELECT record_key FROM stg_eduv_employees").fetchall()}
    assert {f"eduv:eckId:eck-{n}" for n in (11, 12, 13)}.isdisjoint(people)
    assert {f"eduv:eckId:eck-{n}" for n in (*range(1, 11), 14, 20, 21)} <= people
    roles = con.execute(
        "SELECT school_key, organisation_role FROM stg_eduv_employee_roles WHERE record_key = ?",
        ["eduv:eckId:eck-14"],
    ).fetchall()
    assert roles == [("lakeview-high", "leraar")]
    result = stage(con, "run-2", load_settings())  # what the staging asset's metadata shows
    assert result.out_of_scope.to_dict("records") == [
        {"school_key": "lakeview-high", "roles": 4, "employees": 3}
    ]


def test_a_person_in_a_passing_and_a_refused_lea_keeps_what_the_refused_lea_gave(con) -> None:
    """Lakeview (Edu-V) passes, Riverside's SIS export comes back header-only and is refused: the
    person's WISEid, from Riverside's SIS, must stay, or both LEAs' Ed-Fi records would be deleted."""
    raw = Raw(con)
    people = [employee(n, roles=[role(LAKEVIEW_ELEM)]) for n in range(1, 21)]
    riverside = [
        sis_row(f"R{n}", school="RSE", state_staff_id=f"{1000000000 + n}", email=f"e{n}@school.example.nl")
        for n in range(1, 21)
    ]
    raw.eduv("lakeview-elem", people)
    raw.sis(100002, riverside)
    run_both(con, "night-1")
    assert con.execute("SELECT count(*), count(wiseid) FROM staff").fetchall() == [(20, 20)]
    ids_before = con.execute("SELECT count(*) FROM staff_identifiers").fetchall()
    before = _lea_rows(con, 100002)
    raw.eduv("lakeview-elem", people)
    raw.sis(100002, [])  # header-only: Riverside is refused, Lakeview passes
    run_both(con, "night-2")
    passed = dict(con.execute("SELECT lea_id, passed FROM gate_results WHERE run_id = 'night-2'").fetchall())
    assert passed[100001] and not passed[100002]
    assert con.execute("SELECT count(*), count(wiseid) FROM staff").fetchall() == [(20, 20)]
    assert _lea_rows(con, 100002) == before
    assert con.execute("SELECT count(*) FROM staff_identifiers").fetchall() == ids_before
