"""The WISEdata use cases, end to end: conformed tables -> mart -> diff -> the stand-in over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiClient, forget_tokens
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CONTACTS, build_mart
from staff_pipeline.loads.edfi_reconcile import reconcile
from staff_pipeline.loads.holds import Limit
from staff_pipeline.standins.edfi import EdFiStandIn
from tests.fixtures_edfi import (
    LEA_A,
    LEA_B,
    SCHOOL_A1,
    SCHOOL_A2,
    SCHOOL_B1,
    SCHOOL_B_CHOICE,
    Conformed,
    load_lea,
)


def _contacts(standin: EdFiStandIn) -> set[tuple]:
    return {
        (
            r["staffReference"]["staffUniqueId"],
            r["educationOrganizationReference"]["educationOrganizationId"],
            r["electronicMailAddress"],
        )
        for r in standin.records(CONTACTS)
    }


def _assignments(standin: EdFiStandIn) -> set[tuple]:
    return {
        (
            r["staffReference"]["staffUniqueId"],
            r["educationOrganizationReference"]["educationOrganizationId"],
            r["staffClassificationDescriptor"].split("#")[1],
            r["beginDate"],
            r["positionTitle"],
        )
        for r in standin.records(ASSIGNMENTS)
    }


def test_multi_lea_person_gets_one_contact_per_lea_with_that_leas_email(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "1001001001")
    world = Conformed().person("p1", "1001001001")
    world.assign("p1", LEA_A, SCHOOL_A1).email("p1", LEA_A, SCHOOL_A1, "staff@lea1.com")
    world.assign("p1", LEA_B, SCHOOL_B1).email("p1", LEA_B, SCHOOL_B1, "staff@lea2.com")
    world.write()
    client_b = EdFiClient(edfi_standin.url, f"lea-{LEA_B}", "secret-b")
    load_lea(lea_a_client, LEA_A)
    load_lea(client_b, LEA_B)
    assert _contacts(edfi_standin) == {
        ("1001001001", SCHOOL_A1, "staff@lea1.com"),
        ("1001001001", SCHOOL_B1, "staff@lea2.com"),
    }
    assert {a[1] for a in _assignments(edfi_standin)} == {SCHOOL_A1, SCHOOL_B1}


def test_multi_email_person_gets_one_contact_per_email(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W2")
    world = Conformed().person("p2", "W2").assign("p2", LEA_A, SCHOOL_A1)
    world.email("p2", LEA_A, SCHOOL_A1, "john.smith@district.edu")
    world.email("p2", LEA_A, SCHOOL_A1, "smithj@district.edu", primary=False)
    world.write()
    reports = load_lea(lea_a_client, LEA_A)
    assert reports[CONTACTS].created == 2
    # Ed-Fi's contact identity is staff + edorg + contactTitle: the second email goes on the LEA itself.
    assert _contacts(edfi_standin) == {
        ("W2", SCHOOL_A1, "john.smith@district.edu"),
        ("W2", LEA_A, "smithj@district.edu"),
    }


def test_non_key_change_updates_in_place_and_key_change_posts_new_then_deletes_old(
    edfi_standin, lea_a_client
):
    edfi_standin.add_staff(None, "W3")
    Conformed().person("p3", "W3").assign("p3", LEA_A, SCHOOL_A1, title="Teacher").write()
    load_lea(lea_a_client, LEA_A)
    first_id = edfi_standin.records(ASSIGNMENTS)[0]["id"]

    Conformed().person("p3", "W3").assign("p3", LEA_A, SCHOOL_A1, title="Lead Teacher").write()
    reports = load_lea(lea_a_client, LEA_A)
    assert (reports[ASSIGNMENTS].updated, reports[ASSIGNMENTS].created, reports[ASSIGNMENTS].deleted) == (
        1,
        0,
        0,
    )
    [record] = edfi_standin.records(ASSIGNMENTS)
    assert record["id"] == first_id and record["positionTitle"] == "Lead Teacher"

    before = len(edfi_standin.writes())
    world = Conformed().person("p3", "W3")
    world.assign("p3", LEA_A, SCHOOL_A1, begin=date(2025, 9, 1), title="Lead Teacher").write()
    reports = load_lea(lea_a_client, LEA_A)
    assert (reports[ASSIGNMENTS].created, reports[ASSIGNMENTS].deleted) == (1, 1)
    assert _assignments(edfi_standin) == {
        ("W3", SCHOOL_A1, "Elementary Teacher", "2025-09-01", "Lead Teacher")
    }
    methods = [r.method for r in edfi_standin.writes()[before:]]
    assert methods == ["POST", "DELETE"]  # the new record first, then the old one goes


def test_record_that_left_the_source_and_a_person_to_be_deleted_are_deleted(edfi_standin, lea_a_client):
    for w in ("W4", "W5"):
        edfi_standin.add_staff(None, w)
    world = Conformed().person("p4", "W4").person("p5", "W5")
    world.assign("p4", LEA_A, SCHOOL_A1).assign("p4", LEA_A, SCHOOL_A2, "Secondary Teacher")
    world.email("p4", LEA_A, SCHOOL_A1, "p4@lea1.com").assign("p5", LEA_A, SCHOOL_A1)
    world.write()
    load_lea(lea_a_client, LEA_A)
    assert len(edfi_standin.records(ASSIGNMENTS)) == 3

    world = Conformed().person("p4", "W4", "leaving", "tobedeleted").person("p5", "W5")
    world.assign("p4", LEA_A, SCHOOL_A1).email("p4", LEA_A, SCHOOL_A1, "p4@lea1.com")
    world.assign("p5", LEA_A, SCHOOL_A1)
    world.write()
    reports = load_lea(lea_a_client, LEA_A)
    assert reports[ASSIGNMENTS].deleted == 2 and reports[CONTACTS].deleted == 1
    assert {a[0] for a in _assignments(edfi_standin)} == {"W5"}
    assert edfi_standin.records(CONTACTS) == []
    # the ledger forgets a deleted record; its event keeps what was removed, and the API's id
    with warehouse.connect() as con:
        deleted = con.execute(
            "SELECT json_extract_string(body, '$.staffReference.staffUniqueId'), target_id IS NOT NULL, "
            "content_hash IS NOT NULL FROM load_events WHERE action = 'delete' AND ok"
        ).fetchall()
    assert sorted(deleted) == [("W4", True, False)] * 3  # a delete sends no content


def test_an_assignment_its_school_wants_removed_is_deleted_and_the_rest_stays(edfi_standin, lea_a_client):
    """One school's Edu-V answer says tobedeleted: that school's record goes, the person's other
    school (another source still has them there) keeps its record."""
    edfi_standin.add_staff(None, "W4")
    world = Conformed().person("p4", "W4")
    world.assign("p4", LEA_A, SCHOOL_A1).assign("p4", LEA_A, SCHOOL_A2, "Secondary Teacher")
    world.write()
    load_lea(lea_a_client, LEA_A)
    world = Conformed().person("p4", "W4")
    world.assign("p4", LEA_A, SCHOOL_A1, to_be_deleted=True)
    world.assign("p4", LEA_A, SCHOOL_A2, "Secondary Teacher")
    world.write()
    reports = load_lea(lea_a_client, LEA_A)
    assert reports[ASSIGNMENTS].deleted == 1
    assert [a[1] for a in _assignments(edfi_standin)] == [SCHOOL_A2]


def test_choice_school_and_staff_without_wiseid_send_nothing_and_are_listed(edfi_standin):
    edfi_standin.add_staff(None, "W6")
    world = Conformed().person("p6", "W6").person("p7", None)
    world.assign("p6", LEA_B, SCHOOL_B_CHOICE, choice=True).email("p6", LEA_B, SCHOOL_B_CHOICE, "c@lea2.com")
    world.assign("p7", LEA_B, SCHOOL_B1).email("p7", LEA_B, SCHOOL_B1, "p7@lea2.com")
    world.write()
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_B}", "secret-b")
    reports = load_lea(client, LEA_B)
    assert edfi_standin.writes() == []
    assert reports[ASSIGNMENTS].sent == 0
    with warehouse.connect() as con:
        reasons = con.execute(
            "SELECT person_id, reason FROM mart_edfi_not_sent WHERE resource = ? ORDER BY 1", [ASSIGNMENTS]
        ).fetchall()
    assert reasons == [("p6", "choice school: not sent to Ed-Fi"), ("p7", "no WISEid")]


def test_missing_staff_409_is_reported_per_record_and_the_rest_continues(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W8")  # W9 is not known to WISEid
    world = Conformed().person("p8", "W8").person("p9", "W9")
    world.assign("p8", LEA_A, SCHOOL_A1).email("p8", LEA_A, SCHOOL_A1, "p8@lea1.com")
    world.assign("p9", LEA_A, SCHOOL_A1).email("p9", LEA_A, SCHOOL_A1, "p9@lea1.com")
    world.write()
    reports = load_lea(lea_a_client, LEA_A)
    assert reports[ASSIGNMENTS].created == 1 and reports[CONTACTS].created == 1
    [(message, count)] = reports[ASSIGNMENTS].failed.items()
    assert count == 1 and message.startswith("409 urn:ed-fi:api:data-conflict:unresolved-reference")
    assert "W9" in message
    assert "409" in next(iter(reports[CONTACTS].failed))  # its contact lacks the prerequisite too
    # Failed records stay out of the ledger, so the next run tries them again once WISEid has them.
    edfi_standin.add_staff(None, "W9")
    reports = load_lea(lea_a_client, LEA_A)
    assert reports[ASSIGNMENTS].created == 1 and reports[CONTACTS].created == 1
    assert reports[ASSIGNMENTS].unchanged == 1


def test_400_from_the_api_is_reported_with_its_validation_message(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W10")
    Conformed().person("p10", "W10").assign("p10", LEA_A, SCHOOL_A1).write()
    edfi_standin.classifications = frozenset()  # the server no longer knows the descriptor
    reports = load_lea(lea_a_client, LEA_A)
    [message] = reports[ASSIGNMENTS].failed
    assert message.startswith("400 urn:ed-fi:api:bad-request:data-validation-failed")
    assert "staffClassificationDescriptor" in message


def test_no_change_rerun_sends_zero_writes(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W11")
    world = Conformed().person("p11", "W11").assign("p11", LEA_A, SCHOOL_A1)
    world.email("p11", LEA_A, SCHOOL_A1, "p11@lea1.com").write()
    load_lea(lea_a_client, LEA_A)
    before = len(edfi_standin.writes())
    reports = load_lea(lea_a_client, LEA_A)
    assert len(edfi_standin.writes()) == before
    assert [r.sent for r in reports.values()] == [0, 0]
    assert [r.unchanged for r in reports.values()] == [1, 1]


def test_dry_run_shows_the_plan_and_sends_nothing(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W12")
    world = Conformed().person("p12", "W12").assign("p12", LEA_A, SCHOOL_A1)
    world.email("p12", LEA_A, SCHOOL_A1, "p12@lea1.com").write()
    reports = load_lea(lea_a_client, LEA_A, dry_run=True)
    assert edfi_standin.requests_to(path_prefix="/data") == []
    assert reports[ASSIGNMENTS].planned == 1 and reports[ASSIGNMENTS].held.startswith("dry run")


def test_delete_threshold_holds_the_lea_until_confirmed(edfi_standin, lea_a_client):
    for i in range(4):
        edfi_standin.add_staff(None, f"W2{i}")
    world = Conformed()
    for i in range(4):
        world.person(f"q{i}", f"W2{i}").assign(f"q{i}", LEA_A, SCHOOL_A1)
    world.write()
    load_lea(lea_a_client, LEA_A)
    Conformed().person("q0", "W20").assign("q0", LEA_A, SCHOOL_A1).write()  # a broken export: 3 of 4 gone
    before = len(edfi_standin.writes())
    dry = load_lea(lea_a_client, LEA_A, limits={"delete": Limit(0.1)}, dry_run=True)
    assert dry[ASSIGNMENTS].held.startswith("dry run: nothing sent; held: the plan would delete 3 of 4")
    reports = load_lea(lea_a_client, LEA_A, limits={"delete": Limit(0.1)})
    assert "held" in reports[ASSIGNMENTS].held and len(edfi_standin.writes()) == before
    reports = load_lea(lea_a_client, LEA_A, limits={"delete": Limit(0.1)}, confirmed={"delete"})
    assert reports[ASSIGNMENTS].deleted == 3 and len(edfi_standin.records(ASSIGNMENTS)) == 1


def test_update_threshold_holds_the_lea_until_confirmed(edfi_standin, lea_a_client):
    """A broken export that rewrites every title changes each record in place: held like deletes."""
    for i in range(4):
        edfi_standin.add_staff(None, f"W4{i}")
    world = Conformed()
    for i in range(4):
        world.person(f"u{i}", f"W4{i}").assign(f"u{i}", LEA_A, SCHOOL_A1)
    world.write()
    load_lea(lea_a_client, LEA_A)
    world = Conformed()
    for i in range(4):
        world.person(f"u{i}", f"W4{i}").assign(f"u{i}", LEA_A, SCHOOL_A1, title="???")
    world.write()
    before = len(edfi_standin.writes())
    reports = load_lea(lea_a_client, LEA_A, limits={"update": Limit(0.5)})
    assert f"would update 4 of 4 {ASSIGNMENTS} records (100%), above max_update_share 50%" in (
        reports[ASSIGNMENTS].held
    )
    assert len(edfi_standin.writes()) == before
    reports = load_lea(lea_a_client, LEA_A, limits={"update": Limit(0.5)}, confirmed={"update"})
    assert reports[ASSIGNMENTS].updated == 4


def test_create_threshold_holds_the_lea_but_not_its_first_load(edfi_standin, lea_a_client):
    """A first load has nothing to compare a share with: it goes (a count could still hold it). Later,
    a night that would double the LEA's records waits for a person, as do deletes and updates."""
    for i in range(8):
        edfi_standin.add_staff(None, f"W5{i}")
    world = Conformed()
    for i in range(4):
        world.person(f"c{i}", f"W5{i}").assign(f"c{i}", LEA_A, SCHOOL_A1)
    world.write()
    counted = load_lea(lea_a_client, LEA_A, limits={"create": Limit(0.5, count=3)})
    assert f"would create 4 of 0 {ASSIGNMENTS} records, above max_create_count 3" in counted[ASSIGNMENTS].held
    limits = {"create": Limit(0.5)}
    assert load_lea(lea_a_client, LEA_A, limits=limits)[ASSIGNMENTS].created == 4
    for i in range(4, 8):
        world.person(f"c{i}", f"W5{i}").assign(f"c{i}", LEA_A, SCHOOL_A1)
    world.write()
    before = len(edfi_standin.writes())
    reports = load_lea(lea_a_client, LEA_A, limits=limits)
    assert f"would create 4 of 4 {ASSIGNMENTS} records (100%), above max_create_share 50%" in (
        reports[ASSIGNMENTS].held
    )
    assert "confirm_creates: true" in reports[CONTACTS].held  # the whole LEA, both resources
    assert len(edfi_standin.writes()) == before
    counted = load_lea(lea_a_client, LEA_A, limits={"create": Limit(1.0, count=3)})
    assert "above max_create_count 3" in counted[ASSIGNMENTS].held
    reports = load_lea(lea_a_client, LEA_A, limits=limits, confirmed={"create"})
    assert reports[ASSIGNMENTS].created == 4 and not reports[ASSIGNMENTS].held


