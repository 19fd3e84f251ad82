"""The nightly schedule. Its clock is configuration (``data/pipeline.toml`` ``[schedule]``), not code.

The schedule starts only ``prepare_staff_job``; ``loads_after_prepare_sensor`` then starts one run per
LEA and district, so a night is extract -> gates -> conformed -> every load, each partition on its own.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dagster import DefaultScheduleStatus, ScheduleDefinition

from assets.jobs import prepare_job
from staff_pipeline.config import ConfigError, load_settings

NIGHTLY_TAGS = {"staff/trigger": "nightly"}


def nightly_schedule() -> ScheduleDefinition:
    """Build the schedule from the settings; a misspelt timezone fails here, not silently at 02:00 UTC."""
    schedule = load_settings().schedule
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"pipeline.toml: [schedule] timezone {schedule.timezone!r} is not a known timezone"
        ) from None
    return ScheduleDefinition(
        name="nightly_staff_schedule",
        job=prepare_job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        tags=NIGHTLY_TAGS,
        description=f"Nightly full run at '{schedule.cron}' ({schedule.timezone}); loads follow by sensor.",
    )


SCHEDULES = [nightly_schedule()]
