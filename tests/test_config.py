"""Configuration under data/ is validated on load, with errors that name file, row and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from staff_pipeline import config
from staff_pipeline.loads.holds import Limit
from staff_pipeline.settings import REPO_ROOT


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "data", folder, ignore=shutil.ignore_patterns("inbox", "*.duckdb*"))
    return folder


def _edit_organisations(folder: Path, school_key: str, **changes: str) -> None:
    path = folder / "organisations.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        if cells[0] == school_key:
            for key, value in changes.items():
                cells[header.index(key)] = value
            lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_checked_in_configuration_is_valid() -> None:
    organisations = config.load_organisations()
    assert organisations["school_key"].is_unique
    assert set(config.load_role_crosswalk()["source"]) == {"eduv", "sis"}
    assert config.load_settings().schedule.timezone == "America/Chicago"


def test_master_id_and_org_id_together_are_refused_naming_the_row(config_dir: Path) -> None:
    _edit_organisations(config_dir, "lakeview-elem", eduv_org_id="99ZZ", eduv_org_id_type="OIE_CODE")
    with pytest.raises(config.ConfigError, match=r"(?s)organisations\.csv.*row 2: .*never both"):
        config.load_organisations(config_dir)


def test_filter_by_org_id_with_master_id_is_refused(config_dir: Path) -> None:
    _edit_organisations(
        config_dir, "lakeview-elem", eduv_filter_by_org_id="true", eduv_supports_filter="true"
    )
    with pytest.raises(config.ConfigError, match="filterByOrgId"):
        config.load_organisations(config_dir)


def test_filter_by_org_id_false_with_master_id_is_valid_whatever_the_source_supports(
    config_dir: Path,
) -> None:
    _edit_organisations(
        config_dir, "lakeview-elem", eduv_filter_by_org_id="false", eduv_supports_filter="false"
    )
    row = config.load_organisations(config_dir).set_index("school_key").loc["lakeview-elem"]
    assert not row["eduv_filter_by_org_id"] and not row["eduv_supports_filter"]


def test_filter_by_org_id_with_org_id_needs_a_source_that_supports_it(config_dir: Path) -> None:
    _edit_organisations(
        config_dir, "riverside-elem", eduv_filter_by_org_id="false", eduv_supports_filter="false"
    )
    with pytest.raises(config.ConfigError, match=r"row 4: .*where the source supports it"):
        config.load_organisations(config_dir)


def test_a_school_period_of_non_consecutive_years_names_file_row_and_field(config_dir: Path) -> None:
    _edit_organisations(config_dir, "lakeview-high", eduv_school_period_id="2025-2027")
    with pytest.raises(
        config.ConfigError,
        match=r"(?s)organisations\.csv: 1 problem.*row 3, field eduv_school_period_id: .*consecutive"
        r".*'2025-2027'",
    ):
        config.load_organisations(config_dir)


def test_unknown_org_id_type_names_the_field(config_dir: Path) -> None:
    _edit_organisations(config_dir, "lakeview-high", eduv_org_id_type="BRIN")
    with pytest.raises(config.ConfigError, match=r"row 3, field eduv_org_id_type.*'BRIN'"):
        config.load_organisations(config_dir)


def test_school_without_edu_v_ids_is_a_sis_only_school(config_dir: Path) -> None:
    _edit_organisations(config_dir, "northwoods-k8", eduv_org_id="", eduv_org_id_type="")
    organisations = config.load_organisations(config_dir)
    row = organisations.set_index("school_key").loc["northwoods-k8"]
    assert row["eduv_org_id"] != row["eduv_org_id"]  # NaN: not queried in Edu-V


@pytest.mark.parametrize("role", ["Leraar", "mentr"])
def test_crosswalk_refuses_an_edu_v_role_the_reference_does_not_have(config_dir: Path, role: str) -> None:
    path = config_dir / "role_crosswalk.csv"
    path.write_text(
        path.read_text() + f"eduv,{role},PO,Elementary Teacher,Teacher,TEACHER\n", encoding="utf-8"
    )
    with pytest.raises(
        config.ConfigError, match=r"row \d+: an eduv source_role must be an Edu-V organisationRole"
    ):
        config.load_role_crosswalk(config_dir)


def test_crosswalk_refuses_unknown_ed_fi_classification(config_dir: Path) -> None:
    path = config_dir / "role_crosswalk.csv"
    path.write_text(path.read_text() + "sis,XYZ,,Chief Wizard,Wizard,TEACHER\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"staff_classification.*Chief Wizard"):
        config.load_role_crosswalk(config_dir)


def test_threshold_out_of_range_is_refused(config_dir: Path) -> None:
    path = config_dir / "pipeline.toml"
    path.write_text(path.read_text().replace("max_rejected_share = 0.05", "max_rejected_share = 5"))
    with pytest.raises(config.ConfigError, match=r"\[gate\] max_rejected_share"):
        config.load_settings(config_dir)


def test_per_action_limits_are_read_and_checked(config_dir: Path) -> None:
    """Every action of a target has a share; a count is optional, a whole number when given."""
    path = config_dir / "pipeline.toml"
    text = path.read_text()
    path.write_text(text.replace("# max_delete_count = 500", "max_delete_count = 500"))
    limits = config.load_settings(config_dir).edfi.limits
    assert limits["delete"] == Limit(0.10, 500) and limits["create"] == Limit(0.50)
    assert set(config.load_settings(config_dir).linkit.limits) == {"create", "update", "deactivate"}
    path.write_text(text.replace("# max_delete_count = 500", "max_delete_count = 1.5"))
    with pytest.raises(config.ConfigError, match=r"\[edfi\] max_delete_count must be a whole number"):
        config.load_settings(config_dir)
    path.write_text(text.replace("max_create_share = 0.25\n", ""))
    with pytest.raises(config.ConfigError, match=r"KeyError: 'max_create_share'"):
        config.load_settings(config_dir)


def test_sis_end_date_conventions_are_read_and_checked(config_dir: Path) -> None:
    path = config_dir / "pipeline.toml"
    text = path.read_text()
    path.write_text(text.replace('# "100003" = "last_day"', '"100003" = "last_day"'))
    assert config.load_settings(config_dir).sis == config.SisSettings("exclusive", ((100003, "last_day"),))
    path.write_text(text.replace('# "100003" = "last_day"', '"100009" = "last_day"'))
    with pytest.raises(config.ConfigError, match=r"end_date_by_lea\] keys must be configured LEA ids"):
        config.load_settings(config_dir)
    path.write_text(text.replace('end_date = "exclusive"', 'end_date = "inclusive"'))
    with pytest.raises(config.ConfigError, match=r"\[sis\] end_date must be exclusive or last_day"):
        config.load_settings(config_dir)
    path.write_text(text.split("[sis]")[0] + "[edfi]" + text.split("[edfi]", 1)[1])  # no [sis]: exclusive
    assert config.load_settings(config_dir).sis == config.SisSettings()
