"""Dagster resources: the warehouse, and one per API (defined beside each client).

Secrets come only from environment variables: the required one (``EDUV_CLIENT_ID``) through
``EnvVar`` (Dagster resolves it when a run starts), the others (Edu-V's secret or key, the targets'
per-LEA and per-district keys and their optional fallback pair) read by the resource when the run
builds its client. Base URLs default to the local stand-ins' standard ports and are repointed with
``STAFF_*_URL`` to reach real endpoints. Nothing is read from the environment at import
(:func:`staff_pipeline.settings.from_env`): every run sees the environment it runs in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
from dagster import Backoff, ConfigurableResource, EnvVar, Jitter, RetryPolicy

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiResource
from staff_pipeline.clients.eduv import EduVResource
from staff_pipeline.clients.linkit import LinkItResource

# The Dagster pool of every step that writes the warehouse: DuckDB has one writing process, so the
# instance limits it to 1 (docs/operations.md). Loads only hold the lock briefly and stay outside it.
WRITER_POOL = "duckdb_writer"
# The API-facing steps: an outage longer than the HTTP layer's own retries (seconds) gets the step
# re-run a few minutes later. A step that fails for a reason a retry cannot mend (a held threshold,
# refused credentials, a school's 403) says so with ``Failure(allow_retries=False)``.
API_RETRY_POLICY = RetryPolicy(
    max_retries=2, delay=120, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file. Empty ``path`` means ``STAFF_WAREHOUSE``, else
    ``data/warehouse.duckdb``, resolved each time a run connects (never at import)."""

    path: str = ""

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.path or None) as con:  # None: settings.paths().warehouse, now
            yield con


def default_resources() -> dict[str, Any]:
    """The production wiring; tests and the demo set the same environment variables to the stand-ins.

    Only the required secret is given here, as ``EnvVar``. URLs, the warehouse path, Edu-V's
    ``EDUV_CLIENT_SECRET`` / ``EDUV_PRIVATE_KEY`` (one of the two) and the targets' keys (per LEA or
    district, with an optional fallback pair) are left empty so that each resource reads them when a
    run uses it: read here, they would be frozen when ``staff_pipeline.definitions`` is imported,
    and a process that imported it before its environment was set would keep stale values.
    """
    return {
        "warehouse": WarehouseResource(),
        "eduv": EduVResource(client_id=EnvVar("EDUV_CLIENT_ID")),
        # Each LEA and district has its own key pair (EDFI_CLIENT_ID_<lea>, LINKIT_ACCESS_KEY_<district>,
        # ...); the shared fallback pair is optional, so it is read when a run builds a client.
        "edfi": EdFiResource(),
        "linkit": LinkItResource(),
    }
