"""What the load must never do to WISEdata: lose a record to a failed key change, send a Choice
school's email, delete records it did not write, or delete the records of someone whose roles ended."""

from __future__ import annotations

from datetime import date

import pytest

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiClient, EdFiResource
from staff_pipeline.loads.edfi import MOVE_WITHHELD_REASON, WITHHELD_REASON, load_resource
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CHOICE_REASON, CONTACTS, build_mart
from staff_pipeline.loads.edfi_reconcile import reconcile
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
    post_as_another_system,
)


def _assignments(standin: EdFiStandIn) -> set[tuple]:
    return {
        (
            r["educationOrganizationReference"]["educationOrganizationId"],
            r["staffClassificationDescriptor"].split("#")[1],
            r.get("endDate"),
        )
        for r in standin.records(ASSIGNMENTS)
    }


def _ledger_count(resource: str) -> int:
    with warehouse.connect() as con:
        return con.execute("SELECT count(*) FROM ledger_edfi WHERE resource = ?", [resource]).fetchall()[0][0]


def test_key_change_whose_new_post_fails_keeps_the_old_record(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W3")
    world = Conformed().person("p3", "W3").assign("p3", LEA_A, SCHOOL_A1)
    world.assign("p3", LEA_A, SCHOOL_A2, "Secondary Teacher").write()
    load_lea(lea_a_client, LEA_A)

    # A key change at A1 (new classification, which the server refuses) and a plain delete at A2.
    edfi_standin.classifications = frozenset({"Elementary Teacher", "Secondary Teacher"})
    Conformed().person("p3", "W3").assign("p3", LEA_A, SCHOOL_A1, "Kindergarten Teacher").write()
    before = len(edfi_standin.writes())
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert [(w.method, w.status) for w in edfi_standin.writes()[before:]] == [("POST", 400), ("DELETE", 204)]
    assert _assignments(edfi_standin) == {(SCHOOL_A1, "Elementary Teacher", None)}  # the old one stays
    assert (report.created, report.deleted, report.failed_total) == (0, 1, 1)
    assert report.withheld == {WITHHELD_REASON: 1}
    assert _ledger_count(ASSIGNMENTS) == 1  # still known, so the next run pairs it again

    edfi_standin.classifications = frozenset({"Elementary Teacher", "Kindergarten Teacher"})
    before = len(edfi_standin.writes())
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert [w.method for w in edfi_standin.writes()[before:]] == ["POST", "DELETE"]
    assert (report.created, report.deleted, report.withheld) == (1, 1, {})
    assert _assignments(edfi_standin) == {(SCHOOL_A1, "Kindergarten Teacher", None)}


def test_a_move_whose_new_school_refuses_the_post_keeps_the_old_record(edfi_standin, lea_a_client):
    """The school is part of the key: a move is insert-then-delete too (WISEdata), so the person is
    never left with no record because the new school's POST was refused."""
    edfi_standin.add_staff(None, "W4")
    Conformed().person("p4", "W4").assign("p4", LEA_A, SCHOOL_A1).write()
    load_lea(lea_a_client, LEA_A)
    edfi_standin.classifications = frozenset({"Elementary Teacher"})  # the new role is refused
    Conformed().person("p4", "W4").assign("p4", LEA_A, SCHOOL_A2, "Kindergarten Teacher").write()
    before = len(edfi_standin.writes())
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert [(w.method, w.status) for w in edfi_standin.writes()[before:]] == [("POST", 400)]
    assert _assignments(edfi_standin) == {(SCHOOL_A1, "Elementary Teacher", None)}
    assert report.withheld == {MOVE_WITHHELD_REASON: 1} and _ledger_count(ASSIGNMENTS) == 1

    edfi_standin.classifications = frozenset({"Elementary Teacher", "Kindergarten Teacher"})
    before = len(edfi_standin.writes())
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert [w.method for w in edfi_standin.writes()[before:]] == ["POST", "DELETE"]
    assert _assignments(edfi_standin) == {(SCHOOL_A2, "Kindergarten Teacher", None)}
    assert report.withheld == {}


def test_records_the_api_answered_without_an_id_are_still_deleted(edfi_standin, lea_a_client):
    """A 200 ("Updated") answer documents an ETag, not a Location: ledger rows without an id must not
    count as sharing a kept record's id, or their deletes are never sent."""
    for wiseid in ("W7", "W8"):
        edfi_standin.add_staff(None, wiseid)
    world = Conformed().person("p7", "W7").person("p8", "W8")
    world.assign("p7", LEA_A, SCHOOL_A1).assign("p8", LEA_A, SCHOOL_A1).write()
    load_lea(lea_a_client, LEA_A)
    with warehouse.connect() as con:  # as if both POSTs had been answered 200 without a Location
        con.execute("UPDATE ledger_edfi SET resource_id = NULL WHERE resource = ?", [ASSIGNMENTS])
    Conformed().person("p7", "W7").assign("p7", LEA_A, SCHOOL_A1).write()  # p8 leaves
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert report.deleted == 1 and report.replaced_in_place == 0
    assert [r["staffReference"]["staffUniqueId"] for r in edfi_standin.records(ASSIGNMENTS)] == ["W7"]


def test_a_delete_answered_404_by_a_wrong_data_path_keeps_the_record(edfi_standin, lea_a_client):
    """A year-specific ODS answers every data route of another year 404. The DELETE's 404 is then no
    proof the record is gone: counted as done, the ledger forgot records that stayed in the ODS for
    good. Only a 404 from a route that exists (GET of the resource answers 200) is "already gone"."""
    for wiseid in ("W5", "W6"):
        edfi_standin.add_staff(None, wiseid)
    world = Conformed().person("p5", "W5").person("p6", "W6")
    world.assign("p5", LEA_A, SCHOOL_A1).assign("p6", LEA_A, SCHOOL_A1).write()
    load_lea(lea_a_client, LEA_A)
    Conformed().person("p5", "W5").assign("p5", LEA_A, SCHOOL_A1).write()  # p6 leaves
    resource = EdFiResource(
        base_url=edfi_standin.url, client_id=f"lea-{LEA_A}", client_secret="secret-a",
        data_path="/data/v3/2027/ed-fi",  # the year's segment, by configuration
    )  # fmt: skip
    other_year = resource.client_for(LEA_A)
    try:
        report = load_lea(other_year, LEA_A)[ASSIGNMENTS]
    finally:
        other_year.close()
    assert report.deleted == 0 and _ledger_count(ASSIGNMENTS) == 2
    assert any("the data path is wrong, not the record gone" in message for message in report.failed)
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]  # the right path: the record goes
    assert report.deleted == 1 and _ledger_count(ASSIGNMENTS) == 1
    [kept] = edfi_standin.records(ASSIGNMENTS)
    assert lea_a_client.delete(ASSIGNMENTS, kept["id"]).status == 204  # someone else deletes it
    Conformed().write()  # p5 leaves too: its DELETE answers 404 on a route that exists
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert report.deleted == 1 and not report.failed and _ledger_count(ASSIGNMENTS) == 0


