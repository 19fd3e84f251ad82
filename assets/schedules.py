"""Schedules (nightly run)."""

from __future__ import annotations

SCHEDULES: list = []
