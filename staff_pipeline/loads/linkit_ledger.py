"""The LinkIt! ledger: what each district's accounts are, folded from the load's journal.

The ledger is what the mart (each person's account, ``account_code``) and the load's plan read.
Both fold the district's journal first, so the requests a killed run completed are known before
anything is decided: a mart built on a stale ledger sees those accounts as nobody's, and the plan
would deactivate them and adopt them again in one night.
"""

from __future__ import annotations

import duckdb

from staff_pipeline.loads.journal import Journal, append_events, ensure_events

TARGET = "linkit"
LEDGER = "ledger_linkit"
LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER} (
    district VARCHAR, local_code VARCHAR, person_id VARCHAR, user_id BIGINT, user_name VARCHAR,
    role VARCHAR, content_hash VARCHAR, school_ids BIGINT[], status VARCHAR, last_action VARCHAR,
    run_id VARCHAR, updated_at TIMESTAMPTZ
)"""
# UserNames held by LinkIt accounts the ledger does not know (made by hand, another system's): the
# mart names nobody with them, so a person whose create met one takes the next suffix next run
# instead of failing every night.
FOREIGN = "linkit_foreign_names"
FOREIGN_DDL = f"""
CREATE TABLE IF NOT EXISTS {FOREIGN} (
    district VARCHAR, user_name VARCHAR, user_id BIGINT, seen_at TIMESTAMPTZ
)"""
JOURNAL_COLUMNS = {
    "seq": "BIGINT",
    "kind": "VARCHAR",
    "run_id": "VARCHAR",
    "local_code": "VARCHAR",
    "person_id": "VARCHAR",
    "action": "VARCHAR",
    "ok": "BOOLEAN",
    "user_id": "BIGINT",
    "user_name": "VARCHAR",
    "role": "VARCHAR",
    "content_hash": "VARCHAR",
    "school_ids": "BIGINT[]",
    "status": "VARCHAR",
    "http_status": "INTEGER",
    "error": "VARCHAR",
    "replaces": "VARCHAR",
}


def fold_journal(con: duckdb.DuckDBPyConnection, journal: Journal, district: str) -> int:
    """Fold completed requests into ``ledger_linkit`` and ``load_events``, then clear the journal.

    The ledger row of a LocalCode takes the account state of its last successful request, and the
    content hash of the last request that wrote fields. An intent with no success after it leaves
    a ``pending`` row, which makes the next run look the person up before creating.
    """
    ensure_ledger(con)
    ensure_events(con)
    if journal.to_table(con, "lk_journal", JOURNAL_COLUMNS) == 0:
        journal.clear()
        return 0
    params = {"district": district}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE lk_fold AS
            WITH j AS (SELECT *, row_number() OVER (ORDER BY journaled_at, seq) AS n FROM lk_journal),
            last_ok AS (SELECT * FROM j WHERE kind = 'done' AND ok
                        QUALIFY row_number() OVER (PARTITION BY local_code ORDER BY n DESC) = 1),
            hashes AS (SELECT local_code, arg_max(content_hash, n) AS content_hash FROM j
                       WHERE kind = 'done' AND ok AND content_hash IS NOT NULL GROUP BY local_code),
            pending AS (SELECT local_code, arg_max(person_id, n) AS person_id, max(n) AS n FROM j
                        WHERE kind = 'intent' GROUP BY local_code)
            SELECT coalesce(o.local_code, p.local_code) AS local_code,
                   coalesce(o.person_id, p.person_id) AS person_id,
                   o.user_id, o.user_name, o.role, h.content_hash, o.school_ids,
                   CASE WHEN o.n IS NULL OR p.n > o.n THEN 'pending' ELSE o.status END AS status,
                   o.action AS last_action, coalesce(o.run_id, '') AS run_id,
                   o.journaled_at AS sent_at  -- when the answer came, not when it was folded
            FROM last_ok o FULL OUTER JOIN pending p USING (local_code)
            LEFT JOIN hashes h USING (local_code)
            """
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE lk_merged AS
            SELECT $district AS district, f.local_code, coalesce(f.person_id, l.person_id) AS person_id,
                   coalesce(f.user_id, l.user_id) AS user_id, coalesce(f.user_name, l.user_name) AS user_name,
                   coalesce(f.role, l.role) AS role, coalesce(f.content_hash, l.content_hash) AS content_hash,
                   coalesce(f.school_ids, l.school_ids) AS school_ids,
                   CASE WHEN f.status = 'pending' AND l.status IN ('active', 'inactive') THEN l.status
                        ELSE f.status END AS status,
                   coalesce(f.last_action, l.last_action) AS last_action, f.run_id,
                   coalesce(f.sent_at, now()) AS updated_at
            FROM lk_fold f LEFT JOIN (SELECT * FROM {LEDGER} WHERE district = $district) l USING (local_code)
            """,
            params,
        )
        con.execute(
            f"DELETE FROM {LEDGER} WHERE district = $district "
            "AND local_code IN (SELECT local_code FROM lk_merged)",
            params,
        )
        con.execute(f"INSERT INTO {LEDGER} SELECT * FROM lk_merged")
        # An account whose LocalCode changed now lives under the new code only.
        con.execute(
            f"""
            DELETE FROM {LEDGER} WHERE district = $district AND local_code IN (
                SELECT replaces FROM lk_journal WHERE kind = 'done' AND ok AND replaces IS NOT NULL
                EXCEPT SELECT local_code FROM lk_merged)
            """,
            params,
        )
        con.execute(
            f"""
            INSERT INTO {FOREIGN}
            SELECT DISTINCT ON (lower(user_name)) $district, user_name, user_id, journaled_at
            FROM lk_journal j WHERE kind = 'foreign' AND user_name IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM {FOREIGN} f
                              WHERE f.district = $district AND lower(f.user_name) = lower(j.user_name))
            """,
            params,
        )
        append_events(
            con,
            "SELECT run_id, 'linkit' AS target, $district AS partition_key, local_code AS record_key, "
            "action, ok, http_status, error, journaled_at AS event_at, "
            "CAST(user_id AS VARCHAR) AS target_id, content_hash, NULL AS body "
            "FROM lk_journal WHERE kind = 'done'",
            params,
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    folded = con.execute("SELECT count(*) FROM lk_journal").fetchone()[0]
    journal.clear()
    return int(folded)


def ensure_ledger(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(LEDGER_DDL)
    con.execute(FOREIGN_DDL)


def fold_district(con: duckdb.DuckDBPyConnection, district: str) -> int:
    """Fold what the district's journal holds (a killed run's completed requests) into the ledger."""
    return fold_journal(con, Journal(TARGET, district), district)
