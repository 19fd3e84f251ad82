"""PLACEHOLDER: replaced by the linkit client (owned by its helper)."""

from __future__ import annotations

from dagster import ConfigurableResource


class LinkItResource(ConfigurableResource):
    base_url: str
    access_key: str = ""
    private_key: str = ""
