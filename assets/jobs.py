"""Jobs: the unpartitioned stages, the per-LEA Ed-Fi loads, the per-district LinkIt loads."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from staff_pipeline.partitions import district_partitions, lea_partitions

# On every load run (from the sensor, a backfill or the job page): the run queue caps load runs per
# target with it (deploy/postgres/dagster.yaml).
TARGET_TAG = "staff/target"
PREPARE = AssetSelection.groups("extract", "staging", "conformed")
EDFI = AssetSelection.groups("edfi")
LINKIT = AssetSelection.groups("linkit")

prepare_job = define_asset_job(
    "prepare_staff_job",
    selection=PREPARE,
    description="Extract both sources, gate them and rebuild the conformed staff model.",
)
edfi_load_job = define_asset_job(
    "edfi_load_job",
    selection=EDFI,
    partitions_def=lea_partitions,
    tags={TARGET_TAG: "edfi"},
    description="Per-LEA Ed-Fi / WISEdata mart and load (one run per LEA partition).",
)
linkit_load_job = define_asset_job(
    "linkit_load_job",
    selection=LINKIT,
    partitions_def=district_partitions,
    tags={TARGET_TAG: "linkit"},
    description="Per-district LinkIt! mart and load (one run per district partition).",
)

JOBS = [prepare_job, edfi_load_job, linkit_load_job]
