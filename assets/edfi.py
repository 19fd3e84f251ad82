"""Ed-Fi / WISEdata per LEA: the desired associations (mart), then the two loads that send the diff.

Thin wiring: the work is in :mod:`staff_pipeline.loads.edfi_mart`, :mod:`staff_pipeline.loads.edfi`
and :mod:`staff_pipeline.loads.edfi_reconcile`. Metadata carries counts, API messages (redacted by
the client) and WISEids, never keys or tokens.

Not ``from __future__ import annotations``: Dagster reads the ``context`` annotation at runtime.
"""

import duckdb
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    asset,
)

from staff_pipeline.clients.edfi import EdFiResource, TokenError
from staff_pipeline.config import load_organisations, load_settings
from staff_pipeline.http import worth_retrying
from staff_pipeline.loads.edfi import load_resource
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CONTACTS, build_mart
from staff_pipeline.loads.edfi_reconcile import reconcile
from staff_pipeline.loads.holds import confirmed_actions
from staff_pipeline.metadata import counts_table, markdown_table, validate_or_fail
from staff_pipeline.partitions import lea_partitions
from staff_pipeline.resources import API_RETRY_POLICY, WRITER_POOL, WarehouseResource
from staff_pipeline.schemas import marts
from staff_pipeline.warehouse import preview


class EdFiLoadConfig(Config):
    """``dry_run``: show the plan, send nothing. ``confirm_creates`` / ``confirm_updates`` /
    ``confirm_deletes``: lift that action's threshold hold (``[edfi]`` in data/pipeline.toml).
    ``reconcile``: read the LEA's records back from the API and repair the ledger before the diff."""

    dry_run: bool = False
    confirm_creates: bool = False
    confirm_updates: bool = False
    confirm_deletes: bool = False
    reconcile: bool = False


