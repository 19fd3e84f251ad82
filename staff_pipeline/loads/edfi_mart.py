"""The desired Ed-Fi state of one LEA, built in DuckDB SQL from the conformed model.

Each desired record carries the JSON body to send, an identity hash (Ed-Fi's natural key) and a
content hash (the body), so the load can diff against its ledger in SQL and a quiet night sends
nothing. The JSON is made by DuckDB, not by Python per row, and the same SQL turns records read
back from the API into bodies for reconcile (see :data:`ASSIGNMENT_BODY`, :data:`CONTACT_BODY`).

Rules: Choice schools send nothing (neither their assignments nor the emails given at them); people
the source asks to remove (``leaving_reason`` ``tobedeleted``) are left out, so their records are
deleted, while people whose roles have all ended stay, their assignments sent with the ``endDate``
(the last day in the role: the model's end dates are exclusive, Ed-Fi's is the termination date);
staff without a usable WISEid, classification or begin date are listed in ``mart_edfi_not_sent``
with the reason. Contacts are one per email. Ed-Fi's contact identity is staff + education
organisation + contactTitle (the email is not part of it), so a person's second email with the same
title is placed on the LEA's own education organisation; emails beyond what distinct identities
allow are listed as not sent rather than silently overwriting each other.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from staff_pipeline.vocab import EDFI_LIMITS, STAFF_CLASSIFICATION_NAMESPACE

ASSIGNMENTS = "staffEducationOrganizationAssignmentAssociations"
CONTACTS = "staffEducationOrganizationContactAssociations"

# Body and identity expressions over the mart columns (shared with reconcile, which rebuilds them).
ASSIGNMENT_BODY = """json_object(
    'staffReference', json_object('staffUniqueId', staff_unique_id),
    'educationOrganizationReference', json_object('educationOrganizationId', education_organization_id),
    'staffClassificationDescriptor', staff_classification_descriptor,
    'beginDate', strftime(begin_date, '%Y-%m-%d'),
    'endDate', strftime(end_date, '%Y-%m-%d'),
    'positionTitle', position_title,
    'orderOfAssignment', order_of_assignment,
    'fullTimeEquivalency', full_time_equivalency)::VARCHAR"""
ASSIGNMENT_IDENTITY = """md5(concat_ws('|', staff_unique_id, education_organization_id::VARCHAR,
    staff_classification_descriptor, strftime(begin_date, '%Y-%m-%d')))"""
CONTACT_BODY = """json_object(
    'staffReference', json_object('staffUniqueId', staff_unique_id),
    'educationOrganizationReference', json_object('educationOrganizationId', education_organization_id),
    'contactTitle', contact_title,
    'electronicMailAddress', electronic_mail_address)::VARCHAR"""
CONTACT_IDENTITY = (
    """md5(concat_ws('|', staff_unique_id, education_organization_id::VARCHAR, contact_title))"""
)

MART_DDL = {
    "mart_edfi_assignments": """lea_id BIGINT, person_id VARCHAR, staff_unique_id VARCHAR,
        education_organization_id BIGINT, staff_classification_descriptor VARCHAR, begin_date DATE,
        end_date DATE, position_title VARCHAR, order_of_assignment INTEGER, full_time_equivalency DOUBLE,
        identity_hash VARCHAR, content_hash VARCHAR, body VARCHAR""",
    "mart_edfi_contacts": """lea_id BIGINT, person_id VARCHAR, staff_unique_id VARCHAR,
        education_organization_id BIGINT, contact_title VARCHAR, electronic_mail_address VARCHAR,
        identity_hash VARCHAR, content_hash VARCHAR, body VARCHAR""",
    "mart_edfi_not_sent": "lea_id BIGINT, person_id VARCHAR, resource VARCHAR, reason VARCHAR, "
    "detail VARCHAR",
}

# Who is sent: everyone in the source except those it asks to remove. A person whose last role
# ended is still in the source; the ended assignments go out with their endDate (not a delete).
_SENT_STAFF = "s.leaving_reason IS DISTINCT FROM 'tobedeleted'"
CHOICE_REASON = "choice school: not sent to Ed-Fi"

_CANDIDATES = f"""
CREATE OR REPLACE TEMP TABLE _edfi_candidates AS
SELECT a.person_id::VARCHAR AS person_id, nullif(trim(s.wiseid), '') AS wiseid, a.lea_id, a.school_id,
       a.staff_classification, a.contact_title, a.position_title, a.begin_date, a.end_date, a.fte,
       CASE
         WHEN a.choice_school THEN '{CHOICE_REASON}'
         WHEN nullif(trim(s.wiseid), '') IS NULL THEN 'no WISEid'
         WHEN length(trim(s.wiseid)) > {EDFI_LIMITS["staffUniqueId"]} THEN 'WISEid longer than 32 characters'
         WHEN a.staff_classification IS NULL THEN 'role has no Ed-Fi staff classification'
         WHEN a.begin_date IS NULL THEN 'no begin date'
         WHEN length(a.position_title) > {EDFI_LIMITS["positionTitle"]}
           THEN 'positionTitle longer than 100 characters'
         WHEN a.fte < 0 THEN 'negative fullTimeEquivalency'
       END AS reason,
       a.school_key AS detail