def test_a_choice_schools_email_is_not_sent_anywhere_and_is_listed(edfi_standin):
    edfi_standin.add_staff(None, "W6")
    world = Conformed().person("p6", "W6")
    world.assign("p6", LEA_B, SCHOOL_B1).email("p6", LEA_B, SCHOOL_B1, "p6@riverside.org")
    world.assign("p6", LEA_B, SCHOOL_B_CHOICE, "Secondary Teacher", choice=True)
    world.email("p6", LEA_B, SCHOOL_B_CHOICE, "p6@choice-academy.org", primary=False)
    world.write()
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_B}", "secret-b")
    load_lea(client, LEA_B)
    client.close()
    assert [
        (r["educationOrganizationReference"]["educationOrganizationId"], r["electronicMailAddress"])
        for r in edfi_standin.records(CONTACTS)
    ] == [(SCHOOL_B1, "p6@riverside.org")]
    with warehouse.connect() as con:
        listed = con.execute(
            "SELECT person_id, reason, detail FROM mart_edfi_not_sent WHERE resource = ?", [CONTACTS]
        ).fetchall()
    assert listed == [("p6", CHOICE_REASON, "p6@choice-academy.org")]


def test_reconcile_leaves_records_nobody_here_knows_alone(edfi_standin):
    for wiseid in ("W6", "W7"):
        edfi_standin.add_staff(None, wiseid)
    # A Choice school's record and another system's.
    post_as_another_system(edfi_standin.url, [("W6", SCHOOL_B_CHOICE), ("W7", SCHOOL_B1)])
    world = Conformed().person("p6", "W6").assign("p6", LEA_B, SCHOOL_B1)
    world.assign("p6", LEA_B, SCHOOL_B_CHOICE, "Secondary Teacher", choice=True).write()
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_B}", "secret-b")
    with warehouse.connect() as con:
        build_mart(con, LEA_B)
    edorgs = [LEA_B, SCHOOL_B1, SCHOOL_B_CHOICE]  # even when a Choice school is asked for
    found = reconcile(warehouse.connect, client, LEA_B, ASSIGNMENTS, edorgs, run_id="rec")
    assert (found["in_api"], found["adopted"], found["not_ours"]) == (2, 0, 2)
    report, plan = load_resource(
        warehouse.connect, client, LEA_B, ASSIGNMENTS, run_id="r", max_concurrency=2, limits={}
    )
    client.close()
    assert plan.counts() == {f"{ASSIGNMENTS}:create": 1} and report.deleted == 0
    assert len(edfi_standin.records(ASSIGNMENTS)) == 3


