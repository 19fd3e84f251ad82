"""The desired LinkIt! accounts of one district, built in SQL from the conformed model.

One account per person with an active assignment in the district whose role maps to LinkIt: the
highest role (``LINKIT_ROLE_RANK``), all their LinkIt SchoolIDs in the district. Everyone else in
the district gets a row in ``mart_linkit_rejected`` saying why (no LinkIt role, leaving, a value
over a field limit, a missing LocalCode, ...): values are never truncated.

UserName follows ``[linkit] username_rule``, normalised to what LinkIt accepts (lower case ASCII
letters, digits, ``.``, ``_``, ``-``). A person keeps the name their account holds (the ledger) while
it still derives from their rule (the base, or the base and a number). Everyone else takes the first
of the base, base ``2``, base ``3``, ... that no LinkIt account of the district holds (deactivated
ones included: they keep their names), in person id order, and is reported (``username_suffixed``).

Each person's account (``account_code``, the ledger row's LocalCode) is the one holding their LocalCode,
else the one their person id held under a LocalCode nobody wants now (the SIS renumbered them: the load
changes that account's LocalCode rather than make a second one). A LocalCode held by the deactivated
account of another person is not handed over: ``blocked_user_id`` names that account, and the create
refuses to adopt it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import duckdb

from staff_pipeline.loads.linkit_ledger import FOREIGN, LEDGER, ensure_ledger, fold_district
from staff_pipeline.transform.conformed import linkit_local_codes
from staff_pipeline.vocab import LINKIT_LIMITS, LINKIT_ROLE_RANK

MART = "mart_linkit_staff"
REJECTED = "mart_linkit_rejected"

MART_DDL = f"""
CREATE TABLE IF NOT EXISTS {MART} (
    district VARCHAR, person_id VARCHAR, local_code VARCHAR, user_name VARCHAR, role VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email_address VARCHAR, phone_number VARCHAR,
    state_code VARCHAR, school_ids BIGINT[], username_base VARCHAR, username_suffixed BOOLEAN,
    content_hash VARCHAR, run_id VARCHAR, built_at TIMESTAMPTZ, account_code VARCHAR,
    blocked_user_id BIGINT, blocked_person_id VARCHAR
)"""
# Columns added after the first release: a warehouse made before them gets them on first use.
MART_ADDED = {"account_code": "VARCHAR", "blocked_user_id": "BIGINT", "blocked_person_id": "VARCHAR"}
# Why a person can be missing from the mart although they still work in the district: their account
# stays as it is (it is not deactivated) until the data is fixed. The other rules mean "not here".
LEAVING_RULES = ("leaving", "no_linkit_role")
REJECTED_DDL = f"""
CREATE TABLE IF NOT EXISTS {REJECTED} (
    district VARCHAR, person_id VARCHAR, local_code VARCHAR, rule VARCHAR, field VARCHAR,
    value VARCHAR, reason VARCHAR, run_id VARCHAR, rejected_at TIMESTAMPTZ
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
    for ddl in (MART_DDL, REJECTED_DDL):
        con.execute(ddl)
    ensure_ledger(con)
    for column, kind in MART_ADDED.items():
        con.execute(f"ALTER TABLE {MART} ADD COLUMN IF NOT EXISTS {column} {kind}")


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
               nullif(trim(lc.local_code), '') AS local_code,
               coalesce(nullif(trim(s.preferred_first_name), ''), s.first_name) AS first_name,
               nullif(trim(concat_ws(' ', s.family_name_prefix, s.last_name)), '') AS last_name,
               coalesce(email.value, s.primary_email) AS email_address,
               phone.value AS phone_number,
               nullif(trim(s.wiseid), '') AS state_code
        FROM p JOIN staff s USING (person_id)
        LEFT JOIN ({linkit_local_codes("staff_assignments")}) lc
               ON lc.person_id = p.person_id AND lc.linkit_district = $district
        LEFT JOIN email USING (person_id) LEFT JOIN phone USING (person_id)
    )
    SELECT *, {base} AS username_base FROM fields
    """


def build_mart(
    con: duckdb.DuckDBPyConnection,
    district: str,
    username_rule: str,
    run_id: str,
    check: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> dict[str, int]:
    """Rebuild the district's rows of the mart and its rejected rows; returns counts by rule.

    ``check`` (the mart's contract) runs before the rows commit: if it raises, the district keeps
    its previous mart, so a load run on its own never sends rows that broke the contract."""
    ensure_tables(con)
    fold_district(con, district)  # each person's account is read from the ledger: a current one
    now = datetime.now(UTC)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE lk_candidates AS {_candidates_sql(username_rule)}",
        {"district": district},
    )
    # The district's accounts (a row marked absent holds none).
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE lk_ledger AS
        SELECT local_code, person_id, user_id, user_name, status, updated_at FROM {LEDGER}
        WHERE district = $district AND status IN ('active', 'inactive', 'pending')
        """,
        {"district": district},
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE lk_foreign AS "
        f"SELECT user_name FROM {FOREIGN} WHERE district = $district",
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
        FROM (SELECT c.*, first(c.person_id) OVER (
                  PARTITION BY c.local_code ORDER BY c.person_id = l.person_id DESC NULLS LAST, c.person_id
              ) AS first_holder  -- the person whose account holds the LocalCode keeps it
              FROM lk_candidates c LEFT JOIN lk_ledger l USING (local_code)
              WHERE c.local_code IS NOT NULL) WHERE person_id <> first_holder
        UNION ALL {limit_checks}
    """)
    _match_accounts(con)
    _name_accounts(con)
    con.execute(f"""
        INSERT INTO lk_reasons
        SELECT person_id, local_code, 'too_long', 'UserName', user_name,
               'UserName is ' || length(user_name) || ' characters; LinkIt allows {LINKIT_LIMITS["UserName"]}'
        FROM lk_named WHERE length(user_name) > {LINKIT_LIMITS["UserName"]}
        UNION ALL
        SELECT person_id, local_code, 'username_collision', 'UserName', user_name,
               'UserName ' || user_name || ' is also wanted by person ' || first_holder
        FROM (SELECT *, first(person_id) OVER (
                  PARTITION BY lower(user_name) ORDER BY name_kept DESC, username_suffixed, person_id
              ) AS first_holder FROM lk_named)  -- names of two bases can meet: base "ab" 12, "ab1" 2
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
                   md5(to_json(struct_pack({hashed}))), $run_id, $now, account_code, blocked_user_id,
                   blocked_person_id
            FROM lk_named WHERE person_id NOT IN (SELECT person_id FROM lk_reasons)
            """,
            {"district": district, "run_id": run_id, "now": now},
        )
        con.execute(
            f"INSERT INTO {REJECTED} SELECT $district, person_id, local_code, rule, field, value, reason, "
            "$run_id, $now FROM lk_reasons",
            {"district": district, "run_id": run_id, "now": now},
        )
        if check is not None:
            check(con)
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


def _match_accounts(con: duckdb.DuckDBPyConnection) -> None:
    """``lk_accounts``: per candidate, the ledger row of their account (``account_code``), or the
    closed account of another person that holds their LocalCode (``blocked_*``): deactivated, or
    deactivated this run because its holder, still in the model, leaves (it stays theirs).

    An active account holding the LocalCode is the person's even under another person id (identity
    renumbered them; LocalCode is what LinkIt pairs). A person whose LocalCode has no account keeps
    the account their person id held under a LocalCode no candidate wants any more."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE lk_accounts AS
        WITH by_code AS (
            SELECT c.person_id, l.local_code, l.person_id AS holder, l.user_id, l.status
            FROM lk_candidates c JOIN lk_ledger l USING (local_code)
        ),
        moved AS (
            SELECT c.person_id, arg_max(l.local_code, l.updated_at) AS local_code
            FROM lk_candidates c JOIN lk_ledger l ON l.person_id = c.person_id
            WHERE l.local_code IS DISTINCT FROM c.local_code
              AND l.local_code NOT IN (SELECT local_code FROM lk_candidates WHERE local_code IS NOT NULL)
              AND c.local_code NOT IN (SELECT local_code FROM lk_ledger)
            GROUP BY c.person_id
        ),
        staying AS (SELECT person_id FROM lk_candidates WHERE status IS DISTINCT FROM 'leaving'),
        closing AS (  -- closed: inactive, or its holder is still a person of the model but leaves the
                      -- district this run (a holder gone from the model was renumbered by identity)
            SELECT b.*, b.status = 'inactive'
                        OR coalesce(b.holder IN (SELECT person_id FROM staff)
                                    AND b.holder NOT IN (SELECT person_id FROM staying), false) AS closed
            FROM by_code b
        )
        SELECT c.person_id,
               CASE WHEN b.holder = c.person_id OR NOT b.closed THEN b.local_code
                    ELSE m.local_code END AS account_code,
               CASE WHEN b.holder <> c.person_id AND b.closed THEN b.user_id END AS blocked_user_id,
               CASE WHEN b.holder <> c.person_id AND b.closed THEN b.holder END AS blocked_person_id
        FROM lk_candidates c LEFT JOIN closing b USING (person_id) LEFT JOIN moved m USING (person_id)
        """
    )


def _name_accounts(con: duckdb.DuckDBPyConnection) -> None:
    """``lk_named``: the accepted candidates with their UserName (see the module docstring).

    Set-based: per base, as many tries (base, base2, ...) as it has people plus the district's names
    with the same stem (the base without trailing digits: every taken try has that stem), the taken
    ones removed, the i-th free try to the i-th person of that base."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE lk_named AS
        WITH ok AS (
            SELECT c.*, a.account_code, a.blocked_user_id, a.blocked_person_id, l.user_name AS held_name
            FROM lk_candidates c LEFT JOIN lk_accounts a USING (person_id)
            LEFT JOIN lk_ledger l ON l.local_code = a.account_code
            WHERE c.person_id NOT IN (SELECT person_id FROM lk_reasons)
        ),
        kept AS (
            SELECT person_id, held_name AS user_name FROM ok
            WHERE lower(held_name) = username_base
               OR (starts_with(lower(held_name), username_base)
                   AND regexp_full_match(substr(held_name, length(username_base) + 1), '[1-9][0-9]*'))
        ),
        needers AS (
            SELECT person_id, username_base,
                   row_number() OVER (PARTITION BY username_base ORDER BY person_id) AS i
            FROM ok ANTI JOIN kept USING (person_id)
        ),
        taken AS (
            SELECT DISTINCT lower(user_name) AS name, regexp_replace(lower(user_name), '[0-9]+$', '') AS stem
            FROM (SELECT user_name FROM lk_ledger UNION ALL SELECT user_name FROM lk_foreign)
            WHERE user_name IS NOT NULL
        ),
        bound AS (
            SELECT b.username_base, any_value(b.m) + count(t.name) AS n
            FROM (SELECT username_base, count(*) AS m, regexp_replace(username_base, '[0-9]+$', '') AS stem
                  FROM needers GROUP BY username_base) b
            LEFT JOIN taken t USING (stem) GROUP BY b.username_base
        ),
        tries AS (
            SELECT username_base, k, CASE WHEN k = 1 THEN username_base ELSE username_base || k END AS name
            FROM (SELECT username_base, unnest(range(1, n + 1)) AS k FROM bound)
        ),
        free AS (
            SELECT username_base, name, k, row_number() OVER (PARTITION BY username_base ORDER BY k) AS i
            FROM tries ANTI JOIN taken USING (name)
        )
        SELECT ok.* EXCLUDE (held_name), coalesce(kept.user_name, f.name) AS user_name,
               coalesce(lower(kept.user_name) <> ok.username_base, f.k > 1) AS username_suffixed,
               kept.user_name IS NOT NULL AS name_kept
        FROM ok LEFT JOIN kept USING (person_id)
        LEFT JOIN needers n USING (person_id)
        LEFT JOIN free f ON f.username_base = n.username_base AND f.i = n.i
        """
    )
