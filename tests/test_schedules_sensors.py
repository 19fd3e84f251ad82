"""The nightly schedule and the run-status sensors request the runs a night needs, and nothing more."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    job,
    op,
)

from assets.analytics import publish_analytics_job
from assets.run_sensors import (
    LEA_TAG,
    TARGET_TAG,
    UPSTREAM_TAG,
    loads_after_prepare_sensor,
    publish_after_failure_sensor,
    publish_analytics_sensor,
    rebuilt_the_model,
)
from assets.schedules import nightly_schedule
from staff_pipeline.config import ConfigError
from staff_pipeline.settings import REPO_ROOT


@op
def _noop() -> None:
    pass


@op
def _fails() -> None:
    raise RuntimeError("the gate refused the model")


@job(name="prepare_staff_job")
def _prepare() -> None:
    _noop()


@job
def _another_job() -> None:
    _noop()


@job
def _failing_job() -> None:
    _fails()


def _success_context(
    instance: DagsterInstance, sensor_name: str, tags: dict[str, str] | None = None, ran=_prepare
):
    """A real finished run in a real instance (a stand-in of ``ran``'s name), and the sensor context
    Dagster would build for it."""
    result = ran.execute_in_process(instance=instance, tags=tags or {}, raise_on_error=False)
    run = instance.get_run_by_id(result.run_id)
    event = next(
        record.dagster_event
        for record in instance.all_logs(result.run_id)
        if record.dagster_event
        and record.dagster_event.event_type in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE)
    )
    return build_run_status_sensor_context(
        sensor_name=sensor_name, dagster_event=event, dagster_instance=instance, dagster_run=run
    )


def _config_dir(tmp_path: Path, schedule: str) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "data", config, ignore=shutil.ignore_patterns("inbox", "*.duckdb*"))
    text = (config / "pipeline.toml").read_text(encoding="utf-8")
    head = text.split("[schedule]")[0]
    (config / "pipeline.toml").write_text(head + "[schedule]\n" + schedule, encoding="utf-8")
    return config


def test_nightly_schedule_defaults_to_two_am_chicago_and_runs_prepare() -> None:
    schedule = nightly_schedule()
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "America/Chicago"
    assert schedule.job_name == "prepare_staff_job"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING

    tick = datetime(2026, 3, 9, 2, 0, tzinfo=ZoneInfo("America/Chicago"))
    requests = list(
        schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
    )
    assert len(requests) == 1
    assert requests[0].tags["staff/trigger"] == "nightly"


def test_schedule_clock_comes_from_pipeline_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config_dir(tmp_path, 'cron = "30 1 * * 1-5"\ntimezone = "Europe/Amsterdam"\n')
    monkeypatch.setenv("STAFF_CONFIG_DIR", str(config))
    schedule = nightly_schedule()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 * * 1-5", "Europe/Amsterdam")


def test_a_misspelt_timezone_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "STAFF_CONFIG_DIR", str(_config_dir(tmp_path, 'cron = "0 2 * * *"\ntimezone = "America/Chicgo"\n'))
    )
    with pytest.raises(ConfigError, match="America/Chicgo"):
        nightly_schedule()


def test_a_good_prepare_run_starts_one_run_per_lea_and_per_district() -> None:
    assert loads_after_prepare_sensor.default_status == DefaultSensorStatus.RUNNING
    with DagsterInstance.ephemeral() as instance:
        context = _success_context(instance, "loads_after_prepare_sensor")
        upstream = context.dagster_run.run_id
        requests = loads_after_prepare_sensor(context)

    edfi = {r.partition_key: r for r in requests if r.job_name == "edfi_load_job"}
    linkit = {r.partition_key: r for r in requests if r.job_name == "linkit_load_job"}
    assert sorted(edfi) == ["100001", "100002", "100003"]
    assert sorted(linkit) == ["lakeview", "northwoods", "riverside"]
    assert len(requests) == 6
    assert edfi["100002"].run_key == f"{upstream}:edfi:100002"
    assert linkit["riverside"].run_key == f"{upstream}:linkit:riverside"
    assert len({r.run_key for r in requests}) == 6
    assert all(r.tags[UPSTREAM_TAG] == upstream for r in requests)
    assert {r.tags[TARGET_TAG] for r in edfi.values()} == {"edfi"}
    assert {r.tags[TARGET_TAG] for r in linkit.values()} == {"linkit"}


def test_a_prepare_run_for_one_lea_starts_only_that_leas_loads() -> None:
    with DagsterInstance.ephemeral() as instance:
        requests = loads_after_prepare_sensor(
            _success_context(instance, "loads_after_prepare_sensor", {LEA_TAG: "100002"})
        )
    assert [(r.job_name, r.partition_key) for r in requests] == [
        ("edfi_load_job", "100002"),
        ("linkit_load_job", "riverside"),
    ]


def test_every_successful_run_republishes_but_never_queues_twice() -> None:
    with DagsterInstance.ephemeral() as instance:
        context = _success_context(instance, "publish_analytics_sensor")
        request = publish_analytics_sensor(context)
        assert isinstance(request, RunRequest)
        assert request.run_key == f"publish:{context.dagster_run.run_id}"
        assert request.tags[UPSTREAM_TAG] == context.dagster_run.run_id

        instance.create_run_for_job(publish_analytics_job)  # NOT_STARTED: created, not yet launched
        assert isinstance(
            publish_analytics_sensor(_success_context(instance, "publish_analytics_sensor")), SkipReason
        )


def test_loads_follow_any_run_that_rebuilt_the_model_and_no_other() -> None:
    """ "Materialize" on the asset page and asset backfills run as Dagster's implicit asset job."""
    assert rebuilt_the_model(DagsterRun(job_name="prepare_staff_job"))
    assert rebuilt_the_model(
        DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset({AssetKey("staff")}))
    )
    assert not rebuilt_the_model(
        DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset({AssetKey("edfi_mart")}))
    )
    assert not rebuilt_the_model(DagsterRun(job_name="edfi_load_job"))
    with DagsterInstance.ephemeral() as instance:
        skipped = loads_after_prepare_sensor(
            _success_context(instance, "loads_after_prepare_sensor", ran=_another_job)
        )
    assert isinstance(skipped, SkipReason)


