"""Schema of ``mart_linkit_staff``: what may be sent to LinkIt!, checked before anything is sent.

Limits and roles come from the LinkIt contract (``vocab``). The mart SQL already rejects what breaks
them; a failure here means that SQL let something through the API would refuse, so the load stops.
"""

from __future__ import annotations

import pandera.pandas as pa

from staff_pipeline.vocab import LINKIT_LIMITS, LINKIT_ROLES


def _text(field: str, *, nullable: bool = True) -> pa.Column:
    return pa.Column(str, pa.Check.str_length(0 if nullable else 1, LINKIT_LIMITS[field]), nullable=nullable)


mart_linkit_staff = pa.DataFrameSchema(
    {
        "district": pa.Column(str),
        "person_id": pa.Column(str),
        "local_code": _text("LocalCode", nullable=False),
        "user_name": pa.Column(
            str, [pa.Check.str_matches(r"^[a-z0-9._-]+$"), pa.Check.str_length(1, LINKIT_LIMITS["UserName"])]
        ),
        "role": pa.Column(str, pa.Check.isin(LINKIT_ROLES)),
        "first_name": _text("FirstName"),
        "last_name": _text("LastName"),
        "email_address": _text("EmailAddress"),
        "phone_number": _text("PhoneNumber"),
        "state_code": _text("StateCode"),
        "school_ids": pa.Column(object),
        "content_hash": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{32}$")),
    },
    unique=["district", "local_code"],
    checks=[
        pa.Check(
            lambda df: ~df.assign(u=df["user_name"].str.casefold()).duplicated(["district", "u"], keep=False),
            element_wise=False,
            error="UserName unique per district (case-insensitive), as LinkIt pairs it with LocalCode",
        )
    ],
    strict="filter",
    name="mart_linkit_staff",
)
