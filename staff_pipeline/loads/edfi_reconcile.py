"""Reconcile: read an LEA's records back from the API and make the ledger say what the API has.

Someone may have changed records by hand, a ledger may have been restored from an old backup, or a
load may have died between a request and its journal line. Reconcile pages through the resource
(offset/limit, 500 a page), keeps the records of the education organisations given (the LEA and its
non-Choice schools), rebuilds each record's identity and content hash with the mart's own SQL, and
replaces the LEA's ledger rows for that resource. The next diff then sends exactly what the API lacks
and fixes what drifted (still subject to the delete threshold).

Only identities this pipeline already knows (in the ledger, or desired by the mart) are taken into
the ledger: a record nobody here wrote or wants (another vendor's, WISEid's own, a Choice school's)
is counted as ``not_ours`` and left alone, because whatever is in the ledger and not in the mart is
deleted by the next diff.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from staff_pipeline.clients.edfi import EdFiClient
from staff_pipeline.loads.edfi import TARGET, ConnectFn, ensure_tables
from staff_pipeline.loads.edfi_mart import (
    ASSIGNMENT_BODY,
    ASSIGNMENT_IDENTITY,
    ASSIGNMENTS,
    CONTACT_BODY,
    CONTACT_IDENTITY,
    CONTACTS,
)
from staff_pipeline.loads.edfi_mart import ensure_tables as ensure_mart_tables

_COLUMNS = {
    ASSIGNMENTS: """json_extract_string(j, '$.staffReference.staffUniqueId') AS staff_unique_id,
        json_extract(j, '$.educationOrganizationReference.educationOrganizationId')::BIGINT
            AS education_organization_id,
        json_extract_string(j, '$.staffClassificationDescriptor') AS staff_classification_descriptor,
        json_extract_string(j, '$.beginDate')::DATE AS begin_date,
        json_extract_string(j, '$.endDate')::DATE AS end_date,
        json_extract_string(j, '$.positionTitle') AS position_title,
        json_extract(j, '$.orderOfAssignment')::INTEGER AS order_of_assignment,
        json_extract(j, '$.fullTimeEquivalency')::DOUBLE AS full_time_equivalency""",
    CONTACTS: """
        json_extract_string(j, '$.staffReference.staffUniqueId') AS staff_unique_id,
        json_extract(j, '$.educationOrganizationReference.educationOrganizationId')::BIGINT
            AS education_organization_id,
        json_extract_string(j, '$.contactTitle') AS contact_title,
        json_extract_string(j, '$.electronicMailAddress') AS electronic_mail_address""",
}
_HASHES = {
    ASSIGNMENTS: (ASSIGNMENT_IDENTITY, ASSIGNMENT_BODY),
    CONTACTS: (CONTACT_IDENTITY, CONTACT_BODY),
}
_MART = {ASSIGNMENTS: "mart_edfi_assignments", CONTACTS: "mart_edfi_contacts"}
_COUNTS = ("in_api", "in_ledger_before", "missing_in_api", "adopted", "not_ours", "differing")


def reconcile(
    connect: ConnectFn,
    client: EdFiClient,
    lea_id: int,
    resource: str,
    edorg_ids: list[int],
    *,
    run_id: str,
) -> dict[str, int]:
    """Replace the LEA's ledger rows of ``resource`` by what the API holds of the identities known here.

    ``edorg_ids`` are the education organisations whose records may be ours (leave Choice schools
    out). Returns the counts of :data:`_COUNTS`: ``adopted`` are records the mart wants that the
    ledger lacked, ``not_ours`` those neither knows (reported, never made deletable).
    """
    ids: list[str] = []
    raw: list[str] = []
    for page in client.pages(resource):
        for record in page:
            ids.append(str(record["id"]))
            raw.append(json.dumps(record))
    api = pd.DataFrame({"resource_id": pd.Series(ids, dtype=str), "j": pd.Series(raw, dtype=str)})
    identity, body = _HASHES[resource]
    params = {"lea": int(lea_id), "resource": resource}
    with connect() as con:
        ensure_tables(con)
        ensure_mart_tables(con)
        con.register("_edfi_api_raw", api)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _edfi_api AS
            WITH api AS (
              SELECT resource_id, {identity} AS identity_hash, md5({body}) AS content_hash, {body} AS body
              FROM (SELECT resource_id, {_COLUMNS[resource]} FROM _edfi_api_raw)
              WHERE education_organization_id IN (SELECT unnest($edorgs::BIGINT[]))
            )
            SELECT api.*, l.identity_hash IS NOT NULL AS in_ledger, m.identity_hash IS NOT NULL AS in_mart
            FROM api
            LEFT JOIN (SELECT identity_hash FROM ledger_edfi WHERE lea_id = $lea AND resource = $resource) l
              USING (identity_hash)
            LEFT JOIN (SELECT DISTINCT identity_hash FROM {_MART[resource]} WHERE lea_id = $lea) m
              USING (identity_hash)""",
            {**params, "edorgs": [int(e) for e in edorg_ids]},
        )
        con.unregister("_edfi_api_raw")
        counts = _count(con, params)
        _replace_ledger(con, params, run_id, counts)
    return counts


def _count(con: duckdb.DuckDBPyConnection, params: dict[str, object]) -> dict[str, int]:
    """How the ledger and the API (the edorgs asked for) differ, before anything is replaced."""
    row = con.execute(
        """WITH l AS (SELECT * FROM ledger_edfi WHERE lea_id = $lea AND resource = $resource)
        SELECT (SELECT count(*) FROM _edfi_api),
               (SELECT count(*) FROM l),
               (SELECT count(*) FROM l ANTI JOIN _edfi_api a USING (identity_hash)),
               (SELECT count(*) FROM _edfi_api WHERE NOT in_ledger AND in_mart),
               (SELECT count(*) FROM _edfi_api WHERE NOT in_ledger AND NOT in_mart),
               (SELECT count(*) FROM l JOIN _edfi_api a USING (identity_hash)
                WHERE l.content_hash IS DISTINCT FROM a.content_hash
                   OR l.resource_id IS DISTINCT FROM a.resource_id)""",
        params,
    ).fetchall()[0]
    return dict(zip(_COUNTS, (int(c) for c in row), strict=True))


def _replace_ledger(
    con: duckdb.DuckDBPyConnection, params: dict[str, object], run_id: str, counts: dict[str, int]
) -> None:
    """Swap the LEA's ledger rows of the resource for the API's known records, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM ledger_edfi WHERE lea_id = $lea AND resource = $resource", params)
        con.execute(
            """INSERT INTO ledger_edfi SELECT $lea, $resource, identity_hash, content_hash, resource_id,
                   body, NULL, $run_id, now() FROM _edfi_api WHERE in_ledger OR in_mart""",
            {**params, "run_id": run_id},
        )
        message = (
            f"reconciled: {counts['in_api']} in API, {counts['in_ledger_before']} in ledger before, "
            f"{counts['not_ours']} not ours (left alone)"
        )
        con.execute(
            f"""INSERT INTO load_events (run_id, target, partition_key, record_key, action, ok, error,
                   event_at)
            VALUES ($run_id, '{TARGET}', $lea::VARCHAR, $resource, 'reconcile', true, $message, now())""",
            {**params, "run_id": run_id, "message": message},
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
