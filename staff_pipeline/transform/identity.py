"""Who is who: Edu-V employees and SIS records matched into persons, in DuckDB SQL.

Records are linked by identifiers first (WISEid = SIS ``state_staff_id``; local code = SIS
``local_staff_id`` = Edu-V ASI ``userId``, scoped to the LEA; the other Edu-V userIds), then by
normalised email between the groups that identifiers formed. Linking is a connected-components
pass (label propagation, set-based, a handful of iterations at any scale).

Nothing ambiguous is guessed: an identifier held by two records of one source (two Edu-V employees,
two SIS staff in one LEA), a group that ends up holding two Edu-V employees, two SIS staff of one
LEA or two WISEids, and an email that would join such a group are written to ``staff_match_issues``
and those records stay apart.

``person_id`` is stable: a group takes the id that the previous run's ``staff_identifiers`` give its
identifiers; a new person gets an id derived from its anchoring identifier, its first record key
(``eduv:<type>:<id>`` before ``sis:<lea>:<local id>``), which is unique to the group.
"""

from __future__ import annotations

import duckdb

from staff_pipeline.warehouse import table_exists

# Lower is stronger; the strongest identifier shared by two records names how they matched.
ID_STRENGTH = {"wiseid": 1, "local_code": 2}
EDUV_ID_STRENGTH = 3
MAX_ITERATIONS = 50
_WORK_TABLES = (
    "id_links",
    "id_records",
    "id_ambiguous",
    "id_nodes",
    "id_strong_edges",
    "id_strong",
    "id_strong_bad",
    "id_groups",
    "id_email_edges",
    "id_email",
    "id_email_members",
    "id_email_bad",
    "id_final",
    "id_matched_by",
    "id_person",
    "_cc_next",
)


