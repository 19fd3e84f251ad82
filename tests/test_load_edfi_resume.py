"""A load that dies mid-way resends nothing that succeeded; tokens are reused and refreshed on expiry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiClient
from staff_pipeline.loads.edfi import fold_journal
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CONTACTS
from staff_pipeline.loads.journal import Journal
from staff_pipeline.settings import REPO_ROOT
from staff_pipeline.standins.common import Knobs
from tests.fixtures_edfi import LEA_A, load_lea, one_school_world

PEOPLE = 60


class Killed(Exception):
    pass


def _key(resource: str, body: dict) -> tuple:
    return resource, body["staffReference"]["staffUniqueId"], body.get("electronicMailAddress")


def _posted_identities(standin) -> list[tuple]:
    """Successful POSTs (a request torn by the kill is answered 400 and does not count)."""
    return [
        _key(r.path.rsplit("/", 1)[1], json.loads(r.body))
        for r in standin.requests_to("POST", "/data/")
        if r.status in (200, 201)
    ]


def test_interrupted_run_folds_what_succeeded_and_the_rerun_sends_only_the_rest(edfi_standin, lea_a_client):
    one_school_world(edfi_standin, PEOPLE, "k")
    seen = []

    def die_after_25(entry: dict) -> None:
        seen.append(entry)
        if len(seen) == 25:
            raise Killed

    with pytest.raises(Killed):
        load_lea(lea_a_client, LEA_A, on_entry=die_after_25)
    first = _posted_identities(edfi_standin)
    assert 25 <= len(first) < PEOPLE  # stopped within a few requests of the interruption
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM ledger_edfi").fetchall()[0][0] == len(first)

    reports = load_lea(lea_a_client, LEA_A)
    assert reports[ASSIGNMENTS].created == PEOPLE - len(first)
    everything = _posted_identities(edfi_standin)
    assert len(everything) == len(set(everything)) == 2 * PEOPLE  # each record sent exactly once


@pytest.fixture
def edfi_knobs() -> Knobs:
    return Knobs(latency=0.01)


def test_killed_process_leaves_a_journal_and_the_next_run_resends_no_success(edfi_standin):
    one_school_world(edfi_standin, PEOPLE, "k")
    script = (
        "import sys\n"
        "from staff_pipeline.clients.edfi import EdFiClient\n"
        "from tests.fixtures_edfi import LEA_A, load_lea\n"
        "load_lea(EdFiClient(sys.argv[1], 'lea-100001', 'secret-a'), LEA_A)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, edfi_standin.url], cwd=REPO_ROOT, env={**os.environ}
    )
    journal = Journal("edfi", str(LEA_A))
    deadline = time.monotonic() + 60
    try:
        while len(journal.entries()) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    journaled = {_key(e["resource"], json.loads(e["body"])) for e in journal.entries() if e["ok"]}
    assert 20 <= len(journaled) < 2 * PEOPLE
    before = len(_posted_identities(edfi_standin))

    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a")
    reports = load_lea(client, LEA_A)
    assert not journal.path.exists()  # folded into the ledger and cleared
    resent = set(_posted_identities(edfi_standin)[before:]) & journaled
    assert resent == set()
    assert len(edfi_standin.records(ASSIGNMENTS)) == PEOPLE and len(edfi_standin.records(CONTACTS)) == PEOPLE
    assert not any(r.failed for r in reports.values())


def test_journal_skips_a_line_torn_by_a_kill_and_loads_into_duckdb(tmp_path):
    journal = Journal("edfi", "1", root=tmp_path)
    journal.append({"identity_hash": "a", "status": 201})
    journal.append({"identity_hash": "b", "status": 409, "extra": [1]})
    journal.close()
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"journaled_at": "2026-01-01T00:00:00+00:00", "identity_ha')
    assert [e["identity_hash"] for e in journal.entries()] == ["a", "b"]
    with warehouse.connect() as con:
        assert journal.to_table(con, "j", {"identity_hash": "VARCHAR", "status": "INTEGER"}) == 2
        assert con.execute("SELECT identity_hash, status FROM j ORDER BY 1").fetchall() == [
            ("a", 201),
            ("b", 409),
        ]
    journal.clear()
    assert journal.entries() == []


def test_a_fold_repeated_after_a_kill_adds_no_second_event(tmp_path):
    """Killed between the fold's commit and the journal's removal: the next run folds the same
    journal again, and every request is still one row of load_events (and of the ledger)."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    journal = Journal("edfi", "100001", root=tmp_path / "journal")
    for i in range(3):
        journal.append(
            {"run_id": "r1", "resource": ASSIGNMENTS, "action": "create", "identity_hash": f"h{i}",
             "content_hash": f"c{i}", "resource_id": f"id{i}", "body": "{}", "status": 201, "ok": True,
             "message": ""}
        )  # fmt: skip
    journal.close()
    kept = journal.path.read_bytes()
    assert fold_journal(con, journal, 100001) == 3
    journal.path.write_bytes(kept)  # the kill: committed, the journal not yet removed
    assert fold_journal(con, journal, 100001) == 3
    assert con.execute("SELECT count(*) FROM load_events").fetchone()[0] == 3
    assert con.execute("SELECT count(*) FROM ledger_edfi").fetchone()[0] == 3
