"""The one ``Definitions`` object: ``dagster dev``, ``workspace.yaml``, the demo and the tests load this."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_package_module, load_assets_from_package_module

import assets
from assets import jobs, run_sensors, schedules, sensors
from staff_pipeline.resources import default_resources

defs = Definitions(
    assets=load_assets_from_package_module(assets),
    asset_checks=load_asset_checks_from_package_module(assets),
    jobs=jobs.JOBS,
    schedules=schedules.SCHEDULES,
    sensors=[*sensors.SENSORS, *run_sensors.RUN_SENSORS],
    resources=default_resources(),
)
