"""The desired LinkIt! accounts of one district, built in SQL from the conformed model.

One account per person with an active assignment in the district whose role maps to LinkIt: the
highest role (``LINKIT_ROLE_RANK``), all their LinkIt SchoolIDs in the district. Everyone else in
the district gets a row in ``mart_linkit_rejected`` saying why (no LinkIt role, leaving, a value
over a field limit, a missing LocalCode, ...): values are never truncated.

UserName follows ``[linkit] username_rule``, normalised to what LinkIt accepts (lower case ASCII
letters, digits, ``.``, ``_``, ``-``). Two people wanting the same name in a district: the one who
already holds it (ledger) keeps it, then by person id; the others get ``2``, ``3``, ... appended
and are reported (``username_suffixed``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from staff_pipeline.vocab import LINKIT_LIMITS, LINKIT_ROLE_RANK

MART = "mart_linkit_staff"
REJECTED = "mart_linkit_rejected"
LEDGER = "ledger_linkit"

MART_DDL = f"""
CREATE TABLE IF NOT EXISTS {MART} (
    district VARCHAR, person_id VARCHAR, local_code VARCHAR, user_name VARCHAR, role VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email_address VARCHAR, phone_number VARCHAR,
    state_code VARCHAR, school_ids BIGINT[], username_base VARCHAR, username_suffixed BOOLEAN,
    content_hash VARCHAR, run_id VARCHAR, built_at TIMESTAMPTZ
)"""
REJECTED_DDL = f"""
CREATE TABLE IF NOT EXISTS {REJECTED} (
    district VARCHAR, person_id VARCHAR, local_code VARCHAR, rule VARCHAR, field VARCHAR,
    value VARCHAR, reason VARCHAR, run_id VARCHAR, rejected_at TIMESTAMPTZ
)"""
LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER} (
    district VARCHAR, local_code VARCHAR, person_id VARCHAR, user_id BIGINT, user_name VARCHAR,
    role VARCHAR, content_hash VARCHAR, school_ids BIGINT[], status VARCHAR, last_action VARCHAR,
    run_id VARCHAR, updated_at TIMESTAMPTZ
)"""

# Mart column -> LinkIt field, for the limits and the request bodies.
FIELD_OF = {
    "user_name": "UserName",
    "first_name": "FirstName",
    "last_name": "LastName",
    "email_address": "EmailAddress",
    "phone_number": "PhoneNumber",
    "local_code": "LocalCode",
    "state_code": "StateCode",
}
HASHED = ("role", "user_name", "first_name", "last_name", "email_address", "phone_number", "state_code")


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in (MART_DDL, REJECTED_DDL, LEDGER_DDL):
        con.execute(ddl)


def _normalise(expr: str) -> str:
    """SQL: a candidate UserName made of what LinkIt accepts, or NULL when nothing is left."""
    cleaned = f"regexp_replace(lower(strip_accents(trim({expr}))), '[^a-z0-9._-]', '', 'g')"
    return f"nullif(regexp_replace({cleaned}, '^[._-]+|[._-]+$', '', 'g'), '')"


def _candidates_sql(username_rule: str) -> str:
    roles = ", ".join(f"('{role}', {rank})" for role, rank in LINKIT_ROLE_RANK.items())
    from_email = _normalise("split_part(email_address, '@', 1)")
    from_code = _normalise("local_code")
    base = f"coalesce({from_email}, {from_code})" if username_rule == "email_local_part" else from_code
    return f"""
    WITH a AS (
        SELECT a.person_id, a.lea_id, a.linkit_school_id, a.source_role, r.role, r.rank
        FROM staff_assignments a LEFT JOIN (VALUES {roles}) r(role, rank) ON r.role = upper(a.linkit_role)
        WHERE a.linkit_district = $district AND a.active
    ),
    p AS (
        SELECT person_id,
               arg_max(role, rank) AS role,
               coalesce(list_sort(list_distinct(
                   list(linkit_school_id) FILTER (WHERE linkit_school_id IS NOT NULL))), []::BIGINT[]
               ) AS school_ids,
               string_agg(DISTINCT source_role, ', ' ORDER BY source_role) AS source_roles
        FROM a GROUP BY person_id
    ),
    pl AS (SELECT DISTINCT person_id, lea_id FROM a),
    email AS (
        SELECT c.person_id, first(c.value ORDER BY c.is_primary DESC, c.value) AS value
        FROM staff_contacts c JOIN pl USING (person_id, lea_id) WHERE c.kind = 'email' GROUP BY 1
    ),
    phone AS (
        SELECT c.person_id, first(c.value ORDER BY c.kind = 'phone' DESC, c.is_primary DESC, c.value) AS value
        FROM staff_contacts c JOIN pl USING (person_id, lea_id) WHERE c.kind IN ('phone', 'mobile') GROUP BY 1
    ),
    fields AS (
        SELECT p.person_id, p.role, p.school_ids, p.source_roles, s.status,
               nullif(trim(s.local_code), '') AS local_code,
               coalesce(nullif(trim(s.preferred_first_name), ''), s.first_name) AS first_name,
               nullif(trim(concat_ws(' ', s.family_name_prefix, s.last_name)), '') AS last_name,
               coalesce(email.value, s.primary_email) AS email_address,
               phone.value AS phone_number,
               nullif(trim(s.wiseid), '') AS state_code
        FROM p JOIN staff s USING (person_id)
        LEFT JOIN email USING (person_id) LEFT JOIN phone USING (person_id)
    )
    SELECT *, {base} AS username_base FROM fields
    """


