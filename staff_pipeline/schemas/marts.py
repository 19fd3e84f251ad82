"""Schemas of the Ed-Fi mart tables: what may be sent, checked before anything is sent.

Limits and descriptor values come from the Ed-Fi contract (``vocab``); a violation here means the
mart SQL let something through that the API would answer with a 400, so the load stops first.
"""

from __future__ import annotations

import pandera.pandas as pa

from staff_pipeline.vocab import EDFI_LIMITS, classification_uri, staff_classifications

_HASH = pa.Check.str_matches(r"^[0-9a-f]{32}$")

mart_edfi_assignments = pa.DataFrameSchema(
    {
        "lea_id": pa.Column("int64", pa.Check.gt(0)),
        "person_id": pa.Column(str),
        "staff_unique_id": pa.Column(str, pa.Check.str_length(1, EDFI_LIMITS["staffUniqueId"])),
        "education_organization_id": pa.Column("int64", pa.Check.gt(0)),
        "staff_classification_descriptor": pa.Column(
            str, pa.Check.isin([classification_uri(v) for v in staff_classifications()])
        ),
        # DuckDB hands dates over as microseconds, which hold any date of the contract; coercing to
        # pandas' default nanoseconds would refuse an open end of 9999-12-31 and block the LEA.
        "begin_date": pa.Column("datetime64[us]"),
        "end_date": pa.Column("datetime64[us]", nullable=True),
        "position_title": pa.Column(str, pa.Check.str_length(1, EDFI_LIMITS["positionTitle"]), nullable=True),
        "order_of_assignment": pa.Column("int32", pa.Check.ge(1)),
        "full_time_equivalency": pa.Column(float, pa.Check.ge(0), nullable=True),
        "identity_hash": pa.Column(str, _HASH),
        "content_hash": pa.Column(str, _HASH),
        "body": pa.Column(str),
    },
    unique=["lea_id", "identity_hash"],
    strict=True,
    name="mart_edfi_assignments",
)

mart_edfi_contacts = pa.DataFrameSchema(
    {
        "lea_id": pa.Column("int64", pa.Check.gt(0)),
        "person_id": pa.Column(str),
        "staff_unique_id": pa.Column(str, pa.Check.str_length(1, EDFI_LIMITS["staffUniqueId"])),
        "education_organization_id": pa.Column("int64", pa.Check.gt(0)),
        "contact_title": pa.Column(str, pa.Check.str_length(1, EDFI_LIMITS["contactTitle"])),
        "electronic_mail_address": pa.Column(
            str, pa.Check.str_length(7, EDFI_LIMITS["electronicMailAddress"])
        ),
        "identity_hash": pa.Column(str, _HASH),
        "content_hash": pa.Column(str, _HASH),
        "body": pa.Column(str),
    },
    unique=["lea_id", "identity_hash"],
    strict=True,
    name="mart_edfi_contacts",
)

mart_edfi_not_sent = pa.DataFrameSchema(
    {
        "lea_id": pa.Column("int64", pa.Check.gt(0)),
        "person_id": pa.Column(str),
        "resource": pa.Column(str),
        "reason": pa.Column(str),
        "detail": pa.Column(str, nullable=True),
    },
    strict=True,
    name="mart_edfi_not_sent",
)
