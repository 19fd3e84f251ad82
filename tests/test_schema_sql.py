"""The pandera schemas compiled to DuckDB SQL give pandera's own answers, row by row.

The gate and the blocking checks run the compiled SQL over whole tables and pandera over samples
(``staff_pipeline.schemas.sql``); these tests feed both engines the same hostile rows, generated
per column from the values that sit on every rule's edge, and compare which (row, column, rule)
each one fails.
"""

from __future__ import annotations

import random

import duckdb
import pandas as pd
import pandera.pandas as pa
import pytest

from staff_pipeline.schemas import conformed, rules, staging
from staff_pipeline.schemas import sql as schema_sql

SCHEMAS = {
    **{f"row gate {k}": v for k, v in staging.ROW_GATES.items()},
    **staging.TABLES,
    "staff": conformed.staff,
    "staff_contacts": conformed.staff_contacts,
    "staff_assignments": conformed.staff_assignments,
    "linkit_local_codes": conformed.linkit_local_codes,
}
ROWS = 400

TEXT = [
    None,
    "",
    " ",
    "ok",
    "Jan",
    "van der",
    "Ödön",
    "e\u0301",
    "x" * 50,
    "x" * 51,
    "x" * 101,
    "y" * 300,
    "=cmd|' /C calc'!A0",
    "+SUM(1)",
    "-2",
    "@x",
    "a\x00b",
    "tab\there",
    "line\nbreak",
    "bell\x07",
    "del\x7f",
    "Robert'); DROP TABLE staff;--",
    "p.jansen@school.example.nl",
    "A.B+tag@x-y.nl",
    "not-an-email",
    "a@b",
    "a@b.",
    "a@-b.nl",
    "a@b.nl\n",
    "jan@école.fr",
    "+31 20 555 1234",
    "(608) 555-0100",
    "12345",
    "123456",
    "+1-",
    "06/12345678",
    "call me",
    "555 0100 ext",
    "1000000007",
    "abc-123",
    "a b",
    "active",
    "tobedeleted",
    "leaving",
    "all_roles_ended",
    "email",
    "phone",
    "mobile",
    "eduv",
    "sis",
    "eduv:eckId:1",
    "sis:100001:T1",
    "leraar",
    "TCH",
    "Teacher",
    "eckId",
    "ASI",
    "NEPPI",
]
DATES = pd.to_datetime([None, "2020-08-01", "2024-08-15", "2024-08-14", "2026-01-15", "1999-12-31"])
NUMBERS = [None, -0.5, 0.0, 0.5, 1.0, 1.5]


def _allowed(schema: pa.DataFrameSchema) -> list[str]:
    """Every enum value a schema names, so rows pass as well as fail."""
    return [
        str(v)
        for column in schema.columns.values()
        for check in column.checks
        if check.name == "isin"
        for v in check.statistics["allowed_values"]
    ]


def _frame_columns(schema: pa.DataFrameSchema) -> list[str]:
    """The schema's columns and those its frame checks read (``__v`` twins, SQL lookup flags)."""
    extra = {"record_key", "organisation", "begin_date__v", "end_date__v", "fte__v", "date_created__v"}
    extra |= {"date_last_modified__v", "school_known", "role_known", "person_known"}
    extra |= {"org_id_types_known", "org_ids_present"}
    return [*schema.columns, *sorted(extra - set(schema.columns))]


def _column(name: str, dtype: str | None, pool: list, rng: random.Random) -> pd.Series:
    if name.endswith(("_known", "_present")) or dtype == "bool":
        return pd.Series([rng.random() < 0.85 for _ in range(ROWS)], dtype=bool)
    if (dtype or "").startswith("datetime") or name.endswith(("date__v", "created__v", "modified__v")):
        return pd.Series([rng.choice(DATES) for _ in range(ROWS)], dtype="datetime64[us]")
    if dtype == "float64" or name == "fte__v":
        return pd.Series([rng.choice(NUMBERS) for _ in range(ROWS)], dtype="float64")
    if dtype in ("int64", "Int64", "int32"):
        return pd.Series([rng.choice([100001, 100002, 2]) for _ in range(ROWS)], dtype=dtype)
    return pd.Series([rng.choice(pool) for _ in range(ROWS)], dtype=object)