def build_mart(
    con: duckdb.DuckDBPyConnection, district: str, username_rule: str, run_id: str
) -> dict[str, int]:
    """Rebuild the district's rows of the mart and its rejected rows; returns counts by rule."""
    ensure_tables(con)
    now = datetime.now(UTC)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE lk_candidates AS {_candidates_sql(username_rule)}",
        {"district": district},
    )
    # Reasons a person is not loaded, one row per (person, rule, field); the first decides.
    limit_checks = " UNION ALL ".join(
        f"SELECT person_id, local_code, 'too_long', '{field}', {column}, "
        f"'{field} is ' || length({column}) || ' characters; LinkIt allows {LINKIT_LIMITS[field]}' "
        f"FROM lk_candidates WHERE length({column}) > {LINKIT_LIMITS[field]}"
        for column, field in FIELD_OF.items()
        if column != "user_name"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE lk_reasons AS
        SELECT person_id, local_code, 'leaving' AS rule, NULL AS field, NULL AS value,
               'person is leaving: not loaded (an existing account is deactivated)' AS reason
        FROM lk_candidates WHERE status = 'leaving'
        UNION ALL
        SELECT person_id, local_code, 'no_linkit_role', 'Role', source_roles,
               'no role maps to LinkIt (roles: ' || coalesce(source_roles, '-') || ')'
        FROM lk_candidates WHERE role IS NULL AND status IS DISTINCT FROM 'leaving'
        UNION ALL
        SELECT person_id, local_code, 'missing_required', 'LocalCode', NULL, 'LocalCode is required'
        FROM lk_candidates WHERE local_code IS NULL
        UNION ALL
        SELECT person_id, local_code, 'missing_required', 'UserName', NULL,
               'no usable UserName (rule {username_rule})'
        FROM lk_candidates WHERE username_base IS NULL
        UNION ALL
        SELECT person_id, local_code, 'duplicate_local_code', 'LocalCode', local_code,
               'LocalCode also used by person ' || first_holder || ' in this district'
        FROM (SELECT *, first(person_id) OVER (PARTITION BY local_code ORDER BY person_id) AS first_holder
              FROM lk_candidates WHERE local_code IS NOT NULL) WHERE person_id <> first_holder
        UNION ALL {limit_checks}
    """)
    ledger_names = f"(SELECT local_code, user_name FROM {LEDGER} WHERE district = $district)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE lk_named AS
        WITH ok AS (SELECT * FROM lk_candidates WHERE person_id NOT IN (SELECT person_id FROM lk_reasons)),
        ranked AS (
            SELECT ok.*, row_number() OVER (
                PARTITION BY username_base ORDER BY l.user_name IS NOT DISTINCT FROM ok.username_base DESC,
                person_id) AS n
            FROM ok LEFT JOIN {ledger_names} l USING (local_code)
        )
        SELECT * EXCLUDE (n), CASE WHEN n = 1 THEN username_base ELSE username_base || n END AS user_name,
               n > 1 AS username_suffixed
        FROM ranked
    """,
        {"district": district},
    )
    con.execute(f"""
        INSERT INTO lk_reasons
        SELECT person_id, local_code, 'too_long', 'UserName', user_name,
               'UserName is ' || length(user_name) || ' characters; LinkIt allows {LINKIT_LIMITS["UserName"]}'
        FROM lk_named WHERE length(user_name) > {LINKIT_LIMITS["UserName"]}
        UNION ALL
        SELECT person_id, local_code, 'username_collision', 'UserName', user_name,
               'UserName ' || user_name || ' is also wanted by person ' || first_holder
        FROM (SELECT *, first(person_id) OVER (PARTITION BY user_name ORDER BY username_suffixed, person_id)
                  AS first_holder FROM lk_named)
        WHERE person_id <> first_holder
    """)
    hashed = ", ".join(HASHED)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {MART} WHERE district = $district", {"district": district})
        con.execute(f"DELETE FROM {REJECTED} WHERE district = $district", {"district": district})
        con.execute(
            f"""
            INSERT INTO {MART}
            SELECT $district, person_id, local_code, user_name, role, first_name, last_name, email_address,
                   phone_number, state_code, school_ids, username_base, username_suffixed,
                   md5(to_json(struct_pack({hashed}))), $run_id, $now
            FROM lk_named WHERE person_id NOT IN (SELECT person_id FROM lk_reasons)
            """,
            {"district": district, "run_id": run_id, "now": now},
        )
        con.execute(
            f"INSERT INTO {REJECTED} SELECT $district, person_id, local_code, rule, field, value, reason, "
            "$run_id, $now FROM lk_reasons",
            {"district": district, "run_id": run_id, "now": now},
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    counts = dict(
        con.execute(
            f"SELECT rule, count(DISTINCT person_id) FROM {REJECTED} WHERE district = ? GROUP BY rule",
            [district],
        ).fetchall()
    )
    counts["accounts"] = con.execute(
        f"SELECT count(*) FROM {MART} WHERE district = ?", [district]
    ).fetchone()[0]
    counts["username_suffixed"] = con.execute(
        f"SELECT count(*) FROM {MART} WHERE district = ? AND username_suffixed", [district]
    ).fetchone()[0]
    return counts
