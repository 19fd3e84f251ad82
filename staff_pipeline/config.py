"""Load and validate what changes per customer: organisations, role crosswalk, thresholds.

These live as data under ``data/`` (``STAFF_CONFIG_DIR``). A bad line is refused when loaded with
an error naming the file, the row and the field, so a typo never reaches a request or a target.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from staff_pipeline.loads.holds import Limit
from staff_pipeline.schemas import config as schemas
from staff_pipeline.settings import paths


class ConfigError(ValueError):
    """A configuration file that does not meet its schema."""


def _describe_failures(path: Path, err: pa.errors.SchemaErrors) -> str:
    # A row-wide rule fails once per cell of the row: report it once per row.
    cases = err.failure_cases.drop_duplicates(subset=["index", "check"])
    lines = [f"{path}: {len(cases)} problem(s)"]
    for case in cases.head(20).itertuples():
        row = f"row {int(case.index) + 2}" if pd.notna(case.index) else "whole file"  # +2: header, 1-based
        if case.schema_context == "Column":
            lines.append(f"  {row}, field {case.column}: {case.check} (value {case.failure_case!r})")
        else:
            lines.append(f"  {row}: {case.check}")
    return "\n".join(lines)


def _read_csv(path: Path, schema: pa.DataFrameSchema) -> pd.DataFrame:
    if not path.exists():
        raise ConfigError(f"{path}: configuration file is missing")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    frame = frame.apply(lambda column: column.str.strip())  # keeps the text dtype of all-empty columns
    for column in frame.columns:
        lowered = frame[column].str.lower()
        if lowered.dropna().isin(["true", "false"]).all() and lowered.notna().any():
            frame[column] = lowered.map({"true": True, "false": False})
    for column in [
        c for c in schema.columns if schema.columns[c].dtype and str(schema.columns[c].dtype) == "bool"
    ]:
        if column in frame:
            frame[column] = frame[column].astype("boolean").fillna(False).astype(bool)
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise ConfigError(_describe_failures(path, err)) from None


def load_organisations(config_dir: Path | None = None) -> pd.DataFrame:
    """One row per configured school (Edu-V ids, Ed-Fi ids, LinkIt district and SchoolID)."""
    path = (config_dir or paths().config_dir) / "organisations.csv"
    return _read_csv(path, schemas.organisations)


def load_role_crosswalk(config_dir: Path | None = None) -> pd.DataFrame:
    """Source role (Edu-V organisationRole or SIS position code) -> Ed-Fi class, title, LinkIt role."""
    path = (config_dir or paths().config_dir) / "role_crosswalk.csv"
    return _read_csv(path, schemas.role_crosswalk)


def lea_ids(config_dir: Path | None = None) -> list[str]:
    """LEA partition keys, in file order."""
    return list(dict.fromkeys(load_organisations(config_dir)["lea_id"].astype(str)))


def linkit_districts(config_dir: Path | None = None) -> list[str]:
    """LinkIt district partition keys, in file order."""
    return list(dict.fromkeys(load_organisations(config_dir)["linkit_district"]))


@dataclass(frozen=True)
class GateSettings:
    max_rejected_share: float
    max_disappeared_share: float
    min_employees_per_school: int


@dataclass(frozen=True)
class EdFiSettings:
    max_concurrency: int
    limits: Mapping[str, Limit]  # create, update, delete (staff_pipeline.loads.holds)


@dataclass(frozen=True)
class LinkItSettings:
    limits: Mapping[str, Limit]  # create, update, deactivate
    username_rule: str


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str
    timezone: str


END_DATE_CONVENTIONS = ("exclusive", "last_day")


@dataclass(frozen=True)
class SisSettings:
    """How each LEA's SIS writes an assignment's end date. SIS vendors differ: some write the first
    day no longer in the assignment (exclusive, as Edu-V's ``endDate``), some the last day worked."""

    end_date: str = "exclusive"
    end_date_by_lea: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Settings:
    gate: GateSettings
    edfi: EdFiSettings
    linkit: LinkItSettings
    schedule: ScheduleSettings
    sis: SisSettings = SisSettings()


def _share(path: Path, section: str, key: str, value: object) -> float:
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{path}: [{section}] {key} must be a share between 0 and 1, got {value!r}")
    return float(value)


def _limits(path: Path, section: str, table: dict, actions: tuple[str, ...]) -> dict[str, Limit]:
    """Per action, ``max_<action>_share`` (required) and ``max_<action>_count`` (optional)."""
    limits = {}
    for action in actions:
        share = _share(path, section, f"max_{action}_share", table[f"max_{action}_share"])
        count = table.get(f"max_{action}_count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ConfigError(
                f"{path}: [{section}] max_{action}_count must be a whole number of 0 or more, got {count!r}"
            )
        limits[action] = Limit(share, count)
    return limits


def _sis_settings(path: Path, sis: dict) -> SisSettings:
    """``[sis]``: optional (every SIS exclusive), its values checked here."""

    def rule(key: str, value: object) -> str:
        if value not in END_DATE_CONVENTIONS:
            raise ConfigError(f"{path}: [sis] {key} must be exclusive or last_day, got {value!r}")
        return str(value)

    by_lea = sis.get("end_date_by_lea", {})
    known = set(lea_ids(path.parent)) if by_lea else set()
    if not isinstance(by_lea, dict) or not set(map(str, by_lea)) <= known:
        raise ConfigError(
            f"{path}: [sis.end_date_by_lea] keys must be configured LEA ids, got {list(by_lea)!r}"
        )
    return SisSettings(
        end_date=rule("end_date", sis.get("end_date", "exclusive")),
        end_date_by_lea=tuple(
            (int(lea), rule(f"end_date_by_lea.{lea}", value)) for lea, value in sorted(by_lea.items())
        ),
    )


def load_settings(config_dir: Path | None = None) -> Settings:
    """Thresholds, concurrency and schedule from ``pipeline.toml``."""
    path = (config_dir or paths().config_dir) / "pipeline.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        gate, edfi, linkit, schedule = raw["gate"], raw["edfi"], raw["linkit"], raw["schedule"]
        settings = Settings(
            gate=GateSettings(
                max_rejected_share=_share(path, "gate", "max_rejected_share", gate["max_rejected_share"]),
                max_disappeared_share=_share(
                    path, "gate", "max_disappeared_share", gate["max_disappeared_share"]
                ),
                min_employees_per_school=int(gate["min_employees_per_school"]),
            ),
            edfi=EdFiSettings(
                max_concurrency=int(edfi["max_concurrency"]),
                limits=_limits(path, "edfi", edfi, ("create", "update", "delete")),
            ),
            linkit=LinkItSettings(
                limits=_limits(path, "linkit", linkit, ("create", "update", "deactivate")),
                username_rule=str(linkit["username_rule"]),
            ),
            schedule=ScheduleSettings(cron=str(schedule["cron"]), timezone=str(schedule["timezone"])),
            sis=_sis_settings(path, raw.get("sis", {})),
        )
    except (KeyError, tomllib.TOMLDecodeError, FileNotFoundError) as exc:
        raise ConfigError(f"{path}: {type(exc).__name__}: {exc}") from None
    if settings.linkit.username_rule not in ("email_local_part", "local_code"):
        raise ConfigError(f"{path}: [linkit] username_rule must be email_local_part or local_code")
    if not 1 <= settings.edfi.max_concurrency <= 64:
        raise ConfigError(f"{path}: [edfi] max_concurrency must be between 1 and 64")
    return settings