FROM staff_assignments a JOIN staff s ON s.person_id = a.person_id
WHERE a.lea_id = $lea AND {_SENT_STAFF} AND NOT a.to_be_deleted  -- that school's answer asks for removal
"""

# Schools known as Choice schools (a school id belongs to one LEA): WISEdata expects no contact
# association from them, so an email given at one is not sent, not even placed on another edorg.
_CHOICE_SCHOOLS = """
CREATE OR REPLACE TEMP TABLE _edfi_choice_schools AS
SELECT DISTINCT school_id FROM staff_assignments WHERE choice_school AND school_id IS NOT NULL
"""
_NOT_CHOICE = "(c.school_id IS NULL OR c.school_id NOT IN (SELECT school_id FROM _edfi_choice_schools))"

# The model's end dates are exclusive (Edu-V's ``endDate``: the day the role stops); Ed-Fi's ``endDate``
# is the "end or termination date", the last day in the role. The gate keeps every end after its
# begin, so the last day is never before the ``beginDate``.
_LAST_DAY = "end_date - 1"

_ASSIGNMENTS = f"""
INSERT INTO mart_edfi_assignments
WITH chosen AS (
  SELECT person_id, wiseid AS staff_unique_id, lea_id, school_id AS education_organization_id,
         '{STAFF_CLASSIFICATION_NAMESPACE}#' || staff_classification AS staff_classification_descriptor,
         begin_date, {_LAST_DAY} AS end_date, position_title, fte AS full_time_equivalency, contact_title
  FROM _edfi_candidates WHERE reason IS NULL
  QUALIFY row_number() OVER (
    PARTITION BY wiseid, school_id, staff_classification, begin_date
    ORDER BY end_date DESC NULLS FIRST, position_title NULLS LAST, fte DESC NULLS LAST, person_id) = 1
), ordered AS (
  SELECT *, row_number() OVER (
    PARTITION BY staff_unique_id
    ORDER BY full_time_equivalency DESC NULLS LAST, begin_date, education_organization_id,
             staff_classification_descriptor)::INTEGER AS order_of_assignment
  FROM chosen
)
SELECT lea_id, person_id, staff_unique_id, education_organization_id, staff_classification_descriptor,
       begin_date, end_date, position_title, order_of_assignment, full_time_equivalency,
       {ASSIGNMENT_IDENTITY}, md5({ASSIGNMENT_BODY}), {ASSIGNMENT_BODY}
FROM ordered
"""

_CONTACT_PLACEMENT = f"""
CREATE OR REPLACE TEMP TABLE _edfi_contact_placement AS
WITH titles AS (  -- the contact title of a person's first assignment at each school: the title is
                  -- in the contact's key, so the pick must not depend on row order (the begin date
                  -- ties an assignment to its own candidate row, then the smallest title wins)
  SELECT c.person_id, m.education_organization_id AS school_id,
         arg_min(c.contact_title, (m.order_of_assignment, c.contact_title)) AS contact_title,
         min(m.order_of_assignment) AS first_order, any_value(m.staff_unique_id) AS staff_unique_id
  FROM mart_edfi_assignments m
  JOIN _edfi_candidates c ON c.person_id = m.person_id AND c.school_id = m.education_organization_id
   AND '{STAFF_CLASSIFICATION_NAMESPACE}#' || c.staff_classification = m.staff_classification_descriptor
   AND c.begin_date = m.begin_date
  WHERE m.lea_id = $lea AND c.reason IS NULL
  GROUP BY ALL
), home AS (
  SELECT person_id, arg_min(school_id, first_order) AS school_id,
         arg_min(contact_title, first_order) AS title,
         any_value(staff_unique_id) AS staff_unique_id
  FROM titles GROUP BY person_id
), emails AS (
  SELECT c.person_id::VARCHAR AS person_id, c.school_id, trim(c.value) AS email,
         coalesce(c.is_primary, false) AS is_primary
  FROM staff_contacts c
  WHERE c.lea_id = $lea AND c.kind = 'email' AND nullif(trim(c.value), '') IS NOT NULL AND {_NOT_CHOICE}
  QUALIFY row_number() OVER (PARTITION BY c.person_id, lower(trim(c.value))
                             ORDER BY c.is_primary DESC NULLS LAST, c.school_id NULLS LAST) = 1
), placed AS (
  SELECT e.person_id, e.email, e.is_primary, h.staff_unique_id,
         coalesce(t.school_id, h.school_id) AS school_id, coalesce(t.contact_title, h.title) AS contact_title
  FROM emails e JOIN home h USING (person_id)
  LEFT JOIN titles t ON t.person_id = e.person_id AND t.school_id = e.school_id
), ranked AS (
  SELECT *, CASE WHEN row_number() OVER (PARTITION BY person_id, school_id, contact_title
                                         ORDER BY is_primary DESC, email) = 1
                 THEN school_id ELSE $lea END AS education_organization_id
  FROM placed
)
SELECT *, row_number() OVER (PARTITION BY person_id, education_organization_id, contact_title
                             ORDER BY is_primary DESC, email) AS identity_rank