def test_reconcile_repairs_a_ledger_that_disagrees_with_the_api(edfi_standin, lea_a_client):
    for w in ("W30", "W31"):
        edfi_standin.add_staff(None, w)
    world = Conformed().person("r0", "W30").person("r1", "W31")
    world.assign("r0", LEA_A, SCHOOL_A1).assign("r1", LEA_A, SCHOOL_A1).write()
    load_lea(lea_a_client, LEA_A)
    # Someone deletes one record by hand and edits the other: the ledger no longer tells the truth.
    gone, edited = edfi_standin.records(ASSIGNMENTS)
    lea_a_client.delete(ASSIGNMENTS, gone["id"])
    body = {k: v for k, v in edited.items() if k not in ("id", "_etag")}
    lea_a_client.upsert(ASSIGNMENTS, json.dumps({**body, "positionTitle": "Edited by hand"}))
    assert load_lea(lea_a_client, LEA_A)[ASSIGNMENTS].sent == 0  # the ledger alone sees nothing to do

    found = reconcile(
        warehouse.connect, lea_a_client, LEA_A, ASSIGNMENTS, [LEA_A, SCHOOL_A1, SCHOOL_A2], run_id="rec"
    )
    assert found == {
        "in_api": 1,
        "in_ledger_before": 2,
        "missing_in_api": 1,
        "adopted": 0,
        "not_ours": 0,
        "differing": 1,
    }
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert (report.created, report.updated) == (1, 1)
    assert {a[4] for a in _assignments(edfi_standin)} == {"Teacher"}


