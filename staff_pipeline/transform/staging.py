"""Flatten the raw layer into typed candidate rows, in DuckDB SQL.

Each candidate table holds the staged columns as text exactly as received, the ``TRY_CAST`` result
beside it (``<column>__v``), the lookups against ``data/`` (``school_known``, ``role_known``), the
row's ``lea_id`` and integer keys: an Edu-V row's ``element_id`` (the ``rowid`` of its raw element)
with its ``request_no`` and ``element_no`` (and ``id_no``/``role_no`` within the element), a SIS row's
``export_no``. Joins, groups and windows use those; the text ``location`` (``file:line`` or
``request_id:element``) is spelled out only for the rows the gate rejects (:func:`gate_source`).
The gate (:mod:`staff_pipeline.transform.gate`) decides which rows go on; :func:`build_staged` then
writes the accepted rows, typed, into ``stg_*__next`` tables. Nothing here raises on a bad value.

Edu-V schools whose latest request failed, or answered with fewer than ``min_employees_per_school``
employees, are read from the last request the gate accepted for them (``eduv_accepted_requests``):
a failed or suspiciously empty pull never reads as "everyone left".
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from staff_pipeline.config import Settings, SisSettings, load_organisations, load_role_crosswalk
from staff_pipeline.extract.sis_columns import CANONICAL
from staff_pipeline.vocab import ORG_ID_TYPES, ORGANISATION_ROLES
from staff_pipeline.warehouse import table_exists

USER_ID_PRIORITY = ("eckId", "NEPPI", "NEPRI", "eduID", "BPI", "ASI")
STAGED = (
    "stg_eduv_employees",
    "stg_eduv_employee_ids",
    "stg_eduv_employee_roles",
    "stg_sis_staff_assignments",
)
CANDIDATES = {name: f"cand_{name.removeprefix('stg_')}" for name in STAGED}

EMPLOYEE_SHAPE = (
    '{"givenName":"VARCHAR","preferredFirstName":"VARCHAR","familyNamePrefix":"VARCHAR",'
    '"familyName":"VARCHAR","alias":"VARCHAR","email":"VARCHAR","phone":"VARCHAR","mobile":"VARCHAR",'
    '"status":"VARCHAR",'
    '"dateCreated":"VARCHAR","dateLastModified":"VARCHAR",'
    '"userIds":[{"userId":"VARCHAR","userIdType":"VARCHAR"}],'
    '"organisationRoles":[{"organisationRole":"VARCHAR","beginDate":"VARCHAR","endDate":"VARCHAR",'
    '"organisation":"JSON"}]}'
)
# A role's organisation stays JSON text until its few distinct values are resolved: a million roles
# join back to them on a string, not on a nested struct.
_ORGANISATION_SHAPE = (
    '{"organisationMasterIdentifier":"VARCHAR",'
    '"organisationIds":[{"organisationId":"VARCHAR","organisationIdType":"VARCHAR"}]}'
)


# Space, tab, line ends, vertical tab, form feed, no-break space: a value of nothing else is blank
# (DuckDB's trim() takes spaces only, and a tab-only LocalCode passed as a value). A regex for that
# test, then the plain trim, costs a third of trim() with a character set; a tab at the edge of a
# real value stays, and the control_character rules refuse it where it matters.
_BLANK = r"[\s\x0b\x{a0}]*"


def _clean(expr: str) -> str:
    """Blank and whitespace-only values are missing values."""
    return f"CASE WHEN regexp_full_match({expr}, '{_BLANK}') THEN NULL ELSE trim({expr}) END"


# DuckDB's casts are lenient (``infinity``, ``epoch``, ``2020-8-1``, a time part, two-digit years):
# a value is parsed only when its text has the documented shape, so anything else is rejected.
_YEAR = r"(000[1-9]|00[1-9]\d|0[1-9]\d{2}|[1-9]\d{3})"  # 0001-9999: year 0000 would read as 1 BC
_ISO_DATE = _YEAR + r"-\d{2}-\d{2}"
_US_DATE = r"\d{1,2}/\d{1,2}/\d{4}"
# RFC 3339 section 5.6 date-time: T and Z in either case, seconds, optional fraction, an offset.
_RFC3339 = _YEAR + r"-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"


def _iso_date(expr: str) -> str:
    """Edu-V dates: ``YYYY-MM-DD`` only (the reference's format); anything else stays NULL."""
    return f"CASE WHEN regexp_full_match({expr}, '{_ISO_DATE}') THEN TRY_CAST({expr} AS DATE) END"


def _rfc3339(expr: str) -> str:
    """Edu-V timestamps: RFC 3339 date-times only; anything else stays NULL."""
    parsed = f"TRY_CAST(upper({expr}) AS TIMESTAMPTZ)"
    return f"CASE WHEN regexp_full_match({expr}, '{_RFC3339}') THEN {parsed} END"


def _sis_date(expr: str) -> str:
    """ISO dates, or US ``M/D/YYYY`` as SIS exports write them; anything else (31/02, 8/15/24) stays NULL."""
    us = f"TRY_CAST(TRY_STRPTIME({expr}, '%m/%d/%Y') AS DATE)"
    return f"COALESCE({_iso_date(expr)}, CASE WHEN regexp_full_match({expr}, '{_US_DATE}') THEN {us} END)"


def _known_roles(source: str) -> str:
    """SQL: the (``source_role``, ``sector``) pairs the role crosswalk maps for ``source``, one row each,
    over the configured schools' sectors (a crosswalk row without a sector maps its role in all of them).
    A lookup in it replaces a correlated EXISTS, which DuckDB evaluates by grouping every candidate row."""
    return f"""
        SELECT DISTINCT x.source_role, o.sector
        FROM cfg_role_crosswalk x
        JOIN (SELECT DISTINCT sector FROM cfg_organisations) o ON x.sector IS NULL OR x.sector = o.sector
        WHERE x.source = '{source}'
    """


def register_config(con: duckdb.DuckDBPyConnection, config_dir: Path | None = None) -> None:
    """Expose the validated organisation and crosswalk files to SQL as ``cfg_*`` views."""
    con.register("cfg_organisations", load_organisations(config_dir))
    con.register("cfg_role_crosswalk", load_role_crosswalk(config_dir))


def ensure_state(con: duckdb.DuckDBPyConnection) -> None:
    """The gate's own bookkeeping tables, created empty on first use."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS eduv_accepted_requests(school_key VARCHAR PRIMARY KEY, "
        "request_id VARCHAR, run_id VARCHAR, accepted_at TIMESTAMPTZ)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS rejected_rows(run_id VARCHAR, source VARCHAR, table_name VARCHAR, "
        "record_key VARCHAR, location VARCHAR, column_name VARCHAR, rule VARCHAR, value VARCHAR, "
        "rejected_at TIMESTAMPTZ)"
    )


def select_eduv_requests(
    con: duckdb.DuckDBPyConnection, min_employees: int, not_taken: tuple[str, ...] = ()
) -> None:
    """``eduv_requests_used``: per configured school, the request whose employees are staged.

    ``request_no`` numbers the requests so that candidate rows carry an integer, not the request id,
    until a rejected row's location is spelled out. ``board_wide``: the answer lists the whole
    provider's (Onderwijsaanbieder's) employees, so roles at schools not configured here are expected.
    The latest answer of a school in ``not_taken`` counts as a failed pull (see :func:`build_candidates`).
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE eduv_requests_used(school_key VARCHAR, lea_id BIGINT, "
        "request_id VARCHAR, pulled BOOLEAN, board_wide BOOLEAN, request_no BIGINT)"
    )
    if not table_exists(con, "raw_eduv_requests"):
        return
    con.execute(
        """
        INSERT INTO eduv_requests_used
        WITH latest AS (
            SELECT school_key, request_id, ok, employee_count,
                   row_number() OVER (
                       PARTITION BY school_key ORDER BY extracted_at DESC, request_id DESC) AS n
            FROM raw_eduv_requests
        ),
        used AS (
            SELECT o.school_key, o.lea_id,
                   CASE WHEN l.ok AND l.employee_count >= $min AND NOT list_contains($not_taken, o.school_key)
                        THEN l.request_id ELSE a.request_id END AS request_id,
                   coalesce(l.ok AND l.employee_count >= $min
                            AND NOT list_contains($not_taken, o.school_key), false) AS pulled,
                   -- the answer covers the whole provider: by master id, or filterByOrgId false (VO's
                   -- default when it is not sent)
                   o.eduv_org_master_id IS NOT NULL OR NOT coalesce(o.eduv_filter_by_org_id, o.sector = 'PO')
                       AS board_wide
            FROM cfg_organisations o
            LEFT JOIN latest l ON l.school_key = o.school_key AND l.n = 1
            LEFT JOIN eduv_accepted_requests a ON a.school_key = o.school_key
        )
        SELECT *, row_number() OVER (ORDER BY school_key) FROM used
        """,
        {"min": min_employees, "not_taken": list(not_taken)},
    )


