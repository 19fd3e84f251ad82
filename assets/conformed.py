"""Group ``conformed``: identity matching, per-LEA gate and the staff model, with blocking checks.

``staff``, ``staff_contacts`` and ``staff_assignments`` (with ``staff_identifiers`` and
``staff_match_issues``) are built as ``*__next`` and swapped in together only when the conformed
schemas pass; a failed ``conformed_schema`` check leaves the previous tables exactly as they were and
stops the Ed-Fi and LinkIt loads. An LEA that fails its thresholds keeps its previous rows and shows
in ``gate_results`` and the ``lea_gate`` check (a warning: the other LEAs go on).
"""

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

from assets.staging import failure_metadata
from staff_pipeline.config import load_settings
from staff_pipeline.metadata import markdown_table
from staff_pipeline.partitions import reload_hint, without_partition
from staff_pipeline.resources import WRITER_POOL, WarehouseResource
from staff_pipeline.transform.staging import STAGED
from staff_pipeline.transform.steps import conform
from staff_pipeline.warehouse import preview

SCHEMA_CHECK = "conformed_schema"
LEA_GATE_CHECK = "lea_gate"
TABLES = ("staff", "staff_contacts", "staff_assignments")
_DESCRIPTIONS = {
    "staff": "One row per person across Edu-V and SIS (status active/leaving, matched_by, sources).",
    "staff_contacts": "Every email and phone per person per LEA and school, with its source.",
    "staff_assignments": "Person x school x role x period from Edu-V roles and SIS rows, crosswalk applied.",
}


@multi_asset(
    pool=WRITER_POOL,
    specs=[
        AssetSpec(
            name,
            group_name="conformed",
            deps=[AssetKey(s) for s in STAGED],
            kinds={"duckdb", "pandera"},
            description=_DESCRIPTIONS[name],
            skippable=True,
        )
        for name in TABLES
    ],
    check_specs=[
        *(
            AssetCheckSpec(
                SCHEMA_CHECK,
                asset=name,
                blocking=True,
                description="Conformed schema and the targets' natural keys hold; "
                "only then is the model swapped in.",
            )
            for name in TABLES
        ),
        AssetCheckSpec(
            LEA_GATE_CHECK,
            asset="staff",
            description="Per-LEA thresholds (rejected share, staff disappeared); "
            "a failed LEA keeps its previous rows.",
        ),
    ],
)
def conformed(context: AssetExecutionContext, warehouse: WarehouseResource):
    with warehouse.connect() as con:
        result = conform(con, context.run_id, load_settings())
        extra = {}
        if result.swapped:
            extra = {
                "preview": markdown_table(preview(con, "SELECT * FROM staff ORDER BY person_id", 10)),
                "matched_by": markdown_table(
                    con.execute(
                        "SELECT matched_by, count(*) AS people FROM staff GROUP BY 1 ORDER BY 2 DESC"
                    ).df()
                ),
                "status": markdown_table(
                    con.execute(
                        "SELECT status, leaving_reason, count(*) AS people FROM staff GROUP BY ALL"
                    ).df()
                ),
                "match_issues": markdown_table(
                    con.execute("SELECT issue, count(*) AS issues FROM staff_match_issues GROUP BY 1").df()
                ),
            }
    missing = without_partition()
    if missing:
        extra["not_loaded_until_reload"] = hint = reload_hint(missing)
        context.log.warning(hint)
    gates = result.gate_results
    failed_leas = gates.loc[~gates["passed"], ["lea_id", "reason"]]
    for table in TABLES:
        metadata = {"rows": result.rows[table]}
        if table == "staff":
            metadata.update(extra, gate_results=markdown_table(gates.drop(columns=["run_id", "checked_at"])))
        if result.swapped:
            yield MaterializeResult(asset_key=table, metadata=metadata)
        yield AssetCheckResult(
            asset_key=table,
            check_name=SCHEMA_CHECK,
            passed=result.swapped,
            severity=AssetCheckSeverity.ERROR,
            description=None
            if result.swapped
            else ("model refused: " + ", ".join(sorted(result.failures)) + " failed; previous tables kept"),
            metadata={"rows": result.rows[table], **failure_metadata(result.failures.get(table))},
        )
    yield AssetCheckResult(
        asset_key="staff",
        check_name=LEA_GATE_CHECK,
        passed=failed_leas.empty,
        severity=AssetCheckSeverity.WARN,
        metadata={"failed_leas": markdown_table(failed_leas), "leas_checked": len(gates)},
    )
