"""Which LinkIt account is whose, night after night: UserNames stay put, LocalCodes can move, a
rejected row never deactivates someone who still works there, and a leaver's account is not handed
to a newcomer. Against the LinkIt stand-in, over several loads."""

from __future__ import annotations

from typing import Any

from staff_pipeline.clients.linkit import LinkItClient
from tests.fixtures_linkit import LINKIT_KEYS, assignment, mart_and_load, staff_row, table, write_conformed


def _accounts(standin: Any) -> dict[str, tuple[str, str]]:
    """LocalCode -> (UserName, Status) as LinkIt holds them."""
    return {u["LocalCode"]: (u["UserName"], u["Status"]) for u in standin.users("lakeview")}


def _people(*people: tuple[str, str, str]) -> tuple[list[dict], list[dict]]:
    """(person id, LocalCode, email) -> staff and assignment rows in lakeview."""
    return (
        [staff_row(p, code, primary_email=email) for p, code, email in people],
        [assignment(p) for p, _, _ in people],
    )


def test_a_row_rejected_for_its_data_keeps_the_account_active(linkit_standin) -> None:
    staff, assignments = _people(("p1", "L1", "ann@x.org"), ("p2", "L2", "bob@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    # Each part passes the model's limits; prefix + last name is 53 characters, over LinkIt's 50.
    staff[0] |= {"family_name_prefix": "van der", "last_name": "Berg-" + "X" * 40}
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    rejected = table("SELECT local_code, rule, field FROM mart_linkit_rejected")
    assert rejected == [("L1", "too_long", "LastName")]
    assert report.plan == {"keep": 1} and report.outcomes["kept"] == 1
    assert _accounts(linkit_standin)["L1"] == ("ann", "Active")
    # Someone who really left is still deactivated.
    staff[1]["status"] = "leaving"
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    assert report.outcomes["deactivated"] == 1 and report.outcomes["kept"] == 1
    assert _accounts(linkit_standin)["L2"] == ("bob", "Inactive")


def test_a_leavers_username_is_never_given_to_a_newcomer(linkit_standin) -> None:
    staff, assignments = _people(("p1", "L1", "jsmith@x.org"), ("p2", "L2", "jsmith@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    staff[0]["status"] = "leaving"  # jsmith leaves; jsmith2 keeps their name
    staff[1]["first_name"] = "Jane"
    staff.append(staff_row("p3", "L3", primary_email="jsmith@x.org"))  # a new John Smith
    assignments.append(assignment("p3"))
    write_conformed(staff, assignments)
    for _night in (1, 2):
        report = mart_and_load(linkit_standin, share=1.0)
        assert not report.failures, report.failures
    assert _accounts(linkit_standin) == {
        "L1": ("jsmith", "Inactive"),
        "L2": ("jsmith2", "Active"),
        "L3": ("jsmith3", "Active"),
    }
    assert [u["FirstName"] for u in linkit_standin.users("lakeview") if u["LocalCode"] == "L2"] == ["Jane"]
    assert report.outcomes == {"unchanged": 2}  # the leaver's inactive account needs nothing


def test_suffixed_names_stay_with_their_holders_when_someone_joins(linkit_standin) -> None:
    staff, assignments = _people(("p5", "L5", "jsmith@x.org"), ("p7", "L7", "jsmith@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    assert _accounts(linkit_standin) == {"L5": ("jsmith", "Active"), "L7": ("jsmith2", "Active")}
    staff.append(staff_row("p6", "L6", primary_email="jsmith@x.org"))  # sorts between p5 and p7
    staff.append(staff_row("p8", "L8", primary_email="jsmith2@x.org"))  # wants jsmith2 as it is
    assignments += [assignment("p6"), assignment("p8")]
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    assert report.outcomes == {"unchanged": 2, "created": 2} and not report.failures
    assert _accounts(linkit_standin) == {
        "L5": ("jsmith", "Active"),
        "L7": ("jsmith2", "Active"),
        "L6": ("jsmith3", "Active"),
        "L8": ("jsmith22", "Active"),
    }
    suffixed = table("SELECT person_id FROM mart_linkit_staff WHERE username_suffixed ORDER BY 1")
    assert suffixed == [("p6",), ("p7",), ("p8",)]


def test_a_new_local_code_moves_the_account_instead_of_making_a_second(linkit_standin) -> None:
    staff, assignments = _people(("p1", "L1", "ann@x.org"), ("p2", "L2", "bob@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    [before] = [u["UserID"] for u in linkit_standin.users("lakeview") if u["LocalCode"] == "L1"]
    staff[0]["local_code"] = "L1-NEW"  # the SIS renumbered the same person
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    assert report.plan == {"update": 1} and report.outcomes["updated"] == 1
    assert [u["UserID"] for u in linkit_standin.users("lakeview") if u["LocalCode"] == "L1-NEW"] == [before]
    ledger = table("SELECT local_code, user_id FROM ledger_linkit WHERE person_id = 'p1'")
    assert ledger == [("L1-NEW", before)]
    assert mart_and_load(linkit_standin, share=1.0).outcomes == {"unchanged": 2}


def test_a_leavers_local_code_given_to_a_newcomer_is_reported_not_handed_over(linkit_standin) -> None:
    staff, assignments = _people(("p1", "L1", "leaver@x.org"), ("p2", "L2", "bob@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    write_conformed(staff[1:], assignments[1:])  # p1 leaves
    mart_and_load(linkit_standin, share=1.0)
    newcomer = staff_row("p9", "L1", primary_email="new@x.org")  # the SIS reuses L1
    write_conformed([staff[1], newcomer], [assignments[1], assignment("p9")])
    report = mart_and_load(linkit_standin, share=1.0)
    [error] = report.failures
    assert "LocalCode L1 belongs to the deactivated LinkIt account" in error and "person p1" in error
    assert _accounts(linkit_standin)["L1"] == ("leaver", "Inactive")
    ledger = table("SELECT person_id, status FROM ledger_linkit WHERE local_code = 'L1'")
    assert ledger == [("p1", "inactive")]
    # Once LinkIt's admin gives the old account another LocalCode, the newcomer gets an account.
    [old] = [u for u in linkit_standin.users("lakeview") if u["LocalCode"] == "L1"]
    admin = LinkItClient(linkit_standin.url, *LINKIT_KEYS["lakeview"])
    try:
        admin.update_staff(old["UserID"], {"LocalCode": "L1-OLD"})
    finally:
        admin.close()
    report = mart_and_load(linkit_standin, share=1.0)
    assert report.outcomes["created"] == 1 and not report.failures
    assert _accounts(linkit_standin)["L1"] == ("new", "Active")


def test_the_account_holder_keeps_a_local_code_a_newcomer_also_claims(linkit_standin) -> None:
    staff, assignments = _people(("p5", "L5", "existing@x.org"), ("p6", "L6", "other@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    # A typo in the SIS gives a newcomer (whose id sorts first) the same LocalCode.
    staff.append(staff_row("p1", "L5", primary_email="newcomer@x.org"))
    assignments.append(assignment("p1"))
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    assert table("SELECT person_id, rule FROM mart_linkit_rejected") == [("p1", "duplicate_local_code")]
    assert report.outcomes == {"unchanged": 2}
    assert _accounts(linkit_standin)["L5"] == ("existing", "Active")


def test_a_leaver_whose_row_also_breaks_a_rule_is_still_deactivated(linkit_standin) -> None:
    staff, assignments = _people(("p1", "L1", "ann@x.org"), ("p2", "L2", "bob@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    staff[0] |= {"status": "leaving", "primary_email": "x" * 95 + "@example.org"}  # over LinkIt's 100
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    rules = table("SELECT rule FROM mart_linkit_rejected WHERE person_id = 'p1' ORDER BY 1")
    assert rules == [("leaving",), ("too_long",)]
    assert report.plan == {"deactivate": 1} and report.outcomes["deactivated"] == 1
    assert _accounts(linkit_standin)["L1"] == ("ann", "Inactive")


def test_a_local_code_reused_in_the_run_its_holder_leaves_is_not_handed_over(linkit_standin) -> None:
    """The holder is still a person of the model (their roles ended): the account is theirs and is
    deactivated; a holder gone from the model altogether was renumbered, and keeps it (see above)."""
    staff, assignments = _people(("p1", "L1", "leaver@x.org"), ("p2", "L2", "bob@x.org"))
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    assignments[0]["active"] = False  # p1 leaves, and the SIS gives L1 to a newcomer the same night
    staff.append(staff_row("p9", "L1", primary_email="new@x.org"))
    assignments.append(assignment("p9"))
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, share=1.0)
    [error] = report.failures
    assert "LocalCode L1 belongs to the deactivated LinkIt account" in error and "person p1" in error
    assert _accounts(linkit_standin) == {"L1": ("leaver", "Inactive"), "L2": ("bob", "Active")}
    ledger = table("SELECT person_id, status FROM ledger_linkit WHERE local_code = 'L1'")
    assert ledger == [("p1", "inactive")]


def test_a_refused_request_is_journalled_with_the_request_and_the_apis_text(linkit_standin) -> None:
    write_conformed([staff_row("p1", "L1")], [assignment("p1", school=501), assignment("p1", school=999)])
    report = mart_and_load(linkit_standin)
    assert any("999" in error for error in report.failures)  # the run's counts: the API's text
    [(error,)] = table("SELECT error FROM load_events WHERE NOT ok")
    assert "/schools" in error and "POST" in error and "999" in error  # the request, then the text


def test_a_user_name_held_by_a_hand_made_account_gives_way_to_the_next_free_name(linkit_standin) -> None:
    """An account made by hand in LinkIt holds "ann" under another LocalCode: Ann's create fails once,
    naming that account, and the next run names her "ann2" instead of failing every night."""
    client = LinkItClient(linkit_standin.url, *LINKIT_KEYS["lakeview"])
    try:
        fields = {"UserName": "ann", "LocalCode": "HAND1", "FirstName": "Ann", "LastName": "Else"}
        client.create_staff({**fields, "Role": "TEACHER", "SchoolID": 501})
    finally:
        client.close()
    staff, assignments = _people(("p1", "L1", "ann@x.org"), ("p2", "L2", "bob@x.org"))
    write_conformed(staff, assignments)
    first = mart_and_load(linkit_standin)
    assert first.outcomes["created"] == 1 and first.outcomes["failed"] == 1
    refused = "UserName ann belongs to another LinkIt account (LocalCode HAND1)"
    assert any(refused in error for error in first.failures)
    assert table("SELECT user_name FROM linkit_foreign_names") == [("ann",)]
    second = mart_and_load(linkit_standin)
    assert second.outcomes["created"] == 1 and not second.failures
    assert _accounts(linkit_standin) == {
        "HAND1": ("ann", "Active"),
        "L1": ("ann2", "Active"),
        "L2": ("bob", "Active"),
    }
    assert mart_and_load(linkit_standin).plan == {}  # and it stays so
