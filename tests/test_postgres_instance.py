"""The instance on PostgreSQL (deploy/postgres/dagster.yaml): LEA partitions run in parallel.

A throwaway PostgreSQL cluster is created in a temp folder on a free loopback port; one process per
LEA partition runs its job against the instance at the same time (as run workers on several
machines would); the runs and their events must land in PostgreSQL, not in SQLite under DAGSTER_HOME.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance

from staff_pipeline.partitions import lea_partitions
from staff_pipeline.settings import REPO_ROOT, paths
from staff_pipeline.warehouse import connect

pytestmark = pytest.mark.postgres

RUN_PARTITION = """
import sys
from dagster import DagsterInstance, execute_job, reconstructable
from tests.pg_location import lea_fanout_job
with DagsterInstance.get() as instance:
    result = execute_job(reconstructable(lea_fanout_job), instance, tags={"dagster/partition": sys.argv[1]})
    print(result.run_id)
"""


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    """A private PostgreSQL server; yields the DAGSTER_PG_* variables that reach it."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="staff-pg-"))  # not tmp_path: the postgres user must reach it
    run_as: dict[str, int] = {}
    if os.geteuid() == 0:  # initdb refuses to run as root
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid}
    data, port = root / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run(args, check=True, cwd=root, capture_output=True, timeout=120, **run_as)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "dagster", "-A", "trust", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster")
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": "dagster",
        }
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _query(env: dict[str, str], sql: str, params: tuple = ()) -> list[tuple]:
    con = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"], port=int(env["DAGSTER_PG_PORT"]), user="dagster", dbname="dagster"
    )
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


def _set_pools(leas: int) -> None:
    """The documented one-time pool setup (``dagster instance concurrency set ...``), in-process.

    Without it, parallel runs create a pool's row on first use at the same moment, and all but one
    fail on PostgreSQL's unique key (docs/operations.md says to set the pools first).
    """
    with DagsterInstance.get() as instance:
        for pool, limit in (("duckdb_writer", 1), ("edfi_api", leas), ("linkit_api", 2)):
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def test_lea_partitions_run_in_parallel_on_the_postgres_instance(
    postgres: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(REPO_ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ}
    leas = lea_partitions.get_partition_keys()
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    _set_pools(len(leas))

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_PARTITION, lea],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for lea in leas
    ]
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    run_ids = [output.strip().splitlines()[-1] if output.strip() else "" for output in outputs]
    statuses = _query(postgres, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
    assert sorted(s for _, s in statuses) == ["SUCCESS"] * len(leas), "\n".join([str(statuses), *outputs])

    partitions = _query(
        postgres, "SELECT key, value FROM run_tags WHERE key = 'dagster/partition' ORDER BY value"
    )
    assert [value for _, value in partitions] == sorted(leas)
    steps = _query(
        postgres,
        "SELECT run_id, count(*) FROM event_logs WHERE dagster_event_type = 'STEP_SUCCESS' GROUP BY run_id",
    )
    assert sorted(steps) == sorted((run_id, 2) for run_id in run_ids)
    assert not (home / "history").exists(), "runs went to SQLite under DAGSTER_HOME, not PostgreSQL"
    with connect(paths().warehouse, read_only=True) as con:
        assert sorted(con.execute("SELECT lea_id FROM lea_runs").fetchall()) == [
            (lea,) for lea in sorted(leas)
        ]


# A fresh process per run, as a run worker is (the LEA loads run side by side); its resources read
# the stand-ins' URLs and keys from the environment when the run uses them.
RUN_JOB = """
import sys
from dagster import DagsterInstance
from staff_pipeline.definitions import defs
with DagsterInstance.get() as instance:
    job = defs.resolve_job_def(sys.argv[1])
    partition = sys.argv[2] if len(sys.argv) > 2 else None
    result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
    print(result.run_id)
"""


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_JOB, *args],
        cwd=REPO_ROOT,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_real_ed_fi_load_runs_its_lea_partitions_in_parallel_on_postgres(
    postgres: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline itself: prepare once, then one worker process per LEA runs ``edfi_load_job``."""
    from staff_pipeline.generator import generate
    from staff_pipeline.standins.local import local_apis

    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STAFF_WAREHOUSE_WAIT", "300")
    home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(REPO_ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    generated = generate(tmp_path / "generated", 120, seed=5, bad_share=0.0)
    shutil.copytree(generated.inbox_dir, paths().inbox, dirs_exist_ok=True)
    leas = lea_partitions.get_partition_keys()
    _set_pools(len(leas))
    with local_apis(generated.eduv_dir) as apis:
        for name, value in apis.env.items():
            monkeypatch.setenv(name, value)
        prepare = _start("prepare_staff_job")
        prepared = prepare.communicate(timeout=400)[0]
        assert prepare.returncode == 0 and apis.register_wiseids() > 0, prepared
        workers = [_start("edfi_load_job", lea) for lea in leas]
        outputs = [worker.communicate(timeout=400)[0] for worker in workers]
        run_ids = [output.strip().splitlines()[-1] if output.strip() else "" for output in outputs]
        sent = {
            record["educationOrganizationReference"]["educationOrganizationId"]
            for record in apis.edfi.records("staffEducationOrganizationAssignmentAssociations")
        }
    everything = [prepared.strip().splitlines()[-1], *run_ids]
    rows = _query(postgres, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (everything,))
    assert sorted(status for _, status in rows) == ["SUCCESS"] * (1 + len(leas)), "\n".join(outputs)
    tags = _query(
        postgres,
        "SELECT value FROM run_tags WHERE key = 'dagster/partition' AND run_id = ANY(%s) ORDER BY value",
        (run_ids,),
    )
    assert [value for (value,) in tags] == sorted(leas)
    with connect(paths().warehouse, read_only=True) as con:
        sent_leas = con.execute("SELECT DISTINCT CAST(lea_id AS VARCHAR) FROM ledger_edfi").fetchall()
    assert sorted(lea for (lea,) in sent_leas) == sorted(leas)  # every LEA's load reached the API
    assert sent  # and the stand-in holds the associations
