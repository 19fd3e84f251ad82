"""``make demo``: the whole pipeline, end to end, against the local API stand-ins.

It generates a synthetic roster (Edu-V schools and messy SIS exports), starts the three stand-ins on
free loopback ports with fresh random credentials, materialises every asset through the real
``Definitions`` (the runs land in ``DAGSTER_HOME``, so ``dagster dev`` shows them afterwards), runs a
second "night" to show that an unchanged source sends nothing, prints a summary and stops the
servers. The stand-ins keep their state in memory, so the demo starts from an empty warehouse.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from staff_pipeline.config import load_organisations
from staff_pipeline.settings import REPO_ROOT, paths

TABLES = (
    "raw_eduv_requests",
    "raw_eduv_employees",
    "raw_sis_files",
    "raw_sis_staff",
    "stg_eduv_employees",
    "stg_eduv_employee_roles",
    "stg_sis_staff_assignments",
    "rejected_rows",
    "staff",
    "staff_contacts",
    "staff_assignments",
    "staff_match_issues",
    "mart_edfi_assignments",
    "mart_edfi_contacts",
    "mart_edfi_not_sent",
    "ledger_edfi",
    "mart_linkit_staff",
    "mart_linkit_rejected",
    "ledger_linkit",
)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _reset(root: Path) -> None:
    """The stand-ins start empty, so the warehouse (and what it remembers sending) starts empty too."""
    p = paths()
    for path in (p.warehouse, p.analytics, p.warehouse.with_name(p.warehouse.name + ".wal")):
        path.unlink(missing_ok=True)
    for folder in (p.landing, p.archive, p.failed, p.journal):
        shutil.rmtree(folder, ignore_errors=True)
    for lea_folder in p.inbox.glob("*"):
        if lea_folder.is_dir():
            shutil.rmtree(lea_folder)


def _start_standins(stack: ExitStack, generated_eduv: Path) -> dict[str, object]:
    """Start the three stand-ins with fresh credentials and point the pipeline at them (env vars)."""
    from staff_pipeline.standins.edfi import EdFiStandIn
    from staff_pipeline.standins.eduv import EduVStandIn
    from staff_pipeline.standins.linkit import LinkItStandIn

    organisations = load_organisations()
    eduv = stack.enter_context(EduVStandIn())
    eduv_secret = secrets.token_urlsafe(24)
    eduv.add_client("demo-consumer", secret=eduv_secret)
    eduv.load_generated(organisations, generated_eduv)

    edfi = stack.enter_context(EdFiStandIn())
    edfi.load_organisations()
    env = {
        "STAFF_EDUV_URL": eduv.url,
        "EDUV_CLIENT_ID": "demo-consumer",
        "EDUV_CLIENT_SECRET": eduv_secret,
        "STAFF_EDFI_URL": edfi.url,
        "EDFI_CLIENT_ID": "unused-default",
        "EDFI_CLIENT_SECRET": secrets.token_urlsafe(8),
    }
    for lea in organisations["lea_id"].astype(str).unique():
        secret = secrets.token_urlsafe(24)
        edfi.add_client(f"lea-{lea}", secret, int(lea))
        env[f"EDFI_CLIENT_ID_{lea}"], env[f"EDFI_CLIENT_SECRET_{lea}"] = f"lea-{lea}", secret

    linkit = stack.enter_context(LinkItStandIn())
    env["STAFF_LINKIT_URL"] = linkit.url
    env["LINKIT_ACCESS_KEY"], env["LINKIT_PRIVATE_KEY"] = "unused-default", secrets.token_urlsafe(8)
    for district, rows in organisations.groupby("linkit_district", sort=False):
        access, private = secrets.token_hex(16), secrets.token_urlsafe(32)
        schools = {
            int(r.linkit_school_id): r.school_name for r in rows.itertuples() if pd.notna(r.linkit_school_id)
        }
        linkit.add_district(str(district), access, private, schools)
        env[f"LINKIT_ACCESS_KEY_{str(district).upper()}"] = access
        env[f"LINKIT_PRIVATE_KEY_{str(district).upper()}"] = private
    os.environ.update(env)
    return {"eduv": eduv, "edfi": edfi, "linkit": linkit}


def _provision_wiseids(edfi: object) -> int:
    """What the state's WISEid system holds: a staff record per WISEid the SIS exports carry."""
    from staff_pipeline.warehouse import connect, table_exists

    with connect() as con:
        if not table_exists(con, "staff"):
            return 0
        rows = con.execute(
            "SELECT DISTINCT a.lea_id, s.wiseid FROM staff s JOIN staff_assignments a USING (person_id) "
            "WHERE s.wiseid IS NOT NULL"
        ).fetchall()
    for lea_id, wiseid in rows:
        edfi.add_staff(int(lea_id), str(wiseid))
    return len({w for _, w in rows})