def _drop_out_of_scope(con: duckdb.DuckDBPyConnection) -> None:
    """Roles at schools not configured here are out of scope: not rejects (they are expected, and
    would fail the LEA's rejected share), not staged. An answer that lists the whole provider names
    its other schools' staff; one filtered to its school (filterByOrgId) lists the employees who
    belong there with all their roles, so a role elsewhere is expected beside a role at a configured
    school, and unexpected (an unknown_school reject) as an employee's only kind of role. An
    employee all of whose roles are out of scope works at another school of the provider and is left
    out whole. ``eduv_out_of_scope`` counts both per queried school, for the run's metadata; the raw
    answer keeps them. An organisation that is malformed or missing is never out of scope: the gate
    rejects it."""
    con.execute(
        """
        UPDATE cand_eduv_employee_roles SET in_scope = false
        WHERE elsewhere AND in_scope AND element_id IN (
            SELECT element_id FROM cand_eduv_employee_roles WHERE school_key IS NOT NULL
            AND element_id IN (SELECT element_id FROM cand_eduv_employee_roles WHERE elsewhere AND in_scope))
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE eduv_out_of_scope AS
        WITH roles AS (
            SELECT element_id, count(*) AS roles, count(*) FILTER (WHERE NOT in_scope) AS out
            FROM cand_eduv_employee_roles WHERE element_id IN (
                SELECT element_id FROM cand_eduv_employee_roles WHERE NOT in_scope)
            GROUP BY element_id
        )
        SELECT e.school_key, sum(r.out)::BIGINT AS roles,
               count(*) FILTER (WHERE r.out = r.roles) AS employees,
               list(e.element_id) FILTER (WHERE r.out = r.roles) AS elements
        FROM roles r JOIN eduv_elements e USING (element_id)
        GROUP BY e.school_key
        """
    )
    if not con.execute("SELECT count(*) FROM eduv_out_of_scope").fetchall()[0][0]:
        return
    con.execute("DELETE FROM cand_eduv_employee_roles WHERE NOT in_scope")
    con.execute(
        "DELETE FROM eduv_elements WHERE element_id IN (SELECT unnest(elements) FROM eduv_out_of_scope)"
    )


