"""Run-status sensors: fan the loads out after a good prepare run, publish the analysts' copy, alert.

Chaining with sensors (rather than one big job) keeps each LEA and district its own run: one
partition's failure or retry never holds up another, and the instance's run queue and pools decide
how many run at once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
)

from assets.analytics import publish_analytics_job
from assets.conformed import TABLES as MODEL_TABLES
from assets.jobs import TARGET_TAG, edfi_load_job, linkit_load_job, prepare_job
from staff_pipeline.alerts import WEBHOOK_ENV, StepFailure, failure_message, post_alert, secret_values
from staff_pipeline.config import load_organisations
from staff_pipeline.partitions import district_partitions, lea_partitions, reload_hint, without_partition

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

UPSTREAM_TAG = "staff/upstream_run"
LEA_TAG = "staff/lea"
"""Set on a prepare run that handled one LEA only (e.g. a new SIS file): only its loads follow."""
# The conformed model's assets (one step): a run that rebuilt them is followed by the loads.
MODEL_KEYS = frozenset(AssetKey(name) for name in MODEL_TABLES)


def rebuilt_the_model(run: DagsterRun) -> bool:
    """The prepare job, or any run that selected the conformed model: "Materialize" on the asset
    page and asset backfills run as Dagster's implicit asset job, not as ``prepare_staff_job``."""
    return run.job_name == prepare_job.name or bool(MODEL_KEYS & (run.asset_selection or frozenset()))


def load_run_requests(
    upstream_run_id: str, lea_keys: list[str], district_keys: list[str]
) -> list[RunRequest]:
    """One Ed-Fi run per LEA and one LinkIt run per district; run keys make a re-evaluation a no-op.

    ``staff/target`` lets the run queue cap load runs per target (deploy/postgres/dagster.yaml).
    """
    tags = {UPSTREAM_TAG: upstream_run_id}
    return [
        *(
            RunRequest(
                run_key=f"{upstream_run_id}:edfi:{lea}",
                job_name=edfi_load_job.name,
                partition_key=lea,
                tags={**tags, TARGET_TAG: "edfi"},
            )
            for lea in lea_keys
        ),
        *(
            RunRequest(
                run_key=f"{upstream_run_id}:linkit:{district}",
                job_name=linkit_load_job.name,
                partition_key=district,
                tags={**tags, TARGET_TAG: "linkit"},
            )
            for district in district_keys
        ),
    ]


def partitions_for(lea: str | None) -> tuple[list[str], list[str]]:
    """All partitions, or only those of one LEA (its Ed-Fi partition and its schools' districts)."""
    leas, districts = lea_partitions.get_partition_keys(), district_partitions.get_partition_keys()
    if lea is None:
        return leas, districts
    organisations = load_organisations()
    own = organisations[organisations["lea_id"].astype(str) == lea]
    return [k for k in leas if k == lea], [d for d in districts if d in set(own["linkit_district"])]


@run_status_sensor(
    name="loads_after_prepare_sensor",
    run_status=DagsterRunStatus.SUCCESS,
    request_jobs=[edfi_load_job, linkit_load_job],  # every job of the code location is watched
    default_status=DefaultSensorStatus.RUNNING,
    description="When a run that rebuilt the conformed model succeeds (prepare_staff_job, or the model "
    "materialised from the UI), one Ed-Fi run per LEA, one LinkIt run per district.",
)
def loads_after_prepare_sensor(context: RunStatusSensorContext) -> list[RunRequest] | SkipReason:
    run = context.dagster_run
    if not rebuilt_the_model(run):
        return SkipReason(f"run {run.run_id} did not rebuild the conformed model")
    missing = without_partition()
    if missing:
        context.log.warning(reload_hint(missing))
    leas, districts = partitions_for(run.tags.get(LEA_TAG))
    return load_run_requests(run.run_id, leas, districts)


def _publish(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    """One publish per finished run (not of the publish itself), unless one is waiting to start."""
    if context.dagster_run.job_name == publish_analytics_job.name:
        return SkipReason("a publish run does not republish")
    waiting = context.instance.get_runs_count(
        RunsFilter(
            job_name=publish_analytics_job.name,
            statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING],
        )
    )
    if waiting:
        return SkipReason("a publish run that has not started yet will include this run's data")
    run_id = context.dagster_run.run_id
    return RunRequest(run_key=f"publish:{run_id}", tags={UPSTREAM_TAG: run_id})


@run_status_sensor(
    name="publish_analytics_sensor",
    run_status=DagsterRunStatus.SUCCESS,
    request_job=publish_analytics_job,  # every job of the code location is watched, asset-page runs too
    default_status=DefaultSensorStatus.RUNNING,
    description="After every successful pipeline run, republish data/analytics.duckdb for analysts.",
)
def publish_analytics_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    return _publish(context)


@run_status_sensor(
    name="publish_after_failure_sensor",
    run_status=DagsterRunStatus.FAILURE,
    request_job=publish_analytics_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="After a failed pipeline run too: the model stays as it was, and analysts see why "
    "(rejected_rows, gate_results, load_events of that night).",
)
def publish_after_failure_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    return _publish(context)


def _root_cause(error: SerializableErrorInfo | None) -> str:
    """The user's exception, not Dagster's "error occurred while executing op" wrapper around it."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message if error is not None else ""


@run_failure_sensor(
    name="failure_webhook_sensor",
    default_status=DefaultSensorStatus.RUNNING,
    description=f"Post failed runs (job, run, step, error; no secrets) to ${WEBHOOK_ENV} when it is set.",
)
def failure_webhook_sensor(context: RunFailureSensorContext) -> SkipReason | None:
    url = os.environ.get(WEBHOOK_ENV, "")
    if not url:
        return SkipReason(f"{WEBHOOK_ENV} is not set")
    failures = [
        StepFailure(event.step_key or "?", _root_cause(event.step_failure_data.error))
        for event in context.get_step_failure_events()
    ]
    payload = failure_message(
        context.dagster_run.job_name,
        context.dagster_run.run_id,
        failures,
        context.failure_event.message or "",
        secret_values(),
    )
    if not post_alert(url, payload):
        context.log.warning("the failure webhook did not accept the alert")
    return None


RUN_SENSORS = [
    loads_after_prepare_sensor,
    publish_analytics_sensor,
    publish_after_failure_sensor,
    failure_webhook_sensor,
]
