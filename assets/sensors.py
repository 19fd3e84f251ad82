"""Sensors (SIS inbox files, run chaining, failure notifications)."""

import hashlib
import json
import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.jobs import prepare_job
from assets.run_sensors import LEA_TAG
from staff_pipeline.extract.sis import new_inbox_files
from staff_pipeline.settings import paths

# A file younger than this may still be being copied in; it is picked up on a later tick.
SETTLE_SECONDS = 10.0


@sensor(
    job=prepare_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches data/inbox/<lea_id>/ for new SIS export files and requests a prepare run "
    "landing only that LEA's folder (one run per LEA per batch of new files).",
)
def sis_inbox_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    seen = json.loads(context.cursor) if context.cursor else {}
    new, current = new_inbox_files(paths().inbox, seen, time.time(), SETTLE_SECONDS)
    if not new:
        return SkipReason(f"no new files in {paths().inbox}")
    requests = [
        RunRequest(
            # name + mtime + size: the same file triggers once, a changed file again
            run_key=f"sis-inbox:{lea}:" + hashlib.sha256("|".join(sorted(files)).encode()).hexdigest()[:16],
            run_config={"ops": {"raw_sis_staff": {"config": {"lea_id": lea}}}},
            tags={LEA_TAG: lea, "staff/sis_files": ", ".join(sorted(f.split("@")[0] for f in files))[:200]},
        )
        for lea, files in sorted(new.items())
    ]
    return SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))


SENSORS: list = [sis_inbox_sensor]
