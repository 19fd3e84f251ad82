"""Where things live on disk.

Everything is derived from one root (``STAFF_DATA_DIR``, default ``./data``) so that tests, the demo
and benchmarks can point a whole pipeline at a temporary folder by setting one variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    """The folders and files of one pipeline installation."""

    data_dir: Path

    @property
    def config_dir(self) -> Path:
        """Checked-in configuration (organisations, crosswalks, thresholds)."""
        return Path(os.environ.get("STAFF_CONFIG_DIR", REPO_ROOT / "data"))

    @property
    def warehouse(self) -> Path:
        return Path(from_env("", "STAFF_WAREHOUSE", str(self.data_dir / "warehouse.duckdb")))

    @property
    def analytics(self) -> Path:
        """The analysts' published read-only copy of the warehouse."""
        return self.warehouse.with_name("analytics.duckdb")

    @property
    def inbox(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def archive(self) -> Path:
        return self.data_dir / "archive"

    @property
    def failed(self) -> Path:
        return self.data_dir / "failed"

    @property
    def landing(self) -> Path:
        """Raw API responses exactly as received, kept next to the warehouse."""
        return self.data_dir / "landing"

    @property
    def journal(self) -> Path:
        """Per-request write-ahead journals of the loads (folded into the ledgers)."""
        return self.data_dir / "journal"


def from_env(configured: str, variable: str, default: str = "") -> str:
    """``configured`` when given, else the environment variable ``variable`` (unset or empty: ``default``).

    The one resolver for settings a resource may take from the environment (``STAFF_*_URL``,
    ``STAFF_WAREHOUSE``, Edu-V's optional secret or key). Resources call it when a run uses them,
    never at import: a process that imported the Definitions before its environment was set (a
    test, a long-lived code server) must still see the environment of the run.
    """
    return configured or os.environ.get(variable) or default


def key_pair(
    names: tuple[str, str], suffix: str, configured: tuple[str, str], target: str
) -> tuple[str, str]:
    """A target's own key pair (``<NAME>_<suffix>``), else the ``configured`` one, else the optional
    fallback pair (``<NAME>``), read when a run builds its client; with none it raises, naming the
    variables to set.

    Per-target keys are how WISEdata (one per LEA) and LinkIt (one per district) hand them out.
    A pair is taken whole: half a target's pair is an error, never completed from another pair (an
    LEA's id with the fallback secret would be refused, or be another LEA's key).
    """
    pairs = (
        (
            f"{names[0]}_{suffix}",
            f"{names[1]}_{suffix}",
            tuple(os.environ.get(f"{n}_{suffix}", "") for n in names),
        ),
        (f"the configured {names[0]}", f"the configured {names[1]}", configured),
        (names[0], names[1], tuple(os.environ.get(n, "") for n in names)),
    )
    for first, second, pair in pairs:
        if all(pair):
            return pair[0], pair[1]
        if any(pair):
            missing = second if pair[0] else first
            raise ValueError(f"half a key pair for {target}: {missing} is not set")
    raise ValueError(
        f"no keys for {target}: set {names[0]}_{suffix} and {names[1]}_{suffix} "
        f"(or the fallback {names[0]} / {names[1]})"
    )


def paths() -> Paths:
    """Resolve paths at call time, never at import time, so tests can repoint them."""
    return Paths(Path(os.environ.get("STAFF_DATA_DIR", REPO_ROOT / "data")).resolve())
