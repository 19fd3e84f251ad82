"""PLACEHOLDER: replaced by the edfi client (owned by its helper)."""

from __future__ import annotations

from dagster import ConfigurableResource


class EdFiResource(ConfigurableResource):
    base_url: str
    client_id: str = ""
    client_secret: str = ""
