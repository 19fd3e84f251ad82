"""An empty mart is valid: an LEA with nobody in its not-sent list, a district with no accounts.

DuckDB answers a query with no rows with ``object`` columns where rows would give pandas' ``str``;
the marts' contracts (``validate_or_fail``) check an empty table for its columns only, and still
check every row of a non-empty one.
"""

from __future__ import annotations

import duckdb
import pandera.pandas as pa
import pytest
from dagster import DagsterInstance, Failure, materialize
from pandas.api.types import is_object_dtype

from assets.linkit import linkit_mart, linkit_staff_accounts
from staff_pipeline.clients.linkit import LinkItResource
from staff_pipeline.loads import linkit_mart as linkit_tables
from staff_pipeline.loads.edfi_mart import MART_DDL
from staff_pipeline.metadata import validate_or_fail
from staff_pipeline.resources import WarehouseResource
from staff_pipeline.schemas import marts
from staff_pipeline.schemas.marts_linkit import mart_linkit_staff
from tests.fixtures_linkit import assignment, staff_row, write_conformed

SCHEMAS = {
    "mart_edfi_assignments": marts.mart_edfi_assignments,
    "mart_edfi_contacts": marts.mart_edfi_contacts,
    "mart_edfi_not_sent": marts.mart_edfi_not_sent,
    "mart_linkit_staff": mart_linkit_staff,
}


@pytest.fixture
def mart_tables() -> duckdb.DuckDBPyConnection:
    """Every mart table, empty, as the mart builders create them."""
    con = duckdb.connect()
    for table, ddl in MART_DDL.items():
        con.execute(f"CREATE TABLE {table} ({ddl})")
    linkit_tables.ensure_tables(con)
    yield con
    con.close()


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_every_mart_contract_accepts_its_empty_table_but_not_a_missing_column(
    mart_tables: duckdb.DuckDBPyConnection, table: str
) -> None:
    schema = SCHEMAS[table]
    empty = mart_tables.execute(f"SELECT * FROM {table} WHERE false").df()
    assert any(is_object_dtype(dtype) for dtype in empty.dtypes)  # what the contract must not trip over
    with pytest.raises(pa.errors.SchemaErrors):
        schema.validate(empty, lazy=True)  # (the plain schema would)

    validate_or_fail(empty, schema, f"{table} breaks the contract")

    with pytest.raises(Failure, match="breaks the contract"):
        validate_or_fail(
            empty.drop(columns=[next(iter(schema.columns))]), schema, f"{table} breaks the contract"
        )
    if schema.strict is True:
        with pytest.raises(Failure):
            validate_or_fail(empty.assign(surplus=[]), schema, f"{table} breaks the contract")
    with pytest.raises(pa.errors.SchemaErrors):
        schema.validate(empty, lazy=True)  # the schema itself is left as it was


def test_rows_are_still_checked_when_there_are_rows(mart_tables: duckdb.DuckDBPyConnection) -> None:
    mart_tables.execute(
        "INSERT INTO mart_edfi_not_sent VALUES (100001, 'p1', 'assignments', 'no WISEid', NULL)"
    )
    frame = mart_tables.execute("SELECT * FROM mart_edfi_not_sent").df()
    validate_or_fail(frame, marts.mart_edfi_not_sent, "not sent")
    with pytest.raises(Failure, match="not sent"):
        validate_or_fail(frame.assign(lea_id=0), marts.mart_edfi_not_sent, "not sent")


def test_a_district_with_no_accounts_materialises_and_sends_nothing(linkit_standin) -> None:
    # The district's only person has no LinkIt role: mart_linkit_staff is empty for it.
    write_conformed([staff_row("p1", "L1")], [assignment("p1", linkit_role=None)])

    result = materialize(
        [linkit_mart, linkit_staff_accounts],
        partition_key="lakeview",
        resources={"warehouse": WarehouseResource(), "linkit": LinkItResource(base_url=linkit_standin.url)},
        instance=DagsterInstance.ephemeral(),
    )

    assert result.success
    [mart] = result.asset_materializations_for_node("linkit_mart")
    assert (mart.metadata["accounts"].value, mart.metadata["not_loaded"].value) == (0, 1)
    [load] = result.asset_materializations_for_node("linkit_staff_accounts")
    assert load.metadata["write_requests"].value == 0
    assert linkit_standin.received == []