@pytest.fixture
def case_insensitive_ods() -> Iterator[tuple[EdFiStandIn, EdFiClient]]:
    """A stand-in matching identities as an ODS on SQL Server does, with LEA A's client."""
    forget_tokens()
    standin = EdFiStandIn(case_insensitive_identity=True)
    standin.load_organisations()
    standin.add_client(f"lea-{LEA_A}", "secret-a", LEA_A)
    with standin:
        client = EdFiClient(standin.url, f"lea-{LEA_A}", "secret-a")
        yield standin, client
        client.close()


def test_a_key_change_in_case_only_on_a_case_insensitive_ods_keeps_the_record(case_insensitive_ods):
    """SQL Server's default collation matches "Teacher" and "TEACHER": the new record's POST updates
    the old one and answers with its id, so the old record's DELETE would remove the person's only
    record. It is not sent, the ledger keeps one row under the new identity, and the next run (or a
    run resumed after the POST) has nothing to send."""
    standin, client = case_insensitive_ods
    standin.add_staff(None, "W9")
    world = Conformed().person("p9", "W9").assign("p9", LEA_A, SCHOOL_A1, contact_title="Teacher")
    world.email("p9", LEA_A, SCHOOL_A1, "w9@lea1.com").write()
    load_lea(client, LEA_A)
    [before] = standin.records(CONTACTS)

    world = Conformed().person("p9", "W9").assign("p9", LEA_A, SCHOOL_A1, contact_title="TEACHER")
    world.email("p9", LEA_A, SCHOOL_A1, "w9@lea1.com").write()
    sent = len(standin.writes())
    reports = load_lea(client, LEA_A)
    assert [r.method for r in standin.writes()[sent:]] == ["POST"]  # no DELETE of the same id
    [after] = standin.records(CONTACTS)
    assert after["id"] == before["id"] and after["contactTitle"] == "TEACHER"
    report = reports[CONTACTS]
    assert (report.updated, report.deleted, report.replaced_in_place) == (1, 0, 1)
    with warehouse.connect() as con:
        ledger = con.execute(
            "SELECT resource_id, json_extract_string(body, '$.contactTitle') FROM ledger_edfi "
            "WHERE resource = ?",
            [CONTACTS],
        ).fetchall()
    assert ledger == [(before["id"], "TEACHER")]
    sent = len(standin.writes())
    assert load_lea(client, LEA_A)[CONTACTS].sent == 0
    assert len(standin.writes()) == sent


