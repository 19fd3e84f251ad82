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

from staff_pipeline.config import GateSettings
from staff_pipeline.schemas import sql as schema_sql
from staff_pipeline.schemas import staging as schemas
from staff_pipeline.transform.staging import CANDIDATES, gate_source
from staff_pipeline.warehouse import columns_of, table_exists

# Which copy of a duplicated natural key stays: the first in the export.
_ORDER = {"stg_sis_staff_assignments": "export_no"}
SOURCES = {name: ("sis" if "sis" in name else "eduv") for name in schemas.ROW_GATES}
_CARRY = ["record_key", "location", "lea_id", "row_no"]
SAMPLE_PER_TABLE = 20


@dataclass
class RowGateResult:
    """What the row gate rejected, small enough for run metadata at any size."""

    counts: pd.DataFrame  # table_name, column_name, rule, rows
    sample: pd.DataFrame  # the first rejected rows per table: table_name, location, record_key, ...

    def for_table(self, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (
            self.counts[self.counts["table_name"] == table].drop(columns="table_name"),
            self.sample[self.sample["table_name"] == table].drop(columns="table_name"),
        )


def _duplicates_sql(table: str) -> str:
    """Duplicates of ``schemas.natural_key_rows``'s key among the rows that passed their checks
    (``_failed`` holds the others), so a bad first copy does not take a good second one with it;
    the first in the export stays (the schema's ``report_duplicates="exclude_first"``)."""
    [[key]] = schema_sql.unique_keys(schemas.natural_key_rows)
    return f"""
        SELECT {", ".join(_CARRY)}, '{key}', '{schema_sql.DUPLICATE_KEY}', {key}
        FROM ({gate_source(table)}) c ANTI JOIN _failed f USING (row_no)
        WHERE {key} IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {_ORDER[table]}) > 1
    """


def run_row_gate(con: duckdb.DuckDBPyConnection, run_id: str) -> RowGateResult:
    """Validate every candidate table, append the failures to ``rejected_rows``.

    Leaves the temp table ``gate_rejected(table_name, row_no)`` for :func:`staging.build_staged` and
    ``stg_lea_counts__next`` (rows and rejected rows per LEA) for the per-LEA thresholds.
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE gate_rejected_rows(table_name VARCHAR, source VARCHAR, "
        "record_key VARCHAR, location VARCHAR, lea_id BIGINT, row_no BIGINT, column_name VARCHAR, "
        "rule VARCHAR, value VARCHAR)"
    )
    for table, schema in schemas.ROW_GATES.items():
        source = gate_source(table)
        columns = columns_of(con, source)
        failed = schema_sql.failed_rows(schema, source, _CARRY, columns)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _failed AS {failed}")
        prefix = f"INSERT INTO gate_rejected_rows SELECT '{table}', '{SOURCES[table]}', "
        con.execute(f"{prefix}* FROM _failed")
        if set(schemas.natural_key_rows.columns) <= set(columns):
            con.execute(f"{prefix}* FROM ({_duplicates_sql(table)})")
    con.execute(
        """
        INSERT INTO rejected_rows
        SELECT $run, source, table_name, record_key, location, column_name, rule, value, now()
        FROM gate_rejected_rows ORDER BY table_name, location, column_name, rule
        """,
        {"run": run_id},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE gate_rejected AS "
        "SELECT DISTINCT table_name, row_no FROM gate_rejected_rows"
    )
    # Shares count records: an employee element (with its ids), a role, a SIS row. A rejected id is
    # dropped on its own (the element stays), but counts as its element: ids are not records.
    con.execute(
        f"""
        CREATE OR REPLACE TABLE stg_lea_counts__next AS
        WITH totals AS (
            SELECT lea_id, count(*) AS n FROM {CANDIDATES["stg_eduv_employees"]} GROUP BY lea_id
            UNION ALL SELECT lea_id, count(*) FROM {CANDIDATES["stg_eduv_employee_roles"]} GROUP BY lea_id
            UNION ALL SELECT lea_id, count(*) FROM {CANDIDATES["stg_sis_staff_assignments"]} GROUP BY lea_id
        ),
        rejected AS (
            SELECT lea_id, count(DISTINCT CASE WHEN table_name = 'stg_eduv_employee_ids'
                                               THEN split_part(location, '/', 1) ELSE location END) AS n
            FROM gate_rejected_rows GROUP BY lea_id
        )
        SELECT t.lea_id, sum(t.n)::BIGINT AS rows, coalesce(any_value(r.n), 0)::BIGINT AS rejected
        FROM totals t LEFT JOIN rejected r USING (lea_id)
        WHERE t.lea_id IS NOT NULL GROUP BY t.lea_id
        """
    )
    con.execute("DROP TABLE _failed")
    counts = con.execute(
        "SELECT table_name, column_name, rule, count(*) AS rows FROM gate_rejected_rows "
        "GROUP BY ALL ORDER BY table_name, rows DESC, column_name, rule"
    ).df()
    sample = con.execute(
        f"""
        SELECT table_name, location, record_key, column_name, rule, value FROM gate_rejected_rows
        QUALIFY row_number() OVER (PARTITION BY table_name ORDER BY location, column_name, rule)
                <= {SAMPLE_PER_TABLE}
        ORDER BY table_name, location, column_name, rule
        """
    ).df()
    return RowGateResult(counts=counts, sample=sample)


def lea_gate(con: duckdb.DuckDBPyConnection, settings: GateSettings, run_id: str) -> pd.DataFrame:
    """Per-LEA thresholds against the last accepted conformed state; returns the ``gate_results`` rows.

    Needs ``stg_lea_counts`` (rows, rejected per LEA), the candidate ``staff_assignments__cand`` and
    ``staff_contacts__cand``, and the current (last accepted) ``staff_assignments``/``staff_contacts``.
    Staff gone are counted for the LEA and per source: a header-only (or wholly rejected) SIS export
    leaves the people in the model through Edu-V but takes every WISEid and SIS assignment with it.
    ``staff_before``/``disappeared`` are the LEA's; ``disappeared_share`` is the worse of the LEA's
    and its sources' shares, and ``reason`` names the source.
    """
    return con.execute(
        f"""
        WITH counts AS (SELECT lea_id, rows, rejected FROM stg_lea_counts),
        after AS (SELECT DISTINCT lea_id, person_id, source FROM ({_people_by_source(con, "__cand")})),
        before_by_source AS (SELECT DISTINCT lea_id, person_id, source FROM ({_people_by_source(con, "")})),
        before AS (SELECT DISTINCT lea_id, person_id FROM before_by_source),
        gone AS (
            SELECT b.lea_id, count(*) AS n
            FROM before b ANTI JOIN (SELECT DISTINCT lea_id, person_id FROM after) a USING (lea_id, person_id)
            GROUP BY b.lea_id
        ),
        source_gone AS (  -- per LEA, the source whose people fell the most, by count: a person
                          -- split in two keeps the source's rows under a new id, and is not gone
            SELECT lea_id, arg_max(source, n_gone / n_before) AS source, max(n_gone / n_before) AS share,
                   arg_max(n_gone, n_gone / n_before) AS n_gone,
                   arg_max(n_before, n_gone / n_before) AS n_before
            FROM (
                SELECT b.lea_id, b.source, b.n AS n_before, greatest(b.n - coalesce(a.n, 0), 0) AS n_gone
                FROM (SELECT lea_id, source, count(*) AS n FROM before_by_source GROUP BY ALL) b
                LEFT JOIN (SELECT lea_id, source, count(*) AS n FROM after GROUP BY ALL) a
                       USING (lea_id, source)
            ) GROUP BY lea_id
        ),
        leas AS (SELECT DISTINCT lea_id FROM cfg_organisations),
        r AS (
            SELECT l.lea_id, coalesce(c.rows, 0) AS rows, coalesce(c.rejected, 0) AS rejected,
                   coalesce(c.rejected / nullif(c.rows, 0), 0) AS rejected_share,
                   (SELECT count(*) FROM before b WHERE b.lea_id = l.lea_id) AS staff_before,
                   coalesce(g.n, 0) AS disappeared, sg.source AS gone_source,
                   coalesce(sg.share, 0) AS source_gone_share, sg.n_gone AS source_gone,
                   sg.n_before AS source_before
            FROM leas l LEFT JOIN counts c USING (lea_id) LEFT JOIN gone g USING (lea_id)
            LEFT JOIN source_gone sg USING (lea_id)
        ),
        s AS (
            SELECT *, coalesce(disappeared / nullif(staff_before, 0), 0) AS lea_gone_share FROM r
        )
        SELECT $run AS run_id, lea_id, rows, rejected, rejected_share, staff_before, disappeared,
               greatest(lea_gone_share, source_gone_share) AS disappeared_share,
               rejected_share <= $max_rejected AND greatest(lea_gone_share, source_gone_share) <= $max_gone
                   AS passed,
               concat_ws('; ',
                 CASE WHEN rejected_share > $max_rejected THEN
                      printf('%d of %d rows rejected (%.1f%% > %.1f%%)',
                      rejected, rows, 100 * rejected_share, 100 * $max_rejected) END,
                 CASE WHEN lea_gone_share > $max_gone THEN
                      printf('%d of %d staff gone since the last accepted run (%.1f%% > %.1f%%)',
                      disappeared, staff_before, 100 * lea_gone_share, 100 * $max_gone)
                      WHEN source_gone_share > $max_gone THEN
                      printf('%d of %d staff gone from %s since the last accepted run (%.1f%% > %.1f%%)',
                      source_gone, source_before, upper(gone_source), 100 * source_gone_share,
                      100 * $max_gone)
                 END
               ) AS reason,
               now() AS checked_at
        FROM s ORDER BY lea_id
        """,
        {
            "run": run_id,
            "max_rejected": settings.max_rejected_share,
            "max_gone": settings.max_disappeared_share,
        },
    ).df()


def _people_by_source(con: duckdb.DuckDBPyConnection, suffix: str) -> str:
    """SQL: ``(lea_id, person_id, source)`` of the conformed rows (``suffix`` ``__cand`` for the
    candidates, empty for the last accepted tables: none on the first run), one row per source of
    a row (``eduv,sis`` is both)."""
    if not all(table_exists(con, f"{t}{suffix}") for t in ("staff_assignments", "staff_contacts")):
        return (
            "SELECT NULL::BIGINT AS lea_id, NULL::VARCHAR AS person_id, NULL::VARCHAR AS source WHERE false"
        )
    return f"""
        SELECT lea_id, person_id, source FROM staff_assignments{suffix}
        UNION ALL
        SELECT lea_id, person_id, unnest(string_split(source, ',')) FROM staff_contacts{suffix}
    """
