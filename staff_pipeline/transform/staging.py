"""Flatten the raw layer into typed candidate rows, in DuckDB SQL.

Each candidate table holds the staged columns as text exactly as received, the ``TRY_CAST`` result
beside it (``<column>__v``), the lookups against ``data/`` (``school_known``, ``role_known``), the
row's ``location`` (``file:line`` or ``request_id:element``) and its ``lea_id``. The gate
(:mod:`staff_pipeline.transform.gate`) decides which rows go on; :func:`build_staged` then writes the
accepted rows, typed, into ``stg_*__next`` tables. Nothing here raises on a bad value.

Edu-V schools whose latest request failed, or answered with fewer than ``min_employees_per_school``
employees, are read from the last request the gate accepted for them (``eduv_accepted_requests``):
a failed or suspiciously empty pull never reads as "everyone left".
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from staff_pipeline.config import load_organisations, load_role_crosswalk
from staff_pipeline.extract.sis_columns import CANONICAL
from staff_pipeline.vocab import ORGANISATION_ROLES
from staff_pipeline.warehouse import table_exists

USER_ID_PRIORITY = ("eckId", "NEPPI", "NEPRI", "eduID", "BPI", "ASI")
STAGED = (
    "stg_eduv_employees",
    "stg_eduv_employee_ids",
    "stg_eduv_employee_roles",
    "stg_sis_staff_assignments",
)
CANDIDATES = {name: f"cand_{name.removeprefix('stg_')}" for name in STAGED}

_EMPLOYEE_SHAPE = (
    '{"givenName":"VARCHAR","preferredFirstName":"VARCHAR","familyNamePrefix":"VARCHAR",'
    '"familyName":"VARCHAR","email":"VARCHAR","phone":"VARCHAR","mobile":"VARCHAR","status":"VARCHAR",'
    '"dateCreated":"VARCHAR","dateLastModified":"VARCHAR",'
    '"userIds":[{"userId":"VARCHAR","userIdType":"VARCHAR"}],'
    '"organisationRoles":[{"organisationRole":"VARCHAR","beginDate":"VARCHAR","endDate":"VARCHAR",'
    '"organisation":{"organisationMasterIdentifier":"VARCHAR",'
    '"organisationIds":[{"organisationId":"VARCHAR","organisationIdType":"VARCHAR"}]}}]}'
)


def _clean(expr: str) -> str:
    """Blank and whitespace-only values are missing values."""
    return f"NULLIF(trim({expr}), '')"


def _sis_date(expr: str) -> str:
    """ISO dates, or US ``M/D/YYYY`` as SIS exports write them; anything else (31/02) stays NULL."""
    return f"COALESCE(TRY_CAST({expr} AS DATE), TRY_CAST(TRY_STRPTIME({expr}, '%m/%d/%Y') AS DATE))"


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


def select_eduv_requests(con: duckdb.DuckDBPyConnection, min_employees: int) -> None:
    """``eduv_requests_used``: per configured school, the request whose employees are staged."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE eduv_requests_used(school_key VARCHAR, lea_id BIGINT, "
        "request_id VARCHAR, pulled BOOLEAN)"
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
        )
        SELECT o.school_key, o.lea_id,
               CASE WHEN l.ok AND l.employee_count >= $min THEN l.request_id ELSE a.request_id END,
               coalesce(l.ok AND l.employee_count >= $min, false)
        FROM cfg_organisations o
        LEFT JOIN latest l ON l.school_key = o.school_key AND l.n = 1
        LEFT JOIN eduv_accepted_requests a ON a.school_key = o.school_key
        """,
        {"min": min_employees},
    )


def build_eduv_candidates(con: duckdb.DuckDBPyConnection) -> None:
    """Parse each selected employee element once (``json_transform``) and flatten ids and roles."""
    roles = ", ".join(f"'{r}'" for r in ORGANISATION_ROLES)
    priority = ", ".join(f"'{t}'" for t in USER_ID_PRIORITY)
    source = (
        "raw_eduv_employees"
        if table_exists(con, "raw_eduv_employees")
        else "(SELECT NULL::VARCHAR request_id, NULL::VARCHAR school_key, NULL::INT element_no, "
        "NULL::JSON employee WHERE false)"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE eduv_elements AS
        SELECT r.request_id || ':' || r.element_no AS location, r.school_key, u.lea_id,
               json_transform(r.employee, '{_EMPLOYEE_SHAPE}') AS e
        FROM {source} r
        JOIN eduv_requests_used u ON u.request_id = r.request_id AND u.school_key = r.school_key
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE eduv_ids_raw AS
        WITH t AS (
            SELECT location AS element, lea_id, unnest(e.userIds) AS x, generate_subscripts(e.userIds, 1) AS i
            FROM eduv_elements
        )
        SELECT element || '/userIds[' || (i - 1) || ']' AS location, element, lea_id,
               {_clean("x.userIdType")} AS user_id_type, {_clean("x.userId")} AS user_id,
               list_position([{priority}], {_clean("x.userIdType")}) AS priority
        FROM t
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE eduv_record_keys AS
        SELECT element, 'eduv:' || arg_min(user_id_type || ':' || user_id, priority) AS record_key,
               max(user_id) FILTER (WHERE user_id_type = 'ASI') AS local_code
        FROM eduv_ids_raw WHERE priority > 0 AND user_id IS NOT NULL
        GROUP BY element
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_eduv_employees AS
        SELECT el.location, el.location AS element, el.lea_id, k.record_key, el.school_key,
               {_clean("el.e.givenName")} AS given_name,
               {_clean("el.e.preferredFirstName")} AS preferred_first_name,
               {_clean("el.e.familyNamePrefix")} AS family_name_prefix,
               {_clean("el.e.familyName")} AS family_name,
               lower({_clean("el.e.email")}) AS email,
               {_clean("el.e.phone")} AS phone, {_clean("el.e.mobile")} AS mobile,
               {_clean("el.e.status")} AS status,
               {_clean("el.e.dateCreated")} AS date_created,
               TRY_CAST({_clean("el.e.dateCreated")} AS TIMESTAMPTZ) AS date_created__v,
               {_clean("el.e.dateLastModified")} AS date_last_modified,
               TRY_CAST({_clean("el.e.dateLastModified")} AS TIMESTAMPTZ) AS date_last_modified__v,
               k.local_code
        FROM eduv_elements el LEFT JOIN eduv_record_keys k ON k.element = el.location
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE cand_eduv_employee_ids AS
        SELECT c.location, c.element, c.lea_id, k.record_key, c.user_id_type, c.user_id
        FROM eduv_ids_raw c LEFT JOIN eduv_record_keys k USING (element)
        """
    )
    # Organisation references resolve to a configured school by master id or any secondary id.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE org_keys AS
        SELECT 'M:' || eduv_org_master_id AS ref, school_key, lea_id, sector FROM cfg_organisations
        WHERE eduv_org_master_id IS NOT NULL
        UNION ALL
        SELECT 'I:' || eduv_org_id_type || ':' || eduv_org_id, school_key, lea_id, sector
        FROM cfg_organisations
        WHERE eduv_org_id IS NOT NULL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE eduv_roles_raw AS
        WITH t AS (
            SELECT location AS element, lea_id, unnest(e.organisationRoles) AS r,
                   generate_subscripts(e.organisationRoles, 1) AS i
            FROM eduv_elements
        )
        SELECT t.element || '/organisationRoles[' || (t.i - 1) || ']' AS location, t.element,
               t.lea_id AS queried_lea_id, k.record_key, t.r,
               list_concat(
                   CASE WHEN t.r.organisation.organisationMasterIdentifier IS NULL THEN []
                        ELSE ['M:' || trim(t.r.organisation.organisationMasterIdentifier)] END,
                   list_transform(t.r.organisation.organisationIds,
                   lambda o: 'I:' || trim(o.organisationIdType) || ':' || trim(o.organisationId))
               ) AS refs
        FROM t LEFT JOIN eduv_record_keys k USING (element)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_eduv_employee_roles AS
        WITH refs AS (SELECT location, unnest(refs) AS ref FROM eduv_roles_raw),
        resolved AS (
            SELECT r.location, min(ok.school_key) AS school_key, arg_min(ok.lea_id, ok.school_key) AS lea_id,
                   arg_min(ok.sector, ok.school_key) AS sector
            FROM refs r JOIN org_keys ok USING (ref)
            GROUP BY r.location
        )
        SELECT rr.location, rr.element, coalesce(s.lea_id, rr.queried_lea_id) AS lea_id, rr.record_key,
               s.school_key, array_to_string(rr.refs, ' ') AS organisation,
               {_clean("rr.r.organisationRole")} AS organisation_role,
               {_clean("rr.r.beginDate")} AS begin_date,
               TRY_CAST({_clean("rr.r.beginDate")} AS DATE) AS begin_date__v,
               {_clean("rr.r.endDate")} AS end_date,
               TRY_CAST({_clean("rr.r.endDate")} AS DATE) AS end_date__v,
               s.school_key IS NOT NULL AS school_known,
               s.school_key IS NULL OR {_clean("rr.r.organisationRole")} NOT IN ({roles}) OR EXISTS (
                   SELECT 1 FROM cfg_role_crosswalk x
                   WHERE x.source = 'eduv' AND x.source_role = {_clean("rr.r.organisationRole")}
                     AND (x.sector IS NULL OR x.sector = s.sector)
               ) AS role_known
        FROM eduv_roles_raw rr LEFT JOIN resolved s USING (location)
        """
    )
    # The parsed JSON is the bulk of the memory: free it before the gate reads candidates into pandas.
    con.execute("DROP TABLE eduv_elements; DROP TABLE eduv_ids_raw; DROP TABLE eduv_roles_raw")


def build_sis_candidates(con: duckdb.DuckDBPyConnection) -> None:
    """One candidate per row of each LEA's latest landed export."""
    text = ", ".join(f"{_clean(c)} AS {c}" for c in CANONICAL)
    if table_exists(con, "raw_sis_staff_latest"):
        source = f"SELECT lea_id, file_name, line_number, {text} FROM raw_sis_staff_latest"
    else:
        nulls = ", ".join(f"NULL::VARCHAR AS {c}" for c in CANONICAL)
        source = (
            f"SELECT NULL::BIGINT lea_id, NULL::VARCHAR file_name, NULL::INT line_number, {nulls} WHERE false"
        )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_sis_staff_assignments AS
        WITH s AS ({source})
        SELECT s.file_name || ':' || s.line_number AS location, s.lea_id,
               'sis:' || s.lea_id || ':' || s.local_staff_id AS record_key,
               s.* EXCLUDE (lea_id, email, alt_email),
               lower(s.email) AS email, lower(s.alt_email) AS alt_email,
               o.school_key,
               {_sis_date("s.begin_date")} AS begin_date__v, {_sis_date("s.end_date")} AS end_date__v,
               TRY_CAST(s.fte AS DOUBLE) AS fte__v,
               concat_ws('|', s.lea_id, s.local_staff_id, s.school_code, s.position_code,
                         {_sis_date("s.begin_date")}) AS natural_key,
               o.school_key IS NOT NULL AS school_known,
               o.school_key IS NULL OR EXISTS (
                   SELECT 1 FROM cfg_role_crosswalk x
                   WHERE x.source = 'sis' AND x.source_role = s.position_code
                     AND (x.sector IS NULL OR x.sector = o.sector)
               ) AS role_known
        FROM s LEFT JOIN cfg_organisations o ON o.sis_school_code = s.school_code AND o.lea_id = s.lea_id
        """
    )


def build_candidates(con: duckdb.DuckDBPyConnection, min_employees: int) -> None:
    ensure_state(con)
    select_eduv_requests(con, min_employees)
    build_eduv_candidates(con)
    build_sis_candidates(con)


def build_staged(con: duckdb.DuckDBPyConnection) -> None:
    """Write the accepted candidates (not in temp ``gate_rejected``), typed, into ``stg_*__next``.

    An Edu-V person seen in several schools' answers is one row, taken from the most recently
    modified accepted element; ids and roles are the union over that person's accepted elements.
    """
    con.execute(
        """
        CREATE OR REPLACE TABLE stg_eduv_employees__next AS
        SELECT record_key, school_key, given_name, preferred_first_name, family_name_prefix, family_name,
               email, phone, mobile, status, date_created__v AS date_created,
               date_last_modified__v AS date_last_modified, local_code
        FROM cand_eduv_employees c
        WHERE NOT EXISTS (SELECT 1 FROM gate_rejected g WHERE g.location = c.element)
        QUALIFY row_number() OVER (PARTITION BY record_key ORDER BY date_last_modified__v DESC, location) = 1
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE eduv_accepted_elements AS
        SELECT element FROM cand_eduv_employees c
        WHERE NOT EXISTS (SELECT 1 FROM gate_rejected g WHERE g.location = c.element)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE stg_eduv_employee_ids__next AS
        SELECT DISTINCT record_key, user_id_type, user_id
        FROM cand_eduv_employee_ids c SEMI JOIN eduv_accepted_elements USING (element)
        WHERE NOT EXISTS (SELECT 1 FROM gate_rejected g WHERE g.location = c.location)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE stg_eduv_employee_roles__next AS
        SELECT c.record_key, c.school_key, c.organisation_role, c.begin_date__v AS begin_date,
               c.end_date__v AS end_date
        FROM cand_eduv_employee_roles c SEMI JOIN eduv_accepted_elements USING (element)
        JOIN cand_eduv_employees e ON e.location = c.element
        WHERE NOT EXISTS (SELECT 1 FROM gate_rejected g WHERE g.location = c.location)
        QUALIFY row_number() OVER (
            PARTITION BY c.record_key, c.school_key, c.organisation_role, c.begin_date__v
            ORDER BY e.date_last_modified__v DESC, c.location) = 1
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE stg_sis_staff_assignments__next AS
        SELECT record_key, lea_id, file_name, line_number, local_staff_id, state_staff_id, first_name,
               middle_name, last_name, email, alt_email, phone, school_code, school_key, position_code,
               position_title, begin_date__v AS begin_date, end_date__v AS end_date, fte__v AS fte, username
        FROM cand_sis_staff_assignments c
        WHERE NOT EXISTS (SELECT 1 FROM gate_rejected g WHERE g.location = c.location)
        """
    )
    con.execute("CREATE OR REPLACE TABLE stg_eduv_requests_used__next AS SELECT * FROM eduv_requests_used")