FROM ranked
"""

_CONTACTS = f"""
INSERT INTO mart_edfi_contacts
SELECT $lea, person_id, staff_unique_id, education_organization_id, contact_title,
       email AS electronic_mail_address, {CONTACT_IDENTITY}, md5({CONTACT_BODY}), {CONTACT_BODY}
FROM (SELECT *, email AS electronic_mail_address FROM _edfi_contact_placement)
WHERE identity_rank = 1 AND length(email) BETWEEN 7 AND {EDFI_LIMITS["electronicMailAddress"]}
"""

_NOT_SENT = f"""
INSERT INTO mart_edfi_not_sent
SELECT DISTINCT $lea, person_id, '{ASSIGNMENTS}', reason, detail
FROM _edfi_candidates WHERE reason IS NOT NULL
UNION ALL
SELECT $lea, person_id, '{CONTACTS}',
       CASE WHEN identity_rank > 1
            THEN 'more emails than distinct Ed-Fi contact identities (staff, edorg, contactTitle)'
            ELSE 'electronicMailAddress must be 7 to 128 characters' END, email
FROM _edfi_contact_placement
WHERE identity_rank > 1 OR length(email) NOT BETWEEN 7 AND {EDFI_LIMITS["electronicMailAddress"]}
UNION ALL
SELECT DISTINCT $lea, c.person_id::VARCHAR, '{CONTACTS}', '{CHOICE_REASON}', trim(c.value)
FROM staff_contacts c JOIN staff s ON s.person_id = c.person_id
WHERE c.lea_id = $lea AND c.kind = 'email' AND nullif(trim(c.value), '') IS NOT NULL AND {_SENT_STAFF}
  AND NOT {_NOT_CHOICE}
UNION ALL
SELECT DISTINCT $lea, c.person_id::VARCHAR, '{CONTACTS}',
       'no assignment sent in this LEA (contact prerequisite)', c.value
FROM staff_contacts c JOIN staff s ON s.person_id = c.person_id
WHERE c.lea_id = $lea AND c.kind = 'email' AND {_SENT_STAFF} AND {_NOT_CHOICE}
  AND c.person_id::VARCHAR NOT IN (SELECT person_id FROM mart_edfi_assignments WHERE lea_id = $lea)
"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for table, columns in MART_DDL.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")


def build_mart(
    con: duckdb.DuckDBPyConnection,
    lea_id: int,
    check: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> dict[str, int]:
    """Replace this LEA's rows of the three mart tables in one transaction; returns row counts.

    ``check`` (the mart's contract) runs inside the transaction: if it raises, the LEA keeps its
    previous mart, so a load run on its own never sends rows that broke the contract."""
    ensure_tables(con)
    params = {"lea": int(lea_id)}
    con.execute("BEGIN TRANSACTION")
    try:
        for table in MART_DDL:
            con.execute(f"DELETE FROM {table} WHERE lea_id = $lea", params)
        con.execute(_CANDIDATES, params)
        con.execute(_CHOICE_SCHOOLS)
        con.execute(_ASSIGNMENTS)
        con.execute(_CONTACT_PLACEMENT, params)
        con.execute(_CONTACTS, params)
        con.execute(_NOT_SENT, params)
        if check is not None:
            check(con)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return {
        table: int(con.execute(f"SELECT count(*) FROM {table} WHERE lea_id = $lea", params).fetchall()[0][0])
        for table in MART_DDL
    }
