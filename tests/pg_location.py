"""A code location for ``test_postgres_instance``: one run per LEA, shaped like the loads.

Each run calls "the API" in the ``edfi_api`` pool, then writes the warehouse in the ``duckdb_writer``
pool. The API step waits at a barrier until every LEA's run has reached it, so the test can only
pass if the instance really runs the partitions in parallel.
"""

import time

from dagster import Definitions, In, Nothing, OpExecutionContext, in_process_executor, job, op

from staff_pipeline.partitions import lea_partitions
from staff_pipeline.settings import paths
from staff_pipeline.warehouse import connect


@op(pool="edfi_api")
def call_target_api(context: OpExecutionContext) -> None:
    barrier = paths().data_dir / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / context.partition_key).touch()
    expected = len(lea_partitions.get_partition_keys())
    deadline = time.monotonic() + 240
    while len(list(barrier.iterdir())) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(barrier.iterdir()))} of {expected} LEA runs ran at once")
        time.sleep(0.2)


@op(pool="duckdb_writer", ins={"after": In(Nothing)})
def record_in_warehouse(context: OpExecutionContext) -> None:
    with connect() as con:
        con.execute("CREATE TABLE IF NOT EXISTS lea_runs (lea_id VARCHAR, run_id VARCHAR)")
        con.execute("INSERT INTO lea_runs VALUES (?, ?)", [context.partition_key, context.run_id])


@job(partitions_def=lea_partitions, executor_def=in_process_executor)  # one process per run: quick
def lea_fanout_job() -> None:
    record_in_warehouse(after=call_target_api())


defs = Definitions(jobs=[lea_fanout_job])