def build_eduv_candidates(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Parse each selected employee element once (``json_transform``) and flatten ids and roles.

    Ids and roles carry their element's ``element_id`` and their index in it, not its record key or
    location: :func:`gate_source` and :func:`build_staged` take those from ``cand_eduv_employees``.
    Returns the schools pulled this run whose answer lists roles, none of them at a configured
    school (:func:`_unnamed_schools`).
    """
    roles = ", ".join(f"'{r}'" for r in ORGANISATION_ROLES)
    org_types = ", ".join(f"'{t}'" for t in ORG_ID_TYPES)
    priority = ", ".join(f"'{t}'" for t in USER_ID_PRIORITY)
    source = (
        "raw_eduv_employees"
        if table_exists(con, "raw_eduv_employees")
        else "(SELECT NULL::BIGINT rowid, NULL::VARCHAR request_id, NULL::VARCHAR school_key, "
        "NULL::INT element_no, NULL::JSON employee WHERE false)"
    )
    # The raw element's rowid is its id: unique, and the same for the same warehouse contents.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE eduv_elements AS
        SELECT r.rowid AS element_id, u.request_no, r.element_no, r.school_key, u.lea_id,
               json_transform(r.employee, '{EMPLOYEE_SHAPE}') AS e
        FROM {source} r
        JOIN eduv_requests_used u ON u.request_id = r.request_id AND u.school_key = r.school_key
        """
    )
    # A role's school and role check depend on its organisation and role name only, and roles name
    # few distinct pairs: each pair is resolved once. The organisation's references ('M:' master id,
    # 'I:type:id' secondary ids) resolve to the configured schools they name, a school named by a
    # secondary id before one named by the master id, then the smallest school_key (none: an
    # unknown school).
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_eduv_employee_roles AS
        WITH roles AS (
            SELECT element_id, request_no, lea_id, unnest(e.organisationRoles) AS r,
                   generate_subscripts(e.organisationRoles, 1) - 1 AS role_no
            FROM eduv_elements
        ),
        kinds AS (
            SELECT org, organisation_role, list_concat(
                       CASE WHEN o.organisationMasterIdentifier IS NULL THEN []
                            ELSE ['M:' || trim(o.organisationMasterIdentifier)] END,
                       list_transform(o.organisationIds,
                       lambda i: 'I:' || trim(i.organisationIdType) || ':' || trim(i.organisationId))
                   ) AS refs,
                   coalesce(list_bool_and(list_transform(o.organisationIds,
                       lambda i: coalesce(trim(i.organisationIdType) IN ({org_types}), false))), true)
                       AS org_id_types_known,
                   coalesce(list_bool_and(list_transform(o.organisationIds,
                       lambda i: {_clean("i.organisationId")} IS NOT NULL)), true) AS org_ids_present
            FROM (
                SELECT org, organisation_role, json_transform(org, '{_ORGANISATION_SHAPE}') AS o
                FROM (
                    SELECT DISTINCT r.organisation AS org, {_clean("r.organisationRole")} AS organisation_role
                    FROM roles
                )
            )
        ),
        org_keys AS (
            SELECT 'M:' || eduv_org_master_id AS ref, school_key, lea_id, sector FROM cfg_organisations
            WHERE eduv_org_master_id IS NOT NULL
            UNION ALL
            SELECT 'I:' || eduv_org_id_type || ':' || eduv_org_id, school_key, lea_id, sector
            FROM cfg_organisations
            WHERE eduv_org_id IS NOT NULL
        ),
        schools AS (  -- a secondary id names a school; a master id the whole provider: the first wins
            SELECT k.org, k.organisation_role, array_to_string(k.refs, ' ') AS organisation,
                   any_value(k.org_id_types_known) AS org_id_types_known,
                   any_value(k.org_ids_present) AS org_ids_present,
                   arg_min(o.school_key, (starts_with(r.ref, 'M:'), o.school_key)) AS school_key,
                   arg_min(o.lea_id, (starts_with(r.ref, 'M:'), o.school_key)) AS lea_id,
                   arg_min(o.sector, (starts_with(r.ref, 'M:'), o.school_key)) AS sector
            FROM kinds k
            LEFT JOIN LATERAL (SELECT unnest(k.refs) AS ref) r ON true
            LEFT JOIN org_keys o ON o.ref = r.ref
            GROUP BY k.org, k.organisation_role, k.refs
        ),
        resolved AS (
            SELECT s.*, s.school_key IS NOT NULL AS school_known,
                   -- a well-formed organisation that names no school configured here
                   coalesce(s.school_key IS NULL AND s.organisation <> '' AND s.org_id_types_known
                       AND s.org_ids_present, false) AS elsewhere,
                   s.school_key IS NULL OR s.organisation_role NOT IN ({roles}) OR x.source_role IS NOT NULL
                       AS role_known
            FROM schools s
            LEFT JOIN ({_known_roles("eduv")}) x
              ON x.source_role = s.organisation_role AND x.sector IS NOT DISTINCT FROM s.sector
        )
        SELECT rr.element_id, rr.role_no, rr.request_no, coalesce(s.lea_id, rr.lea_id) AS lea_id,
               s.school_key,
               s.organisation, s.organisation_role,
               {_clean("rr.r.beginDate")} AS begin_date,
               {_iso_date(_clean("rr.r.beginDate"))} AS begin_date__v,
               {_clean("rr.r.endDate")} AS end_date,
               {_iso_date(_clean("rr.r.endDate"))} AS end_date__v,
               s.school_known, s.role_known, s.org_id_types_known, s.org_ids_present, s.elsewhere,
               NOT (s.elsewhere AND u.board_wide) AS in_scope
        FROM roles rr
        JOIN resolved s ON s.org IS NOT DISTINCT FROM rr.r.organisation
                       AND s.organisation_role IS NOT DISTINCT FROM {_clean("rr.r.organisationRole")}
        JOIN eduv_requests_used u ON u.request_no = rr.request_no
        """
    )
    unnamed = _unnamed_schools(con)
    _drop_out_of_scope(con)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_eduv_employee_ids AS
        WITH t AS (
            SELECT element_id, unnest(e.userIds) AS x, generate_subscripts(e.userIds, 1) - 1 AS id_no
            FROM eduv_elements
        )
        SELECT element_id, id_no,
               {_clean("x.userIdType")} AS user_id_type, {_clean("x.userId")} AS user_id
        FROM t
        """
    )
    # A person's record key is their first id of the most trusted type. An ASI is made by one
    # administration system (LAS): it names a person only within the LEA whose answer sent it.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_eduv_employees AS
        WITH ranked AS (
            SELECT element_id, user_id_type, user_id, list_position([{priority}], user_id_type) AS priority,
                   id_no
            FROM cand_eduv_employee_ids
        ),
        record_keys AS (  -- two ids of the top type: the first in the element, not whichever comes
                          -- first in the scan (the key would change from run to run)
            SELECT element_id,
                   arg_min(user_id_type || ':' || user_id, (priority::BIGINT << 32) + id_no) AS key,
                   max(user_id) FILTER (WHERE user_id_type = 'ASI') AS local_code
            FROM ranked WHERE priority > 0 AND user_id IS NOT NULL
            GROUP BY element_id
        )
        SELECT el.element_id, el.request_no, el.element_no, el.lea_id,
               'eduv:' || CASE WHEN starts_with(k.key, 'ASI:') THEN 'ASI:' || el.lea_id || substr(k.key, 4)
                               ELSE k.key END AS record_key,
               el.school_key,
               {_clean("el.e.givenName")} AS given_name,
               {_clean("el.e.preferredFirstName")} AS preferred_first_name,
               {_clean("el.e.familyNamePrefix")} AS family_name_prefix,
               {_clean("el.e.familyName")} AS family_name,
               {_clean("el.e.alias")} AS alias,  -- tells apart people of the same name, on screen
               lower({_clean("el.e.email")}) AS email,
               {_clean("el.e.phone")} AS phone, {_clean("el.e.mobile")} AS mobile,
               {_clean("el.e.status")} AS status,
               {_clean("el.e.dateCreated")} AS date_created,
               {_rfc3339(_clean("el.e.dateCreated"))} AS date_created__v,
               {_clean("el.e.dateLastModified")} AS date_last_modified,
               {_rfc3339(_clean("el.e.dateLastModified"))} AS date_last_modified__v,
               k.local_code
        FROM eduv_elements el LEFT JOIN record_keys k USING (element_id)
        """
    )
    # The parsed JSON is the bulk of the memory: free it before the gate.
    con.execute("DROP TABLE eduv_elements")
    return unnamed


def _unnamed_schools(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Schools pulled this run whose answer has roles, none of them at a school configured here.

    The staff are there, their schools named another way than ``data/organisations.csv`` names them
    (a master id where the file has an OIE_CODE, say): read as it came, every role would be out of
    scope (an answer for the whole provider) or an unknown_school reject (a filtered one), and the
    school would empty. Such an answer is a suspiciously empty pull, not "everyone left". (An answer
    by the provider's master id may rightly name only the provider's other configured schools.)"""
    return [
        row[0]
        for row in con.execute(
            """
            SELECT school_key FROM eduv_requests_used
            WHERE pulled AND request_no IN (SELECT request_no FROM cand_eduv_employee_roles)
              AND request_no NOT IN (
                  SELECT request_no FROM cand_eduv_employee_roles WHERE school_key IS NOT NULL)
            ORDER BY school_key
            """
        ).fetchall()
    ]


