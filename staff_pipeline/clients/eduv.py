"""PLACEHOLDER: replaced by the eduv client (owned by its helper)."""

from __future__ import annotations

from dagster import ConfigurableResource


class EduVResource(ConfigurableResource):
    base_url: str
    client_id: str = ""
    client_secret: str = ""
