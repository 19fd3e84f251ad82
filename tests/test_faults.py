"""Fault injection against the real stand-ins over HTTP and a real DuckDB file.

The promises under test: with a quarter of API calls failing (429, 500, dropped connections) and
tokens expiring mid-run, every LEA and district ends in exactly the desired state, with no
duplicates, and the ledger says what the API holds (read back and compared); a load SIGKILLed at a
random request and rerun ends the same way, resending nothing that had succeeded beyond the few
requests in flight; a warehouse locked by another process makes a run wait (bounded) or fail with
a clear message, with nothing half-written.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress

import pytest

from staff_pipeline.loads.journal import Journal
from staff_pipeline.settings import paths
from staff_pipeline.standins.common import Knobs
from staff_pipeline.standins.edfi import EdFiStandIn
from staff_pipeline.standins.linkit import LinkItStandIn
from staff_pipeline.warehouse import WarehouseBusyError, connect
from tests.fault_worlds import (
    DISTRICT,
    edfi_desired,
    edfi_ledger_matches_server,
    edfi_load,
    edfi_state,
    edfi_world,
    linkit_load,
    linkit_problems,
    linkit_world,
)
from tests.fixtures_edfi import LEA_A, LEA_B

PEOPLE = 40
WRITES = ("POST", "PUT", "DELETE")


# 20% of calls answer 429 or 500 and 5% of connections drop.
FAULTS = {"share_429": 0.10, "share_500": 0.10, "share_drop": 0.05}


def _assert_edfi_converged(standin: EdFiStandIn) -> None:
    state, desired = edfi_state(standin), edfi_desired()
    assert state == desired  # exactly the desired records...
    assert all(len(set(records)) == len(records) for records in state.values())  # ...once each
    assert edfi_ledger_matches_server(standin) == {}


def _statuses(standin: EdFiStandIn | LinkItStandIn) -> set[int]:
    return {r.status for r in standin.received}


@pytest.mark.parametrize("edfi_knobs", [Knobs(**FAULTS, seed=1)])
def test_edfi_loads_converge_under_errors_drops_and_expiring_tokens(edfi_env: EdFiStandIn) -> None:
    entries = 0

    def expire_now_and_then(_entry: dict) -> None:
        nonlocal entries
        entries += 1
        if entries % 15 == 0:
            edfi_env.tokens.expire_all()

    for night in (1, 2):
        edfi_world(edfi_env, PEOPLE, night).write()
        for lea in (LEA_A, LEA_B):
            reports = edfi_load(lea, on_entry=expire_now_and_then)
            assert all(not r.failed for r in reports.values()), reports
        _assert_edfi_converged(edfi_env)
    assert {0, 401, 429, 500} <= _statuses(edfi_env)  # every fault really happened
    assert edfi_env.tokens.issued > 2


def test_edfi_short_token_lifetime_is_refreshed_transparently(edfi_env: EdFiStandIn) -> None:
    edfi_env.knobs.token_ttl = 0.3  # the server says 1 s (its minimum): the client learns by 401
    edfi_env.knobs.latency = 0.05  # a load of ~50 requests on 4 threads outlives a few tokens
    edfi_world(edfi_env, PEOPLE, 1).write()
    edfi_load(LEA_A)
    _assert_edfi_converged_for(edfi_env, LEA_A)
    assert edfi_env.tokens.issued > 1


def _assert_edfi_converged_for(standin: EdFiStandIn, lea: int) -> None:
    """Only ``lea`` was loaded: the API holds exactly its part of the marts."""
    with connect() as con:
        con.execute("DELETE FROM mart_edfi_assignments WHERE lea_id <> ?", [lea])
        con.execute("DELETE FROM mart_edfi_contacts WHERE lea_id <> ?", [lea])
    _assert_edfi_converged(standin)


def test_linkit_loads_converge_under_errors_and_drops_without_duplicate_accounts(
    linkit_standin: LinkItStandIn,
) -> None:
    for knob, share in FAULTS.items():  # the fixture's stand-in reads its knobs per request
        setattr(linkit_standin.knobs, knob, share)
    for night in (1, 2):
        linkit_world(PEOPLE, night)
        report = linkit_load(DISTRICT)
        assert not report.failures, report.failures
        assert linkit_problems(linkit_standin) == []
    assert {0, 429, 500} <= _statuses(linkit_standin)


# -- killed runs --------------------------------------------------------------------------------------
def _kill_during(standin: EdFiStandIn | LinkItStandIn, load: Callable[[], object], after: int) -> int:
    """Run ``load`` in a forked process and SIGKILL it once the stand-in has had ``after`` more requests.

    Forked, not spawned: the child starts in a millisecond with everything imported, and dies with
    SIGKILL like any process would (no cleanup, no finally blocks). Returns the write requests the
    stand-in had answered with success by the time the child died.
    """
    before = len(standin.received)
    pid = os.fork()
    if pid == 0:  # the child: load, then leave without running the parent's cleanup
        try:
            load()
        finally:
            os._exit(0)
    while len(standin.received) - before < after and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.001)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return sum(r.method in WRITES and r.status in (200, 201, 204) for r in standin.received[before:])


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_edfi_load_killed_at_a_random_request_and_rerun_ends_in_the_same_state(
    edfi_env: EdFiStandIn, seed: int
) -> None:
    edfi_env.knobs.latency = 0.003  # long enough a load to land the kill inside it
    edfi_world(edfi_env, PEOPLE, 1).write()
    kill_after = random.Random(seed).randint(2, 50)
    done_before_kill = _kill_during(edfi_env, lambda: edfi_load(LEA_A), kill_after)
    writes_before = len(edfi_env.writes())
    edfi_load(LEA_A)
    resent = len(edfi_env.writes()) - writes_before
    _assert_edfi_converged_for(edfi_env, LEA_A)
    desired = sum(len(v) for v in edfi_desired().values())
    # Nothing that succeeded and was journaled is sent again; only the few requests in flight may be.
    assert desired - done_before_kill <= resent <= desired - done_before_kill + 2 * 4


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_linkit_load_killed_at_a_random_request_and_rerun_creates_nobody_twice(
    linkit_standin: LinkItStandIn, seed: int
) -> None:
    linkit_standin.knobs.latency = 0.003
    linkit_world(PEOPLE, 1)
    _kill_during(linkit_standin, lambda: linkit_load(DISTRICT), random.Random(seed).randint(2, 60))
    linkit_load(DISTRICT)
    assert linkit_problems(linkit_standin) == []
    linkit_world(PEOPLE, 2)  # and the next night still converges from there
    linkit_load(DISTRICT)
    assert linkit_problems(linkit_standin) == []


# -- a locked warehouse -----------------------------------------------------------------------------
@contextmanager
def _lock_held(seconds: float) -> Iterator[subprocess.Popen]:
    """Another process opens the warehouse (DuckDB's file lock) for ``seconds``."""
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
        "time.sleep(float(sys.argv[2]))"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(paths().warehouse), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _tables() -> dict[str, int]:
    with connect() as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def test_a_locked_warehouse_fails_the_load_clearly_before_anything_is_sent(
    edfi_env: EdFiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    edfi_world(edfi_env, 10, 1).write()
    before = _tables()
    monkeypatch.setenv("STAFF_WAREHOUSE_WAIT", "0.5")
    with _lock_held(30), pytest.raises(WarehouseBusyError) as caught:
        edfi_load(LEA_A)
    message = str(caught.value)
    assert "is locked by another process; waited 0s" in message or "waited 1s" in message
    assert str(paths().warehouse) in message and "analytics.duckdb" in message
    assert edfi_env.writes() == []
    assert _tables() == before  # no mart, no ledger, nothing half-written


def test_a_lock_taken_while_requests_are_in_flight_loses_nothing(
    edfi_env: EdFiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process takes the lock once sending has begun, so the final fold is refused: the
    journal keeps every answer, and the rerun folds it instead of sending it again."""
    edfi_world(edfi_env, PEOPLE, 1).write()
    monkeypatch.setenv("STAFF_WAREHOUSE_WAIT", "0.5")
    with ExitStack() as stack:
        held: list[subprocess.Popen] = []

        def lock_once(_entry: dict) -> None:
            if not held:
                held.append(stack.enter_context(_lock_held(30)))

        with pytest.raises(WarehouseBusyError):
            edfi_load(LEA_A, on_entry=lock_once)
        sent = len(edfi_env.writes())
        assert sent > 0 and len(Journal("edfi", str(LEA_A)).entries()) == sent  # every answer on disk
    with connect() as con:  # the ledger was never half-folded
        assert con.execute("SELECT count(*) FROM ledger_edfi").fetchone()[0] == 0
    edfi_load(LEA_A)
    assert not [r for r in edfi_env.writes()[sent:] if "Assignment" in r.path]  # nothing resent
    _assert_edfi_converged_for(edfi_env, LEA_A)


def test_a_short_lock_is_waited_out(edfi_env: EdFiStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    edfi_world(edfi_env, 10, 1).write()
    monkeypatch.setenv("STAFF_WAREHOUSE_WAIT", "20")
    with _lock_held(1.0):
        started = time.monotonic()
        edfi_load(LEA_A)
    assert time.monotonic() - started >= 0.5
    _assert_edfi_converged_for(edfi_env, LEA_A)
