"""LinkIt! load of one district: diff the mart against the ledger, send, journal, fold.

The diff is SQL (``mart_linkit_staff`` full-outer-joined to ``ledger_linkit`` on the account the
mart matched, ``account_code``): create, update (content hash or LocalCode changed), reactivate,
schools (assign/unassign), deactivate (never delete), keep (the person is still there but the mart
rejected their row: their account is left as it is, not deactivated), unchanged. An unchanged
district sends nothing but its reads of the warehouse.

Creates are not idempotent. Before each create the journal gets an *intent* line; the ledger
remembers an intent that never completed as ``pending``, and the next run looks that person up by
LocalCode before creating again. A create answered ``Result: ERROR`` because the UserName or
LocalCode exists (an account made by hand, a lost ledger) is resolved the same way: look up,
adopt, then bring the adopted account to the desired state. An account found only by UserName with
another LocalCode belongs to someone else and is reported, never taken over.

The warehouse is opened twice, briefly (plan; fold), never while requests are in flight.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from staff_pipeline import warehouse
from staff_pipeline.clients.linkit import LinkItClient, LinkItError
from staff_pipeline.http import ApiError, worth_retrying
from staff_pipeline.loads.holds import Limit, held_message, over_limits
from staff_pipeline.loads.journal import Journal
from staff_pipeline.loads.linkit_ledger import LEDGER, TARGET, fold_journal
from staff_pipeline.loads.linkit_mart import FIELD_OF, LEAVING_RULES, MART, REJECTED, ensure_tables
from staff_pipeline.loads.workers import run_workers

log = logging.getLogger(__name__)


PLAN_SQL = f"""
SELECT coalesce(m.local_code, l.local_code) AS local_code, coalesce(m.person_id, l.person_id) AS person_id,
       m.user_name, m.role, m.first_name, m.last_name, m.email_address, m.phone_number,
       m.local_code AS m_code,
       m.state_code, m.school_ids, m.content_hash, l.user_id,
       coalesce(l.school_ids, []::BIGINT[]) AS ledger_school_ids,
       CASE WHEN m.local_code <> l.local_code THEN l.local_code END AS replaces,
       m.blocked_user_id, m.blocked_person_id,
       CASE
         WHEN m.person_id IS NULL THEN CASE
           WHEN l.status NOT IN ('active', 'pending') THEN NULL
           -- the holder is leaving: deactivated, even if a row of theirs also broke a rule
           WHEN EXISTS (SELECT 1 FROM {REJECTED} r WHERE r.district = $district
                        AND r.person_id = l.person_id AND r.rule = 'leaving') THEN 'deactivate'
           WHEN EXISTS (SELECT 1 FROM {REJECTED} r WHERE r.district = $district
                        AND (r.person_id = l.person_id OR r.local_code = l.local_code)
                        AND r.rule NOT IN {LEAVING_RULES}) THEN 'keep'
           ELSE 'deactivate' END
         WHEN l.local_code IS NULL OR l.status IN ('pending', 'absent') THEN 'create'
         WHEN l.status = 'inactive' THEN 'reactivate'
         WHEN m.content_hash IS DISTINCT FROM l.content_hash OR m.local_code <> l.local_code THEN 'update'
         WHEN list_sort(m.school_ids) <> list_sort(coalesce(l.school_ids, []::BIGINT[])) THEN 'schools'
         ELSE 'unchanged'
       END AS action,
       coalesce(l.status = 'pending', false) OR m.blocked_user_id IS NOT NULL AS lookup_first
FROM (SELECT * FROM {MART} WHERE district = $district) m
FULL OUTER JOIN (SELECT * FROM {LEDGER} WHERE district = $district) l ON l.local_code = m.account_code
"""


@dataclass
class LoadReport:
    """What a district's load did (or, in a dry run, would do)."""

    district: str
    dry_run: bool
    plan: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    unanswered: int = 0  # of the failures: no answer, 429 or 5xx (another try may pass)
    held: str = ""
    requests: Counter = field(default_factory=Counter)
    preview: pd.DataFrame | None = None

    @property
    def write_requests(self) -> int:
        return sum(n for call, n in self.requests.items() if not call.startswith("GET"))


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    """The LinkIt fields of a desired account (Role and every limited field; None clears a value)."""
    out: dict[str, Any] = {"Role": row["role"]}
    for column, name in FIELD_OF.items():
        out[name] = row["m_code"] if column == "local_code" else row[column]
    return out


def _same(name: str, have: Any, want: Any) -> bool:
    if name == "Role":
        return str(have or "").upper() == str(want or "").upper()
    return (have or None) == (want or None)


