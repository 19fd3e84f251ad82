"""Dagster metadata helpers shared by the asset modules."""

from __future__ import annotations

import pandas as pd
from dagster import MetadataValue


def markdown_table(frame: pd.DataFrame, empty: str = "_none_") -> MetadataValue:
    """A frame as a Markdown table for the UI (previews, per-LEA results, failure samples)."""
    return MetadataValue.md(frame.to_markdown(index=False) if len(frame) else empty)
