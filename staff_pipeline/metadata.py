"""Dagster metadata helpers shared by the asset modules."""

from __future__ import annotations

import copy

import pandas as pd
import pandera.pandas as pa
from dagster import Failure, MetadataValue


def _cell(value: object) -> object:
    """One value as a table cell shows it: a missing value blank, a date without a midnight time, and
    text that cannot break the table (a rejected value may hold ``|`` or a line end)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp) and value == value.normalize() and value.tzinfo is None:
        return value.date().isoformat()
    if isinstance(value, str):
        return value.replace("|", "\\|").replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    return value


def markdown_text(frame: pd.DataFrame) -> str:
    """A frame as Markdown table text, every cell made safe (:func:`_cell`)."""
    cells = frame.astype(object).map(_cell)
    return cells.to_markdown(index=False, disable_numparse=True)


def markdown_table(frame: pd.DataFrame, empty: str = "_none_") -> MetadataValue:
    """A frame as a Markdown table for the UI (previews, per-LEA results, failure samples)."""
    return MetadataValue.md(markdown_text(frame) if len(frame) else empty)


def counts_table(counts: dict, key: str) -> MetadataValue:
    """``{name: count}`` as a two-column Markdown table, largest first (rules, actions, errors)."""
    return markdown_table(pd.DataFrame(sorted(counts.items(), key=lambda kv: -kv[1]), columns=[key, "count"]))


def columns_only(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """``schema`` reduced to its columns: which must be there (and, if strict, nothing else).

    What an empty table is checked against. No value can break a dtype, limit, uniqueness or
    table-wide rule when there are no values, but an empty query result has no dtypes to show:
    DuckDB hands back ``object`` for every text column of zero rows, where rows would give pandas'
    ``str``. Checking those dtypes would fail an empty mart (a district with no accounts, an LEA
    with no one in its not-sent list) for a type it cannot have, so they are left out.
    """
    relaxed = copy.copy(
        schema.update_columns(
            {name: {"dtype": None, "checks": [], "coerce": False, "unique": False} for name in schema.columns}
        )
    )
    relaxed.checks = []
    relaxed.unique = None
    relaxed.coerce = False
    return relaxed


def validate_or_fail(frame: pd.DataFrame, schema: pa.DataFrameSchema, description: str) -> None:
    """Validate lazily; a breach stops the asset with a ``Failure`` showing the first failures.

    An empty frame is valid when it has the schema's columns (:func:`columns_only`): an empty mart
    sends nothing, which never breaks the target's contract.
    """
    try:
        (columns_only(schema) if frame.empty else schema).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases.head(10)[["column", "check", "failure_case"]]
        raise Failure(description=description, metadata={"failures": markdown_table(cases)}) from None
