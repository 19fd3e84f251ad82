"""LinkIt! loads against the stand-in: create, update, schools, deactivate, never twice, safety hold."""

from __future__ import annotations

from typing import Any

import pytest

from staff_pipeline.clients.linkit import LinkItClient
from staff_pipeline.loads.holds import Limit
from staff_pipeline.loads.journal import Journal
from tests.fixtures_linkit import (
    LINKIT_KEYS,
    assignment,
    mart_and_load,
    staff_row,
    table,
    write_conformed,
)


def _people(n: int) -> tuple[list[dict], list[dict]]:
    staff = [staff_row(f"p{i}", f"L{i}") for i in range(1, n + 1)]
    return staff, [assignment(f"p{i}") for i in range(1, n + 1)]


def _by_code(standin) -> dict[str, dict[str, Any]]:
    return {u["LocalCode"]: u for u in standin.users("lakeview")}


def _writes(standin) -> int:
    return sum(1 for r in standin.received if r.method != "GET")


def test_create_gives_each_person_one_account_with_highest_role_and_all_schools(linkit_standin) -> None:
    staff = [staff_row("p1", "L1"), staff_row("p2", "L2"), staff_row("p3", "L3")]
    write_conformed(
        staff,
        [
            assignment("p1", school=501),
            assignment("p1", school=502, linkit_role="SCHOOL ADMIN", source_role="PRN"),
            assignment("p1", school=None, linkit_role="DISTRICT ADMIN", source_role="SUP", active=False),
            assignment("p2", school=502),
            assignment("p3", linkit_role=None, source_role="CNS"),
            assignment("p2", district="riverside", school=601),
        ],
    )
    report = mart_and_load(linkit_standin)
    accounts = _by_code(linkit_standin)
    assert set(accounts) == {"L1", "L2"}
    assert accounts["L1"]["Role"] == "school admin"  # the ended DISTRICT ADMIN assignment does not count
    assert [s["SchoolID"] for s in accounts["L1"]["Schools"]] == [501, 502]
    assert accounts["L1"]["UserName"] == "user.p1" and accounts["L1"]["StateCode"] == "Wp1"
    assert report.outcomes["created"] == 2 and not report.failures
    assert report.requests == {"POST /staffs": 2, "POST /staffs/{id}/schools": 1}
    assert table("SELECT local_code, status, user_id IS NOT NULL FROM ledger_linkit ORDER BY 1") == [
        ("L1", "active", True),
        ("L2", "active", True),
    ]
    assert table("SELECT local_code, rule FROM mart_linkit_rejected") == [("L3", "no_linkit_role")]
    assert linkit_standin.users("riverside") == []  # riverside is its own partition

    before = len(linkit_standin.received)
    again = mart_and_load(linkit_standin)
    assert len(linkit_standin.received) == before  # a no-change run sends nothing at all
    assert again.outcomes["unchanged"] == 2 and again.write_requests == 0


def test_changed_fields_update_in_place_and_schools_follow(linkit_standin) -> None:
    staff, assignments = _people(3)
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    ids = {code: u["UserID"] for code, u in _by_code(linkit_standin).items()}
    staff[0]["last_name"] = "Berg"
    staff[0]["family_name_prefix"] = "van der"
    assignments[1] = assignment("p2", school=502)
    write_conformed(staff, assignments)
    before = len(linkit_standin.received)
    report = mart_and_load(linkit_standin)
    sent = [(r.method, r.path) for r in linkit_standin.received[before:]]
    assert sorted(sent) == sorted(
        [
            ("PUT", f"/staffs/{ids['L1']}"),
            ("POST", f"/staffs/{ids['L2']}/schools"),
            ("DELETE", f"/staffs/{ids['L2']}/schools/501"),
        ]
    )
    accounts = _by_code(linkit_standin)
    assert accounts["L1"]["LastName"] == "van der Berg" and accounts["L1"]["UserID"] == ids["L1"]
    assert [s["SchoolID"] for s in accounts["L2"]["Schools"]] == [502]
    assert report.outcomes["updated"] == 2 and report.outcomes["unchanged"] == 1
    assert table("SELECT school_ids FROM ledger_linkit WHERE local_code = 'L2'") == [([502],)]
    before = len(linkit_standin.received)
    mart_and_load(linkit_standin)
    assert len(linkit_standin.received) == before


def test_leavers_are_deactivated_never_deleted_and_can_return(linkit_standin) -> None:
    staff, assignments = _people(5)
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    staff[3]["status"] = "leaving"
    assignments[4]["active"] = False  # no longer desired: every assignment ended
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin)
    accounts = _by_code(linkit_standin)
    assert len(accounts) == 5
    assert {c: u["Status"] for c, u in accounts.items() if u["Status"] != "Active"} == {
        "L4": "Inactive",
        "L5": "Inactive",
    }
    assert report.outcomes["deactivated"] == 2 and not report.held
    assert not any(r.method == "DELETE" for r in linkit_standin.received)
    assert table("SELECT local_code FROM ledger_linkit WHERE status = 'inactive' ORDER BY 1") == [
        ("L4",),
        ("L5",),
    ]
    before = len(linkit_standin.received)
    mart_and_load(linkit_standin)
    assert len(linkit_standin.received) == before

    staff[3]["status"] = "active"
    write_conformed(staff, assignments)
    back = mart_and_load(linkit_standin)
    assert back.outcomes["reactivated"] == 1 and _by_code(linkit_standin)["L4"]["Status"] == "Active"


