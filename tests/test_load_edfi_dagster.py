"""The three Ed-Fi assets materialised through Dagster for one LEA partition, with run config."""

from __future__ import annotations

from dagster import DagsterInstance, materialize

from assets.edfi import edfi_assignment_associations, edfi_contact_associations, edfi_mart
from staff_pipeline.clients.edfi import EdFiResource
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS
from staff_pipeline.resources import WarehouseResource
from tests.fixtures_edfi import (
    LEA_A,
    LEA_B,
    SCHOOL_A1,
    SCHOOL_B1,
    SCHOOL_B_CHOICE,
    Conformed,
    post_as_another_system,
)

ASSETS = [edfi_mart, edfi_assignment_associations, edfi_contact_associations]


def _resources(url: str) -> dict:
    # The fallback pair is wrong on purpose: the LEA's own key (EDFI_CLIENT_ID_<lea>) must be used.
    return {
        "warehouse": WarehouseResource(),
        "edfi": EdFiResource(
            base_url=url, client_id="nobody", client_secret="fallback-secret", backoff_base=0.01
        ),
    }


def _metadata(result, name: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_partition_materialises_as_a_dry_run_then_sends(edfi_env):
    edfi_env.add_staff(None, "D1")
    world = Conformed().person("d1", "D1").person("d2", None)
    world.assign("d1", LEA_A, SCHOOL_A1).email("d1", LEA_A, SCHOOL_A1, "d1@lea1.com")
    world.assign("d2", LEA_A, SCHOOL_A1).write()
    instance = DagsterInstance.ephemeral()
    dry = {"ops": {a.key.path[-1]: {"config": {"dry_run": True}} for a in ASSETS[1:]}}

    result = materialize(
        ASSETS,
        resources=_resources(edfi_env.url),
        partition_key=str(LEA_A),
        run_config=dry,
        instance=instance,
    )
    assert result.success and edfi_env.requests_to(path_prefix="/data") == []
    mart = _metadata(result, "edfi_mart")
    assert (mart["assignment_associations"], mart["contact_associations"], mart["not_sent"]) == (1, 1, 1)
    assert "no WISEid" in mart["not_sent_people_by_reason"]
    assert "create" in _metadata(result, "edfi_assignment_associations")["plan"]

    result = materialize(
        ASSETS, resources=_resources(edfi_env.url), partition_key=str(LEA_A), instance=instance
    )
    assert result.success
    sent = _metadata(result, "edfi_contact_associations")
    assert (sent["sent"], sent["created"], sent["failed"]) == (1, 1, 0)
    assert _metadata(result, "edfi_assignment_associations")["not_sent"] == 1

    for name in ("edfi_assignment_associations", "edfi_contact_associations"):
        text = repr(_metadata(result, name)) + repr(result.all_events)
        assert "secret-a" not in text and "fallback-secret" not in text


def test_an_lea_with_nobody_in_the_not_sent_list_and_no_contacts_materialises(edfi_env):
    # Everyone has a WISEid (mart_edfi_not_sent is empty) and nobody has an email (so is
    # mart_edfi_contacts): empty marts are valid, and an empty resource sends nothing.
    edfi_env.add_staff(None, "D1")
    Conformed().person("d1", "D1").assign("d1", LEA_A, SCHOOL_A1).write()

    result = materialize(
        ASSETS,
        resources=_resources(edfi_env.url),
        partition_key=str(LEA_A),
        instance=DagsterInstance.ephemeral(),
    )

    assert result.success
    mart = _metadata(result, "edfi_mart")
    assert (mart["assignment_associations"], mart["contact_associations"], mart["not_sent"]) == (1, 0, 0)
    assert _metadata(result, "edfi_assignment_associations")["created"] == 1
    assert _metadata(result, "edfi_contact_associations")["sent"] == 0
    assert len(edfi_env.requests_to("POST", "/data")) == 1


def test_reconcile_run_leaves_choice_school_and_other_systems_records_alone(edfi_env):
    for wiseid in ("D6", "D7"):
        edfi_env.add_staff(None, wiseid)
    post_as_another_system(edfi_env.url, [("D6", SCHOOL_B_CHOICE), ("D7", SCHOOL_B1)])
    world = Conformed().person("d6", "D6").assign("d6", LEA_B, SCHOOL_B1)
    world.assign("d6", LEA_B, SCHOOL_B_CHOICE, "Secondary Teacher", choice=True).write()
    reconcile_all = {"ops": {a.key.path[-1]: {"config": {"reconcile": True}} for a in ASSETS[1:]}}

    result = materialize(
        ASSETS,
        resources=_resources(edfi_env.url),
        partition_key=str(LEA_B),
        run_config=reconcile_all,
        instance=DagsterInstance.ephemeral(),
    )

    assert result.success
    sent = _metadata(result, "edfi_assignment_associations")
    assert (sent["reconcile_not_ours"], sent["created"], sent["deleted"]) == (
        1,
        1,
        0,
    )  # Choice: not even read
    assert len(edfi_env.records(ASSIGNMENTS)) == 3
