"""The conformed staff model (``staff``, ``staff_contacts``, ``staff_assignments``) in DuckDB SQL.

:func:`build_candidates` turns the staged tables and ``person_map`` (identity) into ``*__cand``
tables; :func:`build_next` applies the per-LEA gate: an LEA that failed keeps its previous rows, the
others take the new ones. The ``*__next`` tables are swapped in only after their schemas pass.

Choices worth knowing: names and the primary email come from Edu-V when the person is there (the
school's own record), else from SIS; an Ed-Fi assignment reported by both sources (same person,
school, classification and begin date) is kept once, from SIS (it carries title and FTE).
"""

from __future__ import annotations

from datetime import date

import duckdb

from staff_pipeline.warehouse import table_exists

CONFORMED = ("staff", "staff_contacts", "staff_assignments", "staff_identifiers", "staff_match_issues")
CANDIDATE_TABLES = ("staff", "staff_contacts", "staff_assignments", "staff_identifiers")
# Email preference when choosing a primary: Edu-V first (see module doc), then SIS email, alt_email.
_PREF = {"eduv": 1, "sis": 2, "sis_alt": 3}  # one digit each: build_contacts sorts on pref || value
# A SIS row's place in its LEA's export as one integer (staging reads one export per LEA, so the
# file name adds nothing): an integer key is far cheaper to aggregate by than (lea, file, line).
_SIS_ORDER = "(s.lea_id * 10000000000 + s.line_number)"
_SIS_LATER = 10**18  # added to the order of rows with no primary email, so rows with one win
# An assignment is active from its begin date until its (exclusive) end date, unless the Edu-V answer
# it came from asks for its removal (``tobedeleted``: then it is not sent, and not current).
ACTIVE = (
    "(NOT coalesce(to_be_deleted, false) AND begin_date <= $today "
    "AND (end_date IS NULL OR $today < end_date))"
)


def _sources(eduv: str, sis: str) -> str:
    """SQL: ``eduv``, ``sis`` or ``eduv,sis`` from two booleans (or boolean aggregates: cheaper than a
    string_agg)."""
    return f"CASE WHEN {eduv} AND {sis} THEN 'eduv,sis' WHEN {eduv} THEN 'eduv' ELSE 'sis' END"


def _role_map(con: duckdb.DuckDBPyConnection) -> None:
    """``role_map``: the crosswalk row that applies per sector and source role, where a row for the
    school's sector wins over the blank-sector row. Resolved once on the small crosswalk, so each
    assignment is one plain join."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE role_map AS
        SELECT s.sector, x.source, x.source_role, x.staff_classification, x.contact_title, x.linkit_role
        FROM (SELECT DISTINCT sector FROM cfg_organisations) s
        JOIN cfg_role_crosswalk x ON x.sector = s.sector OR x.sector IS NULL
        QUALIFY row_number() OVER (
            PARTITION BY s.sector, x.source, x.source_role ORDER BY x.sector NULLS LAST) = 1
        """
    )