def test_reconcile_adopts_a_record_the_mart_wants_that_the_ledger_lost(edfi_standin, lea_a_client):
    edfi_standin.add_staff(None, "W8")
    Conformed().person("p8", "W8").assign("p8", LEA_A, SCHOOL_A1).write()
    load_lea(lea_a_client, LEA_A)
    with warehouse.connect() as con:
        con.execute("DELETE FROM ledger_edfi")  # e.g. a journal lost with a crashed disk
    found = reconcile(warehouse.connect, lea_a_client, LEA_A, ASSIGNMENTS, [LEA_A, SCHOOL_A1], run_id="r")
    assert (found["adopted"], found["not_ours"]) == (1, 0)
    assert load_lea(lea_a_client, LEA_A)[ASSIGNMENTS].sent == 0


def test_a_person_whose_roles_all_ended_keeps_the_records_with_end_dates(edfi_standin, lea_a_client):
    """The model's end dates are exclusive (the day the role stops); Ed-Fi gets the last day in it."""
    edfi_standin.add_staff(None, "1001")
    world = Conformed().person("p1", "1001")
    world.assign("p1", LEA_A, SCHOOL_A1, end=date(2026, 2, 1))
    world.assign("p1", LEA_A, SCHOOL_A2, "Secondary Teacher").write()
    load_lea(lea_a_client, LEA_A)

    world = Conformed().person("p1", "1001", "leaving", "all_roles_ended")
    world.assign("p1", LEA_A, SCHOOL_A1, end=date(2026, 2, 1))
    world.assign("p1", LEA_A, SCHOOL_A2, "Secondary Teacher", end=date(2026, 7, 1)).write()
    report = load_lea(lea_a_client, LEA_A)[ASSIGNMENTS]
    assert (report.deleted, report.updated) == (0, 1)
    assert _assignments(edfi_standin) == {
        (SCHOOL_A1, "Elementary Teacher", "2026-01-31"),
        (SCHOOL_A2, "Secondary Teacher", "2026-06-30"),
    }

    world = Conformed().person("p1", "1001", "leaving", "tobedeleted")  # the source asks for removal
    world.assign("p1", LEA_A, SCHOOL_A1, end=date(2026, 2, 1)).write()
    assert load_lea(lea_a_client, LEA_A)[ASSIGNMENTS].deleted == 2
    assert edfi_standin.records(ASSIGNMENTS) == []


def test_far_off_dates_pass_the_mart_check_and_are_sent(edfi_standin, lea_a_client):
    """9999-12-31 is a common "open end" and 0001-01-01 a legal date: neither may block the LEA."""
    from staff_pipeline.metadata import validate_or_fail
    from staff_pipeline.schemas.marts import mart_edfi_assignments

    edfi_standin.add_staff(None, "1001")
    world = Conformed().person("p1", "1001")
    world.assign("p1", LEA_A, SCHOOL_A1, begin=date(1, 1, 1), end=date(9999, 12, 31))
    world.assign("p1", LEA_A, SCHOOL_A2, "Secondary Teacher").write()  # open: a NULL end beside it
    load_lea(lea_a_client, LEA_A, dry_run=True)  # builds the mart
    with warehouse.connect() as con:
        validate_or_fail(con.execute("SELECT * FROM mart_edfi_assignments").df(), mart_edfi_assignments, "x")
    load_lea(lea_a_client, LEA_A)
    assert _assignments(edfi_standin) == {
        (SCHOOL_A1, "Elementary Teacher", "9999-12-30"),
        (SCHOOL_A2, "Secondary Teacher", None),
    }


def test_a_mart_that_breaks_its_contract_leaves_the_previous_mart_for_the_loads(edfi_standin):
    """The contract runs inside the mart's transaction: a load started on its own after a refused
    mart sends the last valid mart, not the refused rows."""
    Conformed().person("p1", "1001").assign("p1", LEA_A, SCHOOL_A1).write()
    with warehouse.connect() as con:
        build_mart(con, LEA_A)
    Conformed().person("p2", "1002").assign("p2", LEA_A, SCHOOL_A2).write()

    def refuse(con) -> None:
        assert con.execute("SELECT count(*) FROM mart_edfi_assignments").fetchall() == [(1,)]
        raise ValueError("mart_edfi_assignments breaks the contract")

    with warehouse.connect() as con:
        with pytest.raises(ValueError, match="breaks the contract"):
            build_mart(con, LEA_A, refuse)
        kept = con.execute("SELECT staff_unique_id FROM mart_edfi_assignments").fetchall()
    assert kept == [("1001",)]
