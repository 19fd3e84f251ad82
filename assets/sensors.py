"""Sensors (SIS inbox files, run chaining, failure notifications)."""

from __future__ import annotations

SENSORS: list = []