def _sis_last_day(sis: SisSettings) -> str:
    """SQL over ``s``: whether the row's LEA's SIS writes the last day worked as its end date."""
    others = ", ".join(str(lea) for lea, rule in sis.end_date_by_lea if rule != sis.end_date)
    differs = f"s.lea_id IN ({others})" if others else "false"
    return differs if sis.end_date == "exclusive" else f"NOT ({differs})"


def build_sis_candidates(con: duckdb.DuckDBPyConnection, sis: SisSettings) -> None:
    """One candidate per row of each LEA's latest landed export.

    End dates are exclusive from here on, as Edu-V's: an SIS that writes the last day worked
    (``[sis] end_date``) has its parsed end date moved one day on, so a one-day assignment (begin =
    end) is valid there, and the Ed-Fi load sends that last day back.

    ``export_no`` orders the rows as (lea_id, file_name, line_number) without sorting them: the
    number of the row's file (``sis_files``; there are a few) shifted past any line number, plus the
    line number. The files are numbered in a statement of their own: read twice in one statement, the
    export would be materialised whole.
    """
    text = ", ".join(f"{_clean(c)} AS {c}" for c in CANONICAL)
    if table_exists(con, "raw_sis_staff_latest"):
        rows = "raw_sis_staff_latest"
    else:
        nulls = ", ".join(f"NULL::VARCHAR AS {c}" for c in CANONICAL)
        rows = (
            "(SELECT NULL::BIGINT lea_id, NULL::VARCHAR file_name, NULL::INT line_number, "
            f"{nulls} WHERE false)"
        )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sis_files AS
        SELECT lea_id, file_name, row_number() OVER (ORDER BY lea_id, file_name) AS file_no
        FROM (SELECT DISTINCT lea_id, file_name FROM {rows})
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_sis_staff_assignments AS
        WITH s AS (SELECT lea_id, file_name, line_number, {text} FROM {rows})
        SELECT (f.file_no << 32) + s.line_number AS export_no, s.lea_id,
               'sis:' || s.lea_id || ':' || s.local_staff_id AS record_key,
               s.* EXCLUDE (lea_id, email, alt_email),
               lower(s.email) AS email, lower(s.alt_email) AS alt_email,
               o.school_key,
               {_sis_date("s.begin_date")} AS begin_date__v,
               {_sis_date("s.end_date")} + CASE WHEN {_sis_last_day(sis)} THEN 1 ELSE 0 END AS end_date__v,
               TRY_CAST(s.fte AS DOUBLE) AS fte__v,
               concat_ws('|', s.lea_id, s.local_staff_id, s.school_code, s.position_code,
                         {_sis_date("s.begin_date")}) AS natural_key,
               o.school_key IS NOT NULL AS school_known,
               o.school_key IS NULL OR x.source_role IS NOT NULL AS role_known
        FROM s JOIN sis_files f USING (lea_id, file_name)
        LEFT JOIN cfg_organisations o ON o.sis_school_code = s.school_code AND o.lea_id = s.lea_id
        LEFT JOIN ({_known_roles("sis")}) x
          ON x.source_role = s.position_code AND x.sector IS NOT DISTINCT FROM o.sector
        """
    )


def build_candidates(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Every candidate table. A school whose answer names no configured school in any role is read
    again from its last accepted answer (none on a first night: nothing from it), and listed in
    ``eduv_unnamed`` (school, the answer set aside, the answer read instead) for the run's metadata."""
    ensure_state(con)
    minimum = settings.gate.min_employees_per_school
    select_eduv_requests(con, minimum)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE eduv_unnamed AS "
        "SELECT school_key, request_id AS set_aside FROM eduv_requests_used WHERE false"
    )
    unnamed = build_eduv_candidates(con)
    if unnamed:
        con.execute(
            "INSERT INTO eduv_unnamed SELECT school_key, request_id FROM eduv_requests_used "
            "WHERE list_contains($unnamed, school_key)",
            {"unnamed": unnamed},
        )
        select_eduv_requests(con, minimum, tuple(unnamed))
        build_eduv_candidates(con)
    build_sis_candidates(con, settings.sis)


