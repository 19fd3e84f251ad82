"""Dagster metadata helpers shared by the asset modules."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from dagster import Failure, MetadataValue


def markdown_table(frame: pd.DataFrame, empty: str = "_none_") -> MetadataValue:
    """A frame as a Markdown table for the UI (previews, per-LEA results, failure samples)."""
    return MetadataValue.md(frame.to_markdown(index=False) if len(frame) else empty)


def counts_table(counts: dict, key: str) -> MetadataValue:
    """``{name: count}`` as a two-column Markdown table, largest first (rules, actions, errors)."""
    return markdown_table(pd.DataFrame(sorted(counts.items(), key=lambda kv: -kv[1]), columns=[key, "count"]))


def validate_or_fail(frame: pd.DataFrame, schema: pa.DataFrameSchema, description: str) -> None:
    """Validate lazily; a breach stops the asset with a ``Failure`` showing the first failures."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases.head(10)[["column", "check", "failure_case"]]
        raise Failure(description=description, metadata={"failures": markdown_table(cases)}) from None