def _frame(schema: pa.DataFrameSchema, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    pool = TEXT + _allowed(schema) * 3
    dtypes = {name: (str(c.dtype) if c.dtype is not None else None) for name, c in schema.columns.items()}
    return pd.DataFrame({name: _column(name, dtypes.get(name), pool, rng) for name in _frame_columns(schema)})


def _pandera_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> set[tuple[int, str, str]]:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    else:
        return set()
    found = set()
    for case in cases[cases["index"].notna()].itertuples():
        rule, _, named = str(case.check).partition("@")
        if rule in ("field_uniqueness", "multiple_fields_uniqueness") or rule.startswith("dtype"):
            continue
        found.add((int(case.index), named or case.column, "required" if rule == "not_nullable" else rule))
    return found


def _sql_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> set[tuple[int, str, str]]:
    con = duckdb.connect()
    con.register("frame", frame.assign(__i=range(len(frame))))
    sql = schema_sql.failed_rows(schema, "SELECT * FROM frame", ["__i"], list(frame.columns))
    return {(int(i), c, r) for i, c, r, _ in con.execute(sql).fetchall()}


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("seed", [1, 2])
def test_compiled_checks_fail_the_rows_pandera_fails(name: str, seed: int) -> None:
    schema = SCHEMAS[name].update_columns({c: {"unique": False} for c in SCHEMAS[name].columns})
    schema.unique = None
    frame = _frame(SCHEMAS[name], seed)
    expected = _pandera_failures(schema, frame)
    assert expected, "the generated rows should break some rule"
    assert _sql_failures(schema, frame) == expected


def test_control_characters_formula_prefixes_and_phones_agree() -> None:
    """The rules rewritten for RE2 (no lookahead, no \\Z) read tricky values as pandera does."""
    values = pd.Series(["a\nb", "a\x00", "ok", "=1", "1-2-3-4-5-6", "1-2-3", "+31 (0)20 555", "line\n"])
    con = duckdb.connect()
    con.register("v", pd.DataFrame({"v": values}))
    sql_control, sql_formula, sql_phone = zip(
        *con.execute(
            f"SELECT regexp_full_match(v, {rules.literal(rules.CONTROL_PATTERN)}), "
            f"regexp_full_match(v, {rules.literal(rules.FORMULA_PATTERN)}), {rules.phone_sql('v')} FROM v"
        ).fetchall(),
        strict=True,
    )
    assert list(sql_control) == list(values.str.fullmatch(rules.CONTROL_PATTERN))
    assert list(sql_formula) == list(values.str.fullmatch(rules.FORMULA_PATTERN))
    assert list(sql_phone) == list(rules.is_phone(values))
    assert list(sql_control) == [False, False, True, True, True, True, True, False]


def test_duplicate_keys_and_a_check_without_sql() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES ('a', 1), ('a', 1), ('b', NULL), ('c', NULL)) v(k, n)"
    )
    schema = pa.DataFrameSchema(
        {"k": pa.Column(str), "n": pa.Column("Int64", nullable=True, unique=True)}, unique=["k", "n"]
    )
    cases = schema_sql.table_failures(con, "SELECT * FROM t", schema)
    duplicates = cases[cases["check"] == schema_sql.DUPLICATE_KEY]
    assert sorted(duplicates["failure_case"]) == ["1", "a|1"]
    opaque = pa.DataFrameSchema({"k": pa.Column(str, pa.Check(lambda s: s.str.len() > 0))})
    with pytest.raises(TypeError, match="no SQL form"):
        schema_sql.compile_checks(opaque)


def test_checks_the_row_gate_applied_are_not_scanned_again() -> None:
    """A staged column copied verbatim from gated rows skips the gate's checks in the SQL scan; a
    column the staged table takes from its parsed ``__v`` twin, and checks the gate never ran, stay."""
    verbatim = set(staging.stg_sis_staff_assignments.columns) - {"begin_date", "end_date", "fte"}
    holds = schema_sql.applied_upstream(staging.sis_staff_rows, staging.stg_sis_staff_assignments, verbatim)
    kept = {
        (c.column, c.rule)
        for c in schema_sql.compile_checks(staging.stg_sis_staff_assignments)
        if c.passes not in holds
    }
    assert ("email", "email_format") not in kept and ("first_name", "required") not in kept
    assert {("begin_date", "required"), ("fte", "range"), ("record_key", "str_startswith('sis:')")} <= kept

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT 'not an email' AS email, NULL::VARCHAR AS first_name, "
        "'x:1' AS record_key, 1.5 AS fte"
    )
    schema = pa.DataFrameSchema(
        {
            "email": pa.Column(checks=[rules.email()], nullable=True),
            "first_name": pa.Column(nullable=False),
            "record_key": pa.Column(checks=pa.Check.str_startswith("sis:")),
            "fte": pa.Column(checks=pa.Check.in_range(0, 1, error="range")),
        }
    )
    holds = schema_sql.applied_upstream(schema, schema, {"email", "first_name"})
    scanned = con.execute(schema_sql.failed_rows(schema, "SELECT * FROM t", [], holds=holds)).fetchall()
    assert sorted((column, rule) for column, rule, _ in scanned) == [
        ("fte", "range"),
        ("record_key", "str_startswith('sis:')"),
    ]
    # pandera's own sample still applies the whole schema.
    sampled = schema_sql.table_failures(con, "SELECT * FROM t", schema, holds)
    assert {"email", "first_name"} <= set(sampled["column"])
