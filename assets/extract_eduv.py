"""Asset ``raw_eduv_employees``: pull every configured school from Edu-V and land it as received."""

from dagster import AssetExecutionContext, Failure, MaterializeResult, asset

from staff_pipeline.clients.eduv import EduVResource
from staff_pipeline.config import load_organisations
from staff_pipeline.extract import eduv as extract
from staff_pipeline.http import worth_retrying
from staff_pipeline.metadata import markdown_table
from staff_pipeline.resources import API_RETRY_POLICY, WRITER_POOL, WarehouseResource
from staff_pipeline.settings import paths
from staff_pipeline.warehouse import preview


@asset(
    group_name="extract",
    kinds={"python", "duckdb"},
    pool=WRITER_POOL,
    retry_policy=API_RETRY_POLICY,
    description="Edu-V Employees, one request per configured school, appended to raw_eduv_employees "
    "(one row per array element, as received) and raw_eduv_requests. Fails after landing the good "
    "schools when any school failed, naming them.",
)
def raw_eduv_employees(
    context: AssetExecutionContext, eduv: EduVResource, warehouse: WarehouseResource
) -> MaterializeResult:
    queries = extract.school_queries(load_organisations())
    with eduv.client() as client:
        fetched = extract.fetch_all(
            client,
            queries,
            run_id=context.run_id,
            landing_dir=paths().landing,
            concurrency=eduv.max_concurrency,
        )
    with warehouse.connect() as con:
        landed = extract.land(con, fetched, context.run_id)
        sample = preview(con, extract.preview_sql(landed))
    failed = [r for r in landed if not r.ok]
    metadata = {
        "schools_queried": len(landed),
        "schools_failed": len(failed),
        "rows_landed": sum(r.employee_count or 0 for r in landed),
        "bytes": sum(r.bytes for r in landed),
        "schools": markdown_table(extract.results_frame(landed)),
        "preview": markdown_table(sample),
    }
    if failed:
        for r in failed:
            context.log.error(f"Edu-V school {r.problem}")
        raise Failure(
            description=f"Edu-V extract failed for {len(failed)} of {len(landed)} schools (the others "
            "were landed): " + "; ".join(r.problem or r.school_key for r in failed),
            metadata=metadata,
            # a school's 400/401/403/404 (no consent, a wrong id) stays so until someone acts
            allow_retries=any(worth_retrying(r.http_status) for r in failed),
        )
    return MaterializeResult(metadata=metadata)
