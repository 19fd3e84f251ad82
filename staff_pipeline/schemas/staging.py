"""pandera schemas of the staging layer.

Two kinds per staged table:

* ``*_rows``: the row gate, run on the SQL-flattened candidate rows (text as received plus the
  ``TRY_CAST`` result in ``<column>__v`` and SQL lookup flags). Every failure names a row, so the
  row is rejected into ``rejected_rows`` and the rest of the load goes on.
* the table schema (``stg_*``): what the staged table promises the conformed model (types,
  required fields, enums, formats, natural-key uniqueness). It is the blocking asset check: it
  can only fail on something that is not one row's fault (a broken contract), and then nothing is
  swapped in.
"""

from __future__ import annotations

import pandera.pandas as pa

from staff_pipeline.schemas import rules
from staff_pipeline.vocab import (
    EDFI_LIMITS,
    EMPLOYEE_STATUSES,
    LINKIT_LIMITS,
    ORGANISATION_ROLES,
    USER_ID_TYPES,
)

# The widest target's limits (Ed-Fi's 75 for a name, 128 for an email): a person is not rejected at
# the gate, and so left out of Ed-Fi too, for a value over LinkIt's 50 or 100; the LinkIt mart lists
# that one person instead (too_long, never truncated).
NAME = EDFI_LIMITS["firstName"]
EMAIL = EDFI_LIMITS["electronicMailAddress"]
PHONE = LINKIT_LIMITS["PhoneNumber"]
CODE = LINKIT_LIMITS["LocalCode"]
POSITION_TITLE = 100  # Ed-Fi positionTitle
STATE_ID = 32  # Ed-Fi staffUniqueId


def _text(*checks: pa.Check, required: bool = False) -> pa.Column:
    return pa.Column(checks=list(checks), nullable=not required)


def _eduv_person_columns() -> dict[str, pa.Column]:
    return {
        "given_name": _text(rules.max_len(NAME), *rules.plain_text(), required=True),
        "preferred_first_name": _text(rules.max_len(NAME), *rules.plain_text()),
        "family_name_prefix": _text(rules.max_len(NAME), *rules.plain_text()),
        "family_name": _text(rules.max_len(NAME), *rules.plain_text(), required=True),
        "alias": _text(rules.max_len(NAME), *rules.plain_text()),
        "email": _text(rules.email(), rules.max_len(EMAIL)),
        "phone": _text(rules.phone(), rules.max_len(PHONE)),
        "mobile": _text(rules.phone(), rules.max_len(PHONE)),
        "status": _text(rules.one_of(EMPLOYEE_STATUSES), required=True),
        "local_code": _text(rules.max_len(CODE), rules.no_control()),
    }


def _sis_person_columns() -> dict[str, pa.Column]:
    return {
        "local_staff_id": _text(rules.max_len(CODE), rules.no_control(), required=True),
        "state_staff_id": _text(rules.state_id(), rules.max_len(STATE_ID), rules.no_control()),
        "first_name": _text(rules.max_len(NAME), *rules.plain_text(), required=True),
        "middle_name": _text(rules.max_len(NAME), *rules.plain_text()),
        "last_name": _text(rules.max_len(NAME), *rules.plain_text(), required=True),
        "email": _text(rules.email(), rules.max_len(EMAIL)),
        "alt_email": _text(rules.email(), rules.max_len(EMAIL)),
        "phone": _text(rules.phone(), rules.max_len(PHONE)),
        "school_code": _text(rules.no_control(), required=True),
        "position_code": _text(rules.no_control(), required=True),
        "position_title": _text(rules.max_len(POSITION_TITLE), *rules.plain_text()),
        "username": _text(rules.max_len(LINKIT_LIMITS["UserName"]), rules.no_control()),
    }


SIS_NATURAL_KEY = ["lea_id", "local_staff_id", "school_code", "position_code", "begin_date"]

# --- row gates (candidate rows) -------------------------------------------------------------

eduv_employee_rows = pa.DataFrameSchema(
    {
        **_eduv_person_columns(),
        "date_created": _text(required=True),
        "date_last_modified": _text(required=True),
    },
    checks=[
        rules.row_rule("required", "userIds", lambda d: d["record_key"].notna(), '"record_key" IS NOT NULL'),
        rules.parsed("date_created", "timestamp_format"),
        rules.parsed("date_last_modified", "timestamp_format"),
    ],
    name="eduv_employee_rows",
)

eduv_employee_id_rows = pa.DataFrameSchema(
    {
        "user_id_type": _text(rules.one_of(USER_ID_TYPES), required=True),
        "user_id": _text(rules.max_len(255), rules.no_control(), required=True),
    },
    name="eduv_employee_id_rows",
)

