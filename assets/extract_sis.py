"""Asset ``raw_sis_staff``: land the SIS export files waiting in ``inbox/<lea_id>/``."""

from pathlib import Path

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, asset
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
    files: list[str] = Field(
        default_factory=list,
        description="Land only these files as the sensor saw them settled (name@mtime_ns:size:ctime_ns); "
        "empty = every file in the folder. A file written since is left for the next tick.",
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
    if config.lea_id and (Path(config.lea_id).name != config.lea_id or config.lea_id in (".", "..")):
        raise Failure(f"lea_id {config.lea_id!r} is not an inbox folder name")
    with warehouse.connect() as con:
        # An unconfigured LEA's folder is landed too: its files fail, move to failed/ and are recorded.
        result = sis.land_inbox(
            con,
            paths(),
            context.run_id,
            known_leas=known,
            lea_id=config.lea_id or None,
            files=config.files or None,
        )
        sample = preview(con, sis.preview_sql(context.run_id))
    metadata = {
        "rows_landed": result.rows,
        "files_landed": result.count("landed"),
        "files_skipped": result.count("skipped"),
        "files_failed": result.count("failed"),
        "files_left_for_later": len(result.waiting),
        "bytes": result.bytes,
        "files": markdown_table(result.frame(), "(no files in the inbox)"),
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
