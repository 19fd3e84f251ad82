"""The quality gate: pandera failures become rejected rows; per-LEA thresholds hold bad loads back.

Two levels, on purpose. A failure that names a row (a bad email, an unknown role) rejects that row
into ``rejected_rows`` and the load goes on. A share of rejected rows, or of people gone since the
last accepted run, above ``data/pipeline.toml [gate]`` fails the gate for that LEA: its previous
conformed rows stay (see :mod:`staff_pipeline.transform.conformed`), so a broken export never
mass-deletes people downstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd
import pandera.pandas as pa

from staff_pipeline.config import GateSettings
from staff_pipeline.schemas import staging as schemas
from staff_pipeline.transform.staging import CANDIDATES
from staff_pipeline.warehouse import table_exists

_PANDERA_RULES = {
    "not_nullable": "required",
    "field_uniqueness": "duplicate_key",
    "multiple_fields_uniqueness": "duplicate_key",
}
_ORDER = {"stg_sis_staff_assignments": "lea_id, file_name, line_number"}
SOURCES = {name: ("sis" if "sis" in name else "eduv") for name in schemas.ROW_GATES}
FAILURE_COLUMNS = ["index", "column_name", "rule", "value"]
CHUNK_VECTORS = 64  # DuckDB vectors of 2,048 rows: about 131,000 candidate rows per pandas frame


_NO_TABLE_FAILURES = pd.DataFrame(columns=["column", "check", "failure_case"])


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "index" else object) for c in FAILURE_COLUMNS})


def row_failures(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate lazily; return (failures naming a row, failures about the whole table)."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    else:
        return _no_failures(), _NO_TABLE_FAILURES
    table_level = cases[cases["index"].isna()][["column", "check", "failure_case"]]
    cases = cases[cases["index"].notna()].copy()
    check = cases["check"].astype(str)
    multi = check.str.contains("@", regex=False)
    cases["rule"] = check.str.split("@").str[0].replace(_PANDERA_RULES)
    cases["column_name"] = cases["column"].where(~multi, check.str.split("@").str[-1])
    cases["index"] = cases["index"].astype("int64")
    # A rule over several columns is reported once per row, with the named column's value.
    cases = cases.drop_duplicates(["index", "column_name", "rule"])
    in_frame = cases["column_name"].isin(frame.columns)
    values = cases["failure_case"].astype(object).where(~multi | in_frame, None)
    for column in cases.loc[multi & in_frame, "column_name"].unique():
        rows = multi & (cases["column_name"] == column)
        values[rows] = frame.loc[cases.loc[rows, "index"], column].to_numpy()
    cases["value"] = values.where(pd.notna(values), None).map(lambda v: None if v is None else str(v))
    return cases[FAILURE_COLUMNS].reset_index(drop=True), table_level.reset_index(drop=True)


@dataclass
class RowGateResult:
    """What the row gate did: counts per table and rule, and failures no row explains."""

    rejected: pd.DataFrame  # table_name, source, record_key, location, lea_id, column_name, rule, value
    table_failures: dict[str, pd.DataFrame]

    def counts_by_rule(self, table: str | None = None) -> dict[str, int]:
        frame = self.rejected if table is None else self.rejected[self.rejected["table_name"] == table]
        return {str(k): int(v) for k, v in frame.groupby("rule").size().sort_values(ascending=False).items()}


def _rejected(table: str, rows: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    rows = rows.loc[failures["index"].to_numpy()]
    return pd.DataFrame(
        {
            "table_name": table,
            "source": SOURCES[table],
            "record_key": rows["record_key"].to_numpy(),
            "location": rows["location"].to_numpy(),
            "lea_id": rows["lea_id"].to_numpy(),
            "column_name": failures["column_name"].to_numpy(),
            "rule": failures["rule"].to_numpy(),
            "value": failures["value"].to_numpy(),
        }
    )


def _gate_table(con: duckdb.DuckDBPyConnection, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate in chunks (memory stays flat at any size); the natural key over all survivors."""
    result = con.execute(f"SELECT * FROM {CANDIDATES[table]} ORDER BY {_ORDER.get(table, 'location')}")
    rejected = [_rejected(table, pd.DataFrame(columns=["record_key", "location", "lea_id"]), _no_failures())]
    table_level, keys = [], []
    offset = 0
    while len(chunk := result.fetch_df_chunk(CHUNK_VECTORS)):
        chunk.index = pd.RangeIndex(offset, offset + len(chunk))
        offset += len(chunk)
        failures, problems = row_failures(chunk, schemas.ROW_GATES[table])
        rejected.append(_rejected(table, chunk, failures))
        table_level.append(problems)
        if "natural_key" in chunk:
            keep = ~chunk.index.isin(failures["index"])
            keys.append(chunk.loc[keep, ["natural_key", "record_key", "location", "lea_id"]])
    if keys:
        survivors = pd.concat(keys)
        failures, problems = row_failures(survivors, schemas.natural_key_rows)
        rejected.append(_rejected(table, survivors, failures))
        table_level.append(problems)
    return pd.concat(rejected, ignore_index=True), pd.concat(
        [_NO_TABLE_FAILURES, *table_level], ignore_index=True
    )


