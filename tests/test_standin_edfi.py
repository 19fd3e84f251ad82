"""The Ed-Fi stand-in over real HTTP: one test per rule of the contract it must enforce."""

from __future__ import annotations

import json

import pytest
import requests

from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CONTACTS
from tests.fixtures_edfi import LEA_A, LEA_B, SCHOOL_A1, SCHOOL_A2, SCHOOL_B1

DATA = "/data/v3/ed-fi/"
LEA_A_SECRET = "secret-a"


def _token(url: str, client_id: str = f"lea-{LEA_A}", secret: str = LEA_A_SECRET, basic: bool = True) -> str:
    if basic:
        r = requests.post(
            f"{url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            timeout=5,
        )
    else:
        r = requests.post(
            f"{url}/oauth/token",
            json={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            timeout=5,
        )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def api(edfi_standin):
    edfi_standin.add_staff(None, "S1")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {_token(edfi_standin.url)}"

    def call(method: str, path: str, body: object = None, **kwargs) -> requests.Response:
        data = json.dumps(body) if body is not None else None
        return session.request(
            method,
            f"{edfi_standin.url}{DATA}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=5,
            **kwargs,
        )

    yield call
    session.close()


def assignment(**changes) -> dict:
    body = {
        "staffReference": {"staffUniqueId": "S1"},
        "educationOrganizationReference": {"educationOrganizationId": SCHOOL_A1},
        "staffClassificationDescriptor": "uri://ed-fi.org/StaffClassificationDescriptor#Elementary Teacher",
        "beginDate": "2025-08-15",
        "positionTitle": "Teacher",
    }
    body.update(changes)
    return body


def contact(**changes) -> dict:
    body = {
        "staffReference": {"staffUniqueId": "S1"},
        "educationOrganizationReference": {"educationOrganizationId": SCHOOL_A1},
        "contactTitle": "Teacher",
        "electronicMailAddress": "s1@lea1.com",
    }
    body.update(changes)
    return body


def test_token_by_basic_auth_or_body_and_wrong_secret_is_401(edfi_standin):
    assert _token(edfi_standin.url, basic=True) and _token(edfi_standin.url, basic=False)
    r = requests.post(
        f"{edfi_standin.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(f"lea-{LEA_A}", "wrong"),
        timeout=5,
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_more_than_15_live_tokens_per_client_is_429(edfi_standin):
    for _ in range(15):
        _token(edfi_standin.url)
    r = requests.post(
        f"{edfi_standin.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(f"lea-{LEA_A}", "secret-a"),
        timeout=5,
    )
    assert r.status_code == 429 and "too-many-tokens" in r.json()["type"]


def test_expired_or_missing_token_is_401(edfi_standin, api):
    assert requests.get(f"{edfi_standin.url}{DATA}{ASSIGNMENTS}", timeout=5).status_code == 401
    edfi_standin.tokens.expire_all()
    assert api("GET", ASSIGNMENTS).status_code == 401


def test_post_is_an_upsert_with_location_and_etag(api):
    created = api("POST", ASSIGNMENTS, assignment())
    assert created.status_code == 201 and created.headers["ETag"]
    assert created.headers["Location"].split(f"{DATA}{ASSIGNMENTS}/")[1]
    updated = api("POST", ASSIGNMENTS, assignment(positionTitle="Lead"))
    assert updated.status_code == 200 and updated.headers["Location"] == created.headers["Location"]
    [record] = api("GET", ASSIGNMENTS).json()
    assert record["positionTitle"] == "Lead"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (assignment(id="abc"), "$.id"),
        (assignment(beginDate=None), "$.beginDate"),
        (assignment(beginDate="15-08-2025"), "$.beginDate"),
        (assignment(positionTitle="x" * 101), "$.positionTitle"),
        (
            assignment(staffClassificationDescriptor="uri://ed-fi.org/StaffClassificationDescriptor#Wizard"),
            "$.staffClassificationDescriptor",
        ),
        (assignment(staffClassificationDescriptor="Teacher"), "$.staffClassificationDescriptor"),
        (
            assignment(educationOrganizationReference={"educationOrganizationId": "1000010001"}),
            "$.educationOrganizationReference.educationOrganizationId",
        ),
        (assignment(staffReference={"staffUniqueId": "S" * 33}), "$.staffReference.staffUniqueId"),
        (assignment(orderOfAssignment=1.5), "$.orderOfAssignment"),
        (assignment(colour="blue"), "$.colour"),
        (assignment(beginDate="20250819"), "$.beginDate"),
        (assignment(beginDate="2025-W34-2"), "$.beginDate"),
        (assignment(beginDate="2025-02-30"), "$.beginDate"),
        (
            assignment(staffClassificationDescriptor="uri://ed-fi.org/ClassificationDescriptor#Bogus"),
            "$.staffClassificationDescriptor",
        ),
        (
            assignment(
                staffClassificationDescriptor="uri://ed-fi.org/ificationDescriptor#Elementary Teacher"
            ),
            "$.staffClassificationDescriptor",
        ),
        (
            assignment(educationOrganizationReference={"educationOrganizationId": 2**63}),
            "$.educationOrganizationReference.educationOrganizationId",
        ),
        (
            contact(contactTypeDescriptor="uri://ed-fi.org/ContactTypeDescriptor#NoSuchCode"),
            "$.contactTypeDescriptor",
        ),
    ],
)
def test_invalid_bodies_are_400_problem_details_naming_the_field(api, body, field):
    r = api("POST", CONTACTS if "contactTitle" in body else ASSIGNMENTS, body)
    problem = r.json()
    assert r.status_code == 400
    assert problem["type"] == "urn:ed-fi:api:bad-request:data-validation-failed"
    assert {"title", "status", "detail", "correlationId", "errors"} <= problem.keys()
    assert field in problem["validationErrors"]