def build_assignments(con: duckdb.DuckDBPyConnection, today: date) -> None:
    """Edu-V roles and SIS rows as assignments; one per Ed-Fi identity, SIS first (see module doc)."""
    _role_map(con)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE assignment_rows AS
        WITH asi AS (  -- an Edu-V person's local code per LEA: the ASI that LEA's answers sent
            SELECT record_no, lea_id, min(user_id) AS local_code
            FROM (SELECT record_no, unnest(lea_ids) AS lea_id, user_id
                  FROM stg_eduv_employee_ids WHERE user_id_type = 'ASI')
            GROUP BY record_no, lea_id
        ),
        a AS (
            SELECT m.label, m.person_id, o.lea_id, o.school_id, r.school_key, l.local_code, o.choice_school,
                   o.linkit_district, o.linkit_school_id, 'eduv' AS source,
                   r.organisation_role AS source_role, x.staff_classification, x.contact_title, x.linkit_role,
                   NULL::VARCHAR AS position_title,
                   r.begin_date::DATE AS begin_date, r.end_date::DATE AS end_date, NULL::DOUBLE AS fte,
                   o.eduv_school_period_id AS school_period, r.status = 'tobedeleted' AS to_be_deleted
            FROM stg_eduv_employee_roles r JOIN person_map m ON m.rid = r.record_no
            JOIN cfg_organisations o USING (school_key)
            LEFT JOIN asi l ON l.record_no = r.record_no AND l.lea_id = o.lea_id
            LEFT JOIN role_map x ON x.source = 'eduv' AND x.source_role = r.organisation_role
                 AND x.sector IS NOT DISTINCT FROM o.sector
            UNION ALL
            SELECT m.label, m.person_id, o.lea_id, o.school_id, s.school_key, s.local_staff_id,
                   o.choice_school, o.linkit_district, o.linkit_school_id, 'sis', s.position_code,
                   x.staff_classification, x.contact_title, x.linkit_role, s.position_title,
                   s.begin_date::DATE, s.end_date::DATE, s.fte, NULL, false
            FROM stg_sis_staff_assignments s JOIN person_map m ON m.rid = s.record_no
            JOIN cfg_organisations o USING (school_key)
            LEFT JOIN role_map x ON x.source = 'sis' AND x.source_role = s.position_code
                 AND x.sector IS NOT DISTINCT FROM o.sector
        )
        SELECT * FROM a
        """
    )
    # One row per identity: the first in (SIS first, open-ended or latest end, source role) order,
    # picked by a hash aggregate on the row numbers; a window would sort all the rows.
    con.execute(
        f"""
        CREATE OR REPLACE TABLE staff_assignments__cand AS
        WITH kept AS (
            SELECT arg_min(rowid, {{'eduv': source <> 'sis', 'ends': end_date IS NOT NULL,
                                    'later': date_diff('day', end_date, DATE '1970-01-01'),
                                    'no_role': source_role IS NULL, 'role': source_role}}) AS n
            FROM assignment_rows
            GROUP BY label, school_id, staff_classification, begin_date  -- a person is one label
        )
        SELECT * EXCLUDE (label), {ACTIVE} AS active
        FROM assignment_rows SEMI JOIN kept ON kept.n = assignment_rows.rowid
        """,
        {"today": today},
    )
    con.execute("DROP TABLE assignment_rows")


def linkit_local_codes(assignments: str) -> str:
    """SQL: ``(linkit_district, person_id, local_code, has_role)``, a person's LinkIt LocalCode per
    district from their active assignments there: local codes belong to an LEA (the same person can
    be T1 in one and R1 in another), so ``staff.local_code`` cannot serve every district. Assignments
    with a LinkIt role first, then Edu-V's ASI before the SIS local id, then the smallest. The
    model's LocalCode check and the LinkIt mart both read this, so they judge the same value."""
    return f"""
        SELECT linkit_district, person_id,
               arg_min(local_code, (local_code IS NULL, linkit_role IS NULL, source <> 'eduv', local_code))
                   AS local_code,
               bool_or(linkit_role IS NOT NULL) AS has_role
        FROM {assignments} WHERE active AND linkit_district IS NOT NULL
        GROUP BY linkit_district, person_id
    """