def test_deactivations_above_the_share_are_held_until_confirmed(linkit_standin) -> None:
    staff, assignments = _people(10)
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    for row in staff[:3]:
        row["status"] = "leaving"
    staff[5]["first_name"] = "Changed"
    write_conformed(staff, assignments)
    held = mart_and_load(linkit_standin, share=0.2)
    assert "would deactivate 3 of 10 active accounts (30%)" in held.held
    assert "confirm_deactivations: true" in held.held
    # the whole district waits: a source wrong about who left is not trusted for the rest either
    assert held.outcomes["deactivated"] == 0 and held.outcomes["updated"] == 0 and held.outcomes["held"] == 4
    assert all(u["Status"] == "Active" for u in linkit_standin.users("lakeview"))
    assert not any(u["FirstName"] == "Changed" for u in linkit_standin.users("lakeview"))
    confirmed = mart_and_load(linkit_standin, share=0.2, confirmed={"deactivate"})
    assert confirmed.outcomes["deactivated"] == 3 and confirmed.outcomes["updated"] == 1
    assert not confirmed.held
    assert sum(u["Status"] == "Inactive" for u in linkit_standin.users("lakeview")) == 3


def test_updates_above_the_share_are_held_until_confirmed(linkit_standin) -> None:
    """A broken export renaming everyone: the updates wait for a person, like deactivations."""
    staff, assignments = _people(10)
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    for row in staff[:6]:
        row["first_name"] = "Broken"
    write_conformed(staff, assignments)
    held = mart_and_load(linkit_standin, limits={"update": Limit(0.5)})
    assert "would update 6 of 10 active accounts (60%)" in held.held and "confirm_updates" in held.held
    assert held.outcomes["held"] == 6 and held.outcomes["updated"] == 0
    assert not any(u["FirstName"] == "Broken" for u in linkit_standin.users("lakeview"))
    confirmed = mart_and_load(linkit_standin, limits={"update": Limit(0.5)}, confirmed={"update"})
    assert confirmed.outcomes["updated"] == 6 and not confirmed.held


def test_a_re_keyed_export_creating_everyone_again_is_held_whole(linkit_standin) -> None:
    """An export whose every identifier changed: the model sees ten new people and ten gone, so LinkIt
    would get a second account for everyone (a create cannot be taken back) and the first ones
    deactivated. Both are over their limits; nothing is sent. A first load (no active accounts yet)
    has no share to compare with: it goes, unless a count holds it."""
    staff, assignments = _people(10)
    write_conformed(staff, assignments)
    first = mart_and_load(linkit_standin, limits={"create": Limit(0.25)})
    assert first.outcomes["created"] == 10 and not first.held
    staff = [staff_row(f"n{i}", f"X{i}") for i in range(1, 11)]
    write_conformed(staff, [assignment(f"n{i}") for i in range(1, 11)])
    limits = {"create": Limit(0.25), "deactivate": Limit(0.1)}
    held = mart_and_load(linkit_standin, limits=limits)
    assert "would create 10 of 10 active accounts (100%), above max_create_share 25%" in held.held
    assert "would deactivate 10 of 10" in held.held and "confirm_creates: true" in held.held
    assert len(linkit_standin.users("lakeview")) == 10 and held.outcomes["held"] == 20
    confirmed_one = mart_and_load(linkit_standin, limits=limits, confirmed={"create"})
    assert "confirm_deactivations" in confirmed_one.held and "create" not in confirmed_one.held
    assert len(linkit_standin.users("lakeview")) == 10
    capped = mart_and_load(linkit_standin, limits={"create": Limit(1.0, count=5)})
    assert "max_create_count 5" in capped.held


def test_dry_run_shows_the_plan_and_sends_nothing(linkit_standin) -> None:
    staff, assignments = _people(4)
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, dry_run=True)
    assert report.plan == {"create": 4} and list(report.preview["local_code"]) == ["L1", "L2", "L3", "L4"]
    assert linkit_standin.received == []
    assert table("SELECT count(*) FROM ledger_linkit") == [(0,)]


class _CrashAfterCreate(Journal):
    """Dies the moment the first create has succeeded, before its result reaches the journal."""

    def append(self, entry: dict) -> None:
        if entry.get("action") == "create" and entry.get("kind") == "done":
            raise SystemExit("killed between create and journal")
        super().append(entry)