# What the gate reads besides a candidate row ``c``: its ``location`` text (and, for an id or a role,
# its element's record key; for an id, its element's LEA), with the joins that brings.
_ELEMENT_OF = (
    "JOIN cand_eduv_employees e USING (element_id) JOIN eduv_requests_used u ON u.request_no = e.request_no"
)
_GATE_READS = {
    "stg_eduv_employees": (
        "u.request_id || ':' || c.element_no AS location",
        "JOIN eduv_requests_used u ON u.request_no = c.request_no",
    ),
    "stg_eduv_employee_ids": (
        "e.record_key, e.lea_id, u.request_id || ':' || e.element_no || '/userIds[' || c.id_no || ']' "
        "AS location",
        _ELEMENT_OF,
    ),
    "stg_eduv_employee_roles": (
        "e.record_key, u.request_id || ':' || e.element_no || '/organisationRoles[' || c.role_no || ']' "
        "AS location",
        _ELEMENT_OF,
    ),
    "stg_sis_staff_assignments": ("c.file_name || ':' || c.line_number AS location", ""),
}


def gate_source(table: str) -> str:
    """SQL: ``table``'s candidates as the gate reads them: with ``row_no`` (the candidate's rowid:
    candidate tables are written once per run, so it names the row in ``gate_rejected``) and the
    ``location`` text. The gate's failure filter runs below the joins and this projection, so they
    only run for the rows it rejects."""
    columns, joins = _GATE_READS[table]
    return f"SELECT c.rowid AS row_no, c.*, {columns} FROM {CANDIDATES[table]} c {joins}"


