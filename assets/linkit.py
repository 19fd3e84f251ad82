"""LinkIt! per district: the desired accounts (mart) and the load that makes LinkIt match them.

Thin wiring: the work is in :mod:`staff_pipeline.loads.linkit_mart` and
:mod:`staff_pipeline.loads.linkit`. Metadata never carries keys or tags: only counts, reasons,
error texts (already redacted by the client) and LocalCodes/UserNames.
"""

import duckdb
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult, asset

from staff_pipeline.clients.linkit import LinkItResource
from staff_pipeline.config import load_settings
from staff_pipeline.loads.holds import confirmed_actions
from staff_pipeline.loads.linkit import load_district
from staff_pipeline.loads.linkit_mart import MART, REJECTED, build_mart
from staff_pipeline.metadata import counts_table, markdown_table, validate_or_fail
from staff_pipeline.partitions import district_partitions
from staff_pipeline.resources import API_RETRY_POLICY, WRITER_POOL, WarehouseResource
from staff_pipeline.schemas.marts_linkit import mart_linkit_staff
from staff_pipeline.warehouse import preview

DONE = ("created", "updated", "reactivated", "deactivated", "adopted")


class LinkItLoadConfig(Config):
    """Run config: ``dry_run`` shows the plan without sending; ``confirm_creates``,
    ``confirm_updates`` and ``confirm_deactivations`` lift that action's threshold hold (``[linkit]``
    in data/pipeline.toml)."""

    dry_run: bool = False
    confirm_creates: bool = False
    confirm_updates: bool = False
    confirm_deactivations: bool = False


@asset(
    group_name="linkit",
    partitions_def=district_partitions,
    deps=[AssetKey("staff"), AssetKey("staff_contacts"), AssetKey("staff_assignments")],
    description="Desired LinkIt! accounts of one district (highest role, all schools) and who is not loaded.",
    pool=WRITER_POOL,
)
def linkit_mart(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    district = context.partition_key
    rule = load_settings().linkit.username_rule

    def contract(con: duckdb.DuckDBPyConnection) -> None:
        validate_or_fail(
            con.execute(f"SELECT * FROM {MART} WHERE district = ?", [district]).df(),
            mart_linkit_staff,
            f"{MART} for {district} breaks the LinkIt contract; its previous mart stays and nothing "
            "new will be sent",
        )

    with warehouse.connect() as con:
        counts = build_mart(con, district, rule, context.run_id, contract)
        sample = preview(
            con, f"SELECT * EXCLUDE (run_id, built_at) FROM {MART} WHERE district = '{district}'"
        )
        rejected = preview(
            con, f"SELECT rule, field, local_code, reason FROM {REJECTED} WHERE district = '{district}'"
        )
    accounts, suffixed = counts.pop("accounts"), counts.pop("username_suffixed")
    return MaterializeResult(
        metadata={
            "district": district,
            "accounts": accounts,
            "not_loaded": sum(counts.values()),
            "not_loaded_by_rule": counts_table(counts, "rule"),
            "username_suffixed": suffixed,
            "username_rule": rule,
            "preview": markdown_table(sample),
            "rejected_preview": markdown_table(rejected),
        }
    )


@asset(
    group_name="linkit",
    partitions_def=district_partitions,
    deps=[linkit_mart],
    pool="linkit_api",
    retry_policy=API_RETRY_POLICY,
    description="Create, update, assign schools, deactivate LinkIt! accounts; ledger_linkit records them.",
)
def linkit_staff_accounts(
    context: AssetExecutionContext,
    config: LinkItLoadConfig,
    warehouse: WarehouseResource,
    linkit: LinkItResource,
) -> MaterializeResult:
    district = context.partition_key
    settings = load_settings().linkit
    try:
        client = linkit.client_for(district)
    except ValueError as exc:  # no keys for this district, an unknown signer: configuration
        raise Failure(description=str(exc), allow_retries=False) from None
    try:
        report = load_district(
            district,
            client,
            limits=settings.limits,
            run_id=context.run_id,
            confirmed=confirmed_actions(config),
            dry_run=config.dry_run,
            concurrency=linkit.concurrency,
            connect=warehouse.connect,
        )
    finally:
        client.close()
    with warehouse.connect() as con:
        rejected = dict(
            con.execute(
                f"SELECT rule, count(*) FROM {REJECTED} WHERE district = ? GROUP BY rule", [district]
            ).fetchall()
        )
    outcomes = report.outcomes
    metadata = {
        "district": district,
        "dry_run": report.dry_run,
        "plan": counts_table(dict(report.plan), "action"),
        "plan_preview": markdown_table(report.preview if report.preview is not None else pd.DataFrame()),
        "held": report.held or "nothing held",
        "rejected": sum(rejected.values()),
        "rejected_by_rule": counts_table(rejected, "rule"),
    }
    if not report.dry_run:
        for name in (*DONE, "kept", "unchanged", "failed"):
            metadata[name] = int(outcomes[name])
        metadata["failed_by_error"] = counts_table(dict(report.failures), "error")
        metadata["requests"] = counts_table(dict(report.requests), "call")
        metadata["write_requests"] = report.write_requests
        if outcomes["failed"] and not any(outcomes[name] for name in DONE):
            # Nothing got through (bad keys, clock skew, API down): a failed run, not a quiet success.
            top = report.failures.most_common(1)[0][0]
            raise Failure(
                f"LinkIt {district}: all {outcomes['failed']} account(s) failed, e.g. {top}",
                metadata=metadata,
                allow_retries=report.unanswered > 0,  # refused keys or a clock skew stay so
            )
    if report.held and not report.dry_run:
        # Nothing of the district was sent: the run fails so the hold is seen and a person decides.
        raise Failure(f"LinkIt {district}: {report.held}", metadata=metadata, allow_retries=False)
    return MaterializeResult(metadata=metadata)
