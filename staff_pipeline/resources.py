"""Dagster resources: the warehouse, and one per API (defined beside each client).

Secrets come only from environment variables through ``EnvVar``; base URLs default to the local
stand-ins' standard ports and are repointed with ``STAFF_*_URL`` to reach real endpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
from dagster import ConfigurableResource, EnvVar

from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiResource
from staff_pipeline.clients.eduv import EduVResource
from staff_pipeline.clients.linkit import LinkItResource


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file; empty ``path`` means ``STAFF_WAREHOUSE`` or ``data/warehouse.duckdb``."""

    path: str = ""

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.path or None) as con:
            yield con


def _optional_env(name: str) -> EnvVar | str:
    """An ``EnvVar`` when the variable is set, else empty: Dagster fails a run on an unset ``EnvVar``,
    and Edu-V needs only one of its secret and its private key."""
    return EnvVar(name) if name in os.environ else ""


def default_resources() -> dict[str, Any]:
    """The production wiring; tests and the demo set the same environment variables to the stand-ins."""
    return {
        "warehouse": WarehouseResource(path=os.environ.get("STAFF_WAREHOUSE", "")),
        "eduv": EduVResource(
            base_url=os.environ.get("STAFF_EDUV_URL", "http://127.0.0.1:8100"),
            client_id=EnvVar("EDUV_CLIENT_ID"),
            client_secret=_optional_env("EDUV_CLIENT_SECRET"),
            private_key=_optional_env("EDUV_PRIVATE_KEY"),
        ),
        "edfi": EdFiResource(
            base_url=os.environ.get("STAFF_EDFI_URL", "http://127.0.0.1:8101"),
            client_id=EnvVar("EDFI_CLIENT_ID"),
            client_secret=EnvVar("EDFI_CLIENT_SECRET"),
        ),
        "linkit": LinkItResource(
            base_url=os.environ.get("STAFF_LINKIT_URL", "http://127.0.0.1:8102"),
            access_key=EnvVar("LINKIT_ACCESS_KEY"),
            private_key=EnvVar("LINKIT_PRIVATE_KEY"),
        ),
    }
