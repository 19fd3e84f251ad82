"""Partitions come from the organisation configuration: one per LEA (Ed-Fi), one per LinkIt district.

Reading the small config CSV at import is deliberate (Dagster needs the keys to draw the UI); the
warehouse is never opened here. So an LEA or district added to ``organisations.csv`` has no
partition until the code location is reloaded: :func:`without_partition` names them, and the
loads sensor and the model's metadata say so.
"""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from staff_pipeline.config import lea_ids, linkit_districts

lea_partitions = StaticPartitionsDefinition(lea_ids())
district_partitions = StaticPartitionsDefinition(linkit_districts())


def without_partition() -> list[str]:
    """Configured LEAs and districts (read now) that the loaded partitions do not have yet."""
    leas = [f"LEA {k}" for k in lea_ids() if not lea_partitions.has_partition_key(k)]
    return leas + [
        f"district {k}" for k in linkit_districts() if not district_partitions.has_partition_key(k)
    ]


def reload_hint(missing: list[str]) -> str:
    return (
        f"{', '.join(missing)}: configured in organisations.csv but not loaded until the code location is "
        "reloaded (Deployment > Reload in the UI, or restart dagster dev)"
    )
