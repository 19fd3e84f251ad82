"""The Edu-V stand-in over real HTTP: it serves what the contract allows and refuses the rest."""

from __future__ import annotations

import base64
import json
import time
from datetime import date
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from staff_pipeline.clients.eduv import client_assertion
from staff_pipeline.standins.common import Knobs
from staff_pipeline.standins.eduv import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EduVStandIn
from tests.fixtures_eduv import (
    CLIENT_ID,
    CLIENT_SECRET,
    E1,
    E2,
    E3,
    E4,
    E5,
    JWT_CLIENT_ID,
    OAB_A,
    OAB_B,
    PERIOD_UUID,
    populate,
)

ALL = "eduv.employee.basic eduv.employee.communication eduv.employee.roles"
A_VO = {"orgId": "12AB", "orgIdType": "OIE_CODE"}
A_PO = {"orgId": "04XY00", "orgIdType": "V_ID"}


def token_request(standin: EduVStandIn, **form: str) -> requests.Response:
    return requests.post(f"{standin.url}/oauth/token", data=form, timeout=5)


def token(standin: EduVStandIn, scope: str = ALL) -> str:
    answer = token_request(
        standin,
        grant_type="client_credentials",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scope=scope,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def employees(standin: EduVStandIn, bearer: str | None = None, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return requests.get(f"{standin.url}/employees", params=params, headers=headers, timeout=5)


def refused(answer: requests.Response, status: int) -> str:
    """The API's statusMessage, after checking the error shape is ``{status, statusMessage}``."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"status", "statusMessage"} and body["status"] == status
    return body["statusMessage"]


# -- token endpoint -----------------------------------------------------------------------------
def test_client_secret_basic_and_post_both_give_a_token(eduv_standin: EduVStandIn) -> None:
    basic = requests.post(
        f"{eduv_standin.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )
    assert basic.status_code == 200
    assert basic.json()["token_type"] == "Bearer" and basic.json()["scope"] == ALL
    assert basic.json()["expires_in"] > 0
    post = token_request(
        eduv_standin, grant_type="client_credentials", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    assert post.status_code == 200 and post.json()["access_token"] != basic.json()["access_token"]


GRANT = {"grant_type": "client_credentials"}
SECRET_POST = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({**GRANT, "client_id": CLIENT_ID, "client_secret": "wrong"}, 401, "invalid_client"),
        ({**GRANT, "client_id": "nobody", "client_secret": "x"}, 401, "invalid_client"),
        ({"grant_type": "password", **SECRET_POST}, 400, "unsupported_grant_type"),
        (SECRET_POST, 400, "unsupported_grant_type"),
        (GRANT, 400, "invalid_request"),
        ({**GRANT, **SECRET_POST, "scope": "eduv.student.basic"}, 400, "invalid_scope"),
    ],
)
def test_token_endpoint_refuses_bad_requests(
    eduv_standin: EduVStandIn, form: dict, status: int, error: str
) -> None:
    answer = token_request(eduv_standin, **form)
    assert answer.status_code == status
    assert answer.json()["error"] == error


def test_token_request_must_use_exactly_one_auth_method_and_form_encoding(eduv_standin: EduVStandIn) -> None:
    both = requests.post(
        f"{eduv_standin.url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    as_json = requests.post(
        f"{eduv_standin.url}/oauth/token",
        json={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=5,
    )
    assert as_json.status_code == 400


def test_a_jwt_client_cannot_use_a_secret_and_a_secret_client_cannot_sign(eduv_standin, eduv_key) -> None:
    as_secret = token_request(
        eduv_standin, grant_type="client_credentials", client_id=JWT_CLIENT_ID, client_secret=""
    )
    assert as_secret.status_code == 401
    signed = client_assertion(eduv_key, CLIENT_ID, f"{eduv_standin.url}/oauth/token")
    as_jwt = _jwt_request(eduv_standin, signed)
    assert as_jwt.status_code == 401 and as_jwt.json()["error"] == "invalid_client"


def _jwt_request(standin: EduVStandIn, assertion: str, **extra: str) -> requests.Response:
    return token_request(
        standin,
        grant_type="client_credentials",
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
        **extra,
    )


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_private_key_jwt_is_verified(eduv_standin: EduVStandIn, eduv_key) -> None:
    audience = f"{eduv_standin.url}/oauth/token"
    good = client_assertion(eduv_key, JWT_CLIENT_ID, audience)
    answer = _jwt_request(eduv_standin, good, scope="eduv.employee.basic")
    assert answer.status_code == 200 and answer.json()["scope"] == "eduv.employee.basic"
    replayed = _jwt_request(eduv_standin, good)
    assert replayed.status_code == 401 and "jti" in replayed.json()["error_description"]
    wrong_audience = _jwt_request(
        eduv_standin, client_assertion(eduv_key, JWT_CLIENT_ID, "https://elsewhere/token")
    )
    assert wrong_audience.status_code == 401 and "audience" in wrong_audience.json()["error_description"]
    head, body, signature = client_assertion(eduv_key, JWT_CLIENT_ID, audience).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered = _b64({**claims, "sub": CLIENT_ID})
    assert _jwt_request(eduv_standin, f"{head}.{tampered}.{signature}").status_code == 401
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'jti': 'x1'})}."
    assert _jwt_request(eduv_standin, unsigned).status_code == 401
    assert _jwt_request(eduv_standin, good, client_id=CLIENT_ID).status_code == 401  # another client's id


def test_an_expired_client_assertion_is_refused(eduv_standin: EduVStandIn, eduv_key) -> None:
    now = int(time.time())
    claims = {"iss": JWT_CLIENT_ID, "sub": JWT_CLIENT_ID, "aud": f"{eduv_standin.url}/oauth/token",
              "jti": "old-1", "iat": now - 120, "exp": now - 60}  # fmt: skip
    signing_input = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}"
    signature = eduv_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    assertion = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    answer = _jwt_request(eduv_standin, assertion)
    assert answer.status_code == 401 and "expired" in answer.json()["error_description"]


# -- authorisation of /employees ---------------------------------------------------------------------
def test_missing_unknown_and_expired_tokens_get_401(eduv_standin: EduVStandIn) -> None:
    assert "missing" in refused(employees(eduv_standin, None, **A_VO), 401)
    assert refused(employees(eduv_standin, "not-a-token", **A_VO), 401)
    bearer = token(eduv_standin)
    assert employees(eduv_standin, bearer, **A_VO).status_code == 200
    eduv_standin.tokens.expire_all()
    assert "expired" in refused(employees(eduv_standin, bearer, **A_VO), 401)


def test_token_lifetime_knob_expires_tokens(eduv_public_pem: bytes) -> None:
    with populate(EduVStandIn(Knobs(token_ttl=0.2)), eduv_public_pem) as standin:
        bearer = token(standin)
        assert employees(standin, bearer, **A_VO).status_code == 200
        time.sleep(0.3)
        assert employees(standin, bearer, **A_VO).status_code == 401


def test_a_school_without_consent_is_403_and_an_unknown_school_404(eduv_standin: EduVStandIn) -> None:
    bearer = token(eduv_standin)
    assert "consent" in refused(employees(eduv_standin, bearer, orgId="LAS-1", orgIdType="AS_ID"), 403)
    assert "12XX" in refused(employees(eduv_standin, bearer, orgId="12XX", orgIdType="OIE_CODE"), 404)
    assert refused(
        employees(eduv_standin, bearer, orgId="12AB", orgIdType="BP_ID"), 404
    )  # id of another type
    assert refused(employees(eduv_standin, bearer, orgMasterId="ffffffff-0000-4000-8000-000000000000"), 404)


def test_scopes_decide_the_attributes(eduv_standin: EduVStandIn) -> None:
    basic = employees(eduv_standin, token(eduv_standin, "eduv.employee.basic"), **A_PO).json()
    assert [e["givenName"] for e in basic] == ["Özlem", "Given2"]
    for item in basic:
        assert not {"email", "phone", "mobile", "organisationRoles"} & set(item)
        assert item["userIds"] and item["dateCreated"] and item["status"]
    communication = employees(
        eduv_standin, token(eduv_standin, "eduv.employee.basic eduv.employee.communication"), **A_PO
    ).json()
    assert communication[0]["mobile"] == E1["mobile"] and "organisationRoles" not in communication[0]
    roles_only = employees(
        eduv_standin, token(eduv_standin, "eduv.employee.basic eduv.employee.roles"), **A_PO
    )
    assert roles_only.json()[0]["organisationRoles"] == E1["organisationRoles"]
    assert "email" not in roles_only.json()[0]
    no_basic = employees(eduv_standin, token(eduv_standin, "eduv.employee.communication"), **A_PO)
    assert "eduv.employee.basic" in refused(no_basic, 403)


def test_a_narrow_scope_client_is_granted_less_than_asked_and_told_so(eduv_standin: EduVStandIn) -> None:
    eduv_standin.add_client(
        "narrowed", secret="narrowed-secret", scopes=["eduv.employee.basic"], narrow_scope=True
    )
    answer = token_request(
        eduv_standin, **GRANT, client_id="narrowed", client_secret="narrowed-secret", scope=ALL
    )
    assert answer.status_code == 200 and answer.json()["scope"] == "eduv.employee.basic"
    served = employees(eduv_standin, answer.json()["access_token"], **A_PO).json()
    assert [e["givenName"] for e in served] == ["Özlem", "Given2"]
    assert not {"email", "phone", "mobile", "organisationRoles"} & {k for e in served for k in e}
    eduv_standin.add_client("strict", secret="strict-secret", scopes=["eduv.employee.basic"])
    strict = token_request(
        eduv_standin, **GRANT, client_id="strict", client_secret="strict-secret", scope=ALL
    )
    assert strict.status_code == 400 and strict.json()["error"] == "invalid_scope"


# -- query rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "required"),
        ({"orgMasterId": OAB_A, "orgId": "12AB", "orgIdType": "OIE_CODE"}, "not both"),
        ({"orgMasterId": OAB_A, "orgIdType": "OIE_CODE"}, "not both"),
        ({"orgId": "12AB"}, "together"),
        ({"orgIdType": "OIE_CODE"}, "together"),
        ({"orgId": "12AB", "orgIdType": "BRIN"}, "orgIdType"),
        ({"orgMasterId": OAB_A, "filterByOrgId": "true"}, "absent or false"),
        ({**A_VO, "filterByOrgId": "yes"}, "true or false"),
        ({**A_PO, "filterByOrgId": "true"}, "does not support"),
        ({**A_PO, "filterByOrgId": "false"}, "does not support"),
        ({**A_VO, "schoolPeriodId": "2025"}, "schoolPeriodId"),
        ({**A_VO, "schoolPeriodId": "2024-2026"}, "consecutive"),
        ({**A_VO, "schoolPeriodId": "0badc0de-0000-4000-8000-00000000ffff"}, "Unknown schoolPeriodId"),
        ({**A_VO, "orgid": "x"}, "Unknown query parameter"),
        ({"orgId": "", "orgIdType": "OIE_CODE"}, "without a value"),
    ],
)
def test_query_rules_are_enforced_with_400(eduv_standin: EduVStandIn, params: dict, fragment: str) -> None:
    message = refused(employees(eduv_standin, token(eduv_standin), **params), 400)
    assert fragment in message


def test_a_repeated_parameter_is_400(eduv_standin: EduVStandIn) -> None:
    answer = requests.get(
        f"{eduv_standin.url}/employees?orgId=12AB&orgId=13AB&orgIdType=OIE_CODE",
        headers={"Authorization": f"Bearer {token(eduv_standin)}"},
        timeout=5,
    )
    assert "more than once" in refused(answer, 400)


def _names(answer: requests.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [e["familyName"] for e in answer.json()]


def test_sector_defaults_and_filter_by_org_id(eduv_standin: EduVStandIn) -> None:
    bearer = token(eduv_standin)
    # PO defaults to filtered: only the school's own employees
    assert _names(employees(eduv_standin, bearer, **A_PO)) == ["Family1", "Family2"]
    # VO defaults to the whole board (E2 works in both schools and comes once)
    assert _names(employees(eduv_standin, bearer, **A_VO)) == ["Family1", "Family2", "Family3", "Family5"]
    assert _names(employees(eduv_standin, bearer, **A_VO, filterByOrgId="false")) == [
        "Family1", "Family2", "Family3", "Family5"
    ]  # fmt: skip
    assert _names(employees(eduv_standin, bearer, **A_VO, filterByOrgId="true")) == [
        "Family2", "Family3", "Family5"
    ]  # fmt: skip


def test_org_master_id_covers_the_board_and_allows_filter_false(eduv_standin: EduVStandIn) -> None:
    bearer = token(eduv_standin)
    assert _names(employees(eduv_standin, bearer, orgMasterId=OAB_A)) == [
        "Family1", "Family2", "Family3", "Family5"
    ]  # fmt: skip
    assert _names(employees(eduv_standin, bearer, orgMasterId=OAB_B, filterByOrgId="false")) == ["Family4"]


def test_school_period_keeps_overlapping_roles_only(eduv_standin: EduVStandIn) -> None:
    bearer = token(eduv_standin)
    answer = employees(eduv_standin, bearer, **A_VO, filterByOrgId="true", schoolPeriodId="2025-2026")
    served = answer.json()
    assert [e["familyName"] for e in served] == ["Family2", "Family3"]  # E5's only role ended in 2020
    assert served[1]["organisationRoles"] == [E3["organisationRoles"][1]]  # the 2018-2019 role is dropped
    eduv_standin.add_period(PERIOD_UUID, begin=date(2019, 1, 1), end=date(2019, 6, 1))
    by_uuid = employees(
        eduv_standin, bearer, **A_VO, filterByOrgId="true", schoolPeriodId=PERIOD_UUID.upper()
    )
    assert _names(by_uuid) == ["Family3", "Family5"]


def test_the_full_employee_shape_is_served_unchanged_and_streamed(eduv_standin: EduVStandIn) -> None:
    answer = employees(eduv_standin, token(eduv_standin), orgMasterId=OAB_B)
    assert answer.headers["Transfer-Encoding"] == "chunked"
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == [E4]
    assert answer.json()[0]["status"] == "tobedeleted"
    assert employees(eduv_standin, token(eduv_standin), **A_PO).json() == [E1, E2]
    assert employees(eduv_standin, token(eduv_standin), **A_VO, filterByOrgId="true").json() == [E2, E3, E5]


def test_a_school_with_no_employees_answers_an_empty_list(eduv_standin: EduVStandIn) -> None:
    eduv_standin.add_school("empty", oab_id="oab-empty", org_ids=[("DD_ID", "DD-1")])
    assert employees(eduv_standin, token(eduv_standin), orgId="DD-1", orgIdType="DD_ID").json() == []


# -- knobs ---------------------------------------------------------------------------------------
def test_fault_knobs_give_429_500_and_dropped_connections(eduv_public_pem: bytes) -> None:
    with populate(EduVStandIn(Knobs(share_429=1.0)), eduv_public_pem) as standin:
        answer = employees(standin, "x", **A_VO)
        assert answer.status_code == 429 and "Retry-After" in answer.headers
    with populate(EduVStandIn(Knobs(share_500=1.0)), eduv_public_pem) as standin:
        assert employees(standin, "x", **A_VO).status_code == 500
    with populate(EduVStandIn(Knobs(share_drop=1.0)), eduv_public_pem) as standin:
        with pytest.raises(requests.ConnectionError):
            employees(standin, "x", **A_VO)
        assert standin.received[-1].status == 0
    with populate(EduVStandIn(Knobs(latency=0.2)), eduv_public_pem) as standin:
        started = time.monotonic()
        employees(standin, "x", **A_VO)
        assert time.monotonic() - started >= 0.2


def test_scripted_faults_come_in_order_then_normal_answers(eduv_standin: EduVStandIn) -> None:
    bearer = token(eduv_standin)
    eduv_standin.script_faults("429", "500", "cut")
    assert employees(eduv_standin, bearer, **A_VO).status_code == 429
    assert employees(eduv_standin, bearer, **A_VO).status_code == 500
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        employees(eduv_standin, bearer, **A_VO).json()
    assert employees(eduv_standin, bearer, **A_VO).status_code == 200


# -- provisioning from the generator and the demo ------------------------------------------------------
def test_load_generated_serves_the_generator_files(tmp_path: Path) -> None:
    from staff_pipeline.config import load_organisations
    from staff_pipeline.generator import generate

    organisations = load_organisations()
    generated = generate(tmp_path / "gen", 60, organisations=organisations)
    with EduVStandIn() as standin:
        standin.add_client(CLIENT_ID, secret=CLIENT_SECRET)
        with_ids = organisations[
            organisations["eduv_org_master_id"].notna() | organisations["eduv_org_id"].notna()
        ]
        assert standin.load_generated(organisations, generated.eduv_dir) == len(with_ids)
        bearer = token(standin)
        for row in with_ids.to_dict("records"):
            if (
                isinstance(row["eduv_org_id"], str) and row["sector"] == "PO"
            ):  # PO default: the school's own file
                answer = employees(
                    standin, bearer, orgId=row["eduv_org_id"], orgIdType=row["eduv_org_id_type"]
                )
                lines = (
                    (generated.eduv_dir / f"{row['school_key']}.jsonl")
                    .read_text(encoding="utf-8")
                    .splitlines()
                )
                assert answer.json() == [json.loads(line) for line in lines]
        # a school year keeps roles overlapping 1 Aug 2025 - 1 Aug 2026 and drops employees with none
        expected = []
        for line in (generated.eduv_dir / "lakeview-high.jsonl").read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            roles = [
                r for r in item["organisationRoles"]
                if r["beginDate"] < "2026-08-01" and r.get("endDate", "9999") > "2025-08-01"
            ]  # fmt: skip
            if roles:
                expected.append({**item, "organisationRoles": roles})
        answer = employees(standin, bearer, orgId="12AB", orgIdType="OIE_CODE", schoolPeriodId="2025-2026")
        assert answer.json() == expected and len(expected) >= 5


def test_seed_demo_registers_the_demo_client_and_schools() -> None:
    with EduVStandIn() as standin:
        lines = standin.seed_demo(people=30)
        assert any(DEMO_CLIENT_ID in line for line in lines)
        bearer = requests.post(
            f"{standin.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
            timeout=5,
        ).json()["access_token"]
        answer = employees(standin, bearer, orgId="12AB", orgIdType="OIE_CODE")
        assert answer.status_code == 200 and isinstance(answer.json(), list)
