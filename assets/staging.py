"""Group ``staging``: the pandera gate over the raw layer, as one step with blocking checks.

The four ``stg_*`` tables are built together (``staff_pipeline.transform.steps.stage``) and swapped in
only when every table schema passes; the blocking checks report that, with the row gate's rejected
counts per rule and a sample, so the conformed model and the loads never see a refused table.
"""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    multi_asset,
)

from staff_pipeline.config import load_settings
from staff_pipeline.metadata import markdown_table
from staff_pipeline.resources import WRITER_POOL, WarehouseResource
from staff_pipeline.transform.staging import STAGED
from staff_pipeline.transform.steps import StepResult, stage
from staff_pipeline.warehouse import preview

GATE_CHECK = "pandera_gate"
SAMPLE_ROWS = 20
_DEPS = {
    "stg_eduv_employees": "raw_eduv_employees",
    "stg_eduv_employee_ids": "raw_eduv_employees",
    "stg_eduv_employee_roles": "raw_eduv_employees",
    "stg_sis_staff_assignments": "raw_sis_staff",
}
_DESCRIPTIONS = {
    "stg_eduv_employees": "One row per Edu-V employee (deduplicated across schools), typed and gated.",
    "stg_eduv_employee_ids": "Edu-V userIds per employee.",
    "stg_eduv_employee_roles": "Edu-V organisationRoles per employee, resolved to configured schools.",
    "stg_sis_staff_assignments": "SIS export rows of each LEA's latest file, typed and gated.",
}


def failure_metadata(cases: pd.DataFrame | None) -> dict:
    """Counts per (column, check) and a sample of the failure cases, for a failed check."""
    if cases is None or not len(cases):
        return {}
    counts = cases.groupby(["column", "check"], dropna=False).size().rename("cases").reset_index()
    return {
        "failures_by_rule": markdown_table(counts),
        "failure_sample": markdown_table(cases.head(SAMPLE_ROWS)),
    }


def rejected_metadata(counts: pd.DataFrame, sample: pd.DataFrame) -> dict:
    """Row-gate results for one table: rejected rows by rule and a sample naming location and value."""
    return {
        "rejected": int(counts["rows"].sum()),
        "rejected_by_rule": markdown_table(counts),
        "rejected_sample": markdown_table(sample.head(SAMPLE_ROWS)),
    }


@multi_asset(
    pool=WRITER_POOL,
    specs=[
        AssetSpec(
            name,
            group_name="staging",
            deps=[AssetKey(_DEPS[name])],
            kinds={"duckdb", "pandera"},
            description=_DESCRIPTIONS[name],
            skippable=True,
        )
        for name in STAGED
    ],
    check_specs=[
        AssetCheckSpec(
            GATE_CHECK,
            asset=name,
            blocking=True,
            description="The staged table meets its pandera schema (rows that did not are in rejected_rows).",
        )
        for name in STAGED
    ],
)
def staging(context: AssetExecutionContext, warehouse: WarehouseResource):
    with warehouse.connect() as con:
        result: StepResult = stage(con, context.run_id, load_settings())
        previews = {t: preview(con, f'SELECT * FROM "{t}"', 5) for t in STAGED} if result.swapped else {}
    for school in result.unnamed.itertuples():
        context.log.warning(
            f"Edu-V answer {school.set_aside} for {school.school_key} has no role at a configured school "
            "(data/organisations.csv names the schools differently from the source?): set aside, "
            + (f"read from {school.read_instead}" if school.read_instead else "no earlier answer to read")
        )
    for table in STAGED:
        gate_meta = {"rows": result.rows[table], **rejected_metadata(*result.rejected.for_table(table))}
        if table == "stg_eduv_employee_roles":
            gate_meta["out_of_scope"] = markdown_table(result.out_of_scope)
            gate_meta["schools_not_named"] = markdown_table(result.unnamed)
        if result.swapped:
            yield MaterializeResult(
                asset_key=table, metadata={**gate_meta, "preview": markdown_table(previews[table])}
            )
        elif table not in result.failures:
            context.log.warning(
                f"{table} passed its schema but was not swapped in: another staged table failed"
            )
        yield AssetCheckResult(
            asset_key=table,
            check_name=GATE_CHECK,
            passed=result.swapped,
            severity=AssetCheckSeverity.ERROR,
            description=None
            if result.swapped
            else (
                "table refused: "
                + ", ".join(sorted(result.failures))
                + " failed the schema; nothing swapped in"
            ),
            metadata={**gate_meta, **failure_metadata(result.failures.get(table))},
        )
