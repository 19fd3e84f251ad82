"""The SIS inbox sensor: one run per LEA with new files, each file triggering once."""

from __future__ import annotations

import os
import shutil
import time

from dagster import SensorResult, build_sensor_context

from assets.jobs import prepare_job
from assets.run_sensors import LEA_TAG
from assets.sensors import SENSORS, sis_inbox_sensor
from staff_pipeline.extract.sis import new_inbox_files
from staff_pipeline.settings import Paths
from tests.fixtures_sis import HEADER, ROW_1, ROW_2, Drop


def tick(cursor: str | None = None) -> SensorResult:
    return sis_inbox_sensor(build_sensor_context(cursor=cursor))


def skipped(result: SensorResult) -> bool:
    return not result.run_requests and result.skip_reason is not None


def test_new_files_request_one_run_per_lea_selecting_that_lea(drop: Drop) -> None:
    drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n")
    drop("100001", "b.csv", f"{HEADER}\n{ROW_2}\n")
    drop("100002", "c.csv", f"{HEADER}\n{ROW_2}\n")
    drop("100002", "notes.xlsx", b"not an export")
    result = tick()
    assert isinstance(result, SensorResult)
    by_lea = {r.tags[LEA_TAG]: r for r in result.run_requests}
    assert set(by_lea) == {"100001", "100002"}
    for lea, request in by_lea.items():
        config = request.run_config["ops"]["raw_sis_staff"]["config"]
        assert config["lea_id"] == lea
        assert [f.split("@")[0] for f in config["files"]] == {
            "100001": ["a.csv", "b.csv"],
            "100002": ["c.csv"],
        }[lea]
        assert request.run_key.startswith(f"sis-inbox:{lea}:")
        # the Edu-V answers already landed are staged again, not pulled again for one LEA's file
        assert {k.to_user_string() for k in request.asset_selection} == {
            "raw_sis_staff",
            "stg_eduv_employees",
            "stg_eduv_employee_ids",
            "stg_eduv_employee_roles",
            "stg_sis_staff_assignments",
            "staff",
            "staff_contacts",
            "staff_assignments",
        }
    assert by_lea["100001"].tags["staff/sis_files"] == "a.csv, b.csv"
    assert sis_inbox_sensor.job_name == prepare_job.name == "prepare_staff_job"


def test_a_file_triggers_once_and_again_only_when_it_changes(drop: Drop) -> None:
    drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n")
    first = tick()
    again = tick(first.cursor)
    assert skipped(again)
    drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n{ROW_2}\n", age=30)  # re-exported: new size and mtime
    changed = tick(first.cursor)
    assert [r.tags[LEA_TAG] for r in changed.run_requests] == ["100001"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key
    # the same state evaluated twice yields the same run key, which Dagster runs once
    assert tick(first.cursor).run_requests[0].run_key == changed.run_requests[0].run_key


def test_a_file_still_being_written_waits_for_a_later_tick(drop: Drop) -> None:
    path = drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n", age=0)
    assert skipped(tick())
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))
    assert [r.tags[LEA_TAG] for r in tick().run_requests] == ["100001"]


def test_cursor_forgets_files_that_left_the_inbox(where: Paths, drop: Drop) -> None:
    path = drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n")
    new, seen = new_inbox_files(where.inbox, {}, time.time(), 10)
    assert list(new) == ["100001"] and list(seen) == ["100001/a.csv"]
    path.unlink()  # landed and archived
    assert new_inbox_files(where.inbox, seen, time.time(), 10) == ({}, {})


def test_missing_inbox_is_a_skip_not_an_error() -> None:
    assert skipped(tick())


def test_a_file_moved_out_and_back_unchanged_triggers_again(where: Paths, drop: Drop) -> None:
    """Say it failed (organisations.csv lacked its LEA), the config was fixed and the operator moved
    it back from failed/ with ``mv``, which keeps its mtime and size."""
    path = drop("100001", "a.csv", f"{HEADER}\n{ROW_1}\n")
    first = tick()
    kept = where.failed / "100001" / "a.csv"
    kept.parent.mkdir(parents=True)
    shutil.move(path, kept)
    empty = tick(first.cursor)
    assert skipped(empty) and empty.cursor == "{}"  # the cursor forgets what left, on a skip too
    shutil.move(kept, path)
    again = tick(empty.cursor)
    assert [r.tags[LEA_TAG] for r in again.run_requests] == ["100001"]
    assert again.run_requests[0].run_key != first.run_requests[0].run_key  # not taken for the first run


def test_sensor_is_registered_in_the_definitions() -> None:
    from staff_pipeline.definitions import defs  # loads every stage's module: kept out of collection

    assert sis_inbox_sensor in SENSORS
    (registered,) = [s for s in defs.sensors if s.name == "sis_inbox_sensor"]
    assert registered.job_name == "prepare_staff_job"
