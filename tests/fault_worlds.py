"""Rosters, loads and end-state checks for the fault-injection tests.

A "world" is a conformed model (written with the per-target fixtures' writers) for one night; the
checks read the stand-in's records back over its in-process view and compare them with the mart (the
desired state) and with the ledger (what the pipeline believes it sent).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import date
from typing import Any

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiResource
from staff_pipeline.clients.linkit import LinkItClient, LinkItResource
from staff_pipeline.http import RetryPolicy
from staff_pipeline.loads.edfi import RESOURCES
from staff_pipeline.loads.linkit import LoadReport, load_district
from staff_pipeline.loads.linkit_mart import build_mart
from staff_pipeline.standins.edfi import EdFiStandIn
from staff_pipeline.standins.linkit import LinkItStandIn
from tests.fixtures_edfi import LEA_A, LEA_B, SCHOOL_A1, SCHOOL_A2, SCHOOL_B1, Conformed, load_lea
from tests.fixtures_linkit import assignment, contact, staff_row, write_conformed

MART_TABLES = ("mart_edfi_assignments", "mart_edfi_contacts")  # in RESOURCES order
# With ~25% of calls failing, 8 tries leave about 1 request in 65,000 failed for good.
FAST = RetryPolicy(attempts=8, backoff_base=0.002, backoff_max=0.02)


def wiseid(i: int) -> str:
    return f"{2000000000 + i}"


def edfi_world(standin: EdFiStandIn | None, people: int, night: int) -> Conformed:
    """Night 1: everyone; night 2: every 10th left, every 7th changed a non-key field, every 11th a key.

    ``standin`` (when given) gets each WISEid registered, as the state's WISEid system would hold it.
    """
    world = Conformed()
    for i in range(people):
        if standin is not None:
            standin.add_staff(None, wiseid(i))
        if night == 2 and i % 10 == 0:
            continue
        pid = f"p{i}"
        lea, school = (LEA_A, SCHOOL_A1 if i % 2 else SCHOOL_A2) if i % 3 else (LEA_B, SCHOOL_B1)
        changed = night == 2
        world.person(pid, wiseid(i))
        world.assign(
            pid,
            lea,
            school,
            begin=date(2025, 9, 1) if changed and i % 11 == 0 else date(2025, 8, 15),
            title="Lead Teacher" if changed and i % 7 == 0 else "Teacher",
        )
        world.email(pid, lea, school, f"p{i}@example.org")
        if i % 4 == 0:
            world.email(pid, lea, school, f"p{i}.alt@example.org", primary=False)
    return world


def _strip(record: dict[str, Any]) -> str:
    """A server record without its server-side fields, as canonical JSON."""
    kept = {k: v for k, v in record.items() if k != "id" and not k.startswith("_")}
    return json.dumps(kept, sort_keys=True)


def edfi_state(standin: EdFiStandIn) -> dict[str, list[str]]:
    """What the API holds, per resource (sorted canonical JSON, duplicates kept)."""
    return {resource: sorted(_strip(r) for r in standin.records(resource)) for resource in RESOURCES}


def edfi_desired() -> dict[str, list[str]]:
    """The marts' bodies, per resource, in the same canonical form."""
    with warehouse.connect() as con:
        return {
            resource: sorted(
                json.dumps(json.loads(body), sort_keys=True)
                for (body,) in con.execute(f"SELECT body FROM {table}").fetchall()
            )
            for resource, table in zip(RESOURCES, MART_TABLES, strict=True)
        }


def edfi_ledger_matches_server(standin: EdFiStandIn) -> dict[tuple[str, str], tuple[set, set]]:
    """Per resource: (ledger's (resource_id, body), server's (id, body)) where they differ."""
    ids = {resource: {(str(r["id"]), _strip(r)) for r in standin.records(resource)} for resource in RESOURCES}
    with warehouse.connect() as con:
        rows = con.execute("SELECT resource, resource_id, body FROM ledger_edfi").fetchall()
    ledger: dict[str, set] = {resource: set() for resource in RESOURCES}
    for resource, resource_id, body in rows:
        ledger[resource].add((resource_id, json.dumps(json.loads(body), sort_keys=True)))
    return {(r, "ledger vs API"): (ledger[r], ids[r]) for r in RESOURCES if ledger[r] != ids[r]}


