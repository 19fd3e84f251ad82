"""Schemas of the checked-in configuration under ``data/`` (organisations, role crosswalk)."""

from __future__ import annotations

import pandera.pandas as pa

from staff_pipeline.vocab import LINKIT_ROLES, ORG_ID_TYPES, SECTORS, staff_classifications


def _eduv_identity_rule(df):
    """orgMasterId or (orgId + orgIdType), never both; filterByOrgId only with orgId (Edu-V rules).

    A school with neither is a SIS-only school: Edu-V is not queried for it.
    """
    master = df["eduv_org_master_id"].notna()
    org = df["eduv_org_id"].notna() & df["eduv_org_id_type"].notna()
    partial = df["eduv_org_id"].notna() ^ df["eduv_org_id_type"].notna()
    filter_with_master = master & df["eduv_filter_by_org_id"].fillna(False).astype(bool)
    filter_unsupported = df["eduv_filter_by_org_id"].notna() & ~df["eduv_supports_filter"]
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
            str,
            pa.Check.str_matches(
                r"^(\d{4}-\d{4}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
            ),
            nullable=True,
        ),
        "sis_school_code": pa.Column(str, unique=True),
        "linkit_district": pa.Column(str, pa.Check.str_matches(r"^[A-Za-z0-9_-]+$")),
        "linkit_school_id": pa.Column("Int64", nullable=True),
    },
    checks=[
        pa.Check(
            _eduv_identity_rule,
            element_wise=False,
            error="Edu-V request rule: orgMasterId or orgId+orgIdType, never both; filterByOrgId only with "
            "orgId/orgIdType and only where the source supports it",
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
    unique=["source", "source_role", "sector"],
    strict=True,
    coerce=True,
    name="role_crosswalk",
)