def build_contacts(con: duckdb.DuckDBPyConnection) -> None:
    """Every email and phone per person, per school of that person (and so per LEA).

    Each source row is read once and unnested into its contact values; the sources a value came
    from are flags, not a string aggregate, and a person is its integer ``label`` until the end, so
    a million people stay a handful of hash aggregates.
    """
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE contact_values AS
        WITH eduv AS (  -- each role's school with its answer's contacts; no role: the kept answer's
                        -- school; an answer saying tobedeleted gives none
            SELECT record_no, school_key, email, phone, mobile FROM stg_eduv_employee_roles
            WHERE status IS DISTINCT FROM 'tobedeleted'
            UNION ALL
            SELECT record_no, school_key, email, phone, mobile
            FROM stg_eduv_employees ANTI JOIN stg_eduv_employee_roles USING (record_no)
            WHERE status IS DISTINCT FROM 'tobedeleted'
        ),
        raw AS (
            SELECT m.label, m.person_id, o.lea_id, o.school_id, unnest(['email', 'phone', 'mobile']) AS kind,
                   unnest([e.email, e.phone, e.mobile]) AS value, true AS eduv, false AS sis,
                   {_PREF["eduv"]} AS pref
            FROM eduv e JOIN person_map m ON m.rid = e.record_no
            JOIN cfg_organisations o ON o.school_key = e.school_key
            UNION ALL
            SELECT m.label, m.person_id, s.lea_id, o.school_id, unnest(['email', 'email', 'phone']),
                   unnest([s.email, s.alt_email, s.phone]), false, true,
                   unnest([{_PREF["sis"]}, {_PREF["sis_alt"]}, {_PREF["sis"]}])
            FROM stg_sis_staff_assignments s JOIN person_map m ON m.rid = s.record_no
            JOIN cfg_organisations o USING (school_key)
        )
        SELECT label, any_value(person_id) AS person_id, lea_id, school_id, kind, value,
               {_sources("bool_or(eduv)", "bool_or(sis)")} AS source, min(pref) AS pref
        FROM raw WHERE value IS NOT NULL GROUP BY label, lea_id, school_id, kind, value
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE staff_contacts__cand AS
        WITH primaries AS (  -- the preferred source, then the smallest value; a one-digit pref sorts
                             -- first in the text, and min() of text is 3x cheaper than a struct key
            SELECT label, lea_id, kind, substr(min(pref || value), 2) AS value
            FROM contact_values GROUP BY label, lea_id, kind
        )
        SELECT c.person_id, c.lea_id, c.school_id, c.kind, c.value, c.source,
               coalesce(c.value = p.value, false) AS is_primary
        FROM contact_values c LEFT JOIN primaries p USING (label, lea_id, kind)  -- one primary per key
        """
    )
    con.execute("DROP TABLE contact_values")


def build_staff(con: duckdb.DuckDBPyConnection, today: date) -> None:
    """One row per person; ``leaving`` for ``tobedeleted`` (every assignment is from an answer saying
    so, or there are none and the kept answer says so) or when every assignment has ended.

    A person's names come from one record per source: their Edu-V record (identity never puts two
    in one person, and ``staff``'s unique person_id would refuse it), else the first SIS row in
    export order, picked once as a struct rather than column by column.
    """
    con.execute(
        f"""
        CREATE OR REPLACE TABLE staff__cand AS
        WITH e AS (
            SELECT m.label, {{'first_name': e.given_name, 'family_name_prefix': e.family_name_prefix,
                             'last_name': e.family_name, 'preferred_first_name': e.preferred_first_name,
                             'email': e.email, 'local_code': e.local_code}} AS r,
                   e.status = 'tobedeleted' AS tobedeleted
            FROM stg_eduv_employees e JOIN person_map m ON m.rid = e.record_no
        ),
        s AS (
            SELECT m.label,
                   CASE WHEN min(s.state_staff_id) = max(s.state_staff_id) THEN min(s.state_staff_id) END
                       AS wiseid,  -- two WISEids: neither (reported by identity)
                   arg_min({{'local_code': s.local_staff_id, 'first_name': s.first_name,
                            'middle_name': s.middle_name, 'last_name': s.last_name}}, {_SIS_ORDER}) AS r,
                   arg_min(coalesce(s.email, s.alt_email),
                           CASE WHEN s.email IS NULL THEN {_SIS_ORDER} + {_SIS_LATER} ELSE {_SIS_ORDER} END)
                       AS email
            FROM stg_sis_staff_assignments s JOIN person_map m ON m.rid = s.record_no GROUP BY m.label
        ),
        p AS (SELECT label, person_id, matched_by, {_sources("eduv", "sis")} AS sources FROM person_labels),
        a AS (  -- one school's tobedeleted is about its roles; the person goes when nothing else is left
            SELECT person_id, bool_or(NOT to_be_deleted AND (end_date IS NULL OR end_date > $today))
                       AS has_current, bool_and(to_be_deleted) AS all_tobedeleted
            FROM staff_assignments__cand GROUP BY person_id
        )
        SELECT p.person_id, s.wiseid, coalesce(e.r.local_code, s.r.local_code) AS local_code,
               coalesce(e.r.first_name, s.r.first_name) AS first_name, s.r.middle_name,
               e.r.family_name_prefix, coalesce(e.r.last_name, s.r.last_name) AS last_name,
               e.r.preferred_first_name, coalesce(e.r.email, s.email) AS primary_email,
               CASE WHEN coalesce(a.all_tobedeleted, e.tobedeleted) OR NOT a.has_current THEN 'leaving'
                    ELSE 'active' END AS status,
               CASE WHEN coalesce(a.all_tobedeleted, e.tobedeleted) THEN 'tobedeleted'
                    WHEN NOT a.has_current THEN 'all_roles_ended' END AS leaving_reason,
               p.matched_by, p.sources
        FROM p LEFT JOIN e USING (label) LEFT JOIN s USING (label) LEFT JOIN a USING (person_id)
        """,
        {"today": today},
    )


def build_candidates(con: duckdb.DuckDBPyConnection, today: date) -> None:
    build_assignments(con, today)
    build_contacts(con)
    build_staff(con, today)


def build_next(con: duckdb.DuckDBPyConnection, failed_leas: list[int], today: date) -> None:
    """``*__next``: new rows for LEAs that passed the gate, the previous rows for those that failed.

    The candidates are written to the warehouse once; on a night every LEA passes (most nights)
    they simply become the ``__next`` tables, with no second copy of a few million rows.
    """
    if not failed_leas:
        for table in CANDIDATE_TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}__next")
            con.execute(f"ALTER TABLE {table}__cand RENAME TO {table}__next")
        return
    _carry_failed(con, failed_leas, today)
    for table in CANDIDATE_TABLES:
        con.execute(f"DROP TABLE {table}__cand")


# staff columns a source of one LEA may alone provide (kept from before when that LEA is refused)
_CARRIED_ATTRIBUTES = (
    "wiseid",
    "local_code",
    "first_name",
    "middle_name",
    "family_name_prefix",
    "last_name",
    "preferred_first_name",
    "primary_email",
)


def _carry_failed(con: duckdb.DuckDBPyConnection, failed_leas: list[int], today: date) -> None:
    """The ``__next`` tables from the candidates of the LEAs that passed and the previous rows of the rest."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE gate_failed AS SELECT unnest($l::BIGINT[]) AS lea_id",
        {"l": failed_leas},
    )
    previous = {t: table_exists(con, t) for t in CONFORMED}
    carried = {
        t: (
            f"UNION ALL BY NAME SELECT * FROM {t} SEMI JOIN gate_failed USING (lea_id)" if previous[t] else ""
        )
        for t in ("staff_contacts", "staff_assignments")
    }
    con.execute(
        f"""
        CREATE OR REPLACE TABLE staff_assignments__next AS
        SELECT * EXCLUDE (active, to_be_deleted), coalesce(to_be_deleted, false) AS to_be_deleted,
               {ACTIVE} AS active  -- rows carried from before to_be_deleted existed have none
        FROM (SELECT * FROM staff_assignments__cand ANTI JOIN gate_failed USING (lea_id)
              {carried["staff_assignments"]})
        """,
        {"today": today},
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE staff_contacts__next AS
        SELECT * FROM staff_contacts__cand ANTI JOIN gate_failed USING (lea_id) {carried["staff_contacts"]}
        """
    )
    # New people count when they have a row in an LEA that passed, or no LEA at all; people whose
    # rows were all carried keep their previous staff row.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _new_people AS
        WITH leas AS (SELECT person_id, lea_id FROM staff_assignments__cand
                      UNION SELECT person_id, lea_id FROM staff_contacts__cand)
        SELECT s.person_id FROM staff__cand s LEFT JOIN leas l USING (person_id)
        GROUP BY s.person_id
        HAVING count(l.lea_id) = 0
            OR count(l.lea_id) FILTER (WHERE l.lea_id NOT IN (SELECT lea_id FROM gate_failed)) > 0
        """
    )
    carried_people = (
        "SELECT person_id FROM staff_assignments__next UNION SELECT person_id FROM staff_contacts__next "
        "EXCEPT SELECT person_id FROM _new_people"
    )
    # A new person with rows carried in a failed LEA too (in two LEAs, one refused): what that LEA's
    # source gave them (a WISEid from its SIS, a name) is not in this run's data, so the previous
    # values fill the gaps. Without them the WISEid went, and the Ed-Fi loads deleted the person's
    # records in both LEAs, the refused one included.
    straddling = (
        "SELECT person_id FROM _new_people INTERSECT "
        "(SELECT person_id FROM staff_assignments__next SEMI JOIN gate_failed USING (lea_id) "
        "UNION SELECT person_id FROM staff_contacts__next SEMI JOIN gate_failed USING (lea_id))"
    )
    gaps = ", ".join(f"coalesce(c.{column}, o.{column}) AS {column}" for column in _CARRIED_ATTRIBUTES)
    new_staff = "SELECT * FROM staff__cand SEMI JOIN _new_people USING (person_id)"
    if previous["staff"]:
        new_staff = f"""
            SELECT c.* REPLACE ({gaps})
            FROM ({new_staff}) c
            LEFT JOIN (SELECT * FROM staff WHERE person_id IN ({straddling})) o USING (person_id)
            UNION ALL BY NAME SELECT * FROM staff WHERE person_id IN ({carried_people})
        """
    con.execute(f"CREATE OR REPLACE TABLE staff__next AS {new_staff}")
    old_ids = (
        f"UNION SELECT * FROM staff_identifiers WHERE person_id IN ({carried_people} UNION {straddling})"
        if previous["staff_identifiers"]
        else ""
    )
    con.execute(
        "CREATE OR REPLACE TABLE staff_identifiers__next AS "
        f"SELECT * FROM staff_identifiers__cand SEMI JOIN _new_people USING (person_id) {old_ids}"
    )
