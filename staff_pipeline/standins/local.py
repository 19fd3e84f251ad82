"""The three stand-ins started together, provisioned from the organisation config, with fresh credentials.

The demo, the browser test and the benchmarks all need the same thing: local APIs that know the
configured schools, LEAs and districts, plus the environment variables that point the pipeline's
resources at them. Credentials are random per start and live only in this process's memory and in
the ``env`` handed to the pipeline.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from staff_pipeline.config import load_organisations
from staff_pipeline.standins.common import Knobs
from staff_pipeline.standins.edfi import EdFiStandIn
from staff_pipeline.standins.eduv import EduVStandIn
from staff_pipeline.standins.linkit import LinkItStandIn


@dataclass
class LocalApis:
    eduv: EduVStandIn
    edfi: EdFiStandIn
    linkit: LinkItStandIn
    env: dict[str, str] = field(default_factory=dict)

    def register_wiseids(self) -> int:
        """Do what the state's WISEid system does: hold a staff record per WISEid in the conformed model."""
        from staff_pipeline.warehouse import connect, table_exists

        with connect() as con:
            if not table_exists(con, "staff"):
                return 0
            rows = con.execute(
                "SELECT DISTINCT a.lea_id, s.wiseid FROM staff s JOIN staff_assignments a USING (person_id) "
                "WHERE s.wiseid IS NOT NULL"
            ).fetchall()
        for lea_id, wiseid in rows:
            self.edfi.add_staff(int(lea_id), str(wiseid))
        return len({wiseid for _, wiseid in rows})

    def write_requests(self) -> dict[str, int]:
        """Write calls received so far per target (what a no-change night must keep at zero)."""
        return {
            "Ed-Fi": sum(len(self.edfi.requests_to(m, "/data/")) for m in ("POST", "PUT", "DELETE")),
            "LinkIt": sum(len(self.linkit.requests_to(m, "/staffs")) for m in ("POST", "PUT", "DELETE")),
        }


@contextmanager
def local_apis(
    eduv_dir: Path | None = None, *, organisations: pd.DataFrame | None = None, knobs: Knobs | None = None
) -> Iterator[LocalApis]:
    """Start Edu-V (serving ``eduv_dir``, the generator's files), Ed-Fi and LinkIt! on free ports."""
    organisations = load_organisations() if organisations is None else organisations
    with ExitStack() as stack:
        eduv = stack.enter_context(EduVStandIn(knobs=knobs))
        edfi = stack.enter_context(EdFiStandIn(knobs=knobs))
        linkit = stack.enter_context(LinkItStandIn(knobs=knobs))
        eduv_secret = secrets.token_urlsafe(24)
        eduv.add_client("local-consumer", secret=eduv_secret)
        if eduv_dir is not None:
            eduv.load_generated(organisations, eduv_dir)
        edfi.load_organisations()
        env = {
            "STAFF_EDUV_URL": eduv.url,
            "EDUV_CLIENT_ID": "local-consumer",
            "EDUV_CLIENT_SECRET": eduv_secret,
            "STAFF_EDFI_URL": edfi.url,
            "STAFF_LINKIT_URL": linkit.url,
            # The default pairs are unused (every LEA and district has its own key) but must be set.
            "EDFI_CLIENT_ID": "unused-default",
            "EDFI_CLIENT_SECRET": secrets.token_urlsafe(8),
            "LINKIT_ACCESS_KEY": "unused-default",
            "LINKIT_PRIVATE_KEY": secrets.token_urlsafe(8),
        }
        for lea in organisations["lea_id"].astype(str).unique():
            secret = secrets.token_urlsafe(24)
            edfi.add_client(f"lea-{lea}", secret, int(lea))
            env[f"EDFI_CLIENT_ID_{lea}"], env[f"EDFI_CLIENT_SECRET_{lea}"] = f"lea-{lea}", secret
        for district, rows in organisations.groupby("linkit_district", sort=False):
            access, private = secrets.token_hex(16), secrets.token_urlsafe(32)
            schools = {
                int(r.linkit_school_id): r.school_name
                for r in rows.itertuples()
                if pd.notna(r.linkit_school_id)
            }
            linkit.add_district(str(district), access, private, schools)
            env[f"LINKIT_ACCESS_KEY_{str(district).upper()}"] = access
            env[f"LINKIT_PRIVATE_KEY_{str(district).upper()}"] = private
        yield LocalApis(eduv, edfi, linkit, env)