def test_a_ledger_holding_one_record_under_two_identities_does_not_delete_it(case_insensitive_ods):
    """A run that stopped between the in-place POST and its delete leaves the ledger with the old and
    the new identity on one id; the next run must not DELETE that id."""
    standin, client = case_insensitive_ods
    standin.add_staff(None, "W8")
    world = Conformed().person("p8", "W8").assign("p8", LEA_A, SCHOOL_A1, contact_title="Teacher")
    world.email("p8", LEA_A, SCHOOL_A1, "w8@lea1.com").write()
    load_lea(client, LEA_A)
    [record] = standin.records(CONTACTS)
    with warehouse.connect() as con:  # the old identity as it was left, beside the new one
        con.execute(
            "INSERT INTO ledger_edfi SELECT lea_id, resource, 'old-identity', content_hash, resource_id, "
            "replace(body, '\"Teacher\"', '\"teacher\"'), http_status, run_id, sent_at "
            "FROM ledger_edfi WHERE resource = ?",
            [CONTACTS],
        )
    sent = len(standin.writes())
    report = load_lea(client, LEA_A)[CONTACTS]
    assert len(standin.writes()) == sent and report.replaced_in_place == 1
    assert [r["id"] for r in standin.records(CONTACTS)] == [record["id"]]
    with warehouse.connect() as con:
        ids = con.execute("SELECT identity_hash FROM ledger_edfi WHERE resource = ?", [CONTACTS]).fetchall()
    assert ("old-identity",) not in ids and len(ids) == 1


@pytest.mark.parametrize("reverse", [False, True])
def test_the_contact_title_is_the_first_assignments_whatever_the_row_order(reverse: bool) -> None:
    """The title is in the contact's key: one that flipped with row order would POST a new contact
    and DELETE the old one night after night."""
    roles = [
        {"begin": date(2020, 8, 15), "end": date(2024, 7, 1), "contact_title": "Teacher"},
        {"begin": date(2024, 8, 15), "contact_title": "Lead Teacher"},
    ]
    world = Conformed().person("p1", "W1")
    for r in reversed(roles) if reverse else roles:
        world.assign("p1", LEA_A, SCHOOL_A1, **r)
    world.email("p1", LEA_A, SCHOOL_A1, "p1@lea1.example").write()
    with warehouse.connect() as con:
        build_mart(con, LEA_A)
        titles = con.execute("SELECT contact_title FROM mart_edfi_contacts").fetchall()
    assert titles == [("Teacher",)]
