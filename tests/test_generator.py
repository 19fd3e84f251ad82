"""The synthetic data generator: deterministic, realistic, and faithful to both source contracts."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from staff_pipeline.config import load_organisations, load_role_crosswalk
from staff_pipeline.generator import SIS_VARIANTS, generate, oab_id
from staff_pipeline.vocab import ORGANISATION_ROLES, USER_ID_TYPES

TODAY = date(2026, 1, 15)
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sis_rows(path: Path, variant_index: int) -> list[list[str]]:
    variant = SIS_VARIANTS[variant_index]
    text = path.read_bytes().decode(variant.encoding)
    return [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=variant.delimiter) if row]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    return generate(tmp_path_factory.mktemp("gen"), 1500, seed=7, bad_share=0.05, today=TODAY)


@pytest.fixture(scope="module")
def employees(generated) -> dict[str, list[dict]]:
    return {
        p.stem: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
        for p in sorted(generated.eduv_dir.glob("*.jsonl"))
    }


@pytest.fixture(scope="module")
def sis(generated) -> dict[str, list[list[str]]]:
    leas = list(dict.fromkeys(load_organisations()["lea_id"].astype(str)))
    out = {}
    for index, lea in enumerate(leas):
        (path,) = (generated.inbox_dir / lea).glob("*.csv")
        out[lea] = _sis_rows(path, index % len(SIS_VARIANTS))
    return out


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    orgs = load_organisations()
    a = generate(tmp_path / "a", 200, seed=1, today=TODAY, organisations=orgs)
    b = generate(tmp_path / "b", 200, seed=1, today=TODAY, organisations=orgs)
    c = generate(tmp_path / "c", 200, seed=2, today=TODAY, organisations=orgs)
    assert _files(a.root) == _files(b.root)
    assert _files(a.root) != _files(c.root)
    assert (a.eduv_employees, a.sis_rows) == (b.eduv_employees, b.sis_rows)


def test_layout_and_counts(generated, employees, sis) -> None:
    orgs = load_organisations()
    assert set(employees) == set(orgs["school_key"])
    assert set(sis) == set(orgs["lea_id"].astype(str))
    distinct = {json.dumps(e, sort_keys=True) for rows in employees.values() for e in rows}
    assert len(distinct) == generated.eduv_employees
    assert sum(len(rows) - 1 for rows in sis.values()) == generated.sis_rows  # minus the header
    assert generated.people == 1500 and generated.root / "eduv" == generated.eduv_dir


def test_employees_follow_the_eduv_contract(employees) -> None:
    orgs = load_organisations().set_index("school_key")
    for school_key, rows in employees.items():
        school = orgs.loc[school_key]
        if isinstance(school["eduv_org_master_id"], str):
            ref = {"organisationMasterIdentifier": school["eduv_org_master_id"]}
        else:
            ref = {
                "organisationIds": [
                    {
                        "organisationId": school["eduv_org_id"],
                        "organisationIdType": school["eduv_org_id_type"],
                    }
                ]
            }
        for employee in rows:
            assert any(role["organisation"] == ref for role in employee["organisationRoles"])
            assert RFC3339_Z.match(employee["dateCreated"]) and RFC3339_Z.match(employee["dateLastModified"])
            assert employee["dateCreated"] <= employee["dateLastModified"]
            assert employee["status"] in ("active", "tobedeleted")
            assert employee["userIds"] and all(u["userIdType"] in USER_ID_TYPES for u in employee["userIds"])


def test_person_in_two_schools_is_the_same_object_in_both_files(employees) -> None:
    seen: dict[str, list[str]] = {}
    for rows in employees.values():
        for employee in rows:
            eck = next(u["userId"] for u in employee["userIds"] if u["userIdType"] == "eckId")
            seen.setdefault(eck, []).append(json.dumps(employee, sort_keys=True))
    multi = [objs for objs in seen.values() if len(objs) > 1]
    assert len(multi) > 50
    assert all(len(set(objs)) == 1 for objs in multi)


def test_realistic_variety(employees, sis) -> None:
    everyone = {json.dumps(e, sort_keys=True): e for rows in employees.values() for e in rows}.values()
    assert Counter(e["status"] for e in everyone)["tobedeleted"] > 10
    assert any(r.get("endDate", "9999") < TODAY.isoformat() for e in everyone for r in e["organisationRoles"])
    assert any(e.get("familyNamePrefix") == "van der" for e in everyone)
    roles = {r["organisationRole"] for e in everyone for r in e["organisationRoles"]}
    assert set(ORGANISATION_ROLES) <= roles
    assert any("mobile" in e for e in everyone) and any("phone" in e for e in everyone)
    names = {row[2] for rows in sis.values() for row in rows[1:]} | {
        row[4] for rows in sis.values() for row in rows
    }
    assert {"José", "Zoë"} <= names and any("'" in n for n in names) and any("Özdemir" in n for n in names)
    # a person in several LEAs has a different email in each
    emails: dict[str, set[str]] = {}
    for rows in sis.values():
        for row in rows[1:]:
            emails.setdefault(row[0], set()).add(row[5].rsplit("@", 1)[-1])
    assert sum(len(domains) > 1 for domains in emails.values()) > 25
    assert sum(bool(row[6]) for rows in sis.values() for row in rows[1:]) > 50  # alt_email


def test_identities_link_sources_by_asi_and_both_have_loners(employees, sis) -> None:
    asi = {
        u["userId"]
        for rows in employees.values()
        for e in rows
        for u in e["userIds"]
        if u["userIdType"] == "ASI"
    }
    local_ids = {row[0] for rows in sis.values() for row in rows[1:] if row[0]}
    assert len(asi & local_ids) > 500
    assert asi <= local_ids | {""}
    eduv_only = [
        e
        for rows in employees.values()
        for e in rows
        if not any(u["userIdType"] == "ASI" for u in e["userIds"])
    ]
    assert eduv_only
    assert local_ids - asi  # SIS-only people
    wiseids = [row[1] for rows in sis.values() for row in rows[1:] if row[1]]
    assert all(re.fullmatch(r"\d{10}", w) for w in wiseids)
    assert 0.85 < len(wiseids) / sum(len(r) - 1 for r in sis.values()) < 0.97


def test_sis_files_are_messy_as_configured(generated) -> None:
    leas = list(dict.fromkeys(load_organisations()["lea_id"].astype(str)))
    raw = [next((generated.inbox_dir / lea).glob("*.csv")).read_bytes() for lea in leas]
    assert raw[0].startswith(b"\xef\xbb\xbf") and raw[0].endswith(b"\r\n\r\n\r\n")
    with pytest.raises(UnicodeDecodeError):
        raw[1].decode("utf-8")
    assert b";" in raw[1].split(b"\r\n", 1)[0] and "Özdemir".encode("cp1252") in raw[1]
    assert raw[2].split(b"\n", 1)[0].endswith(b"Notes,Notes")
    assert b'"Teacher\n(part-time)"' in raw[2]


def test_clean_rows_use_configured_codes_and_bad_rows_are_mixed_in(generated, sis) -> None:
    orgs = load_organisations()
    crosswalk = load_role_crosswalk()
    positions = set(crosswalk.loc[crosswalk["source"] == "sis", "source_role"])
    rows = [row for lea_rows in sis.values() for row in lea_rows[1:]]
    assert {row[8] for row in rows} - set(orgs["sis_school_code"]) == {"XXX"}
    assert {row[9] for row in rows} - positions == {"ZZZ"}
    assert any(row[2] == "" for row in rows) and any(len(row[2]) > 50 for row in rows)
    assert any(row[12] and row[12] <= row[11] for row in rows)
    assert any("@" not in row[5] for row in rows)
    assert 0.03 < generated.bad_sis_rows / generated.sis_rows < 0.07


def test_bad_share_zero_gives_clean_data(tmp_path: Path) -> None:
    out = generate(tmp_path, 400, bad_share=0.0, today=TODAY)
    assert out.bad_sis_rows == out.bad_eduv_employees == 0
    for path in out.eduv_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            employee = json.loads(line)
            assert "@" in employee["email"] and employee["givenName"] and len(employee["familyName"]) <= 50
            for role in employee["organisationRoles"]:
                assert role["organisationRole"] in ORGANISATION_ROLES
                assert role.get("endDate", "9999") > role["beginDate"]


def test_oab_id_is_the_master_id_or_one_per_lea() -> None:
    assert oab_id({"eduv_org_master_id": "abc", "lea_id": 1}) == "abc"
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL, "eduv-oab:100002"))
    assert oab_id({"eduv_org_master_id": None, "lea_id": 100002}) == expected
    assert oab_id({"eduv_org_master_id": float("nan"), "lea_id": "100002"}) == expected
    rows = load_organisations().to_dict("records")
    assert oab_id(rows[0]) == rows[0]["eduv_org_master_id"]


def test_rejects_nonsense_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="people"):
        generate(tmp_path, 0)
    with pytest.raises(ValueError, match="bad_share"):
        generate(tmp_path, 10, bad_share=1.5)