def test_crash_between_create_and_ledger_write_does_not_create_twice(linkit_standin) -> None:
    staff, assignments = _people(3)
    write_conformed(staff, assignments)
    crashing = _CrashAfterCreate("linkit", "lakeview")
    with pytest.raises(SystemExit):
        mart_and_load(linkit_standin, journal=crashing, concurrency=1)
    made = {u["LocalCode"] for u in linkit_standin.users("lakeview")}
    assert "L1" in made  # LinkIt has the account(s), the run never recorded them
    assert table("SELECT local_code, status, user_id FROM ledger_linkit ORDER BY 1") == [
        (code, "pending", None) for code in sorted(made)
    ]

    report = mart_and_load(linkit_standin)
    posts = [r for r in linkit_standin.received if r.method == "POST" and r.path == "/staffs"]
    assert len(posts) == 3 and len(linkit_standin.users("lakeview")) == 3
    assert report.outcomes == {"adopted": len(made), "created": 3 - len(made), "unchanged": 0}
    uid = _by_code(linkit_standin)["L1"]["UserID"]
    assert table("SELECT user_id, status FROM ledger_linkit WHERE local_code = 'L1'") == [(uid, "active")]
    before = len(linkit_standin.received)
    mart_and_load(linkit_standin)
    assert len(linkit_standin.received) == before


def test_existing_accounts_are_adopted_when_the_ledger_is_lost(linkit_standin) -> None:
    staff, assignments = _people(3)
    write_conformed(staff, assignments)
    mart_and_load(linkit_standin)
    table("DROP TABLE ledger_linkit")
    staff[2]["first_name"] = "Renamed"
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin)
    assert report.outcomes["adopted"] == 3 and len(linkit_standin.users("lakeview")) == 3
    assert _by_code(linkit_standin)["L3"]["FirstName"] == "Renamed"
    errors = table("SELECT count(*) FROM load_events WHERE NOT ok")
    assert errors == [(0,)]
    before = len(linkit_standin.received)
    mart_and_load(linkit_standin)
    assert len(linkit_standin.received) == before


def test_username_held_by_another_account_is_reported_not_taken_over(linkit_standin) -> None:
    staff, assignments = _people(2)
    write_conformed(staff, assignments)
    other = LinkItClient(linkit_standin.url, *LINKIT_KEYS["lakeview"])
    other.create_staff({"UserName": "user.p1", "LocalCode": "HANDMADE", "Role": "TEACHER"})
    report = mart_and_load(linkit_standin)
    assert report.outcomes["created"] == 1 and report.outcomes["failed"] == 1
    [(error, count)] = report.failures.items()
    assert "user.p1 belongs to another" in error and "HANDMADE" in error and count == 1
    assert _by_code(linkit_standin)["HANDMADE"]["UserName"] == "user.p1"
    assert table("SELECT record_key, action, ok FROM load_events WHERE NOT ok") == [("L1", "create", False)]
    assert table("SELECT count(*) FROM ledger_linkit WHERE local_code = 'L1' AND status = 'active'") == [(0,)]


def test_a_school_refused_after_a_create_is_journalled_as_the_school_call(linkit_standin) -> None:
    """The create succeeded; assigning the second school was refused. The journal and load_events say
    so (assign failed), not that the create failed; the account is in the ledger, and the next run
    only retries the school."""
    write_conformed([staff_row("p1", "L1")], [assignment("p1"), assignment("p1", school=999)])
    report = mart_and_load(linkit_standin)
    assert report.outcomes["failed"] == 1
    assert table("SELECT action, ok FROM load_events ORDER BY event_at") == [
        ("create", True),
        ("assign", False),
    ]
    ledger = table("SELECT status, school_ids FROM ledger_linkit WHERE local_code = 'L1'")
    assert ledger == [("active", [501])]
    again = mart_and_load(linkit_standin)
    assert again.plan == {"schools": 1} and again.outcomes["failed"] == 1


def test_rejected_values_over_the_limits_are_never_sent(linkit_standin) -> None:
    staff, assignments = _people(2)
    staff[1]["last_name"] = "L" * 51
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin)
    assert set(_by_code(linkit_standin)) == {"L1"} and report.outcomes["created"] == 1
    [(rule, field, value)] = table("SELECT rule, field, value FROM mart_linkit_rejected")
    assert (rule, field, value) == ("too_long", "LastName", "L" * 51)


def test_a_whole_load_reads_xml_answers(linkit_standin) -> None:
    staff, assignments = _people(3)
    assignments.append(assignment("p1", school=502))
    write_conformed(staff, assignments)
    report = mart_and_load(linkit_standin, response_format="xml")
    assert report.outcomes["created"] == 3
    assert all("xml" in r.headers["accept"] for r in linkit_standin.received)
    assert table("SELECT school_ids FROM ledger_linkit WHERE local_code = 'L1'") == [([501, 502],)]
    before = len(linkit_standin.received)
    assert mart_and_load(linkit_standin, response_format="xml").outcomes["unchanged"] == 3
    assert len(linkit_standin.received) == before
