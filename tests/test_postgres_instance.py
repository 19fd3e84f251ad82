"""The instance on PostgreSQL (deploy/postgres/dagster.yaml): queued LEA runs run in parallel.

A throwaway PostgreSQL cluster is created in a temp folder on a free loopback port; the daemon
(queued run coordinator, pools) launches one run per LEA partition; the runs and their events must
land in PostgreSQL, not in SQLite under DAGSTER_HOME.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from staff_pipeline.partitions import lea_partitions
from staff_pipeline.settings import REPO_ROOT, paths
from staff_pipeline.warehouse import connect

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent


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


def test_lea_partitions_run_in_parallel_on_the_postgres_instance(
    postgres: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(REPO_ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: tests.pg_location\n"
        f"      working_directory: {REPO_ROOT}\n",
        encoding="utf-8",
    )
    env = {**os.environ}
    leas = lea_partitions.get_partition_keys()

    # The documented one-time setup of the API pool; duckdb_writer keeps the default limit of 1.
    setup = subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "edfi_api", str(len(leas))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        run_ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(len(leas))]
        launches = [
            subprocess.Popen(
                [
                    str(BIN / "dagster"),
                    "job",
                    "launch",
                    "-w",
                    str(workspace),
                    "-j",
                    "lea_fanout_job",
                    "--run-id",
                    run_id,
                    "--tags",
                    json.dumps({"dagster/partition": lea}),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for run_id, lea in zip(run_ids, leas, strict=True)
        ]
        for launch in launches:
            output, _ = launch.communicate(timeout=120)
            assert launch.returncode == 0, output

        deadline = time.monotonic() + 150
        statuses: list[tuple] = []
        while time.monotonic() < deadline:
            statuses = _query(postgres, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
            if len(statuses) == len(leas) and all(
                s in ("SUCCESS", "FAILURE", "CANCELED") for _, s in statuses
            ):
                break
            time.sleep(1)
        assert sorted(s for _, s in statuses) == ["SUCCESS"] * len(leas), (
            f"{statuses}\n{log_path.read_text()[-3000:]}"
        )
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)

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