def test_contact_email_limits_are_enforced(api):
    api("POST", ASSIGNMENTS, assignment())
    assert api("POST", CONTACTS, contact(electronicMailAddress="a" * 120 + "@lea1.com")).status_code == 400
    assert api("POST", CONTACTS, contact(contactTitle="t" * 76)).status_code == 400
    assert api("POST", CONTACTS, contact(electronicMailAddress=None)).status_code == 400


def test_unknown_staff_is_409_unresolved_reference(api):
    r = api("POST", ASSIGNMENTS, assignment(staffReference={"staffUniqueId": "NOBODY"}))
    assert r.status_code == 409 and r.json()["type"] == "urn:ed-fi:api:data-conflict:unresolved-reference"


def employment(**changes) -> dict:
    body = {
        "staffReference": {"staffUniqueId": "S1"},
        "educationOrganizationReference": {"educationOrganizationId": SCHOOL_A1},
        "employmentStatusDescriptor": "uri://ed-fi.org/EmploymentStatusDescriptor#Tenured or permanent",
        "hireDate": "2001-01-01",
    }
    body.update(changes)
    return body


def _employment_reference(body: dict) -> dict:
    return {
        "educationOrganizationId": body["educationOrganizationReference"]["educationOrganizationId"],
        "staffUniqueId": body["staffReference"]["staffUniqueId"],
        "hireDate": body["hireDate"],
        "employmentStatusDescriptor": body["employmentStatusDescriptor"],
    }


def test_a_reference_must_resolve_and_a_referenced_record_cannot_be_deleted(api, edfi_standin):
    ref = {
        "employmentStaffEducationOrganizationEmploymentAssociationReference": _employment_reference(
            employment()
        )
    }
    r = api("POST", ASSIGNMENTS, assignment(**ref))
    assert r.status_code == 409 and r.json()["type"] == "urn:ed-fi:api:data-conflict:unresolved-reference"
    credential = {"credentialIdentifier": "C1", "stateOfIssueStateAbbreviationDescriptor": "x"}
    assert api("POST", ASSIGNMENTS, assignment(credentialReference=credential)).status_code == 400
    employed = api("POST", "staffEducationOrganizationEmploymentAssociations", employment())
    assert employed.status_code == 201
    assert api("POST", ASSIGNMENTS, assignment(**ref)).status_code == 201

    employment_id = employed.headers["Location"].rsplit("/", 1)[1]
    r = api("DELETE", f"staffEducationOrganizationEmploymentAssociations/{employment_id}")
    assert r.status_code == 409 and r.json()["type"] == "urn:ed-fi:api:data-conflict:dependent-item-exists"
    state = requests.Session()
    state.headers["Authorization"] = f"Bearer {_token(edfi_standin.url, 'state', 'state-secret')}"
    [staff] = [s for s in edfi_standin.records("staffs") if s["staffUniqueId"] == "S1"]
    r = state.delete(f"{edfi_standin.url}{DATA}staffs/{staff['id']}", timeout=5)
    assert r.status_code == 409 and r.json()["type"] == "urn:ed-fi:api:data-conflict:dependent-item-exists"
    state.close()
    [record] = api("GET", ASSIGNMENTS).json()
    assert api("DELETE", f"{ASSIGNMENTS}/{record['id']}").status_code == 204  # nothing refers to it
    assert (
        api("DELETE", f"staffEducationOrganizationEmploymentAssociations/{employment_id}").status_code == 204
    )


