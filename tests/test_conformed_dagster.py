"""Through Dagster: the staging and conformed assets, their blocking checks, and a downstream load stub."""

from __future__ import annotations

from dagster import AssetKey, asset, materialize

from assets.conformed import SCHEMA_CHECK, conformed
from assets.staging import GATE_CHECK, staging
from staff_pipeline.resources import WarehouseResource
from staff_pipeline.warehouse import connect
from tests.raw_tables import LAKEVIEW_ELEM, LAKEVIEW_HIGH, Raw, employee, role, sis_row

LOADED: list[str] = []


@asset(deps=[AssetKey("staff"), AssetKey("staff_contacts"), AssetKey("staff_assignments")], group_name="edfi")
def load_stub() -> None:
    """Stands in for the Ed-Fi and LinkIt loads: records that it ran."""
    LOADED.append("ran")


def _run():
    LOADED.clear()
    return materialize(
        [staging, conformed, load_stub], resources={"warehouse": WarehouseResource()}, raise_on_error=False
    )


def _snapshot() -> dict[str, list]:
    with connect() as con:
        return {
            t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=str)
            for t in ("staff", "staff_contacts", "staff_assignments", "staff_identifiers")
        }


def _checks(result) -> dict[tuple[str, str], bool]:
    return {
        (e.asset_check_key.asset_key.path[-1], e.asset_check_key.name): e.passed
        for e in (
            ev.event_specific_data
            for ev in result.all_events
            if ev.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    }


def test_good_load_flows_to_the_loads_and_a_blocking_failure_keeps_everything(data_dir) -> None:
    with connect() as con:
        raw = Raw(con)
        raw.eduv("lakeview-elem", [employee(1, asi="T1"), employee(2, asi="T2")])
        raw.sis(100001, [sis_row("T1", state_staff_id="1000000001"), sis_row("T2")])

    first = _run()
    assert first.success
    assert LOADED == ["ran"]
    assert all(_checks(first).values())
    before = _snapshot()
    assert len(before["staff"]) == 2

    # Next night two Edu-V employees claim the same local code T2, with different emails: they
    # stay apart (reported), but LinkIt could not tell them apart in district lakeview.
    with connect() as con:
        Raw(con).eduv(
            "lakeview-elem",
            [
                employee(1, asi="T1"),
                employee(2, asi="T2"),
                employee(3, asi="T2", roles=[role(LAKEVIEW_ELEM), role(LAKEVIEW_HIGH, "mentor")]),
            ],
        )

    second = _run()
    checks = _checks(second)
    assert not second.success
    assert checks[("staff", SCHEMA_CHECK)] is False
    assert checks[("stg_eduv_employees", GATE_CHECK)] is True
    assert LOADED == []  # the downstream load was skipped
    assert _snapshot() == before  # conformed tables exactly as they were
    failure = next(
        ev.event_specific_data.metadata
        for ev in second.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
        and ev.event_specific_data.asset_check_key.asset_key.path[-1] == "staff"
        and ev.event_specific_data.asset_check_key.name == SCHEMA_CHECK
    )
    assert "local_code" in failure["failures_by_rule"].value
    with connect() as con:
        issues = con.execute("SELECT issue, id_type, id_value FROM staff_match_issues__next").fetchall()
    # Reported once, as the LEA's local code (an ASI is not an identifier outside its LEA).
    assert issues == [("ambiguous_identifier", "local_code", "100001:T2")]