def test_a_failed_run_is_published_too_but_a_publish_never_republishes() -> None:
    """A night the gate refused keeps the old model, and analysts see why (rejected_rows, gate_results)."""
    with DagsterInstance.ephemeral() as instance:
        failed = _success_context(instance, "publish_after_failure_sensor", ran=_failing_job)
        request = publish_after_failure_sensor(failed)
        assert isinstance(request, RunRequest) and request.run_key == f"publish:{failed.dagster_run.run_id}"

        @job(name=publish_analytics_job.name)
        def _publish_lookalike() -> None:
            _noop()

        done = _success_context(instance, "publish_analytics_sensor", ran=_publish_lookalike)
        assert isinstance(publish_analytics_sensor(done), SkipReason)


def test_an_lea_added_after_the_code_loaded_is_named_until_a_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partitions are drawn when the code loads: a new LEA in organisations.csv gets no load runs
    until a reload, and the loads sensor says so instead of passing over it in silence."""
    from staff_pipeline import partitions

    assert partitions.without_partition() == []
    monkeypatch.setattr(partitions, "lea_ids", lambda: ["100001", "100002", "100003", "100004"])
    monkeypatch.setattr(
        partitions, "linkit_districts", lambda: ["lakeview", "riverside", "northwoods", "lakes"]
    )
    assert partitions.without_partition() == ["LEA 100004", "district lakes"]
    with DagsterInstance.ephemeral() as instance:
        context = _success_context(instance, "loads_after_prepare_sensor")
        warnings = []
        monkeypatch.setattr(
            type(context.log), "warning", lambda self, message, *a, **k: warnings.append(message)
        )
        requests = loads_after_prepare_sensor(context)
    assert len(requests) == 6  # the loaded partitions still run
    assert warnings == [partitions.reload_hint(["LEA 100004", "district lakes"])]
    assert "reloaded" in warnings[0]