def test_contact_needs_an_assignment_of_that_staff_in_the_lea_first(api):
    assert api("POST", CONTACTS, contact()).status_code == 409
    assert api(
        "POST", ASSIGNMENTS, assignment(educationOrganizationReference={"educationOrganizationId": SCHOOL_A2})
    )
    assert api("POST", CONTACTS, contact()).status_code == 201  # any school of the same LEA will do


def test_another_leas_education_organisation_is_403(api):
    r = api(
        "POST", ASSIGNMENTS, assignment(educationOrganizationReference={"educationOrganizationId": SCHOOL_B1})
    )
    assert r.status_code == 403
    assert (
        api(
            "POST", ASSIGNMENTS, assignment(educationOrganizationReference={"educationOrganizationId": LEA_B})
        ).status_code
        == 403
    )
    assert (
        api(
            "POST", ASSIGNMENTS, assignment(educationOrganizationReference={"educationOrganizationId": LEA_A})
        ).status_code
        == 201
    )


def test_put_updates_but_refuses_a_key_change(api):
    location = api("POST", ASSIGNMENTS, assignment()).headers["Location"]
    record_id = location.rsplit("/", 1)[1]
    assert api("PUT", f"{ASSIGNMENTS}/{record_id}", assignment(positionTitle="Head")).status_code == 204
    r = api("PUT", f"{ASSIGNMENTS}/{record_id}", assignment(beginDate="2025-09-01"))
    assert r.status_code == 400 and r.json()["type"] == "urn:ed-fi:api:bad-request:key-change-not-supported"


def test_delete_by_id_is_204_then_404(api):
    record_id = api("POST", ASSIGNMENTS, assignment()).headers["Location"].rsplit("/", 1)[1]
    assert api("DELETE", f"{ASSIGNMENTS}/{record_id}").status_code == 204
    assert api("DELETE", f"{ASSIGNMENTS}/{record_id}").status_code == 404


def test_get_pages_with_offset_limit_total_count_and_identity_filters(api, edfi_standin):
    for i in range(7):
        edfi_standin.add_staff(None, f"P{i}")
        api("POST", ASSIGNMENTS, assignment(staffReference={"staffUniqueId": f"P{i}"}))
    page = api("GET", ASSIGNMENTS, params={"offset": 5, "limit": 5, "totalCount": "true"})
    assert len(page.json()) == 2 and page.headers["Total-Count"] == "7"
    assert api("GET", ASSIGNMENTS, params={"limit": 501}).status_code == 400
    found = api("GET", ASSIGNMENTS, params={"staffUniqueId": "P3", "beginDate": "2025-08-15"}).json()
    assert [r["staffReference"]["staffUniqueId"] for r in found] == ["P3"]


def test_a_client_sees_only_its_own_leas_records(edfi_standin, api):
    api("POST", ASSIGNMENTS, assignment())
    other = requests.get(
        f"{edfi_standin.url}{DATA}{ASSIGNMENTS}",
        timeout=5,
        headers={"Authorization": f"Bearer {_token(edfi_standin.url, f'lea-{LEA_B}', 'secret-b')}"},
    )
    assert other.status_code == 200 and other.json() == []


def test_staff_come_from_wiseid_and_cannot_be_posted(api):
    r = api("POST", "staffs", {"staffUniqueId": "NEW", "firstName": "A", "lastSurname": "B"})
    assert r.status_code == 403


def test_discovery_documents_point_at_the_server(edfi_standin):
    root = requests.get(f"{edfi_standin.url}/", timeout=5).json()
    assert root["urls"]["oauth"] == f"{edfi_standin.url}/oauth/token"
    assert root["urls"]["dataManagementApi"] == f"{edfi_standin.url}/data/v3/"
    spec = requests.get(f"{edfi_standin.url}/metadata/data/v3/resources/swagger.json", timeout=5).json()
    assert f"/ed-fi/{ASSIGNMENTS}" in spec["paths"]
    deps = requests.get(root["urls"]["dependencies"], timeout=5).json()
    order = {d["resource"]: d["order"] for d in deps}
    assert order["/ed-fi/staffs"] < order[f"/ed-fi/{ASSIGNMENTS}"] < order[f"/ed-fi/{CONTACTS}"]


def test_seed_demo_makes_a_key_per_lea_that_works(edfi_standin):
    lines = edfi_standin.seed_demo()
    assert any(f"demo-{LEA_A}" in line for line in lines)
    assert _token(edfi_standin.url, f"demo-{LEA_A}", f"demo-{LEA_A}-secret")