# -- LinkIt -------------------------------------------------------------------------------------------
DISTRICT = "lakeview"


def linkit_world(people: int, night: int) -> None:
    """Write one night's conformed model for lakeview: night 2 has leavers, movers and renamed people."""
    staff, assignments, contacts = [], [], []
    for i in range(people):
        if night == 2 and i % 10 == 0:
            continue
        pid = f"{i:04d}"
        first = "Renamed" if night == 2 and i % 7 == 0 else "Ann"
        staff.append(staff_row(pid, f"LC{pid}", first_name=first, primary_email=f"user.{pid}@example.org"))
        school = 502 if night == 2 and i % 5 == 0 else 501
        assignments.append(assignment(pid, DISTRICT, school))
        if i % 6 == 0:
            assignments.append(assignment(pid, DISTRICT, 502 if school == 501 else 501))
        contacts.append(contact(pid, f"user.{pid}@example.org"))
    write_conformed(staff, assignments, contacts)


def linkit_problems(standin: LinkItStandIn) -> list[str]:
    """Every way the district's accounts differ from the mart and the ledger (empty when all is well)."""
    users = standin.users(DISTRICT)
    problems = []
    by_code: dict[str, list[dict]] = {}
    for user in users:
        by_code.setdefault(user["LocalCode"], []).append(user)
    problems += [f"{code}: {len(found)} accounts" for code, found in by_code.items() if len(found) > 1]
    names = [u["UserName"] for u in users]
    problems += [f"UserName {n} held twice" for n in set(names) if names.count(n) > 1]
    with warehouse.connect() as con:
        mart = con.execute(
            "SELECT local_code, user_name, upper(role), first_name, school_ids FROM mart_linkit_staff "
            "WHERE district = ?",
            [DISTRICT],
        ).fetchall()
        ledger = con.execute(
            "SELECT local_code, user_id, status, list_sort(school_ids) FROM ledger_linkit WHERE district = ?",
            [DISTRICT],
        ).fetchall()
    wanted = {row[0] for row in mart}
    for code, user_name, role, first, schools in mart:
        (user,) = by_code.get(code) or [None]
        if user is None:
            problems.append(f"{code}: no account")
            continue
        have = (user["UserName"], user["Role"].upper(), user["FirstName"], _schools(user), user["Status"])
        want = (user_name, role, first, sorted(schools), "Active")
        if have != want:
            problems.append(f"{code}: API has {have}, mart wants {want}")
    for code, found in by_code.items():
        if code not in wanted and found[0]["Status"] != "Inactive":
            problems.append(f"{code}: left the source but is {found[0]['Status']}")
    for code, user_id, status, schools in ledger:
        (user,) = by_code.get(code) or [None]
        server = None if user is None else (user["UserID"], user["Status"].lower(), _schools(user))
        if server != (user_id, status, list(schools or [])):
            problems.append(f"{code}: ledger says {(user_id, status, schools)}, API has {server}")
    if len(ledger) != len(by_code):
        problems.append(f"ledger holds {len(ledger)} accounts, API {len(by_code)}")
    return problems


def _schools(user: dict[str, Any]) -> list[int]:
    return sorted(s["SchoolID"] for s in user["Schools"] or [])


# -- the loads, as the assets run them (also run in a forked process that the tests kill) ----------
def edfi_load(lea: int, on_entry: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Build the LEA's mart and load both resources (as the two assets do), with fast retries."""
    client = EdFiResource(base_url=os.environ["STAFF_EDFI_URL"]).client_for(lea, pool_size=4)
    client.policy = FAST
    try:
        return load_lea(client, lea, on_entry=on_entry)
    finally:
        client.close()


def linkit_load(district: str) -> LoadReport:
    """Build the district's mart and load it, with fast retries."""
    access, private = LinkItResource(base_url=os.environ["STAFF_LINKIT_URL"]).keys_for(district)
    client = LinkItClient(os.environ["STAFF_LINKIT_URL"], access, private, policy=FAST)
    try:
        with warehouse.connect() as con:
            build_mart(con, district, "email_local_part", "fault-run")
        return load_district(district, client, limits={}, run_id="fault-run", concurrency=4)
    finally:
        client.close()
