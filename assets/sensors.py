"""Sensors (SIS inbox files, run chaining, failure notifications)."""

import hashlib
import json
import time

from dagster import AssetKey, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from assets.conformed import TABLES as MODEL_TABLES
from assets.jobs import prepare_job
from assets.run_sensors import LEA_TAG
from staff_pipeline.extract.sis import SETTLE_SECONDS, new_inbox_files
from staff_pipeline.settings import paths
from staff_pipeline.transform.staging import STAGED

# A new SIS file re-stages and re-models with the Edu-V answers already landed (the nightly run
# pulls Edu-V): one LEA's file does not pull every school again, nor wait on an Edu-V outage.
SIS_RUN_ASSETS = [AssetKey(name) for name in ("raw_sis_staff", *STAGED, *MODEL_TABLES)]


@sensor(
    job=prepare_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches data/inbox/<lea_id>/ for new SIS export files and requests a prepare run "
    "landing only that LEA's folder (one run per LEA per batch of new files), then staging and the "
    "model, with the Edu-V answers already landed.",
)
def sis_inbox_sensor(context: SensorEvaluationContext) -> SensorResult:
    seen = json.loads(context.cursor) if context.cursor else {}
    new, current = new_inbox_files(paths().inbox, seen, time.time(), SETTLE_SECONDS)
    cursor = json.dumps(current, sort_keys=True)  # saved on a skip too: files that left are forgotten
    if not new:
        return SensorResult(skip_reason=f"no new files in {paths().inbox}", cursor=cursor)
    requests = [
        RunRequest(
            # the files as seen (name, mtime, size, ctime): the same file triggers once, a changed
            # one again, and so does one moved back in (say from failed/, after a fix)
            run_key=f"sis-inbox:{lea}:" + hashlib.sha256("|".join(sorted(files)).encode()).hexdigest()[:16],
            run_config={"ops": {"raw_sis_staff": {"config": {"lea_id": lea, "files": sorted(files)}}}},
            asset_selection=SIS_RUN_ASSETS,
            tags={LEA_TAG: lea, "staff/sis_files": ", ".join(sorted(f.split("@")[0] for f in files))[:200]},
        )
        for lea, files in sorted(new.items())
    ]
    return SensorResult(run_requests=requests, cursor=cursor)


SENSORS: list = [sis_inbox_sensor]
