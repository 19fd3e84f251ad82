"""The one Definitions object loads, and its asset graph is the one the docs describe."""

from __future__ import annotations

from dagster import AssetKey

EXPECTED_ASSETS = {
    "extract": {"raw_eduv_employees", "raw_sis_staff"},
    "staging": {
        "stg_eduv_employees",
        "stg_eduv_employee_ids",
        "stg_eduv_employee_roles",
        "stg_sis_staff_assignments",
    },
    "conformed": {"staff", "staff_contacts", "staff_assignments"},
    "edfi": {"edfi_mart", "edfi_assignment_associations", "edfi_contact_associations"},
    "linkit": {"linkit_mart", "linkit_staff_accounts"},
}


def _graph():
    from staff_pipeline.definitions import defs

    return defs.resolve_asset_graph()


def test_asset_graph_has_every_stage_in_its_group() -> None:
    graph = _graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    for group, names in EXPECTED_ASSETS.items():
        assert names <= groups.get(group, set()), f"group {group}: missing {names - groups.get(group, set())}"


def test_loads_are_partitioned_per_lea_and_district_and_stages_are_chained() -> None:
    graph = _graph()
    assert graph.get(AssetKey("edfi_assignment_associations")).partitions_def.get_partition_keys() == [
        "100001",
        "100002",
        "100003",
    ]
    assert graph.get(AssetKey("linkit_staff_accounts")).partitions_def.get_partition_keys() == [
        "lakeview",
        "riverside",
        "northwoods",
    ]
    upstream = graph.get(AssetKey("staff")).parent_keys | graph.get(AssetKey("staff_assignments")).parent_keys
    assert any(k.to_user_string().startswith("stg_") for k in upstream)


def test_every_staging_asset_has_a_blocking_check() -> None:
    graph = _graph()
    checked = {spec.asset_key.to_user_string() for spec in graph.asset_check_keys}
    for name in EXPECTED_ASSETS["staging"]:
        assert name in checked, f"{name} has no asset check"


def test_jobs_and_automation_are_registered() -> None:
    from staff_pipeline.definitions import defs

    names = {job.name for job in defs.resolve_all_job_defs()}
    assert {"prepare_staff_job", "edfi_load_job", "linkit_load_job"} <= names
    assert defs.resolve_schedule_def("nightly_staff_schedule") is not None


def test_every_step_that_writes_the_warehouse_takes_the_writer_pool() -> None:
    """DuckDB has one writing process: the extract, the gates, the model and the marts queue on
    ``duckdb_writer`` (limit 1); the loads, which hold the lock only briefly, take their API's pool."""
    from staff_pipeline.definitions import defs
    from staff_pipeline.resources import WRITER_POOL

    pools = {}
    for job_name in ("prepare_staff_job", "edfi_load_job", "linkit_load_job"):
        for node in defs.resolve_job_def(job_name).graph.node_defs:
            pools[node.name] = node.pool
    assert {name: pool for name, pool in pools.items() if pool != WRITER_POOL} == {
        "edfi_assignment_associations": "edfi_api",
        "edfi_contact_associations": "edfi_api",
        "linkit_staff_accounts": "linkit_api",
    }
    assert {"raw_eduv_employees", "raw_sis_staff", "staging", "conformed", "edfi_mart", "linkit_mart"} <= set(
        pools
    )


def test_the_api_steps_and_only_they_are_retried_by_dagster() -> None:
    """An outage longer than the HTTP layer's retries re-runs the step later; the other steps (the
    gates, the model) fail for reasons a retry cannot mend."""
    from staff_pipeline.definitions import defs
    from staff_pipeline.resources import API_RETRY_POLICY

    policies = {}
    for job_name in ("prepare_staff_job", "edfi_load_job", "linkit_load_job"):
        for node in defs.resolve_job_def(job_name).graph.node_defs:
            policies[node.name] = node.retry_policy
    assert {name for name, policy in policies.items() if policy == API_RETRY_POLICY} == {
        "raw_eduv_employees",
        "edfi_assignment_associations",
        "edfi_contact_associations",
        "linkit_staff_accounts",
    }
    assert API_RETRY_POLICY.max_retries == 2 and API_RETRY_POLICY.delay >= 60
