"""Fixtures for the Edu-V tests: a running stand-in with clients, schools and hand-made employees.

The world (two boards, four schools):
- board ``OAB_A``: ``a-po`` (PO, V_ID 04XY00, source cannot filter) and ``a-vo`` (VO, OIE_CODE 12AB);
- board ``OAB_B``: ``b-po`` (PO, BP_ID bp-1);
- board ``OAB_C``: ``c-po`` (PO, AS_ID LAS-1), which has not consented to our client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from staff_pipeline.clients.eduv import EduVClient
from staff_pipeline.config import load_organisations
from staff_pipeline.http import RetryPolicy
from staff_pipeline.standins.common import Knobs
from staff_pipeline.standins.eduv import EduVStandIn

CLIENT_ID = "roster-sync"
CLIENT_SECRET = "eduv-test-secret-7f3a"
JWT_CLIENT_ID = "roster-sync-jwt"
OAB_A = "6f1c2a7e-3b1d-4c55-9a0e-0b9f1e2d3c41"
OAB_B = "c0ffee00-1234-4abc-8def-00000000c401"
OAB_C = "0badc0de-0000-4000-8000-000000000003"
PERIOD_UUID = "5e0f3c8a-2b7d-4e1f-9a6c-1d2e3f4a5b6c"

ORG_A_PO = {"organisationIds": [{"organisationId": "04XY00", "organisationIdType": "V_ID"}]}
ORG_A_VO = {"organisationIds": [{"organisationId": "12AB", "organisationIdType": "OIE_CODE"}]}
ORG_B = {"organisationMasterIdentifier": OAB_B}
ORG_C = {"organisationIds": [{"organisationId": "LAS-1", "organisationIdType": "AS_ID"}]}

ORG_COLUMNS = (
    "school_key,school_name,lea_id,lea_name,school_id,sector,choice_school,eduv_org_master_id,eduv_org_id,"
    "eduv_org_id_type,eduv_filter_by_org_id,eduv_supports_filter,eduv_school_period_id,sis_school_code,"
    "linkit_district,linkit_school_id"
)
ORG_ROWS = {
    "a-po": "a-po,A Primary,100001,Board A,1000010001,PO,false,,04XY00,V_ID,,false,,APO,alpha,501",
    "a-vo": "a-vo,A Sec,100001,Board A,1000010002,VO,false,,12AB,OIE_CODE,true,true,2025-2026,AVO,alpha,502",
    "b-po": f"b-po,B Primary,100002,Board B,1000020001,PO,false,{OAB_B},,,,false,,BPO,beta,601",
    "c-po": "c-po,C Primary,100003,Board C,1000030001,PO,false,,LAS-1,AS_ID,,true,,CPO,gamma,701",
}


def role(org: dict, name: str = "leraar", begin: str = "2020-08-01", end: str | None = None) -> dict:
    out: dict[str, Any] = {"organisationRole": name, "beginDate": begin, "organisation": org}
    if end is not None:
        out["endDate"] = end
    return out


def employee(n: int, roles: list[dict], **fields: Any) -> dict:
    """A full Edu-V Employee: names, timestamps, status, contact fields, userIds and roles."""
    out = {
        "givenName": f"Given{n}",
        "familyName": f"Family{n}",
        "email": f"e{n}@school.example.nl",
        "phone": f"+31 20 555 {n:04d}",
        "mobile": f"+31 6 5555 {n:04d}",
        "status": "active",
        "dateCreated": "2023-09-01T08:00:00Z",
        "dateLastModified": "2025-09-01T08:00:00Z",
        "userIds": [
            {"userId": f"https://ketenid.nl/201703/{n:032x}", "userIdType": "eckId"},
            {"userId": f"{900000000 + n}", "userIdType": "NEPPI"},
        ],
        "organisationRoles": roles,
    }
    out.update(fields)
    return out


E1 = employee(1, [role(ORG_A_PO)], familyNamePrefix="van der", givenName="Özlem", alias="Özlem vdB")
E2 = employee(2, [role(ORG_A_PO), role(ORG_A_VO, "mentor")])
E3 = employee(3, [role(ORG_A_VO, begin="2018-08-01", end="2019-08-01"), role(ORG_A_VO, "ibp-er")])
E4 = employee(4, [role(ORG_B, "onderwijsdirecteur")], status="tobedeleted", preferredFirstName="Bob")
E5 = employee(5, [role(ORG_A_VO, begin="2015-08-01", end="2020-08-01")])
E6 = employee(6, [role(ORG_C)])
SERVED = {"a-po": [E1, E2], "a-vo": [E2, E3, E5], "b-po": [E4], "c-po": [E6]}
FAST = RetryPolicy(attempts=4, backoff_base=0.01, backoff_max=0.05)


def populate(standin: EduVStandIn, public_key_pem: bytes) -> EduVStandIn:
    standin.add_client(CLIENT_ID, secret=CLIENT_SECRET)
    standin.add_client(JWT_CLIENT_ID, public_key_pem=public_key_pem)
    standin.add_school("a-po", oab_id=OAB_A, org_ids=[("V_ID", "04XY00")], sector="PO", supports_filter=False)
    standin.add_school("a-vo", oab_id=OAB_A, org_ids=[("OIE_CODE", "12AB")], sector="VO")
    standin.add_school("b-po", oab_id=OAB_B, org_ids=[("BP_ID", "bp-1")], sector="PO")
    standin.add_school("c-po", oab_id=OAB_C, org_ids=[("AS_ID", "LAS-1")], consent=["someone-else"])
    for key, employees in SERVED.items():
        standin.add_employees(key, employees)
    return standin


@pytest.fixture(scope="session")
def eduv_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def eduv_private_pem(eduv_key: rsa.RSAPrivateKey) -> str:
    return eduv_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="session")
def eduv_public_pem(eduv_key: rsa.RSAPrivateKey) -> bytes:
    return eduv_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def eduv_knobs() -> Knobs:
    """Override in a test module (or parametrize) to inject faults."""
    return Knobs()


@pytest.fixture
def eduv_standin(eduv_knobs: Knobs, eduv_public_pem: bytes) -> Iterator[EduVStandIn]:
    standin = populate(EduVStandIn(knobs=eduv_knobs), eduv_public_pem)
    with standin:
        yield standin


@pytest.fixture
def eduv_client(eduv_standin: EduVStandIn) -> Iterator[EduVClient]:
    with EduVClient(eduv_standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=FAST) as client:
        yield client


def write_organisations(folder: Path, *lines: str) -> pd.DataFrame:
    """Write an organisations.csv with these lines (see ``ORG_ROWS``) and load it through the validator."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "organisations.csv").write_text("\n".join([ORG_COLUMNS, *lines]) + "\n", encoding="utf-8")
    return load_organisations(folder)
