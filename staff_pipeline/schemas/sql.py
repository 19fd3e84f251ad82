"""pandera schemas, run where the data is: each check compiled to a DuckDB SQL predicate.

The schemas stay the one description of what a good row and a good table are. pandera's own engine
needs every row as a pandas frame in Python, which at a million staff costs more than the whole
extract; the same checks as SQL predicates are one vectorised scan. So whole tables are checked
here, and pandera itself validates a sample of each table (:func:`table_failures`), which also
covers what only pandera describes (dtypes, strict column sets). ``tests/test_schema_sql.py`` holds
the two engines to the same answers on crafted rows.

What compiles: a column's ``nullable=False`` (rule ``required``), the built-in checks the schemas
use (``isin``, ``str_length``, ``str_startswith``, ``in_range``, ``greater_than(_or_equal_to)``),
any check carrying ``statistics["sql"]`` (see :mod:`staff_pipeline.schemas.rules`), and uniqueness
(``unique=True`` columns and the schema's ``unique`` key). Anything else is refused at compile
time, so a new check cannot be silently skipped.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import duckdb
import pandas as pd
import pandera.pandas as pa

from staff_pipeline.schemas.rules import literal, quote
from staff_pipeline.warehouse import columns_of

# pandera's names for its structural checks, as rejected_rows calls them.
REQUIRED = "required"
DUPLICATE_KEY = "duplicate_key"
SAMPLE_ROWS = 2_000  # rows pandera validates itself per table
CASES_PER_CHECK = 100  # failure cases kept per failing check
FAILURE_COLUMNS = ["column", "check", "failure_case", "index"]


@dataclass(frozen=True)
class SqlCheck:
    """One check as SQL: ``passes`` is true for a good row; a failure names ``column`` and ``rule``."""

    column: str
    rule: str
    passes: str
    value: str


def _true(predicate: str) -> str:
    """``predicate`` with NULL read as false, as a CASE rather than ``coalesce``: DuckDB evaluates a
    CASE condition on selection vectors, so its AND/OR short-circuit (an email regex runs only on
    email rows); inside ``coalesce`` every branch runs on every row, 3-4x the cost at a million rows."""
    return f"CASE WHEN {predicate} THEN true ELSE false END"


def _builtin(check: pa.Check, column: str) -> str:
    stats = check.statistics
    if check.name == "isin":
        return f"{column} IN ({', '.join(literal(str(v)) for v in stats['allowed_values'])})"
    if check.name == "str_length":
        if stats.get("exact_value") is not None:
            return f"length({column}) = {int(stats['exact_value'])}"
        bounds = [f"length({column}) >= {int(stats['min_value'])}"] if stats["min_value"] is not None else []
        bounds += [f"length({column}) <= {int(stats['max_value'])}"] if stats["max_value"] is not None else []
        return " AND ".join(bounds) or "true"
    if check.name == "str_startswith":
        return f"starts_with({column}, {literal(stats['string'])})"
    if check.name == "in_range":
        low = ">=" if stats["include_min"] else ">"
        high = "<=" if stats["include_max"] else "<"
        return f"{column} {low} {stats['min_value']!r} AND {column} {high} {stats['max_value']!r}"
    if check.name in ("greater_than", "greater_than_or_equal_to"):
        return f"{column} {'>' if check.name == 'greater_than' else '>='} {stats['min_value']!r}"
    raise TypeError(f"pandera check {check.name} on {column} has no SQL form; give it statistics['sql']")


def _rule(check: pa.Check) -> tuple[str, str | None]:
    """(rule, named column or None): a custom check's ``error`` reads ``rule`` or ``rule@column``."""
    rule, _, column = str(check.error or check.name).partition("@")
    return rule, column or None


def compile_checks(schema: pa.DataFrameSchema, columns: Collection[str] = ()) -> list[SqlCheck]:
    """Every row-level check of ``schema`` as SQL (uniqueness is :func:`unique_keys`).

    A frame check's failure shows the value of the column it names when the rows have that column
    (the schema's own, or one of ``columns``), like an unknown ``organisation`` reference.
    """
    compiled = []
    for name, column in schema.columns.items():
        col = quote(name)
        value = f"CAST({col} AS VARCHAR)"
        if not column.nullable:
            compiled.append(SqlCheck(name, REQUIRED, f"{col} IS NOT NULL", value))
        for check in column.checks:
            rule, _ = _rule(check)
            sql = check.statistics.get("sql")
            predicate = sql.replace("{column}", col) if sql else _builtin(check, col)
            # Like pandera, a value check passes a missing value (``required`` is its own check).
            passes = f"({col} IS NULL OR {_true(predicate)})" if check.ignore_na else predicate
            compiled.append(SqlCheck(name, rule, passes, value))
    for check in schema.checks:
        rule, named = _rule(check)
        if "sql" not in check.statistics:
            raise TypeError(f"{schema.name}: frame check {check.error} has no statistics['sql']")
        column = named or rule
        shown = column in schema.columns or column in columns
        value = f"CAST({quote(column)} AS VARCHAR)" if shown else "NULL::VARCHAR"
        compiled.append(SqlCheck(column, rule, _true(check.statistics["sql"]), value))
    return compiled


