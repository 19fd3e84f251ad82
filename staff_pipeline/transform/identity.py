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

from staff_pipeline.transform.staging import SIS_RECORD_NO_BASE
from staff_pipeline.warehouse import table_exists

# Lower is stronger; the strongest identifier shared by two records names how they matched.
ID_STRENGTH = {"wiseid": 1, "local_code": 2}
EDUV_ID_STRENGTH = 3
MAX_ITERATIONS = 50
# Finds candidate shared identifiers cheaply; exactness never depends on it (see _collect_identifiers).
ID_HASH = "hash(id_type, id_value)"
_WORK_TABLES = (
    "id_links",
    "id_shared",
    "id_edges",
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
    "id_anchor",
    "_cc_next",
)


def _components(con: duckdb.DuckDBPyConnection, nodes: str, edges: str, out: str) -> None:
    """Connected components: ``nodes(node)``, ``edges(node, key)`` -> ``out(node, label = min node)``.

    Nodes and keys are integers (record and identifier numbers, see :func:`_collect_identifiers`):
    each round is two hash joins and two aggregates over narrow integer columns.
    """
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
            SELECT c.node, least(c.label, coalesce(b.label, c.label)) AS label, b.label < c.label AS moved
            FROM {out} c LEFT JOIN best b USING (node)
            """
        )
        changed = con.execute("SELECT count(*) FROM _cc_next WHERE moved").fetchall()[0][0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT node, label FROM _cc_next")
        if not changed:
            return
    raise RuntimeError(f"identity matching did not converge in {MAX_ITERATIONS} iterations")


def _conflicts(group_table: str) -> str:
    """Groups (``group_table(node=rid, label)``) that hold records which cannot be one person: two
    Edu-V employees, two SIS staff of one LEA, or two WISEids. Plain aggregates, no DISTINCT counts:
    a member is one row, two records of one (source, LEA) are a count above one (an Edu-V record's
    ``lea_id`` is NULL, so its group is all Edu-V records), and two WISEids show as min <> max."""
    return f"""
        WITH merged AS (  -- only a group of several records can hold two people
            SELECT g.node, g.label FROM {group_table} g
            SEMI JOIN (SELECT label FROM {group_table} GROUP BY label HAVING count(*) > 1) USING (label)
        )
        SELECT DISTINCT g.label FROM merged g JOIN id_records r ON r.rid = g.node
        GROUP BY g.label, r.source, r.lea_id HAVING count(*) > 1
        UNION
        SELECT g.label FROM merged g JOIN id_links w ON w.rid = g.node AND w.id_type = 'wiseid'
        GROUP BY g.label HAVING min(w.id_value) <> max(w.id_value)
    """


def _collect_identifiers(con: duckdb.DuckDBPyConnection) -> None:
    """``id_records`` (one row per record, ``rid`` = the staged ``record_no``), ``id_links`` (each
    record's identifiers) and ``id_edges``: the links of identifiers two or more records hold, with
    a number ``kid`` per identifier. The rest (most of them) link nothing.

    The staged tables number their records (Edu-V numbers below SIS numbers), so the matching runs
    on integers from the start. Shared identifiers are found on a hash of the text first: hashes held
    by one record are dropped on integers, and only the candidates left are grouped by their text,
    so a hash collision can only cost time, never merge two identifiers.
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_records AS
        SELECT record_no AS rid, record_key, 'eduv' AS source, NULL::BIGINT AS lea_id FROM stg_eduv_employees
        UNION ALL
        SELECT record_no, any_value(record_key), 'sis', any_value(lea_id)
        FROM stg_sis_staff_assignments GROUP BY record_no
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_links AS
        WITH sis AS (  -- an SIS person has a row per assignment: their identifiers, once
            SELECT DISTINCT record_no, lea_id AS scope,
                   unnest(['wiseid', 'local_code', 'email', 'email']) AS id_type,
                   unnest([state_staff_id, lea_id || ':' || local_staff_id, email, alt_email]) AS id_value
            FROM stg_sis_staff_assignments
        ),
        links AS (
            SELECT record_no AS rid, 'eduv' AS source, NULL::BIGINT AS scope, user_id_type AS id_type,
                   user_id AS id_value
            FROM stg_eduv_employee_ids  -- distinct per record already (its schema's key)
            WHERE user_id_type <> 'ASI'  -- an ASI is a local code, per LEA (below), not a global id
            UNION ALL
            SELECT record_no, 'eduv', NULL, 'local_code', unnest(lea_ids) || ':' || user_id
            FROM stg_eduv_employee_ids WHERE user_id_type = 'ASI' AND user_id IS NOT NULL
            UNION ALL
            SELECT record_no, 'eduv', NULL, 'email', email FROM stg_eduv_employees WHERE email IS NOT NULL
            UNION ALL
            SELECT record_no, 'sis', scope, id_type, id_value FROM sis WHERE id_value IS NOT NULL
        )
        SELECT *, {ID_HASH} AS h FROM links
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_shared AS
        SELECT l.rowid AS lid, l.* FROM id_links l
        SEMI JOIN (SELECT h FROM id_links GROUP BY h HAVING min(rid) < max(rid)) USING (h)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_edges AS
        WITH keys AS (
            SELECT row_number() OVER () AS kid, id_type, id_value
            FROM id_shared GROUP BY id_type, id_value HAVING min(rid) < max(rid)
        )
        SELECT s.lid, s.rid, s.source, s.scope, s.id_type, s.id_value, k.kid
        FROM id_shared s JOIN keys k USING (id_type, id_value)
        """
    )


def _issues_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE OR REPLACE TABLE staff_match_issues__next(issue VARCHAR, id_type VARCHAR, id_value VARCHAR, "
        "record_keys VARCHAR[], detail VARCHAR)"
    )


def match(con: duckdb.DuckDBPyConnection) -> None:
    """Build ``person_map`` (per record: ``rid``, ``record_key``, ``source``, ``label``, ``person_id``),
    ``person_labels`` (per person: ``label``, ``person_id``, ``matched_by`` and the ``eduv``/``sis``
    flags), ``staff_identifiers__cand`` and ``staff_match_issues__next`` from the staged tables."""
    _collect_identifiers(con)
    _issues_table(con)
    # An identifier two records of one source claim (same LEA for SIS) points at two people.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_ambiguous AS
        SELECT kid, any_value(id_type) AS id_type, any_value(id_value) AS id_value, list(rid) AS rids
        FROM id_edges WHERE id_type <> 'email'
        GROUP BY kid, source, scope HAVING count(*) > 1
        """
    )
    con.execute(
        """
        INSERT INTO staff_match_issues__next
        SELECT 'ambiguous_identifier', a.id_type, a.id_value, list(r.record_key ORDER BY r.record_key),
               'one identifier held by several records of one source: not merged'
        FROM id_ambiguous a, unnest(a.rids) AS t(rid) JOIN id_records r USING (rid)
        GROUP BY a.kid, a.rids, a.id_type, a.id_value
        """
    )
    # One SIS record whose rows carry two WISEids cannot say which is theirs: reported, neither used
    # (``staff.wiseid`` stays empty; see conformed.build_staff).
    con.execute(
        """
        INSERT INTO staff_match_issues__next
        SELECT 'conflicting_identifiers', 'wiseid', string_agg(l.id_value, ', ' ORDER BY l.id_value),
               [any_value(r.record_key)], 'one SIS record with several WISEids: none is used'
        FROM id_links l JOIN id_records r USING (rid) WHERE l.id_type = 'wiseid'
        GROUP BY l.rid HAVING count(*) > 1
        """
    )
    con.execute("CREATE OR REPLACE TEMP TABLE id_nodes AS SELECT rid AS node FROM id_records")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_strong_edges AS
        SELECT rid AS node, kid AS key, id_type FROM id_edges
        WHERE id_type <> 'email' AND kid NOT IN (SELECT kid FROM id_ambiguous)
        """
    )
    _components(con, "id_nodes", "id_strong_edges", "id_strong")
    con.execute(f"CREATE OR REPLACE TEMP TABLE id_strong_bad AS {_conflicts('id_strong')}")
    con.execute(
        """
        INSERT INTO staff_match_issues__next
        SELECT 'conflicting_identifiers', NULL, NULL, list(r.record_key ORDER BY r.record_key),
               'identifiers chain records of two different people together: not merged'
        FROM id_strong s SEMI JOIN id_strong_bad USING (label) JOIN id_records r ON r.rid = s.node
        GROUP BY s.label
        """
    )
    con.execute("UPDATE id_strong SET label = node WHERE label IN (SELECT label FROM id_strong_bad)")
    # Emails link the identifier groups, unless the merged group could not be one person. Only the
    # groups an email shares with another group take part (few: most people match by identifier).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_email_edges AS
        SELECT node, key FROM (
            SELECT DISTINCT s.label AS node, l.kid AS key
            FROM id_edges l JOIN id_strong s ON s.node = l.rid WHERE l.id_type = 'email'
        )
        QUALIFY count(*) OVER (PARTITION BY key) > 1
        """
    )
    con.execute("CREATE OR REPLACE TEMP TABLE id_groups AS SELECT DISTINCT node FROM id_email_edges")
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
        WITH shared AS (
            SELECT x.key FROM id_email_edges x JOIN id_email e USING (node) SEMI JOIN id_email_bad b
              ON b.label = e.label
            GROUP BY x.key HAVING count(DISTINCT x.node) > 1
        )
        SELECT 'ambiguous_email', 'email', any_value(k.id_value),
               list(DISTINCT r.record_key ORDER BY r.record_key),
               'one email address shared by different people: not merged'
        FROM shared JOIN (SELECT DISTINCT kid, id_value FROM id_edges) k ON k.kid = shared.key
        JOIN id_email_edges x ON x.key = shared.key
        JOIN id_strong s ON s.label = x.node JOIN id_records r ON r.rid = s.node
        GROUP BY shared.key
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_final AS
        SELECT s.node AS rid, s.label AS strong_label,
               CASE WHEN e.label IS NULL OR e.label IN (SELECT label FROM id_email_bad) THEN s.label
                    ELSE e.label END AS label
        FROM id_strong s LEFT JOIN id_email e ON e.node = s.label
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
            SELECT f.label, CASE e.id_type {strength} ELSE {EDUV_ID_STRENGTH} END AS strength
            FROM id_strong_edges e JOIN id_final f ON f.rid = e.node
            GROUP BY f.label, e.key, e.id_type HAVING count(*) > 1  -- a record holds an identifier once
        ),
        best AS (SELECT label, min(strength) AS strength FROM shared GROUP BY label),
        sizes AS (  -- Edu-V record numbers are below every SIS record number (see staging)
            SELECT label, count(*) AS records, min(strong_label) <> max(strong_label) AS by_email,
                   bool_or(rid < {SIS_RECORD_NO_BASE}) AS eduv, bool_or(rid >= {SIS_RECORD_NO_BASE}) AS sis
            FROM id_final GROUP BY label
        )
        SELECT z.label, z.eduv, z.sis,
               CASE WHEN z.records = 1 THEN 'unmatched'
                    WHEN z.by_email THEN 'email'
                    ELSE CASE b.strength {names} ELSE 'eduv_user_id' END END AS matched_by
        FROM sizes z LEFT JOIN best b USING (label)
        """
    )


def _assign_person_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Reuse last run's person_id where this group's identifiers point at one; else derive a new one
    from the group's anchor, its smallest record key (an Edu-V key sorts before an SIS key)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_anchor AS
        SELECT f.label, min(r.record_key) AS anchor
        FROM id_final f JOIN id_records r USING (rid) GROUP BY f.label
        """
    )
    claimed = "SELECT NULL::BIGINT AS label, NULL::VARCHAR AS person_id WHERE false"
    if table_exists(con, "staff_identifiers"):
        claimed = """
            WITH own AS (
                SELECT f.label, l.id_type, l.id_value FROM id_links l JOIN id_final f USING (rid)
                WHERE l.id_type <> 'email'
                UNION SELECT f.label, 'record_key', r.record_key FROM id_final f JOIN id_records r USING (rid)
            ),
            votes AS (
                SELECT o.label, p.person_id, count(*) AS n
                FROM own o JOIN staff_identifiers p USING (id_type, id_value) WHERE p.id_type <> 'email'
                GROUP BY ALL
            )
            -- each group's best previous id, and each previous id to its best group
            SELECT label, person_id FROM votes
            QUALIFY row_number() OVER (PARTITION BY label ORDER BY n DESC, person_id) = 1
                AND row_number() OVER (PARTITION BY person_id ORDER BY n DESC, label) = 1
        """
    # A derived id that another group claimed this run (it held the anchor's record before a split)
    # takes a second derivation: two people never share an id, and the next run claims it as usual.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE person_labels AS
        WITH claimed AS ({claimed}),
        derived AS (
            SELECT a.label, c.person_id AS claimed_id, a.anchor,
                   'P' || upper(substr(md5(a.anchor), 1, 15)) AS derived_id
            FROM id_anchor a LEFT JOIN claimed c USING (label)
        )
        SELECT d.label,
               coalesce(d.claimed_id,
                        CASE WHEN d.derived_id IN (SELECT person_id FROM claimed)
                             THEN 'P' || upper(substr(md5(d.anchor || '#2'), 1, 15))
                             ELSE d.derived_id END) AS person_id,
               m.matched_by, m.eduv, m.sis
        FROM derived d JOIN id_matched_by m USING (label)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE person_map AS
        SELECT r.rid, r.record_key, r.source, r.lea_id, f.label, p.person_id
        FROM id_final f JOIN id_records r USING (rid) JOIN person_labels p USING (label)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE staff_identifiers__cand AS
        WITH edges AS (
            SELECT e.lid, e.rid, e.kid, e.source, f.label
            FROM id_edges e JOIN id_final f USING (rid) WHERE e.id_type <> 'email'
        ),
        kept AS (  -- a shared identifier is kept once per person and source: its first record's
            SELECT label, kid, source, min(rid) AS rid FROM edges GROUP BY ALL
        ),
        dropped AS (  -- the other records' links, by number: no text compared
            SELECT e.lid FROM edges e ANTI JOIN kept k USING (label, kid, source, rid)
        )
        SELECT m.person_id, l.id_type, l.id_value, l.source
        FROM id_links l JOIN person_map m USING (rid) ANTI JOIN dropped d ON d.lid = l.rowid
        WHERE l.id_type <> 'email'  -- emails are contacts (staff_contacts), not kept identities
        UNION ALL
        SELECT person_id, 'record_key', record_key, source FROM person_map
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE staff_match_issues__next AS
        WITH p AS (  -- an issue is its row (rowid), read once here
            SELECT x.rowid AS n, list(DISTINCT m.person_id ORDER BY m.person_id) AS person_ids
            FROM staff_match_issues__next x, unnest(x.record_keys) AS t(record_key)
            JOIN person_map m ON m.record_key = t.record_key
            GROUP BY x.rowid
        )
        SELECT x.*, p.person_ids FROM staff_match_issues__next x LEFT JOIN p ON p.n = x.rowid
        """
    )
