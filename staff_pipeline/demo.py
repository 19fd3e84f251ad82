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
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from staff_pipeline.config import load_organisations
from staff_pipeline.publish import publish
from staff_pipeline.settings import REPO_ROOT, paths
from staff_pipeline.standins.local import LocalApis, local_apis

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


def _summary(apis: LocalApis, writes_first: dict[str, int], writes_second: dict[str, int]) -> None:
    from staff_pipeline.warehouse import connect, row_count

    _say("\nWarehouse tables (rows)")
    with connect() as con:
        for table in TABLES:
            _say(f"  {table:<28} {row_count(con, table):>9,}")
    edfi, linkit = apis.edfi, apis.linkit
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
    with tempfile.TemporaryDirectory(prefix="staff-demo-") as tmp:
        generated = generate(Path(tmp), args.people, seed=args.seed)
        for lea_folder in generated.inbox_dir.iterdir():
            shutil.copytree(lea_folder, paths().inbox / lea_folder.name, dirs_exist_ok=True)
        _say(
            f"  {generated.eduv_employees:,} Edu-V employees, {generated.sis_rows:,} SIS rows in "
            f"{len(list(paths().inbox.glob('*/*.csv')))} export files"
        )
        with local_apis(generated.eduv_dir) as apis:
            os.environ.update(apis.env)
            _say(f"Stand-ins: Edu-V {apis.eduv.url}, Ed-Fi {apis.edfi.url}, LinkIt! {apis.linkit.url}")
            instance = DagsterInstance.get()

            def register_wiseids() -> None:
                count = apis.register_wiseids()
                _say(f"  {count:,} WISEids registered in the Ed-Fi stand-in (the state's WISEid system)")

            ok = _night(instance, 1, register_wiseids)
            writes_first = apis.write_requests()
            ok &= _night(instance, 2)
            writes_second = {k: v - writes_first[k] for k, v in apis.write_requests().items()}
            _say("\nPublishing the analysts' copy ...")
            publish()
            _summary(apis, writes_first, writes_second)
            _say("\nStopping the stand-ins.")
    _say("Demo finished: all runs succeeded." if ok else "Demo finished with failed runs (see above).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
