"""The two steps the Dagster assets run: gate + stage, and conform. Plain functions, testable alone.

Both build into ``*__next`` tables and swap them in together only when their schemas pass: a
blocking check stops what comes after, but cannot undo a write, so the write waits for the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from staff_pipeline.config import Settings
from staff_pipeline.schemas import conformed as conformed_schemas
from staff_pipeline.schemas import staging as staging_schemas
from staff_pipeline.schemas.sql import applied_upstream, table_failures
from staff_pipeline.transform import conformed, gate, identity, staging
from staff_pipeline.warehouse import columns_of, row_count, swap_in_all, table_exists


@dataclass
class StepResult:
    """What a step did, for metadata and checks. ``failures`` holds, per table, what blocked the swap."""

    swapped: bool
    rows: dict[str, int]
    failures: dict[str, pd.DataFrame] = field(default_factory=dict)
    rejected: gate.RowGateResult | None = None
    gate_results: pd.DataFrame | None = None
    # per queried school: Edu-V roles and employees at schools not configured here (not rejects)
    out_of_scope: pd.DataFrame | None = None
    # Edu-V schools whose answer had roles, none at a configured school: set aside, the last accepted
    # answer read instead (read_instead empty: none yet, nothing staged from the school)
    unnamed: pd.DataFrame | None = None


def stage(
    con: duckdb.DuckDBPyConnection, run_id: str, settings: Settings, config_dir: Path | None = None
) -> StepResult:
    """Raw -> candidates -> row gate (``rejected_rows``) -> ``stg_*`` (swapped in if their schemas pass)."""
    staging.register_config(con, config_dir)
    staging.build_candidates(con, settings)
    row_gate = gate.run_row_gate(con, run_id)
    out_of_scope = con.execute(
        "SELECT school_key, roles, employees FROM eduv_out_of_scope ORDER BY school_key"
    ).df()
    unnamed = pd.DataFrame(  # built from tuples: no earlier answer stays None, not NaN
        con.execute(
            "SELECT n.school_key, n.set_aside, u.request_id FROM eduv_unnamed n "
            "JOIN eduv_requests_used u USING (school_key) ORDER BY n.school_key"
        ).fetchall(),
        columns=["school_key", "set_aside", "read_instead"],
        dtype=object,
    )
    staging.build_staged(con)
    failures = {}
    for table in staging.STAGED:
        cases = table_failures(
            con, f'SELECT * FROM "{table}__next"', staging_schemas.TABLES[table], _gated(con, table)
        )
        if len(cases):
            failures[table] = cases
    rows = {table: row_count(con, f"{table}__next") for table in staging.STAGED}
    swapped = not failures
    if swapped:
        extra = ("stg_lea_counts", "stg_eduv_requests_used")
        swap_in_all(con, {f"{t}__next": t for t in (*staging.STAGED, *extra)})
    return StepResult(
        swapped=swapped,
        rows=rows,
        failures=failures,
        rejected=row_gate,
        out_of_scope=out_of_scope,
        unnamed=unnamed,
    )


def _gated(con: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
    """The staged table's checks the row gate already applied to the columns it stages verbatim
    (a candidate column without a parsed ``__v`` twin): each check runs once per row, where rows are
    rejected."""
    candidate = columns_of(con, f"SELECT * FROM {staging.CANDIDATES[table]}")
    verbatim = {c for c in candidate if f"{c}__v" not in candidate}
    return applied_upstream(staging_schemas.ROW_GATES[table], staging_schemas.TABLES[table], verbatim)


def _validate_conformed(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    """Failures per table. LinkIt UserNames derive from emails and are the LinkIt mart's to reject per
    row; LocalCode is an identity, so two people holding one in a district refuse the model.

    Whether a row's person is in ``staff`` is one anti join per table, up front: the rows' own checks
    and their uniqueness scans then read a (nearly always empty) list instead of joining again."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE unknown_people AS
        SELECT DISTINCT person_id FROM (
            SELECT person_id FROM staff_contacts__next ANTI JOIN staff__next USING (person_id)
            UNION ALL
            SELECT person_id FROM staff_assignments__next ANTI JOIN staff__next USING (person_id)
        ) WHERE person_id IS NOT NULL
        """
    )
    known = (
        "(person_id IS NOT NULL AND person_id NOT IN (SELECT person_id FROM unknown_people)) AS person_known"
    )
    accounts = f"""
        SELECT linkit_district, local_code FROM ({conformed.linkit_local_codes("staff_assignments__next")})
        WHERE has_role AND local_code IS NOT NULL
    """
    checks = {
        "staff": [
            ("SELECT * FROM staff__next", conformed_schemas.staff),
            (
                accounts,
                conformed_schemas.linkit_local_codes,
            ),
        ],
        "staff_contacts": [
            (f"SELECT *, {known} FROM staff_contacts__next t", conformed_schemas.staff_contacts)
        ],
        "staff_assignments": [
            (f"SELECT *, {known} FROM staff_assignments__next t", conformed_schemas.staff_assignments)
        ],
    }
    failures = {}
    for table, queries in checks.items():
        cases = [table_failures(con, sql, schema) for sql, schema in queries]
        cases = [c for c in cases if len(c)]
        if cases:
            failures[table] = pd.concat(cases, ignore_index=True)
    return failures


def conform(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    settings: Settings,
    today: date | None = None,
    config_dir: Path | None = None,
) -> StepResult:
    """Staged tables -> identity -> candidates -> per-LEA gate -> ``*__next`` -> schemas -> swap."""
    today = today or date.today()
    staging.register_config(con, config_dir)
    staging.ensure_state(con)
    identity.match(con)
    conformed.build_candidates(con, today)
    results = gate.lea_gate(con, settings.gate, run_id)
    failed = [int(x) for x in results.loc[~results["passed"], "lea_id"]]
    conformed.build_next(con, failed, today)
    failures = _validate_conformed(con)
    rows = {t: row_count(con, f"{t}__next") for t in conformed.CONFORMED}
    con.register("gate_results_frame", results)
    con.execute("CREATE TABLE IF NOT EXISTS gate_results AS SELECT * FROM gate_results_frame WHERE false")
    con.execute("INSERT INTO gate_results SELECT * FROM gate_results_frame")
    con.unregister("gate_results_frame")
    swapped = not failures
    if swapped:
        swap_in_all(con, {f"{t}__next": t for t in conformed.CONFORMED})
        _remember_accepted_requests(con, failed, run_id)
    return StepResult(swapped=swapped, rows=rows, failures=failures, gate_results=results)


def _remember_accepted_requests(con: duckdb.DuckDBPyConnection, failed: list[int], run_id: str) -> None:
    """Schools pulled this run, in an LEA that passed: their request is now the one to fall back on."""
    if not table_exists(con, "stg_eduv_requests_used"):
        return
    con.execute(
        """
        INSERT OR REPLACE INTO eduv_accepted_requests
        SELECT school_key, request_id, $run, now() FROM stg_eduv_requests_used
        WHERE pulled AND lea_id NOT IN (SELECT unnest($failed::BIGINT[]))
        """,
        {"run": run_id, "failed": failed},
    )