def run_row_gate(con: duckdb.DuckDBPyConnection, run_id: str) -> RowGateResult:
    """Validate every candidate table, append the failures to ``rejected_rows``.

    Leaves the temp table ``gate_rejected(location)`` for :func:`staging.build_staged` and
    ``stg_lea_counts__next`` (rows and rejected rows per LEA) for the per-LEA thresholds.
    """
    parts, table_failures = [], {}
    for table in schemas.ROW_GATES:
        rejected, table_level = _gate_table(con, table)
        parts.append(rejected)
        if len(table_level):
            table_failures[table] = table_level
    rejected = pd.concat(parts, ignore_index=True).astype({"lea_id": "Int64"})
    con.register("gate_rejected_frame", rejected)
    con.execute(
        """
        INSERT INTO rejected_rows
        SELECT $run, source, table_name, record_key, location, column_name, rule, value, now()
        FROM gate_rejected_frame
        """,
        {"run": run_id},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE gate_rejected AS "
        "SELECT DISTINCT location, lea_id FROM gate_rejected_frame"
    )
    con.unregister("gate_rejected_frame")
    # Shares count records: an employee element (with its ids), a role, a SIS row.
    con.execute(
        f"""
        CREATE OR REPLACE TABLE stg_lea_counts__next AS
        WITH units AS (
            SELECT location, element AS unit, lea_id FROM {CANDIDATES["stg_eduv_employees"]}
            UNION ALL SELECT location, element, lea_id FROM {CANDIDATES["stg_eduv_employee_ids"]}
            UNION ALL SELECT location, location, lea_id FROM {CANDIDATES["stg_eduv_employee_roles"]}
            UNION ALL SELECT location, location, lea_id FROM {CANDIDATES["stg_sis_staff_assignments"]}
        )
        SELECT u.lea_id, count(DISTINCT u.unit) AS rows,
               count(DISTINCT u.unit) FILTER (WHERE g.location IS NOT NULL) AS rejected
        FROM units u LEFT JOIN gate_rejected g USING (location)
        WHERE u.lea_id IS NOT NULL GROUP BY u.lea_id
        """
    )
    return RowGateResult(rejected=rejected, table_failures=table_failures)


def _split_uniqueness(schema: pa.DataFrameSchema) -> tuple[pa.DataFrameSchema, list[pa.DataFrameSchema]]:
    """The schema without its uniqueness rules (checked per chunk), and one small schema per unique key."""
    unique_columns = [name for name, column in schema.columns.items() if column.unique]
    keys = ([list(schema.unique)] if schema.unique else []) + [[name] for name in unique_columns]
    body = schema.update_columns({name: {"unique": False} for name in unique_columns})
    body.unique = None
    return body, [
        pa.DataFrameSchema({key[0]: pa.Column(nullable=True, unique=True)})  # nulls are not duplicates
        if len(key) == 1
        else pa.DataFrameSchema({c: pa.Column(nullable=True) for c in key}, unique=key)
        for key in keys
    ]