eduv_employee_role_rows = pa.DataFrameSchema(
    {
        "organisation_role": _text(rules.one_of(ORGANISATION_ROLES), required=True),
        "begin_date": _text(required=True),
        "end_date": _text(),
    },
    checks=[
        rules.flag("unknown_school", "organisation", "school_known"),
        # each of the organisation's secondary ids: a known organisationIdType, an organisationId
        rules.flag("enum", "organisation", "org_id_types_known"),
        rules.flag("required", "organisation", "org_ids_present"),
        rules.flag("unknown_role", "organisation_role", "role_known"),
        rules.parsed("begin_date", "date_format"),
        rules.parsed("end_date", "date_format"),
        rules.ends_after_begins("begin_date__v", "end_date__v"),
    ],
    name="eduv_employee_role_rows",
)

sis_staff_rows = pa.DataFrameSchema(
    {
        **_sis_person_columns(),
        "begin_date": _text(required=True),
        "end_date": _text(),
        "fte": _text(),
    },
    checks=[
        rules.flag("unknown_school", "school_code", "school_known"),
        rules.flag("unknown_role", "position_code", "role_known"),
        rules.parsed("begin_date", "date_format"),
        rules.parsed("end_date", "date_format"),
        rules.parsed("fte", "number_format"),
        rules.row_rule(
            "range",
            "fte",
            lambda d: d["fte__v"].isna() | d["fte__v"].between(0, 1),
            '("fte__v" IS NULL OR "fte__v" BETWEEN 0 AND 1)',
        ),
        rules.ends_after_begins("begin_date__v", "end_date__v"),
    ],
    name="sis_staff_rows",
)

# Run on the rows that passed everything else, so a bad first copy does not take a good second one with it.
natural_key_rows = pa.DataFrameSchema(
    {"natural_key": pa.Column(unique=True, report_duplicates="exclude_first")}, name="natural_key_rows"
)

# --- staged tables (blocking checks) --------------------------------------------------------

# Text columns carry no dtype check: DuckDB types them, and an empty result comes back as ``object``.
_key = pa.Column(nullable=False)
_date = pa.Column("datetime64[us]", nullable=False)
_opt_date = pa.Column("datetime64[us]", nullable=True)
# One integer per record key (the same in the three Edu-V tables), for joins downstream; Edu-V
# numbers are below every SIS number.
_record_no = pa.Column("int64")

stg_eduv_employees = pa.DataFrameSchema(
    {
        "record_key": pa.Column(checks=pa.Check.str_startswith("eduv:"), unique=True),
        "record_no": pa.Column("int64", unique=True),
        "school_key": _key,
        **_eduv_person_columns(),
        "date_created": pa.Column(nullable=False),
        "date_last_modified": pa.Column(nullable=False),
    },
    strict=True,
    name="stg_eduv_employees",
)

stg_eduv_employee_ids = pa.DataFrameSchema(
    {"record_key": _key, "record_no": _record_no, **eduv_employee_id_rows.columns, "lea_ids": _key},
    unique=["record_no", "user_id_type", "user_id"],  # record_no is the record key's number
    strict=True,
    name="stg_eduv_employee_ids",
)

stg_eduv_employee_roles = pa.DataFrameSchema(
    {
        "record_key": _key,
        "record_no": _record_no,
        "school_key": _key,
        "organisation_role": _text(rules.one_of(ORGANISATION_ROLES), required=True),
        "begin_date": _date,
        "end_date": _opt_date,
        **{c: _eduv_person_columns()[c] for c in ("email", "phone", "mobile", "status")},
    },
    checks=[rules.ends_after_begins("begin_date", "end_date")],
    unique=["record_key", "school_key", "organisation_role", "begin_date"],
    strict=True,
    name="stg_eduv_employee_roles",
)

stg_sis_staff_assignments = pa.DataFrameSchema(
    {
        "record_key": pa.Column(checks=pa.Check.str_startswith("sis:")),
        "record_no": _record_no,
        "lea_id": pa.Column("int64"),
        "file_name": _key,
        "line_number": pa.Column("int32"),
        **_sis_person_columns(),
        "school_key": _key,
        "begin_date": _date,
        "end_date": _opt_date,
        "fte": pa.Column("float64", pa.Check.in_range(0, 1, error="range"), nullable=True),
    },
    checks=[rules.ends_after_begins("begin_date", "end_date")],
    unique=SIS_NATURAL_KEY,
    strict=True,
    name="stg_sis_staff_assignments",
)

ROW_GATES = {
    "stg_eduv_employees": eduv_employee_rows,
    "stg_eduv_employee_ids": eduv_employee_id_rows,
    "stg_eduv_employee_roles": eduv_employee_role_rows,
    "stg_sis_staff_assignments": sis_staff_rows,
}
TABLES = {
    "stg_eduv_employees": stg_eduv_employees,
    "stg_eduv_employee_ids": stg_eduv_employee_ids,
    "stg_eduv_employee_roles": stg_eduv_employee_roles,
    "stg_sis_staff_assignments": stg_sis_staff_assignments,
}
