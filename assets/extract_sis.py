"""Asset ``raw_sis_staff``: land the SIS export files waiting in ``inbox/<lea_id>/``."""

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from staff_pipeline.config import lea_ids
from staff_pipeline.extract import sis
from staff_pipeline.metadata import markdown_table
from staff_pipeline.resources import WRITER_POOL, WarehouseResource
from staff_pipeline.settings import paths
from staff_pipeline.warehouse import preview


class SisInboxConfig(Config):
    lea_id: str = Field(
        default="",
        description="Land only this LEA's inbox folder (the file sensor sets it); empty = every LEA.",
    )


@asset(
    group_name="extract",
    kinds={"python", "duckdb"},
    pool=WRITER_POOL,
    description="SIS staff exports from inbox/<lea_id>/, each file landed whole (every field as text, "
    "with file, hash, line and run) into raw_sis_staff and recorded in raw_sis_files; landed files move "
    "to archive/, unreadable ones to failed/ beside a message. Fails, after landing the good files, "
    "naming each file that could not be read.",
)
def raw_sis_staff(
    context: AssetExecutionContext, config: SisInboxConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    known = lea_ids()
    if config.lea_id and config.lea_id not in known:
        raise Failure(
            f"lea_id {config.lea_id!r} is not configured (organisations.csv has {', '.join(known)})"
        )
    with warehouse.connect() as con:
        result = sis.land_inbox(con, paths(), context.run_id, known_leas=known, lea_id=config.lea_id or None)
        sample = preview(con, sis.preview_sql(context.run_id))
    metadata = {
        "rows_landed": result.rows,
        "files_landed": result.count("landed"),
        "files_skipped": result.count("skipped"),
        "files_failed": result.count("failed"),
        "bytes": result.bytes,
        "files": MetadataValue.md(result.markdown()),
        "preview": markdown_table(sample, "(no rows)"),
    }
    if result.failures:
        for outcome in result.failures:
            context.log.error(outcome.message)
        raise Failure(
            description="\n".join(outcome.message for outcome in result.failures),
            metadata=metadata,
        )
    return MaterializeResult(metadata=metadata)