@asset(
    group_name="edfi",
    partitions_def=lea_partitions,
    deps=[AssetKey("staff"), AssetKey("staff_contacts"), AssetKey("staff_assignments")],
    description="Desired Ed-Fi assignment and contact associations of one LEA, and who is not sent (why).",
    pool=WRITER_POOL,
)
def edfi_mart(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    lea = int(context.partition_key)

    def contract(con: duckdb.DuckDBPyConnection) -> None:
        for table in ("mart_edfi_assignments", "mart_edfi_contacts", "mart_edfi_not_sent"):
            validate_or_fail(
                con.execute(f"SELECT * FROM {table} WHERE lea_id = ?", [lea]).df(),
                getattr(marts, table),
                f"{table} for LEA {lea} breaks the Ed-Fi contract; its previous mart stays and "
                "nothing new will be sent",
            )

    with warehouse.connect() as con:
        counts = build_mart(con, lea, contract)
        not_sent = dict(
            con.execute(
                "SELECT reason, count(DISTINCT person_id) FROM mart_edfi_not_sent "
                "WHERE lea_id = ? GROUP BY 1",
                [lea],
            ).fetchall()
        )
        sample = preview(
            con,
            "SELECT staff_unique_id, education_organization_id, staff_classification_descriptor, "
            f"begin_date, position_title FROM mart_edfi_assignments WHERE lea_id = {lea}",
        )
    return MaterializeResult(
        metadata={
            "lea_id": lea,
            "assignment_associations": counts["mart_edfi_assignments"],
            "contact_associations": counts["mart_edfi_contacts"],
            "not_sent": counts["mart_edfi_not_sent"],
            "not_sent_people_by_reason": counts_table(not_sent, "reason"),
            "preview": markdown_table(sample),
        }
    )


def _reconciled_edorgs(lea: int) -> list[int]:
    """The LEA and its non-Choice schools: Choice schools send nothing, so their records are not ours."""
    orgs = load_organisations()
    schools = orgs.loc[(orgs["lea_id"] == lea) & ~orgs["choice_school"].astype(bool), "school_id"]
    return [lea, *schools.astype(int)]


def _load(
    context: AssetExecutionContext,
    config: EdFiLoadConfig,
    warehouse: WarehouseResource,
    edfi: EdFiResource,
    resource: str,
) -> MaterializeResult:
    lea = int(context.partition_key)
    settings = load_settings().edfi
    concurrency = edfi.max_concurrency or settings.max_concurrency
    try:
        client = edfi.client_for(lea, pool_size=concurrency)
    except ValueError as exc:  # no key for this LEA: configuration, not an outage
        raise Failure(description=str(exc), allow_retries=False) from None
    metadata: dict[str, object] = {"lea_id": lea, "resource": resource}
    try:
        if config.reconcile and not config.dry_run:
            found = reconcile(
                warehouse.connect, client, lea, resource, _reconciled_edorgs(lea), run_id=context.run_id
            )
            metadata["reconcile"] = counts_table(found, "ledger vs API")
            metadata["reconcile_not_ours"] = found["not_ours"]
        report, plan = load_resource(
            warehouse.connect,
            client,
            lea,
            resource,
            run_id=context.run_id,
            max_concurrency=concurrency,
            limits=settings.limits,
            confirmed=confirmed_actions(config),
            dry_run=config.dry_run,
        )
    except TokenError as exc:  # the client has redacted the secret and token from the message
        raise Failure(
            description=f"Ed-Fi LEA {lea} {resource}: the token request was refused, so the run stopped "
            f"(what was sent before is in the ledger): {exc}",
            metadata={**metadata, "tokens_fetched": client.tokens_fetched},
            allow_retries=worth_retrying(exc.status),  # refused credentials stay refused
        ) from None
    finally:
        client.close()
    with warehouse.connect() as con:
        not_sent = con.execute(
            "SELECT count(*) FROM mart_edfi_not_sent WHERE lea_id = ? AND resource = ?", [lea, resource]
        ).fetchall()[0][0]
    metadata.update(
        {
            "plan": counts_table(plan.counts(), "resource:action"),
            "plan_sample": markdown_table(
                pd.DataFrame(plan.sample(), columns=["resource", "action", "body"])
            ),
            "held": report.held or "nothing held",
            "not_sent": int(not_sent),
            "unchanged": report.unchanged,
            "sent": report.sent,
            "created": report.created,
            "updated": report.updated,
            "deleted": report.deleted,
            "failed": report.failed_total,
            "failed_by_status_and_message": counts_table(report.failed, "status and message"),
            "withheld_deletes": report.withheld_total,
            "withheld_by_reason": counts_table(report.withheld, "reason"),
            "replaced_in_place": report.replaced_in_place,
            "tokens_fetched": client.tokens_fetched,
        }
    )
    if report.held and not config.dry_run:
        raise Failure(description=f"Ed-Fi LEA {lea}: {report.held}", metadata=metadata, allow_retries=False)
    if report.failed_total:
        context.log.warning(
            f"Ed-Fi LEA {lea} {resource}: {report.failed_total} record(s) failed, see metadata"
        )
    return MaterializeResult(metadata=metadata)


@asset(
    group_name="edfi",
    partitions_def=lea_partitions,
    deps=[edfi_mart],
    pool="edfi_api",
    retry_policy=API_RETRY_POLICY,
    description="Send the LEA's staffEducationOrganizationAssignmentAssociations diff (ledger_edfi).",
)
def edfi_assignment_associations(
    context: AssetExecutionContext, config: EdFiLoadConfig, warehouse: WarehouseResource, edfi: EdFiResource
) -> MaterializeResult:
    return _load(context, config, warehouse, edfi, ASSIGNMENTS)


@asset(
    group_name="edfi",
    partitions_def=lea_partitions,
    deps=[edfi_assignment_associations],
    pool="edfi_api",
    retry_policy=API_RETRY_POLICY,
    description="Send the LEA's staffEducationOrganizationContactAssociations diff, after the assignments.",
)
def edfi_contact_associations(
    context: AssetExecutionContext, config: EdFiLoadConfig, warehouse: WarehouseResource, edfi: EdFiResource
) -> MaterializeResult:
    return _load(context, config, warehouse, edfi, CONTACTS)
