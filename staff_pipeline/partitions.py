"""Partitions come from the organisation configuration: one per LEA (Ed-Fi), one per LinkIt district.

Reading the small config CSV at import is deliberate (Dagster needs the keys to draw the UI); the
warehouse is never opened here.
"""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from staff_pipeline.config import lea_ids, linkit_districts

lea_partitions = StaticPartitionsDefinition(lea_ids())
district_partitions = StaticPartitionsDefinition(linkit_districts())