def _run(job_name: str, instance: object, partition: str | None = None) -> bool:
    """Run one job (one partition) in this process; print what it materialised."""
    from staff_pipeline.definitions import defs

    label = f"{job_name}[{partition}]" if partition else job_name
    _say(f"  ▶ {label} ...")
    started = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    materialised = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    failed_checks = [e for e in checks if not e.event_specific_data.passed]
    state = "✓" if result.success else "✗"
    _say(
        f"    {state} {len(materialised)} asset(s) materialised, {len(checks) - len(failed_checks)}/"
        f"{len(checks)} checks passed, {time.perf_counter() - started:.1f}s"
    )
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                _say(f"      step {event.step_key} failed: {error.message.strip().splitlines()[0][:300]}")
    return result.success


def _night(instance: object, number: int, before_loads: Callable[[], None] = lambda: None) -> bool:
    organisations = load_organisations()
    _say(f"\nNight {number}: extract → gate → conform, then every LEA and district load")
    ok = _run("prepare_staff_job", instance)
    before_loads()
    for lea in organisations["lea_id"].astype(str).unique():
        ok &= _run("edfi_load_job", instance, lea)
    for district in organisations["linkit_district"].unique():
        ok &= _run("linkit_load_job", instance, str(district))
    return ok


def _writes(standins: dict[str, object]) -> dict[str, int]:
    return {
        "Ed-Fi": sum(len(standins["edfi"].requests_to(m, "/data/")) for m in ("POST", "PUT", "DELETE")),
        "LinkIt": sum(len(standins["linkit"].requests_to(m, "/staffs")) for m in ("POST", "PUT")),
    }


def _summary(
    standins: dict[str, object], writes_first: dict[str, int], writes_second: dict[str, int]
) -> None:
    from staff_pipeline.warehouse import connect, row_count

    _say("\nWarehouse tables (rows)")
    with connect() as con:
        for table in TABLES:
            _say(f"  {table:<28} {row_count(con, table):>9,}")
    edfi, linkit = standins["edfi"], standins["linkit"]
    assignments = len(edfi.records("staffEducationOrganizationAssignmentAssociations"))
    contacts = len(edfi.records("staffEducationOrganizationContactAssociations"))
    accounts = sum(len(linkit.users(d)) for d in load_organisations()["linkit_district"].unique())
    _say("\nTargets")
    _say(
        f"  Ed-Fi / WISEdata: {assignments:,} assignment and {contacts:,} contact associations held; "
        f"write requests night 1: {writes_first['Ed-Fi']:,}, night 2: {writes_second['Ed-Fi']:,}"
    )
    _say(
        f"  LinkIt!:          {accounts:,} staff accounts held; "
        f"write requests night 1: {writes_first['LinkIt']:,}, night 2: {writes_second['LinkIt']:,}"
    )
    p = paths()
    _say(f"\nDuckDB warehouse: {p.warehouse}")
    if p.analytics.exists():
        _say(f"Analysts' copy:   {p.analytics}   (duckdb {p.analytics} -readonly)")
    _say(f"Run history:      {os.environ.get('DAGSTER_HOME')}   (make dev, then open http://127.0.0.1:3000)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m staff_pipeline.demo", description=__doc__)
    parser.add_argument("--people", type=int, default=2000, help="size of the synthetic roster")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from dagster import DagsterInstance

    from staff_pipeline.generator import generate

    root = paths().data_dir
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = REPO_ROOT / "dagster.yaml"
    if instance_yaml.exists() and not (home / "dagster.yaml").exists():
        shutil.copy(instance_yaml, home / "dagster.yaml")
    _reset(root)
    _say(f"Generating {args.people:,} synthetic staff (seed {args.seed}) ...")
    with tempfile.TemporaryDirectory(prefix="staff-demo-") as tmp, ExitStack() as stack:
        generated = generate(Path(tmp), args.people, seed=args.seed)
        for lea_folder in generated.inbox_dir.iterdir():
            shutil.copytree(lea_folder, paths().inbox / lea_folder.name, dirs_exist_ok=True)
        _say(
            f"  {generated.eduv_employees:,} Edu-V employees, {generated.sis_rows:,} SIS rows in "
            f"{len(list(paths().inbox.glob('*/*.csv')))} export files"
        )
        standins = _start_standins(stack, generated.eduv_dir)
        _say("Stand-ins: " + ", ".join(f"{name} {s.url}" for name, s in standins.items()))
        instance = DagsterInstance.get()

        def register_wiseids() -> None:
            count = _provision_wiseids(standins["edfi"])
            _say(f"  {count:,} WISEids registered in the Ed-Fi stand-in (the state's WISEid system)")

        ok = _night(instance, 1, register_wiseids)
        writes_first = _writes(standins)
        ok &= _night(instance, 2)
        writes_second = {k: v - writes_first[k] for k, v in _writes(standins).items()}
        _summary(standins, writes_first, writes_second)
        _say("\nStopping the stand-ins.")
    _say("Demo finished: all runs succeeded." if ok else "Demo finished with failed runs (see above).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