def _components(con: duckdb.DuckDBPyConnection, nodes: str, edges: str, out: str) -> None:
    """Connected components: ``nodes(node)``, ``edges(node, key)`` -> ``out(node, label = min node)``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT node, node AS label FROM {nodes}")
    for _ in range(MAX_ITERATIONS):
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _cc_next AS
            WITH key_label AS (
                SELECT e.key, min(c.label) AS label FROM {edges} e JOIN {out} c USING (node) GROUP BY e.key
            ),
            best AS (
                SELECT e.node, min(k.label) AS label
                FROM {edges} e JOIN key_label k USING (key) GROUP BY e.node
            )
            SELECT c.node, least(c.label, coalesce(b.label, c.label)) AS label
            FROM {out} c LEFT JOIN best b USING (node)
            """
        )
        changed = con.execute(
            f"SELECT count(*) FROM _cc_next n JOIN {out} o USING (node) WHERE n.label <> o.label"
        ).fetchall()[0][0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT * FROM _cc_next")
        if not changed:
            return
    raise RuntimeError(f"identity matching did not converge in {MAX_ITERATIONS} iterations")


def _conflicts(group_table: str) -> str:
    """Groups (``group_table(node=record_key, label)``) that hold records which cannot be one person."""
    return f"""
        SELECT g.label FROM {group_table} g JOIN id_records r ON r.record_key = g.node
        LEFT JOIN (SELECT record_key, id_value FROM id_links WHERE id_type = 'wiseid') w USING (record_key)
        GROUP BY g.label
        HAVING count(DISTINCT r.record_key) FILTER (WHERE r.source = 'eduv') > 1
            OR count(DISTINCT r.record_key) FILTER (WHERE r.source = 'sis')
               > count(DISTINCT r.lea_id) FILTER (WHERE r.source = 'sis')
            OR count(DISTINCT w.id_value) > 1
    """


def _collect_identifiers(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_records AS
        SELECT record_key, 'eduv' AS source, NULL::BIGINT AS lea_id FROM stg_eduv_employees
        UNION ALL
        SELECT DISTINCT record_key, 'sis', lea_id FROM stg_sis_staff_assignments
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_links AS
        WITH eduv_leas AS (
            SELECT e.record_key, o.lea_id
            FROM stg_eduv_employees e JOIN cfg_organisations o USING (school_key)
            UNION
            SELECT r.record_key, o.lea_id
            FROM stg_eduv_employee_roles r JOIN cfg_organisations o USING (school_key)
        )
        SELECT record_key, 'eduv' AS source, '' AS scope, user_id_type AS id_type, user_id AS id_value
        FROM stg_eduv_employee_ids
        UNION ALL
        SELECT e.record_key, 'eduv', '', 'local_code', l.lea_id || ':' || e.local_code
        FROM stg_eduv_employees e JOIN eduv_leas l USING (record_key) WHERE e.local_code IS NOT NULL
        UNION ALL
        SELECT record_key, 'eduv', '', 'email', email FROM stg_eduv_employees WHERE email IS NOT NULL
        UNION ALL
        SELECT DISTINCT record_key, 'sis', lea_id::VARCHAR,
               unnest(['wiseid', 'local_code', 'email', 'email']),
               unnest([state_staff_id, lea_id || ':' || local_staff_id, email, alt_email])
        FROM stg_sis_staff_assignments
        """
    )
    con.execute("DELETE FROM id_links WHERE id_value IS NULL")
    con.execute("CREATE OR REPLACE TEMP TABLE id_links AS SELECT DISTINCT * FROM id_links")


def _issues_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE OR REPLACE TABLE staff_match_issues__next(issue VARCHAR, id_type VARCHAR, id_value VARCHAR, "
        "record_keys VARCHAR[], detail VARCHAR)"
    )


def match(con: duckdb.DuckDBPyConnection) -> None:
    """Build ``person_map(record_key, source, person_id, matched_by)``, ``staff_identifiers__cand``
    and ``staff_match_issues__next`` from the staged tables."""
    _collect_identifiers(con)
    _issues_table(con)
    # An identifier two records of one source claim (same LEA for SIS) points at two people.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_ambiguous AS
        SELECT id_type, id_value, list(DISTINCT record_key ORDER BY record_key) AS record_keys
        FROM id_links WHERE id_type <> 'email'
        GROUP BY id_type, id_value, source, scope HAVING count(DISTINCT record_key) > 1
        """
    )
    con.execute(
        """
        INSERT INTO staff_match_issues__next
        SELECT 'ambiguous_identifier', id_type, id_value, record_keys,
               'one identifier held by several records of one source: not merged' FROM id_ambiguous
        """
    )
    con.execute("CREATE OR REPLACE TEMP TABLE id_nodes AS SELECT record_key AS node FROM id_records")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_strong_edges AS
        SELECT record_key AS node, id_type || '=' || id_value AS key FROM id_links l
        WHERE id_type <> 'email' AND NOT EXISTS (
            SELECT 1 FROM id_ambiguous a WHERE a.id_type = l.id_type AND a.id_value = l.id_value)
        """
    )
    _components(con, "id_nodes", "id_strong_edges", "id_strong")
    con.execute(f"CREATE OR REPLACE TEMP TABLE id_strong_bad AS {_conflicts('id_strong')}")
    con.execute(
        """
        INSERT INTO staff_match_issues__next
        SELECT 'conflicting_identifiers', NULL, NULL, list(node ORDER BY node),
               'identifiers chain records of two different people together: not merged'
        FROM id_strong SEMI JOIN id_strong_bad USING (label) GROUP BY label
        """
    )
    con.execute("UPDATE id_strong SET label = node WHERE label IN (SELECT label FROM id_strong_bad)")
    # Emails link the identifier groups, unless the merged group could not be one person.
    con.execute("CREATE OR REPLACE TEMP TABLE id_groups AS SELECT DISTINCT label AS node FROM id_strong")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_email_edges AS
        SELECT DISTINCT s.label AS node, l.id_value AS key
        FROM id_links l JOIN id_strong s ON s.node = l.record_key WHERE l.id_type = 'email'
        """
    )
    _components(con, "id_groups", "id_email_edges", "id_email")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_email_members AS
        SELECT s.node, e.label FROM id_strong s JOIN id_email e ON e.node = s.label
        """
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE id_email_bad AS {_conflicts('id_email_members')}")
    con.execute(
        """
        INSERT INTO staff_match_issues__next
        SELECT 'ambiguous_email', 'email', x.key, list(DISTINCT s.node ORDER BY s.node),
               'one email address shared by different people: not merged'
        FROM id_email_edges x JOIN id_email e USING (node) SEMI JOIN id_email_bad b ON b.label = e.label
        JOIN id_strong s ON s.label = x.node
        GROUP BY x.key HAVING count(DISTINCT x.node) > 1
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_final AS
        SELECT s.node AS record_key, s.label AS strong_label,
               CASE WHEN e.label IN (SELECT label FROM id_email_bad) THEN s.label ELSE e.label END AS label
        FROM id_strong s JOIN id_email e ON e.node = s.label
        """
    )
    _matched_by(con)
    _assign_person_ids(con)
    for table in _WORK_TABLES:  # several million rows at scale: free them for the model build
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _matched_by(con: duckdb.DuckDBPyConnection) -> None:
    strength = " ".join(f"WHEN '{k}' THEN {v}" for k, v in ID_STRENGTH.items())
    names = " ".join(f"WHEN {v} THEN '{k}'" for k, v in ID_STRENGTH.items())
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_matched_by AS
        WITH shared AS (
            SELECT f.label, min(CASE l.id_type {strength} ELSE {EDUV_ID_STRENGTH} END) AS strength
            FROM id_links l JOIN id_final f USING (record_key) JOIN id_strong_edges e
              ON e.node = l.record_key AND e.key = l.id_type || '=' || l.id_value
            GROUP BY f.label, l.id_type, l.id_value HAVING count(DISTINCT l.record_key) > 1
        ),
        best AS (SELECT label, min(strength) AS strength FROM shared GROUP BY label),
        sizes AS (SELECT label, count(*) AS records, count(DISTINCT strong_label) AS groups
                  FROM id_final GROUP BY label)
        SELECT z.label,
               CASE WHEN z.records = 1 THEN 'unmatched'
                    WHEN z.groups > 1 THEN 'email'
                    ELSE CASE b.strength {names} ELSE 'eduv_user_id' END END AS matched_by
        FROM sizes z LEFT JOIN best b USING (label)
        """
    )


