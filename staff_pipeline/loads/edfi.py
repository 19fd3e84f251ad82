"""Send one LEA's Ed-Fi difference: plan in SQL, send concurrently, journal, fold into the ledger.

``ledger_edfi`` holds what the API has for each identity (content hash, resource id). A run folds
any journal left by a killed run into it first, diffs the mart against it (POST new and changed,
DELETE what left; a key change is both, POSTs first, and the old record is only deleted once its
replacement's POST succeeded), sends with a few threads sharing one token, journals each completed
request, and folds again at the end. A token the API refuses stops the LEA's run at once. The
warehouse is only opened for the short plan and fold steps, so other LEAs' runs are not blocked
while requests are in flight.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import duckdb

from staff_pipeline.clients.edfi import EdFiAnswer, EdFiClient, TokenError
from staff_pipeline.http import ApiError
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CONTACTS
from staff_pipeline.loads.holds import Limit, held_message, over_limits
from staff_pipeline.loads.journal import Journal, append_events, ensure_events
from staff_pipeline.loads.workers import run_workers

ConnectFn = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
RESOURCES = (ASSIGNMENTS, CONTACTS)  # contacts need their assignments first
TARGET = "edfi"

LEDGER_DDL = """CREATE TABLE IF NOT EXISTS ledger_edfi (lea_id BIGINT, resource VARCHAR,
    identity_hash VARCHAR, content_hash VARCHAR, resource_id VARCHAR, body VARCHAR, http_status INTEGER,
    run_id VARCHAR, sent_at TIMESTAMPTZ)"""
JOURNAL_COLUMNS = {
    "run_id": "VARCHAR",
    "resource": "VARCHAR",
    "action": "VARCHAR",
    "identity_hash": "VARCHAR",
    "content_hash": "VARCHAR",
    "resource_id": "VARCHAR",
    "body": "VARCHAR",
    "status": "INTEGER",
    "ok": "BOOLEAN",
    "message": "VARCHAR",
}
# Query parameters that find a record's id by its identity when the ledger has none.
IDENTITY_QUERY = {
    ASSIGNMENTS: ("staffUniqueId", "educationOrganizationId", "staffClassificationDescriptor", "beginDate"),
    CONTACTS: ("staffUniqueId", "educationOrganizationId", "contactTitle"),
}
# What pairs a key change's new record with the old one: the same person at the same education
# organisation (for an assignment the school, for a contact the edorg it is placed on).
_PERSON = "json_extract_string(body, '$.staffReference.staffUniqueId')"
_PAIR = f"""{_PERSON} || '|'
    || json_extract_string(body, '$.educationOrganizationReference.educationOrganizationId')"""
WITHHELD_REASON = "DELETE not sent: the key change's new record failed to POST, so the old record stays"
MOVE_WITHHELD_REASON = (
    "DELETE not sent: the person's record at another education organisation failed to POST, and this "
    "was their last record"
)
# A key change the API made in place (see _ready_deletes): journaled, never sent; 0 = no request.
SUPERSEDED_MESSAGE = (
    "DELETE not sent: the new record's POST updated this same record (identity matched without case)"
)


@dataclass(frozen=True, slots=True)  # one per record: a million at scale
class PlanItem:
    resource: str
    action: str  # create | update | delete
    identity_hash: str
    content_hash: str | None
    body: str
    resource_id: str | None
    # For a delete caused by a key change: the identity hashes of its replacements (same resource),
    # whose POSTs must all succeed before the old record may go. Empty for a plain delete.
    replaced_by: tuple[str, ...] = ()
    # For a delete: its record id is also the id of a record that stays (an earlier run's key change
    # that the API made in place, see _ready_deletes), so there is nothing to send.
    shares_kept_id: bool = False
    # For a delete: the person (staffUniqueId), the identity hashes of their creates of this resource
    # at any education organisation (a move to another school is a key change too: WISEdata inserts
    # the new record, then deletes the old), and whether a record of theirs stays as it is.
    person: str | None = None
    person_creates: tuple[str, ...] = ()
    person_keeps: bool = False


@dataclass
class Plan:
    lea_id: int
    items: list[PlanItem]
    desired: dict[str, int]
    in_ledger: dict[str, int]  # records the LEA holds per resource, before this plan

    def counts(self) -> dict[str, int]:
        return dict(Counter(f"{i.resource}:{i.action}" for i in self.items))

    def sample(self, per_kind: int = 5) -> list[dict[str, str]]:
        """A few planned requests per resource and action, for the dry-run report."""
        seen: Counter[tuple[str, str]] = Counter()
        out = []
        for item in self.items:
            key = (item.resource, item.action)
            if seen[key] < per_kind:
                seen[key] += 1
                out.append({"resource": item.resource, "action": item.action, "body": item.body})
        return out


@dataclass
class LoadReport:
    lea_id: int
    resource: str
    planned: int = 0
    unchanged: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # "status message" -> count
    withheld: dict[str, int] = field(default_factory=dict)  # reason -> deletes not sent
    replaced_in_place: int = 0  # key changes the API took as updates of the old record
    held: str = ""

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def withheld_total(self) -> int:
        return sum(self.withheld.values())


@dataclass
class Sent:
    """What :func:`send_plan` did: one journal entry per request, the deletes it did not send, and the
    deletes it had no need to send (their record was updated in place)."""

    entries: list[dict[str, Any]]
    withheld: list[PlanItem]
    superseded: list[PlanItem] = field(default_factory=list)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(LEDGER_DDL)
    ensure_events(con)  # record_key: "<resource>/<identity hash>"


def fold_journal(con: duckdb.DuckDBPyConnection, journal: Journal, lea_id: int) -> int:
    """Apply completed requests to the ledger and log them as load events, then forget the journal.

    Idempotent: folding the same entries twice leaves the ledger as it was. Returns entries folded.
    """
    ensure_tables(con)
    count = journal.to_table(con, "_edfi_journal", JOURNAL_COLUMNS)
    if not count:
        journal.clear()
        return 0
    params = {"lea": int(lea_id)}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _edfi_done AS
            SELECT * FROM _edfi_journal WHERE ok
            QUALIFY row_number() OVER (PARTITION BY resource, identity_hash ORDER BY journaled_at DESC) = 1"""
        )
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _edfi_kept_ids AS
            SELECT l.resource, l.identity_hash, l.resource_id FROM ledger_edfi l
            JOIN _edfi_done d USING (resource, identity_hash) WHERE l.lea_id = $lea""",
            params,
        )
        con.execute(
            """DELETE FROM ledger_edfi WHERE lea_id = $lea AND (resource, identity_hash) IN
               (SELECT (resource, identity_hash) FROM _edfi_done)""",
            params,
        )
        con.execute(
            """INSERT INTO ledger_edfi
            SELECT $lea, d.resource, d.identity_hash, d.content_hash, coalesce(d.resource_id, k.resource_id),
                   d.body, d.status, d.run_id, d.journaled_at
            FROM _edfi_done d LEFT JOIN _edfi_kept_ids k USING (resource, identity_hash)
            WHERE d.action <> 'delete'""",
            params,
        )
        append_events(
            con,
            f"""SELECT run_id, '{TARGET}' AS target, $lea::VARCHAR AS partition_key,
                   resource || '/' || identity_hash AS record_key, action, ok, status AS http_status,
                   nullif(message, '') AS error, journaled_at AS event_at, resource_id AS target_id,
                   content_hash, CASE WHEN action = 'delete' OR NOT ok THEN body END AS body
            FROM _edfi_journal""",
            params,
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    journal.clear()
    return count


def make_plan(con: duckdb.DuckDBPyConnection, lea_id: int) -> Plan:
    """Diff the LEA's mart against its ledger: creates and updates (POST) first, then deletes.

    A delete that has creates of the same resource for the same person and education organisation
    is a key change: it carries their identity hashes (``replaced_by``) so that the old record is
    only deleted once its replacement is in the API (DESIGN: POST the new record, then DELETE the old).
    Every delete also carries its person's creates at any education organisation (``person_creates``)
    and whether a record of theirs stays (``person_keeps``), for a move to another school.
    """
    ensure_tables(con)
    params = {"lea": int(lea_id)}
    rows = con.execute(
        f"""WITH desired AS (
              SELECT '{ASSIGNMENTS}' AS resource, identity_hash, content_hash, body
              FROM mart_edfi_assignments WHERE lea_id = $lea
              UNION ALL
              SELECT '{CONTACTS}', identity_hash, content_hash, body
              FROM mart_edfi_contacts WHERE lea_id = $lea
            ), ledger AS (SELECT * FROM ledger_edfi WHERE lea_id = $lea),
            changes AS (
              SELECT d.resource, CASE WHEN l.identity_hash IS NULL THEN 'create' ELSE 'update' END AS action,
                     d.identity_hash, d.content_hash, d.body, l.resource_id
              FROM desired d LEFT JOIN ledger l USING (resource, identity_hash)
              WHERE l.identity_hash IS NULL OR l.content_hash IS DISTINCT FROM d.content_hash
            ), creates AS (  -- each create's keys read from its body once
              SELECT resource, identity_hash, {_PAIR} AS pair, {_PERSON} AS person
              FROM changes WHERE action = 'create'
            ), replacements AS (
              SELECT resource, pair, list(identity_hash ORDER BY identity_hash) AS hashes
              FROM creates GROUP BY ALL
            ), person_creates AS (
              SELECT resource, person, list(identity_hash ORDER BY identity_hash) AS hashes
              FROM creates GROUP BY ALL
            ), kept AS (SELECT * FROM ledger SEMI JOIN desired USING (resource, identity_hash)),
            kept_ids AS (  -- the ids of the records that stay (a row without one shares nothing)
              SELECT resource, resource_id FROM kept WHERE resource_id IS NOT NULL
            ), kept_people AS (SELECT DISTINCT resource, {_PERSON} AS person FROM kept)
            SELECT resource, action, identity_hash, content_hash, body, resource_id, []::VARCHAR[], false,
                   0 AS phase, NULL, []::VARCHAR[], false
            FROM changes
            UNION ALL
            SELECT l.resource, 'delete', l.identity_hash, NULL, l.body, l.resource_id,
                   coalesce(r.hashes, []::VARCHAR[]),
                   -- a tuple IN treats NULLs as equal: a row without an id is never a kept one
                   l.resource_id IS NOT NULL AND coalesce(
                       (l.resource, l.resource_id) IN (SELECT (resource, resource_id) FROM kept_ids), false),
                   1, l.person, coalesce(pc.hashes, []::VARCHAR[]), k.person IS NOT NULL
            FROM (SELECT *, {_PAIR} AS pair, {_PERSON} AS person
                  FROM ledger l ANTI JOIN desired d USING (resource, identity_hash)) l
            LEFT JOIN replacements r USING (resource, pair)
            LEFT JOIN person_creates pc USING (resource, person)
            LEFT JOIN kept_people k USING (resource, person)
            ORDER BY resource = '{CONTACTS}', phase, identity_hash""",
        params,
    ).fetchall()
    desired = dict(
        con.execute(
            f"""SELECT '{ASSIGNMENTS}', count(*) FROM mart_edfi_assignments WHERE lea_id = $lea
                UNION ALL SELECT '{CONTACTS}', count(*) FROM mart_edfi_contacts WHERE lea_id = $lea""",
            params,
        ).fetchall()
    )
    in_ledger = dict(
        con.execute(
            "SELECT resource, count(*) FROM ledger_edfi WHERE lea_id = $lea GROUP BY resource", params
        ).fetchall()
    )
    items = [
        PlanItem(*r[:6], tuple(r[6]), bool(r[7]), r[9], tuple(r[10]), bool(r[11]))  # r[8]: the phase
        for r in rows
    ]
    return Plan(int(lea_id), items, desired, in_ledger)


def _find_id(client: EdFiClient, item: PlanItem) -> str | None:
    body = json.loads(item.body)
    flat = {**body, **body["staffReference"], **body["educationOrganizationReference"]}
    found = client.find(item.resource, {name: flat[name] for name in IDENTITY_QUERY[item.resource]})
    return found[0]["id"] if found else None


def _send_one(client: EdFiClient, item: PlanItem, run_id: str) -> dict[str, Any]:
    """One request, answered as a journal entry; a request that never got an answer is status 0.

    A refused token is not one record's problem: it is raised, which stops the LEA's run.
    """
    try:
        if item.action == "delete":
            resource_id = item.resource_id or _find_id(client, item)
            answer = client.delete(item.resource, resource_id) if resource_id else EdFiAnswer(404)
            # 404: already gone, which is what we wanted, if the route itself exists
            gone = answer.status == 404 and (not resource_id or client.serves(item.resource))
            ok = answer.status == 204 or gone
            if answer.status == 404 and not gone:
                answer = dataclasses.replace(
                    answer,
                    message=f"DELETE answered 404 and so does GET {item.resource}: the data path is "
                    f"wrong, not the record gone; kept in the ledger ({answer.message})",
                )
        else:
            answer = client.upsert(item.resource, item.body)
            ok = answer.ok
    except TokenError:
        raise
    except ApiError as exc:
        answer, ok = EdFiAnswer(exc.status or 0, message=str(exc)), False
    return _entry(item, run_id, answer.status, ok, answer.message, answer.resource_id or item.resource_id)


def _entry(
    item: PlanItem, run_id: str, status: int, ok: bool, message: str, resource_id: str | None
) -> dict[str, Any]:
    """A journal entry: the item and what became of it (``JOURNAL_COLUMNS``)."""
    return {
        "run_id": run_id,
        "resource": item.resource,
        "action": item.action,
        "identity_hash": item.identity_hash,
        "content_hash": item.content_hash,
        "resource_id": resource_id,
        "body": item.body,
        "status": status,
        "ok": ok,
        "message": message,
    }


def send_plan(
    client: EdFiClient,
    items: Iterable[PlanItem],
    journal: Journal,
    *,
    run_id: str,
    max_concurrency: int,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
) -> Sent:
    """Send ``items`` (all POSTs before any DELETE), journaling each answer in the thread that got it.

    ``max_concurrency`` threads take the next item from a shared iterator (no futures, no queue:
    memory stays flat and the per-request overhead small). ``on_entry`` is called for each answer,
    one call at a time. When anything raises (``on_entry`` included), every thread stops after its
    request in flight and the first error is raised here, so an interrupted run stops within a few
    requests; the journal holds every answer received. A key change's DELETE is only sent when all
    its replacements' POSTs succeeded; the others are returned as withheld (nothing is sent for them).
    """
    items = list(items)
    entries: list[dict[str, Any]] = []
    posts = [i for i in items if i.action != "delete"]
    if posts:
        _send_phase(client, posts, journal, run_id, max_concurrency, entries, on_entry)
    deletes, superseded, withheld = _ready_deletes([i for i in items if i.action == "delete"], entries)
    for item in superseded:  # nothing is sent; the old identity leaves the ledger (status 0: no request)
        journal.append(_entry(item, run_id, 0, True, SUPERSEDED_MESSAGE, item.resource_id))
    if deletes:
        _send_phase(client, deletes, journal, run_id, max_concurrency, entries, on_entry)
    return Sent(entries, withheld, superseded)


def _ready_deletes(
    deletes: list[PlanItem], entries: list[dict[str, Any]]
) -> tuple[list[PlanItem], list[PlanItem], list[PlanItem]]:
    """Split deletes into those to send, those already done in place, and those whose replacement is
    not in the API.

    Sending the DELETE of a key change whose new record was refused would leave the person with no
    record at all; kept, the old record stays in the API and the ledger, and the next run tries again.
    An ODS that compares identities without regard to case (SQL Server's default collation) takes a
    replacement differing only in case ("Teacher" to "TEACHER") as an update of the old record and
    answers with its id: deleting that id would delete the replacement, so it is not sent.
    """
    posts = [e for e in entries if e["ok"] and e["action"] != "delete"]
    posted = {(e["resource"], e["identity_hash"]) for e in posts}
    posted_ids = {(e["resource"], e["resource_id"]) for e in posts if e["resource_id"]}
    ready: list[PlanItem] = []
    superseded: list[PlanItem] = []
    withheld: list[PlanItem] = []
    for item in deletes:
        if item.shares_kept_id or (item.replaced_by and (item.resource, item.resource_id) in posted_ids):
            superseded.append(item)
        elif all((item.resource, h) in posted for h in item.replaced_by):
            ready.append(item)
        else:
            withheld.append(item)
    # A move: the person's new records elsewhere all failed, and nothing else of theirs stays (kept,
    # posted, or an old record withheld above): their last record is not deleted either.
    kept_by_withheld = {(i.resource, i.person) for i in withheld}

    def last_record_of_a_move(i: PlanItem) -> bool:
        return (
            bool(i.person_creates)
            and not i.person_keeps
            and not any((i.resource, h) in posted for h in i.person_creates)
            and (i.resource, i.person) not in kept_by_withheld
        )

    sendable: list[PlanItem] = []
    for item in ready:
        (withheld if last_record_of_a_move(item) else sendable).append(item)
    return sendable, superseded, withheld


def _send_phase(
    client: EdFiClient,
    phase: list[PlanItem],
    journal: Journal,
    run_id: str,
    max_concurrency: int,
    entries: list[dict[str, Any]],
    on_entry: Callable[[dict[str, Any]], None] | None,
) -> None:
    report = threading.Lock()

    def handle(item: PlanItem) -> None:
        entry = _send_one(client, item, run_id)
        journal.append(entry)
        with report:
            entries.append(entry)
            if on_entry is not None:
                on_entry(entry)

    run_workers(iter(phase), handle, min(max_concurrency, len(phase)), "edfi")


def summarise(
    lea_id: int,
    resource: str,
    plan: Plan,
    entries: list[dict[str, Any]],
    withheld: Iterable[PlanItem] = (),
    superseded: Iterable[PlanItem] = (),
) -> LoadReport:
    report = LoadReport(lea_id, resource)
    report.planned = sum(i.resource == resource for i in plan.items)
    changed = sum(i.resource == resource and i.action != "delete" for i in plan.items)
    report.unchanged = plan.desired.get(resource, 0) - changed
    report.sent = len(entries)
    failed: Counter[str] = Counter()
    for e in entries:
        if not e["ok"]:
            failed[f"{e['status']} {e['message']}"[:300]] += 1
        elif e["action"] == "delete":
            report.deleted += 1
        elif e["status"] == 201:
            report.created += 1
        else:
            report.updated += 1
    report.failed = dict(failed)
    # a withheld key change has replacements of its own; a withheld move has none (_ready_deletes)
    report.withheld = dict(
        Counter(WITHHELD_REASON if i.replaced_by else MOVE_WITHHELD_REASON for i in withheld)
    )
    report.replaced_in_place = sum(1 for _ in superseded)
    return report


def load_resource(
    connect: ConnectFn,
    client: EdFiClient,
    lea_id: int,
    resource: str,
    *,
    run_id: str,
    max_concurrency: int,
    limits: Mapping[str, Limit],
    confirmed: Collection[str] = (),
    dry_run: bool = False,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[LoadReport, Plan]:
    """Bring one resource of one LEA to the mart's state; returns the report and the whole LEA's plan.

    The per-action ``limits`` (:mod:`staff_pipeline.loads.holds`) apply to each resource's plan
    against the records the ledger holds of it, and one resource over a limit holds every request of
    the LEA until someone confirms the action (``confirmed``): both resources' loads reach the same
    decision, whichever runs first (the first one's sent requests leave nothing of its own planned).
    Whatever happens while sending, the completed requests are folded into the ledger before
    returning or raising.
    """
    journal = Journal(TARGET, str(lea_id))
    with connect() as con:
        fold_journal(con, journal, lea_id)
        plan = make_plan(con, lea_id)
    holds = [
        hold
        for res in RESOURCES
        for hold in over_limits(
            Counter(i.action for i in plan.items if i.resource == res),
            plan.in_ledger.get(res, 0),
            limits,
            confirmed,
            f"{res} records",
        )
    ]
    if dry_run or holds:
        report = summarise(lea_id, resource, plan, [])
        # a dry run also says whether the real run would be held, and by what
        parts = (["dry run: nothing sent"] if dry_run else []) + ([held_message(holds)] if holds else [])
        report.held = "; ".join(parts)
        return report, plan
    try:
        sent = send_plan(
            client,
            (i for i in plan.items if i.resource == resource),
            journal,
            run_id=run_id,
            max_concurrency=max_concurrency,
            on_entry=on_entry,
        )
    finally:
        if journal.path.exists():  # nothing sent, nothing to fold: spare the warehouse lock
            with connect() as con:
                fold_journal(con, journal, lea_id)
    return summarise(lea_id, resource, plan, sent.entries, sent.withheld, sent.superseded), plan