def unique_keys(schema: pa.DataFrameSchema) -> list[list[str]]:
    """Each key the schema holds unique: its ``unique`` columns together, and every ``unique=True`` column."""
    keys = [list(schema.unique)] if schema.unique else []
    return keys + [[name] for name, column in schema.columns.items() if column.unique]


def applied_upstream(
    upstream: pa.DataFrameSchema, schema: pa.DataFrameSchema, verbatim: Collection[str]
) -> frozenset[str]:
    """The predicates of ``schema`` that ``upstream`` already applied, row by row, to the same column.

    Only columns in ``verbatim`` count: those the table copies unchanged from the rows ``upstream``
    checked (the staged tables take ``<column>__v`` for a column the gate parsed, so those are not).
    The row gate rejected every row failing such a predicate, so it holds on every staged row.
    """
    applied = {(c.column, c.passes) for c in compile_checks(upstream)}
    return frozenset(
        c.passes for c in compile_checks(schema) if c.column in verbatim and (c.column, c.passes) in applied
    )


def failed_rows(
    schema: pa.DataFrameSchema,
    source: str,
    carry: list[str],
    columns: Collection[str] = (),
    holds: Collection[str] = (),
) -> str:
    """SQL: one row per (row of ``source``, failed check): ``carry`` columns, column_name, rule, value.

    One scan: rows that pass every check are dropped by the WHERE before any failure is spelled out.
    ``columns`` are the source's columns beyond the schema's (see :func:`compile_checks`); ``holds``
    are predicates known to hold (see :func:`applied_upstream`), not evaluated again.
    """
    checks = [c for c in compile_checks(schema, columns) if c.passes not in holds]
    kept = "".join(f"{quote(c)}, " for c in carry)
    if not checks:
        return (
            f"SELECT {kept}NULL::VARCHAR AS column_name, NULL::VARCHAR AS rule, NULL::VARCHAR AS value "
            f"FROM ({source}) WHERE false"
        )
    cases = ", ".join(
        f"CASE WHEN NOT {c.passes} THEN {{'column_name': {literal(c.column)}, 'rule': {literal(c.rule)}, "
        f"'value': {c.value}}} END"
        for c in checks
    )
    return f"""
        SELECT {kept}f.column_name, f.rule, f.value FROM (
            SELECT {kept}unnest(list_filter([{cases}], lambda x: x IS NOT NULL)) AS f
            FROM ({source}) AS t
            WHERE NOT ({" AND ".join(c.passes for c in checks)})
        )
    """


def _sql_failures(
    con: duckdb.DuckDBPyConnection, sql: str, schema: pa.DataFrameSchema, holds: Collection[str]
) -> pd.DataFrame:
    """Failure cases over every row, at most ``CASES_PER_CHECK`` per check and key."""
    columns = columns_of(con, sql)
    frames = [
        con.execute(
            f"""
            SELECT column_name AS "column", rule AS "check", value AS failure_case, NULL AS "index"
            FROM ({failed_rows(schema, sql, [], columns, holds)})
            QUALIFY row_number() OVER (PARTITION BY column_name, rule) <= {CASES_PER_CHECK}
            """
        ).df()
    ]
    for key in unique_keys(schema):
        cols = ", ".join(quote(c) for c in key)
        # Missing values are not duplicates of each other (as in pandera for a nullable column).
        nonnull = " AND ".join(f"{quote(c)} IS NOT NULL" for c in key) if len(key) == 1 else "true"
        frames.append(
            con.execute(
                f"""
                SELECT {literal(",".join(key))} AS "column", {literal(DUPLICATE_KEY)} AS "check",
                       concat_ws('|', {cols}) AS failure_case, NULL AS "index"
                FROM ({sql}) WHERE {nonnull} GROUP BY {cols} HAVING count(*) > 1 LIMIT {CASES_PER_CHECK}
                """
            ).df()
        )
    return pd.concat(frames, ignore_index=True).astype(str)


def _sample_failures(con: duckdb.DuckDBPyConnection, sql: str, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """pandera's own verdict on the first rows: dtypes, the strict column set, and every check again."""
    sample = con.execute(f"SELECT * FROM ({sql}) LIMIT {SAMPLE_ROWS}").df()
    try:
        schema.validate(sample, lazy=True)
    except pa.errors.SchemaErrors as err:
        return err.failure_cases[FAILURE_COLUMNS].astype(str)
    return pd.DataFrame(columns=FAILURE_COLUMNS)


def table_failures(
    con: duckdb.DuckDBPyConnection, sql: str, schema: pa.DataFrameSchema, holds: Collection[str] = ()
) -> pd.DataFrame:
    """Failure cases of the rows ``sql`` returns against ``schema``; empty means they meet it.

    ``holds``: predicates already enforced on every row upstream; the SQL scan skips them, pandera's
    sample still applies the whole schema.
    """
    cases = pd.concat(
        [_sample_failures(con, sql, schema), _sql_failures(con, sql, schema, holds)], ignore_index=True
    )
    return cases.drop_duplicates(["column", "check", "failure_case"], ignore_index=True)