def _cases(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        return err.failure_cases[["column", "check", "failure_case", "index"]].astype(str)
    return pd.DataFrame(columns=["column", "check", "failure_case", "index"])


def validate_query(con: duckdb.DuckDBPyConnection, sql: str, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Failure cases of a whole (``__next``) table against its schema; empty means it may be swapped in.

    Read in chunks so memory stays flat; only the key columns are held at once, for uniqueness.
    """
    body, key_schemas = _split_uniqueness(schema)
    key_columns = list(dict.fromkeys(c for k in key_schemas for c in k.columns))
    result = con.execute(sql)
    cases, keys = [], []
    offset = 0
    while len(chunk := result.fetch_df_chunk(CHUNK_VECTORS)):
        chunk.index = pd.RangeIndex(offset, offset + len(chunk))
        offset += len(chunk)
        cases.append(_cases(chunk, body))
        keys.append(chunk[key_columns])
    if keys:
        cases += [_cases(pd.concat(keys)[list(k.columns)], k) for k in key_schemas]
    return pd.concat([_cases(pd.DataFrame(), pa.DataFrameSchema()), *cases], ignore_index=True)


def lea_gate(con: duckdb.DuckDBPyConnection, settings: GateSettings, run_id: str) -> pd.DataFrame:
    """Per-LEA thresholds against the last accepted conformed state; returns the ``gate_results`` rows.

    Needs ``stg_lea_counts`` (rows, rejected per LEA), the candidate ``staff_assignments__cand`` and
    ``staff_contacts__cand``, and the current (last accepted) ``staff_assignments``/``staff_contacts``.
    """
    before = _people_by_lea(con, "staff_assignments", "staff_contacts")
    return con.execute(
        f"""
        WITH counts AS (SELECT lea_id, rows, rejected FROM stg_lea_counts),
        after AS (SELECT DISTINCT lea_id, person_id FROM staff_assignments__cand
                  UNION SELECT DISTINCT lea_id, person_id FROM staff_contacts__cand),
        before AS ({before}),
        gone AS (SELECT b.lea_id, count(*) AS n FROM before b ANTI JOIN after a USING (lea_id, person_id)
                 GROUP BY b.lea_id),
        leas AS (SELECT DISTINCT lea_id FROM cfg_organisations),
        r AS (
            SELECT l.lea_id, coalesce(c.rows, 0) AS rows, coalesce(c.rejected, 0) AS rejected,
                   coalesce(c.rejected / nullif(c.rows, 0), 0) AS rejected_share,
                   (SELECT count(*) FROM before b WHERE b.lea_id = l.lea_id) AS staff_before,
                   coalesce(g.n, 0) AS disappeared
            FROM leas l LEFT JOIN counts c USING (lea_id) LEFT JOIN gone g USING (lea_id)
        )
        SELECT $run AS run_id, lea_id, rows, rejected, rejected_share, staff_before, disappeared,
               coalesce(disappeared / nullif(staff_before, 0), 0) AS disappeared_share,
               rejected_share <= $max_rejected
                 AND coalesce(disappeared / nullif(staff_before, 0), 0) <= $max_gone AS passed,
               concat_ws('; ',
                 CASE WHEN rejected_share > $max_rejected THEN
                      printf('%d of %d rows rejected (%.1f%% > %.1f%%)',
                      rejected, rows, 100 * rejected_share, 100 * $max_rejected) END,
                 CASE WHEN coalesce(disappeared / nullif(staff_before, 0), 0) > $max_gone THEN
                      printf('%d of %d staff gone since the last accepted run (%.1f%% > %.1f%%)',
                      disappeared, staff_before, 100 * disappeared / staff_before, 100 * $max_gone) END
               ) AS reason,
               now() AS checked_at
        FROM r ORDER BY lea_id
        """,
        {
            "run": run_id,
            "max_rejected": settings.max_rejected_share,
            "max_gone": settings.max_disappeared_share,
        },
    ).df()


def _people_by_lea(con: duckdb.DuckDBPyConnection, *tables: str) -> str:
    present = [t for t in tables if table_exists(con, t)]
    if not present:
        return "SELECT NULL::BIGINT AS lea_id, NULL::VARCHAR AS person_id WHERE false"
    return " UNION ".join(f"SELECT DISTINCT lea_id, person_id FROM {t}" for t in present)