class _Sender:
    """Sends one district's plan; every completed request becomes a journal line."""

    def __init__(self, client: LinkItClient, journal: Journal, run_id: str) -> None:
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self._seq = itertools.count()

    def _log(self, row: dict[str, Any], action: str, **entry: Any) -> None:
        self.journal.append(
            {
                "seq": next(self._seq),
                "run_id": self.run_id,
                "local_code": row["local_code"],
                "person_id": row["person_id"],
                "action": action,
                "replaces": row.get("replaces"),
                **entry,
            }
        )

    def _done(
        self, row: dict[str, Any], action: str, user: dict[str, Any] | None, content_hash: Any = None
    ) -> None:
        if user is None:
            state: dict[str, Any] = {"user_id": None, "status": "absent"}
        else:
            state = {
                "user_id": user["UserID"],
                "user_name": user["UserName"],
                "role": user["Role"].upper(),
                "school_ids": sorted(s["SchoolID"] for s in user["Schools"]),
                "status": user["Status"].lower(),
            }
        self._log(row, action, kind="done", ok=True, content_hash=content_hash, **state)

    def process(self, row: dict[str, Any]) -> tuple[str, str | None]:
        """Bring one account to its desired state; returns (outcome, error text or None). A failure
        is ``unanswered`` when the API gave no answer (or 429/5xx), else ``failed``."""
        action = row["action"]
        try:
            if action == "create":
                return self._create(row), None
            if action == "deactivate":
                return self._deactivate(row), None
            schools = [{"SchoolID": s} for s in row["ledger_school_ids"]]
            if action in ("update", "reactivate"):
                fields = _fields(row) | ({"Status": "Active"} if action == "reactivate" else {})
                user = self.client.update_staff(row["user_id"], fields)
                self._done(row, action, user, row["content_hash"])
                schools = user["Schools"]
            self._sync_schools(row, row["user_id"], schools)
            return ("reactivated" if action == "reactivate" else "updated"), None
        except ApiError as exc:
            error = exc.error if isinstance(exc, LinkItError) and exc.error else str(exc)
            # the journal keeps the request with the API's text; the run's counts group by the text
            failed = getattr(exc, "journal_action", action)  # a school call names itself
            self._log(row, failed, kind="done", ok=False, http_status=exc.status, error=str(exc))
            # LinkIt's own refusal (Result ERROR) is an answer; no answer, 429 or 5xx may pass
            return (
                "failed" if isinstance(exc, LinkItError) or not worth_retrying(exc.status) else "unanswered"
            ), error

    def _lookup(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The account holding this LocalCode; an account holding only the UserName is someone else's,
        and so is the deactivated account of another person still holding the LocalCode."""
        found = self.client.find_staff(local_code=row["local_code"])
        if found and found[0]["UserID"] == row.get("blocked_user_id"):
            error = (
                f"LocalCode {row['local_code']} belongs to the deactivated LinkIt account "
                f"{found[0]['UserID']} of person {row['blocked_person_id']}; not handed to person "
                f"{row['person_id']} (give that account another LocalCode in LinkIt first)"
            )
            raise LinkItError(error, error=error)
        if found:
            return found[0]
        if row.get("user_name") and (other := self.client.find_staff(username=row["user_name"])):
            # remembered (linkit_ledger.FOREIGN): the next mart names this person with the next suffix
            holder = other[0]
            self._log(row, "create", kind="foreign", user_id=holder["UserID"], user_name=holder["UserName"])
            error = (
                f"UserName {row['user_name']} belongs to another LinkIt account "
                f"(LocalCode {holder['LocalCode']}); not adopted, the next run takes the next free name"
            )
            raise LinkItError(error, error=error)
        return None

    def _create(self, row: dict[str, Any]) -> str:
        user = self._lookup(row) if row["lookup_first"] else None
        if user is None:
            fields = _fields(row)
            if row["school_ids"]:
                fields["SchoolID"] = row["school_ids"][0]
            self._log(row, "create", kind="intent")
            try:
                user = self.client.create_staff(fields)
            except LinkItError as exc:
                if not exc.already_exists or (user := self._lookup(row)) is None:
                    raise
            else:
                self._done(row, "create", user, row["content_hash"])
                self._sync_schools(row, user["UserID"], user["Schools"])
                return "created"
        self._converge(row, user)
        return "adopted"

    def _converge(self, row: dict[str, Any], user: dict[str, Any]) -> None:
        """Make an adopted account match the mart (fields, status, schools)."""
        diff = {
            name: value
            for name, value in _fields(row).items()
            if not (name == "LastName" and value is None) and not _same(name, user.get(name), value)
        }
        if user["Status"].lower() != "active":
            diff["Status"] = "Active"
        if diff:
            user = self.client.update_staff(user["UserID"], diff)
        self._done(row, "adopt", user, row["content_hash"])
        self._sync_schools(row, user["UserID"], user["Schools"])

    def _sync_schools(self, row: dict[str, Any], user_id: int, current: list[dict[str, Any]]) -> None:
        """Assign and unassign schools; a refused call is journalled (by :meth:`process`) as itself,
        not as the create or update before it (that one succeeded, and the ledger says so)."""
        have = {s["SchoolID"] for s in current}
        want = set(row["school_ids"] if row["school_ids"] is not None else [])
        calls = [("assign", s, self.client.assign_school) for s in sorted(want - have)]
        calls += [("unassign", s, self.client.unassign_school) for s in sorted(have - want)]
        for action, school, call in calls:
            try:
                user = call(user_id, school)
            except ApiError as exc:
                exc.journal_action = action  # type: ignore[attr-defined]
                raise
            self._done(row, action, user)

    def _deactivate(self, row: dict[str, Any]) -> str:
        user_id = row["user_id"]
        if user_id is None or pd.isna(user_id):  # a create whose outcome was never recorded
            user = self._lookup(row)
            if user is None:
                self._done(row, "lookup", None)
                return "unchanged"
            user_id = user["UserID"]
        self._done(row, "deactivate", self.client.update_staff(int(user_id), {"Status": "Inactive"}))
        return "deactivated"


# -- warehouse side ------------------------------------------------------------------------


def plan_district(con: duckdb.DuckDBPyConnection, district: str) -> tuple[pd.DataFrame, int]:
    """The actions that differ from the ledger, and the district's active account count."""
    ensure_tables(con)
    params = {"district": district}
    plan = con.execute(
        f"SELECT * FROM ({PLAN_SQL}) WHERE action IS NOT NULL AND action <> 'unchanged' ORDER BY local_code",
        params,
    ).df()
    unchanged = con.execute(
        f"SELECT count(*) FROM ({PLAN_SQL}) WHERE action = 'unchanged'", params
    ).fetchone()[0]
    active = con.execute(
        f"SELECT count(*) FROM {LEDGER} WHERE district = $district AND status = 'active'", params
    ).fetchone()[0]
    plan.attrs["unchanged"] = int(unchanged)
    return plan, int(active)


def _rows(plan: pd.DataFrame, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """The plan's rows as dicts, made a chunk at a time (not a million dicts at once)."""
    for start in range(0, len(plan), chunk):
        yield from _chunk_rows(plan.iloc[start : start + chunk])


def _chunk_rows(plan: pd.DataFrame) -> Iterator[dict[str, Any]]:
    for record in plan.to_dict("records"):
        # pandas 3 holds a missing text value as NaN, which would go out as JSON NaN: send null.
        row = {key: None if _is_na(value) else value for key, value in record.items()}
        for key in ("school_ids", "ledger_school_ids"):
            value = row.get(key)
            row[key] = [int(v) for v in value] if value is not None and not _is_na(value) else []
        yield row


def _is_na(value: Any) -> bool:
    return isinstance(value, float) and pd.isna(value)


def _send_all(sender: _Sender, rows: Iterator[dict[str, Any]], concurrency: int, report: LoadReport) -> None:
    """``concurrency`` threads take the next account from ``rows`` until it is spent."""
    tally = threading.Lock()

    def handle(row: dict[str, Any]) -> None:
        outcome, error = sender.process(row)
        with tally:
            if outcome == "unanswered":
                report.unanswered += 1
                outcome = "failed"
            report.outcomes[outcome] += 1
            if error:
                report.failures[error] += 1

    run_workers(rows, handle, concurrency, "linkit")


def load_district(
    district: str,
    client: LinkItClient,
    *,
    limits: Mapping[str, Limit],
    run_id: str,
    confirmed: Collection[str] = (),
    dry_run: bool = False,
    concurrency: int = 8,
    journal: Journal | None = None,
    connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]] = warehouse.connect,
) -> LoadReport:
    """Plan, hold the district if an action is over its limit and not ``confirmed``
    (:mod:`staff_pipeline.loads.holds`, against the active accounts; creates count new and
    reactivated accounts), send, and fold the journal into the ledger."""
    journal = journal or Journal(TARGET, district)
    report = LoadReport(district, dry_run)
    with connect() as con:
        fold_journal(con, journal, district)  # a killed run's completed requests come first
        plan, active = plan_district(con, district)
    report.plan = Counter(plan["action"])
    report.outcomes["unchanged"] = plan.attrs["unchanged"]
    if report.plan["keep"]:  # see mart_linkit_rejected for why: nothing is sent until it is fixed
        report.outcomes["kept"] = report.plan["keep"]
        plan = plan[plan["action"] != "keep"]
    report.preview = plan[["action", "local_code", "user_name", "role", "school_ids", "user_id"]].head(20)
    planned = {**report.plan, "create": report.plan["create"] + report.plan["reactivate"]}
    holds = over_limits(planned, active, limits, confirmed, "active accounts")
    if holds:
        report.held = held_message(holds)
        report.outcomes["held"] = len(plan)
        return report
    if dry_run:
        return report
    sender = _Sender(client, journal, run_id)
    try:
        _send_all(sender, _rows(plan), concurrency, report)
    finally:
        report.requests = Counter(client.requests)
        with connect() as con:
            fold_journal(con, journal, district)
    for error, count in report.failures.most_common(5):
        log.warning("LinkIt %s: %d account(s) failed: %s", district, count, error)
    return report
