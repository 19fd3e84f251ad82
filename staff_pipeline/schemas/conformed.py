"""pandera schemas of the conformed model: what the Ed-Fi and LinkIt marts may rely on.

They run on the ``*__next`` tables before the swap (a blocking check): types, enums, formats, the
targets' natural keys (Ed-Fi staffUniqueId and assignment identity, LinkIt LocalCode per district)
and that every contact and assignment belongs to a person in ``staff``.
"""

from __future__ import annotations

import pandera.pandas as pa

from staff_pipeline.schemas import rules
from staff_pipeline.schemas.staging import CODE, EMAIL, NAME, POSITION_TITLE, STATE_ID
from staff_pipeline.vocab import EDFI_LIMITS, LINKIT_LIMITS, LINKIT_ROLES, staff_classifications

MATCHED_BY = ("wiseid", "local_code", "eduv_user_id", "email", "unmatched")
CONTACT_KINDS = ("email", "phone", "mobile")


def _text(*checks: pa.Check, required: bool = False, unique: bool = False) -> pa.Column:
    return pa.Column(checks=list(checks), nullable=not required, unique=unique)


def _person_known() -> pa.Check:
    return rules.flag("unknown_person", "person_id", "person_known")


staff = pa.DataFrameSchema(
    {
        "person_id": _text(required=True, unique=True),
        "wiseid": _text(rules.state_id(), rules.max_len(STATE_ID), unique=True),
        "local_code": _text(rules.max_len(CODE)),
        "first_name": _text(rules.max_len(NAME), required=True),
        "middle_name": _text(rules.max_len(NAME)),
        "family_name_prefix": _text(rules.max_len(NAME)),
        "last_name": _text(rules.max_len(NAME), required=True),
        "preferred_first_name": _text(rules.max_len(NAME)),
        "primary_email": _text(rules.email(), rules.max_len(EMAIL)),
        "status": _text(rules.one_of(("active", "leaving")), required=True),
        "leaving_reason": _text(rules.one_of(("tobedeleted", "all_roles_ended"))),
        "matched_by": _text(rules.one_of(MATCHED_BY), required=True),
        "sources": _text(required=True),
    },
    checks=[
        rules.row_rule(
            "required",
            "leaving_reason",
            lambda d: (d["status"] != "leaving") | d["leaving_reason"].notna(),
            "(status IS DISTINCT FROM 'leaving' OR leaving_reason IS NOT NULL)",
        )
    ],
    strict=True,
    name="staff",
)

staff_contacts = pa.DataFrameSchema(
    {
        "person_id": _text(required=True),
        "lea_id": pa.Column("int64"),
        "school_id": pa.Column("int64"),
        "kind": _text(rules.one_of(CONTACT_KINDS), required=True),
        "value": _text(rules.max_len(EDFI_LIMITS["electronicMailAddress"]), required=True),
        "source": _text(required=True),
        "is_primary": pa.Column(bool),
        "person_known": pa.Column(bool),
    },
    checks=[
        _person_known(),
        rules.row_rule(
            "email_format",
            "value",
            lambda d: (d["kind"] != "email") | rules.is_email(d["value"]),
            f"(kind IS DISTINCT FROM 'email' OR {rules.email_sql('value')})",
        ),
        rules.row_rule(
            "phone_format",
            "value",
            lambda d: (d["kind"] == "email") | rules.is_phone(d["value"]),
            f"(kind = 'email' OR {rules.phone_sql('value')})",
        ),
    ],
    unique=["person_id", "school_id", "kind", "value"],
    strict=True,
    name="staff_contacts",
)

staff_assignments = pa.DataFrameSchema(
    {
        "person_id": _text(required=True),
        "lea_id": pa.Column("int64"),
        "school_id": pa.Column("int64"),
        "school_key": _text(required=True),
        "local_code": _text(rules.max_len(CODE)),
        "choice_school": pa.Column(bool),
        "linkit_district": _text(required=True),
        "linkit_school_id": pa.Column("Int64", nullable=True),
        "source": _text(rules.one_of(("eduv", "sis")), required=True),
        "source_role": _text(required=True),
        "staff_classification": _text(rules.one_of(staff_classifications()), required=True),
        "contact_title": _text(rules.max_len(EDFI_LIMITS["contactTitle"]), required=True),
        "linkit_role": _text(rules.one_of(LINKIT_ROLES)),
        "position_title": _text(rules.max_len(POSITION_TITLE)),
        "begin_date": pa.Column("datetime64[us]"),
        "end_date": pa.Column("datetime64[us]", nullable=True),
        "fte": pa.Column("float64", nullable=True),
        "school_period": _text(),
        "active": pa.Column(bool),
        "to_be_deleted": pa.Column(bool),
        "person_known": pa.Column(bool),
    },
    checks=[_person_known(), rules.ends_after_begins("begin_date", "end_date")],
    # Ed-Fi StaffEducationOrganizationAssignmentAssociation identity.
    unique=["person_id", "school_id", "staff_classification", "begin_date"],
    strict=True,
    name="staff_assignments",
)

# LinkIt: a LocalCode is paired with one account per district.
linkit_local_codes = pa.DataFrameSchema(
    {"linkit_district": _text(required=True), "local_code": _text(rules.max_len(LINKIT_LIMITS["LocalCode"]))},
    unique=["linkit_district", "local_code"],
    name="linkit_local_codes",
)