def _assign_person_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Reuse last run's person_id where this group's identifiers point at one; else derive a new one."""
    if table_exists(con, "staff_identifiers"):
        previous = "SELECT person_id, id_type, id_value FROM staff_identifiers WHERE id_type <> 'email'"
    else:
        previous = "SELECT NULL::VARCHAR person_id, NULL::VARCHAR id_type, NULL::VARCHAR id_value WHERE false"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_person AS
        WITH own AS (
            SELECT f.label, l.id_type, l.id_value FROM id_links l JOIN id_final f USING (record_key)
            WHERE l.id_type <> 'email'
            UNION SELECT label, 'record_key', record_key FROM id_final
        ),
        votes AS (
            SELECT o.label, p.person_id, count(*) AS n
            FROM own o JOIN ({previous}) p USING (id_type, id_value) GROUP BY ALL
        ),
        claimed AS (  -- each group's best previous id, and each previous id to its best group
            SELECT label, person_id FROM votes
            QUALIFY row_number() OVER (PARTITION BY label ORDER BY n DESC, person_id) = 1
                AND row_number() OVER (PARTITION BY person_id ORDER BY n DESC, label) = 1
        ),
        anchor AS (SELECT label, min(record_key) AS anchor FROM id_final GROUP BY label)
        SELECT a.label, coalesce(c.person_id, 'P' || upper(substr(md5(a.anchor), 1, 15))) AS person_id
        FROM anchor a LEFT JOIN claimed c USING (label)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE person_map AS
        SELECT f.record_key, r.source, r.lea_id, p.person_id, m.matched_by
        FROM id_final f JOIN id_records r USING (record_key) JOIN id_person p USING (label)
        JOIN id_matched_by m USING (label)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE staff_identifiers__cand AS
        SELECT DISTINCT m.person_id, l.id_type, l.id_value, l.source
        FROM id_links l JOIN person_map m USING (record_key)
        UNION SELECT person_id, 'record_key', record_key, source FROM person_map
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE staff_match_issues__next AS
        WITH x AS (SELECT row_number() OVER () AS n, * FROM staff_match_issues__next),
        p AS (
            SELECT x.n, list(DISTINCT m.person_id ORDER BY m.person_id) AS person_ids
            FROM x, unnest(x.record_keys) AS t(record_key) JOIN person_map m ON m.record_key = t.record_key
            GROUP BY x.n
        )
        SELECT x.* EXCLUDE (n), p.person_ids FROM x LEFT JOIN p USING (n)
        """
    )
