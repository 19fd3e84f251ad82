"""Schemas of the checked-in configuration under ``data/`` (organisations, role crosswalk)."""

from __future__ import annotations

import re

import pandera.pandas as pa

from staff_pipeline.vocab import (
    LINKIT_ROLES,
    ORG_ID_TYPES,
    ORGANISATION_ROLES,
    SECTORS,
    staff_classifications,
)

_SCHOOL_YEAR = re.compile(r"^(\d{4})-(\d{4})$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SCHOOL_PERIOD_RULE = "a school year of two consecutive years (like 2024-2025) or a UUID"


def is_school_period_id(value: str) -> bool:
    """Whether Edu-V accepts ``value`` as ``schoolPeriodId`` (a school year, or a UUID).

    A school year spans two consecutive years: ``2025-2027`` has the shape but the source refuses it,
    so it is caught when the configuration is loaded rather than as a 400 in the nightly run.
    """
    year = _SCHOOL_YEAR.match(value)
    if year is not None:
        return int(year.group(2)) == int(year.group(1)) + 1
    return _UUID.match(value) is not None


def _eduv_identity_rule(df):
    """orgMasterId or (orgId + orgIdType), never both; filterByOrgId only with orgId (Edu-V rules).

    With orgMasterId the flag may be false (it is not sent), so whether the source supports
    filtering only matters with orgId/orgIdType. A school with neither is a SIS-only school: Edu-V
    is not queried for it.
    """
    master = df["eduv_org_master_id"].notna()
    org = df["eduv_org_id"].notna() & df["eduv_org_id_type"].notna()
    partial = df["eduv_org_id"].notna() ^ df["eduv_org_id_type"].notna()
    filter_with_master = master & df["eduv_filter_by_org_id"].fillna(False).astype(bool)
    filter_unsupported = org & df["eduv_filter_by_org_id"].notna() & ~df["eduv_supports_filter"]
    return ~(master & org) & ~partial & ~filter_with_master & ~filter_unsupported


organisations = pa.DataFrameSchema(
    {
        "school_key": pa.Column(str, pa.Check.str_matches(r"^[a-z0-9][a-z0-9_-]*$"), unique=True),
        "school_name": pa.Column(str),
        "lea_id": pa.Column("int64", pa.Check.gt(0)),
        "lea_name": pa.Column(str),
        "school_id": pa.Column("int64", pa.Check.gt(0), unique=True),
        "sector": pa.Column(str, pa.Check.isin(SECTORS)),
        "choice_school": pa.Column(bool),
        "eduv_org_master_id": pa.Column(str, nullable=True),
        "eduv_org_id": pa.Column(str, nullable=True),
        "eduv_org_id_type": pa.Column(str, pa.Check.isin(ORG_ID_TYPES), nullable=True),
        "eduv_filter_by_org_id": pa.Column("boolean", nullable=True),
        "eduv_supports_filter": pa.Column(bool),
        "eduv_school_period_id": pa.Column(
            str, pa.Check(is_school_period_id, element_wise=True, error=SCHOOL_PERIOD_RULE), nullable=True
        ),
        "sis_school_code": pa.Column(str, unique=True),
        "linkit_district": pa.Column(str, pa.Check.str_matches(r"^[A-Za-z0-9_-]+$")),
        "linkit_school_id": pa.Column("Int64", nullable=True),
    },
    checks=[
        pa.Check(
            _eduv_identity_rule,
            element_wise=False,
            error="Edu-V request rule: orgMasterId or orgId+orgIdType, never both; filterByOrgId true only "
            "with orgId/orgIdType, and set there only where the source supports it",
        )
    ],
    strict=True,
    coerce=True,
    name="organisations",
)

role_crosswalk = pa.DataFrameSchema(
    {
        "source": pa.Column(str, pa.Check.isin(["eduv", "sis"])),
        "source_role": pa.Column(str),
        "sector": pa.Column(str, pa.Check.isin(SECTORS), nullable=True),
        "staff_classification": pa.Column(str, pa.Check.isin(staff_classifications())),
        "contact_title": pa.Column(str, pa.Check.str_length(1, 75)),
        "linkit_role": pa.Column(str, pa.Check.isin(LINKIT_ROLES), nullable=True),
    },
    checks=[
        # An Edu-V role is one of the reference's organisationRole values, exactly: a typo ("Leraar",
        # "mentr") would load and then turn every such role into an unknown_role reject.
        pa.Check(
            lambda df: (df["source"] != "eduv") | df["source_role"].isin(ORGANISATION_ROLES),
            error=f"an eduv source_role must be an Edu-V organisationRole ({', '.join(ORGANISATION_ROLES)})",
        )
    ],
    unique=["source", "source_role", "sector"],
    strict=True,
    coerce=True,
    name="role_crosswalk",
)