def _accepted(table: str) -> str:
    """SQL: the candidates of ``table`` the gate let through, as ``c``."""
    return (
        f"{CANDIDATES[table]} c ANTI JOIN (SELECT row_no FROM gate_rejected WHERE table_name = '{table}') g "
        "ON g.row_no = c.rowid"
    )


SIS_RECORD_NO_BASE = 2**40  # above every Edu-V record_no (a raw rowid)


def _element_order(alias: str) -> str:
    """SQL ORDER BY terms ranking a person's Edu-V elements: the most recently modified first, then
    the smallest configured ``school_key``, then the first element of that school's answer.

    Only stable keys break ties: a request id is new every run, and ranking by it made a person listed
    by two schools' answers change school (and so contacts) from night to night."""
    return f"{alias}.date_last_modified__v DESC, {alias}.school_key, {alias}.element_no"


def build_staged(con: duckdb.DuckDBPyConnection) -> None:
    """Write the accepted candidates (the gate's ``gate_rejected(table_name, row_no)`` names the
    others), typed, into ``stg_*__next``, each row with its record's ``record_no``.

    An Edu-V person seen in several schools' answers is one row, taken from the most recently
    modified accepted element; ids and roles are the union over that person's accepted elements.
    Ties go to the smallest ``school_key``, then the first element and role in its answer: keys that
    are the same every night for the same answers (see :func:`_element_order`).

    ``record_no`` is one number per record key: for Edu-V the ``element_id`` of the element staged
    as the person, for SIS ``SIS_RECORD_NO_BASE`` + the ``export_no`` of the record's first staged row.
    """
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE eduv_accepted AS
        WITH accepted AS MATERIALIZED (
            SELECT c.element_id, c.school_key, c.lea_id, c.element_no, c.date_last_modified__v, c.record_key,
                   {{'email': c.email, 'phone': c.phone, 'mobile': c.mobile}} AS contacts, c.status
            FROM {_accepted("stg_eduv_employees")}
        ),
        records AS (
            SELECT record_key, first(c.element_id ORDER BY {_element_order("c")}) AS record_no
            FROM accepted c GROUP BY record_key
        )
        SELECT c.* EXCLUDE (record_key), r.record_no FROM accepted c JOIN records r USING (record_key)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE stg_eduv_employees__next AS
        SELECT record_key, element_id AS record_no, school_key, given_name, preferred_first_name,
               family_name_prefix, family_name, alias, email, phone, mobile, status,
               date_created__v AS date_created, date_last_modified__v AS date_last_modified, local_code
        FROM cand_eduv_employees c SEMI JOIN eduv_accepted a ON a.record_no = c.element_id
        """
    )
    # The same id in several of a person's elements is one row, with the LEAs whose schools' answers
    # carried it: an ASI is the local code of the administration system that sent it, not of every
    # LEA the person works in.
    con.execute(
        f"""
        CREATE OR REPLACE TABLE stg_eduv_employee_ids__next AS
        SELECT p.record_key, i.*
        FROM (
            SELECT a.record_no, c.user_id_type, c.user_id, list_sort(list_distinct(list(a.lea_id))) AS lea_ids
            FROM {_accepted("stg_eduv_employee_ids")} JOIN eduv_accepted a USING (element_id)
            GROUP BY a.record_no, c.user_id_type, c.user_id
        ) i
        JOIN stg_eduv_employees__next p USING (record_no)
        """
    )
    # A role carries the contact details and the status of the answer it was taken from: a person
    # listed by two LEAs' schools, with an email in each, keeps each LEA's email at that LEA's schools,
    # and one school's ``tobedeleted`` is about that school's roles. The group picks the role's
    # candidate row (an integer) and its values are joined on after: an aggregate carrying the
    # contacts struct through the group costs twice as much at a million people.
    con.execute(
        f"""
        CREATE OR REPLACE TABLE stg_eduv_employee_roles__next AS
        WITH taken AS (
            SELECT a.record_no, c.school_key, c.organisation_role, c.begin_date__v AS begin_date,
                   first(c.rowid ORDER BY {_element_order("a")}, c.role_no) AS role_row
            FROM {_accepted("stg_eduv_employee_roles")} JOIN eduv_accepted a USING (element_id)
            GROUP BY a.record_no, c.school_key, c.organisation_role, c.begin_date__v
        )
        SELECT p.record_key, t.record_no, t.school_key, t.organisation_role, t.begin_date,
               c.end_date__v AS end_date, a.contacts.email AS email, a.contacts.phone AS phone,
               a.contacts.mobile AS mobile, a.status
        FROM taken t JOIN {CANDIDATES["stg_eduv_employee_roles"]} c ON c.rowid = t.role_row
        JOIN eduv_accepted a ON a.element_id = c.element_id
        JOIN stg_eduv_employees__next p ON p.record_no = t.record_no
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE stg_sis_staff_assignments__next AS
        WITH records AS (
            SELECT lea_id, local_staff_id, {SIS_RECORD_NO_BASE} + min(export_no) AS record_no
            FROM {_accepted("stg_sis_staff_assignments")}
            GROUP BY lea_id, local_staff_id
        )
        SELECT c.record_key, r.record_no, c.lea_id, c.file_name, c.line_number, c.local_staff_id,
               c.state_staff_id, c.first_name, c.middle_name, c.last_name, c.email, c.alt_email, c.phone,
               c.school_code, c.school_key, c.position_code, c.position_title, c.begin_date__v AS begin_date,
               c.end_date__v AS end_date, c.fte__v AS fte, c.username
        FROM {_accepted("stg_sis_staff_assignments")} JOIN records r USING (lea_id, local_staff_id)
        """
    )
    con.execute(
        "CREATE OR REPLACE TABLE stg_eduv_requests_used__next AS "
        "SELECT * EXCLUDE (request_no) FROM eduv_requests_used"
    )
