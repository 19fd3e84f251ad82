"""The job that republishes the analysts' copy (started by ``publish_analytics_sensor``).

An op job rather than an asset: the copy is a by-product of the warehouse, not a stage with its
own lineage. It takes the ``duckdb_writer`` pool because it holds the warehouse lock while copying.
"""

from dagster import OpExecutionContext, job, op

from staff_pipeline.publish import publish
from staff_pipeline.resources import WRITER_POOL


@op(pool=WRITER_POOL, description="Copy the warehouse, add the analyst views, swap the copy in.")
def publish_analytics_copy(context: OpExecutionContext) -> None:
    path = publish()
    context.log.info(f"published {path.name}")


@job(description="Republish data/analytics.duckdb (the analysts' read-only copy with its views).")
def publish_analytics_job() -> None:
    publish_analytics_copy()
