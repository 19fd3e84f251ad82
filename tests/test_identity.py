"""Identity matching across Edu-V and SIS: identifiers first, then email; ambiguity reported, not guessed."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from staff_pipeline.transform import identity
from staff_pipeline.warehouse import connect
from tests.raw_tables import LAKEVIEW_ELEM, RIVERSIDE_ELEM, Raw, employee, role, run_both, sis_row


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with connect() as c:
        yield c


def _people(con: duckdb.DuckDBPyConnection, suffix: str = "") -> dict[str, tuple]:
    """record_key -> (person_id, matched_by) via staff_identifiers (``__next``: the refused build)."""
    return {
        key: (person, matched_by)
        for key, person, matched_by in con.execute(
            f"SELECT i.id_value, i.person_id, s.matched_by FROM staff_identifiers{suffix} i "
            f"JOIN staff{suffix} s USING (person_id) WHERE i.id_type = 'record_key'"
        ).fetchall()
    }


@pytest.mark.parametrize("id_hash", [identity.ID_HASH, "0::UBIGINT"], ids=["hash", "every-hash-collides"])
def test_matching_by_local_code_wiseid_and_email(con, monkeypatch, id_hash: str) -> None:
    """Also with a hash under which every identifier collides: the hash only finds candidates."""
    monkeypatch.setattr(identity, "ID_HASH", id_hash)
    raw = Raw(con)
    raw.eduv(
        "lakeview-elem",
        [
            employee(1, asi="T1"),  # local code = SIS T1
            employee(2, email="t2@district.example.org"),  # email only
            employee(3),  # Edu-V only
        ],
    )
    raw.eduv("riverside-elem", [employee(4, roles=[role(RIVERSIDE_ELEM)], email="Mixed.Case@X.org")])
    raw.sis(100001, [sis_row("T1", state_staff_id="1000000001"), sis_row("T2"), sis_row("T9")])
    # Same WISEid in another LEA's export: the same person, working in two LEAs.
    raw.sis(
        100002,
        [
            sis_row("R1", school="RSE", state_staff_id="1000000001"),
            sis_row("R4", school="RSE", email=" mixed.case@x.org "),
        ],
    )
    result = run_both(con)
    assert result.swapped

    people = _people(con)
    assert people["eduv:eckId:eck-1"] == people["sis:100001:T1"] == people["sis:100002:R1"]
    assert people["eduv:eckId:eck-1"][1] == "wiseid"
    assert people["eduv:eckId:eck-2"] == people["sis:100001:T2"]
    assert people["eduv:eckId:eck-2"][1] == "email"
    assert people["eduv:eckId:eck-4"] == people["sis:100002:R4"]  # email normalised: case and spaces
    assert people["eduv:eckId:eck-3"][1] == "unmatched"
    assert len({p for p, _ in people.values()}) == 5
    one = people["eduv:eckId:eck-1"][0]
    assert con.execute(
        "SELECT wiseid, local_code, sources FROM staff WHERE person_id = ?", [one]
    ).fetchall() == [("1000000001", "T1", "eduv,sis")]
    assert con.execute("SELECT count(*) FROM staff_match_issues").fetchall() == [(0,)]
    # The WISEid both SIS records hold is one identifier of the person (per source), not two.
    assert con.execute(
        "SELECT person_id, source FROM staff_identifiers WHERE id_type = 'wiseid' AND id_value = '1000000001'"
    ).fetchall() == [(one, "sis")]


def test_local_code_is_scoped_to_the_lea(con) -> None:
    """ASI T1 at a Lakeview school is not SIS T1 of Riverside."""
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, asi="T1", email=None)])
    raw.sis(100002, [sis_row("T1", school="RSE")])
    run_both(con)
    people = _people(con)
    assert people["eduv:eckId:eck-1"] != people["sis:100002:T1"]


def test_an_asi_is_the_local_code_of_the_lea_whose_answer_sent_it(con) -> None:
    """Lakeview's administration system sends ASI T1; the employee also has a role at a Riverside
    school, whose SIS knows an unrelated T1 and knows this employee as R1 (Riverside's answer sends
    ASI R1). Each ASI matches in its own LEA only."""
    raw = Raw(con)
    both = [role(LAKEVIEW_ELEM), role(RIVERSIDE_ELEM)]
    raw.eduv("lakeview-elem", [employee(1, asi="T1", email=None, roles=both)])
    raw.eduv("riverside-elem", [employee(1, asi="R1", email=None, roles=both)])
    raw.sis(100002, [sis_row("T1", school="RSE"), sis_row("R1", school="RSE")])
    assert run_both(con).swapped
    people = _people(con)
    assert people["eduv:eckId:eck-1"] == people["sis:100002:R1"]
    assert people["sis:100002:T1"] != people["eduv:eckId:eck-1"]
    assert people["sis:100002:T1"][1] == "unmatched"
    assert con.execute(
        "SELECT user_id, lea_ids FROM stg_eduv_employee_ids WHERE user_id_type = 'ASI' ORDER BY 1"
    ).fetchall() == [("R1", [100002]), ("T1", [100001])]


def test_ambiguous_email_is_reported_and_not_merged(con) -> None:
    """Two SIS staff of one LEA share a mailbox; an Edu-V employee uses it too: nobody is merged."""
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, email="office@lakeview.example.org")])
    raw.sis(
        100001,
        [
            sis_row("T1", email="office@lakeview.example.org"),
            sis_row("T2", email="office@lakeview.example.org"),
        ],
    )
    run_both(con)

    people = _people(con)
    assert len({people[k][0] for k in ("eduv:eckId:eck-1", "sis:100001:T1", "sis:100001:T2")}) == 3
    assert {people[k][1] for k in people} == {"unmatched"}
    issues = con.execute("SELECT issue, id_value, record_keys, person_ids FROM staff_match_issues").fetchall()
    assert len(issues) == 1
    issue, value, keys, persons = issues[0]
    assert (issue, value) == ("ambiguous_email", "office@lakeview.example.org")
    assert keys == ["eduv:eckId:eck-1", "sis:100001:T1", "sis:100001:T2"]
    assert len(persons) == 3


def test_identifier_pointing_to_two_people_is_reported(con) -> None:
    """One WISEid on two different SIS staff of one LEA."""
    raw = Raw(con)
    raw.sis(100001, [sis_row("T1", state_staff_id="1000000007"), sis_row("T2", state_staff_id="1000000007")])
    result = run_both(con)

    issues = con.execute(
        "SELECT issue, id_type, id_value, record_keys FROM staff_match_issues__next"
    ).fetchall()
    assert issues == [("ambiguous_identifier", "wiseid", "1000000007", ["sis:100001:T1", "sis:100001:T2"])]
    people = _people(con, "__next")
    assert people["sis:100001:T1"] != people["sis:100001:T2"]
    # Both would be the same Ed-Fi staffUniqueId: the model is refused, the previous one kept.
    assert not result.swapped
    assert "wiseid" in set(result.failures["staff"]["column"])


def test_identifiers_chaining_two_edu_v_people_are_not_merged(con) -> None:
    """Edu-V 1 = SIS T1 (Lakeview) and Edu-V 2 = SIS R1 (Riverside), but T1 and R1 share a WISEid."""
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, asi="T1")])
    raw.eduv("riverside-elem", [employee(2, asi="R1", roles=[role(RIVERSIDE_ELEM)])])
    raw.sis(100001, [sis_row("T1", state_staff_id="1000000001", email=None)])
    raw.sis(100002, [sis_row("R1", school="RSE", state_staff_id="1000000001", email=None)])
    run_both(con)

    issues = con.execute("SELECT issue, record_keys FROM staff_match_issues__next").fetchall()
    assert issues == [
        (
            "conflicting_identifiers",
            ["eduv:eckId:eck-1", "eduv:eckId:eck-2", "sis:100001:T1", "sis:100002:R1"],
        )
    ]


def test_person_id_is_stable_across_runs_when_identifiers_change(con) -> None:
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, asi="T1"), employee(2)])
    raw.sis(100001, [sis_row("T1")])
    run_both(con, "run-1")
    first = _people(con)

    # Next night the SIS adds the WISEid (the anchor changes) and Edu-V adds an eduID.
    ids = [
        {"userId": "eck-1", "userIdType": "eckId"},
        {"userId": "T1", "userIdType": "ASI"},
        {"userId": "edu-1", "userIdType": "eduID"},
    ]
    raw.eduv("lakeview-elem", [employee(1, userIds=ids, roles=[role(LAKEVIEW_ELEM)]), employee(2)])
    raw.sis(100001, [sis_row("T1", state_staff_id="1000000001")])
    run_both(con, "run-2")
    second = _people(con)

    assert second["eduv:eckId:eck-1"][0] == first["eduv:eckId:eck-1"][0] == second["sis:100001:T1"][0]
    assert second["eduv:eckId:eck-2"][0] == first["eduv:eckId:eck-2"][0]


def test_a_split_person_gets_two_distinct_ids_that_stay(con) -> None:
    """Edu-V stops sending the ASI that matched them to SIS: two people again. One group claims the
    old id (its identifiers vote for it); if that is the SIS group, the Edu-V group, which holds the
    old anchor record, would derive that same id: it takes another, and keeps it the next night."""
    raw = Raw(con)
    raw.eduv("lakeview-elem", [employee(1, asi="T5")])
    raw.sis(100001, [sis_row("T5", state_staff_id="1000000005")])
    assert run_both(con, "run-1").swapped
    [(merged, _)] = set(_people(con).values())

    ids = [{"userId": "eck-1", "userIdType": "eckId"}, {"userId": "900000001", "userIdType": "NEPPI"}]
    nights = []
    for night in ("run-2", "run-3"):
        raw.eduv("lakeview-elem", [employee(1, userIds=ids)])
        raw.sis(100001, [sis_row("T5", state_staff_id="1000000005")])
        result = run_both(con, night)
        assert result.swapped, result.failures
        nights.append(_people(con))
    for people in nights:
        ids = {people["sis:100001:T5"][0], people["eduv:eckId:eck-1"][0]}
        assert len(ids) == 2 and merged in ids  # one keeps the old id, the other gets its own
    assert nights[0] == nights[1]


def test_one_sis_record_with_two_wiseids_is_reported_and_uses_neither(con) -> None:
    raw = Raw(con)
    first, second = sis_row("T1", state_staff_id="1000000001"), sis_row("T1", school="LVH")
    second["state_staff_id"] = "1000000002"
    raw.sis(100001, [first, second])
    assert run_both(con).swapped
    assert con.execute("SELECT wiseid FROM staff").fetchall() == [(None,)]
    assert con.execute("SELECT issue, id_type, id_value, record_keys FROM staff_match_issues").fetchall() == [
        ("conflicting_identifiers", "wiseid", "1000000001, 1000000002", ["sis:100001:T1"])
    ]
