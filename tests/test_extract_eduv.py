"""The Edu-V extract over real HTTP into a real DuckDB file: rules, errors, retries, lineage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from assets.extract_eduv import raw_eduv_employees
from staff_pipeline import warehouse
from staff_pipeline.clients.eduv import EduVClient, EduVResource
from staff_pipeline.extract import eduv as extract
from staff_pipeline.http import RetryPolicy
from staff_pipeline.resources import WarehouseResource
from staff_pipeline.settings import paths
from staff_pipeline.standins.common import Knobs, Response
from staff_pipeline.standins.eduv import EduVStandIn
from tests.fixtures_eduv import (
    CLIENT_ID,
    CLIENT_SECRET,
    E1,
    E2,
    E3,
    E4,
    FAST,
    JWT_CLIENT_ID,
    OAB_B,
    ORG_ROWS,
    populate,
    write_organisations,
)

ROW = {
    "school_key": "x",
    "lea_id": 1,
    "eduv_org_master_id": None,
    "eduv_org_id": None,
    "eduv_org_id_type": None,
    "eduv_filter_by_org_id": None,
    "eduv_supports_filter": False,
    "eduv_school_period_id": None,
}


def run(
    client: EduVClient, organisations: pd.DataFrame, run_id: str = "run-1", concurrency: int = 4
) -> list[extract.Landed]:
    queries = extract.school_queries(organisations)
    fetched = extract.fetch_all(
        client, queries, run_id=run_id, landing_dir=paths().landing, concurrency=concurrency
    )
    with warehouse.connect() as con:
        return extract.land(con, fetched, run_id)


def raw_employees(school_key: str, view: str = "raw_eduv_employees") -> list[dict]:
    with warehouse.connect() as con:
        rows = con.execute(
            f"SELECT employee FROM {view} WHERE school_key = ? ORDER BY extracted_at, element_no",
            [school_key],
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


def raw_path(school_key: str) -> str:
    with warehouse.connect() as con:
        return con.execute(
            "SELECT response_path FROM raw_eduv_requests WHERE school_key = ?", [school_key]
        ).fetchone()[0]


def by_school(landed: list[extract.Landed]) -> dict[str, extract.Landed]:
    return {r.school_key: r for r in landed}


# -- request rules, enforced before sending -------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"eduv_org_master_id": "m-1"}, {"orgMasterId": "m-1"}),
        ({"eduv_org_master_id": "m-1", "eduv_filter_by_org_id": False}, {"orgMasterId": "m-1"}),
        ({"eduv_org_id": "12AB", "eduv_org_id_type": "OIE_CODE"}, {"orgId": "12AB", "orgIdType": "OIE_CODE"}),
        (
            {"eduv_org_id": "12AB", "eduv_org_id_type": "OIE_CODE", "eduv_filter_by_org_id": False,
             "eduv_supports_filter": True, "eduv_school_period_id": "2025-2026"},
            {"orgId": "12AB", "orgIdType": "OIE_CODE", "filterByOrgId": "false",
             "schoolPeriodId": "2025-2026"},
        ),
        ({}, None),
    ],
)  # fmt: skip
def test_request_params_from_a_config_row(row: dict, expected: dict | None) -> None:
    assert extract.request_params({**ROW, **row}) == expected


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"eduv_org_master_id": "m-1", "eduv_org_id": "12AB", "eduv_org_id_type": "OIE_CODE"}, "exclusive"),
        ({"eduv_org_id": "12AB"}, "together"),
        ({"eduv_org_id_type": "OIE_CODE"}, "together"),
        ({"eduv_org_id": "12AB", "eduv_org_id_type": "BRIN"}, "is not one of"),
        ({"eduv_org_master_id": "m-1", "eduv_filter_by_org_id": True}, "empty or false"),
        ({"eduv_org_id": "1", "eduv_org_id_type": "V_ID", "eduv_filter_by_org_id": True}, "does not support"),
        ({"eduv_org_id": "1", "eduv_org_id_type": "V_ID", "eduv_filter_by_org_id": "maybe"}, "true, false"),
        ({"eduv_org_id": "1", "eduv_org_id_type": "V_ID", "eduv_school_period_id": "25/26"}, "2024-2025"),
        (
            {"eduv_org_id": "1", "eduv_org_id_type": "V_ID", "eduv_school_period_id": "2025-2027"},
            "consecutive",
        ),
    ],
)
def test_request_rules_are_enforced_before_sending(row: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        extract.request_params({**ROW, **row})


def test_a_bad_config_line_is_named_by_file_line_and_school() -> None:
    frame = pd.DataFrame(
        [
            {**ROW, "school_key": "good", "eduv_org_master_id": "m-1"},
            {**ROW, "school_key": "bad", "eduv_org_id": "12AB"},
        ]
    )
    with pytest.raises(
        extract.EduVConfigError, match=r"organisations.csv line 3 \(school bad\): eduv_org_id"
    ):
        extract.school_queries(frame)


def test_schools_without_eduv_ids_are_not_queried() -> None:
    frame = pd.DataFrame(
        [{**ROW, "school_key": "sis-only"}, {**ROW, "school_key": "m", "eduv_org_master_id": "m-1"}]
    )
    assert [(q.school_key, q.line, q.params) for q in extract.school_queries(frame)] == [
        ("m", 3, {"orgMasterId": "m-1"})
    ]


# -- end to end over HTTP into DuckDB ----------------------------------------------------------------
def test_raw_rows_equal_what_was_served_with_lineage(tmp_path: Path, eduv_client: EduVClient) -> None:
    organisations = write_organisations(
        tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["a-vo"], ORG_ROWS["b-po"]
    )
    landed = by_school(run(eduv_client, organisations))
    assert all(r.ok for r in landed.values())
    assert raw_employees("a-po") == [E1, E2]  # PO default: filtered to the school
    # a-vo: filterByOrgId=true and school period 2025-2026 (E3's 2018 role dropped, E5 not in period)
    assert raw_employees("a-vo") == [E2, {**E3, "organisationRoles": E3["organisationRoles"][1:]}]
    assert raw_employees("b-po") == [E4]
    with warehouse.connect() as con:
        requests = con.execute(
            "SELECT school_key, params, http_status, ok, status_message, employee_count, bytes, sha256, "
            "response_path, run_id FROM raw_eduv_requests ORDER BY school_key"
        ).df()
        elements = con.execute(
            "SELECT element_no FROM raw_eduv_employees WHERE school_key = 'a-po' ORDER BY element_no"
        ).fetchall()
    assert elements == [(1,), (2,)]
    a_vo = requests.set_index("school_key").loc["a-vo"]
    assert json.loads(a_vo["params"]) == {
        "orgId": "12AB", "orgIdType": "OIE_CODE", "filterByOrgId": "true", "schoolPeriodId": "2025-2026"
    }  # fmt: skip
    assert json.loads(requests.set_index("school_key").loc["b-po"]["params"]) == {"orgMasterId": OAB_B}
    for row in requests.itertuples():
        body = Path(row.response_path).read_bytes()
        assert row.http_status == 200 and row.ok and row.run_id == "run-1" and pd.isna(row.status_message)
        assert row.bytes == len(body) and row.sha256 == hashlib.sha256(body).hexdigest()
        assert row.employee_count == len(json.loads(body))
    with warehouse.connect() as con:
        for path, text in con.execute(
            "SELECT response_path, employee FROM raw_eduv_employees JOIN raw_eduv_requests USING (request_id)"
        ).fetchall():
            assert text.encode() in Path(path).read_bytes()  # the element verbatim, not re-serialised
        assert Path(row.response_path).is_relative_to(paths().landing / "eduv" / "run-1")


def test_private_key_jwt_client_lands_the_same_rows(
    tmp_path: Path, eduv_standin: EduVStandIn, eduv_private_pem: str
) -> None:
    organisations = write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"])
    with EduVClient(eduv_standin.url, JWT_CLIENT_ID, private_key=eduv_private_pem, policy=FAST) as client:
        assert run(client, organisations)[0].ok
    assert raw_employees("a-po") == [E1, E2]
    token_calls = eduv_standin.requests_to("POST", "/oauth/token")
    assert len(token_calls) == 1 and b"client_assertion=" in token_calls[0].body
    assert "authorization" not in token_calls[0].headers


def test_client_secret_travels_in_basic_auth_only(tmp_path: Path, eduv_standin, eduv_client) -> None:
    run(eduv_client, write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"]))
    token_call = eduv_standin.requests_to("POST", "/oauth/token")[0]
    assert token_call.headers["authorization"].startswith("Basic ")
    assert CLIENT_SECRET.encode() not in token_call.body


# -- errors: message surfaced, school named, others landed -------------------------------------------
def test_403_and_404_surface_the_api_message_and_the_others_land(tmp_path: Path, eduv_client) -> None:
    unknown = ORG_ROWS["b-po"].replace(OAB_B, "ffffffff-0000-4000-8000-000000000000")
    organisations = write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["c-po"], unknown)
    landed = by_school(run(eduv_client, organisations))
    assert landed["a-po"].ok and raw_employees("a-po") == [E1, E2]
    assert landed["c-po"].http_status == 403 and not landed["c-po"].ok
    assert landed["c-po"].problem == "c-po: HTTP 403: The school has not given consent to client roster-sync"
    assert landed["b-po"].http_status == 404 and "No school known with orgMasterId" in landed["b-po"].problem
    with warehouse.connect() as con:
        stored = dict(
            con.execute("SELECT school_key, status_message FROM raw_eduv_requests WHERE NOT ok").fetchall()
        )
        assert (
            con.execute("SELECT count(*) FROM raw_eduv_employees WHERE school_key <> 'a-po'").fetchone()[0]
            == 0
        )
    assert stored["c-po"] == "The school has not given consent to client roster-sync"
    assert Path(landed["c-po"].response_path).read_bytes().startswith(b'{"status": 403')  # body kept


def test_400_from_the_source_is_surfaced(tmp_path: Path, eduv_client: EduVClient) -> None:
    # the config claims a-po's source supports filtering; the source disagrees
    line = ORG_ROWS["a-po"].replace("V_ID,,false,", "V_ID,true,true,")
    landed = run(eduv_client, write_organisations(tmp_path / "cfg", line))[0]
    assert (landed.http_status, landed.ok) == (400, False)
    assert landed.problem == "a-po: HTTP 400: This source does not support filterByOrgId"


def test_401_on_employees_refreshes_the_token_once(tmp_path: Path, eduv_standin, eduv_client) -> None:
    organisations = write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"])
    assert run(eduv_client, organisations)[0].ok
    eduv_standin.tokens.expire_all()
    assert run(eduv_client, organisations, "run-2")[0].ok
    statuses = [r.status for r in eduv_standin.requests_to("GET", "/employees")]
    assert statuses == [200, 401, 200]
    assert len(eduv_standin.requests_to("POST", "/oauth/token")) == 2


def test_a_401_after_the_refresh_is_surfaced(tmp_path: Path, eduv_public_pem: bytes) -> None:
    with populate(EduVStandIn(Knobs(token_ttl=0.0)), eduv_public_pem) as standin:  # every token born expired
        with EduVClient(standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=FAST) as client:
            landed = run(client, write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"]))[0]
        assert [r.status for r in standin.requests_to("GET", "/employees")] == [401, 401]
    assert landed.problem == "a-po: HTTP 401: Access token is missing, invalid or expired"


def test_a_wrong_secret_fails_every_school_without_leaking_it(tmp_path: Path, eduv_standin) -> None:
    wrong = "wrong-secret-9d2c"
    with EduVClient(eduv_standin.url, CLIENT_ID, client_secret=wrong, policy=FAST) as client:
        landed = run(client, write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["b-po"]))
    assert [r.ok for r in landed] == [False, False]
    assert all("HTTP 401 invalid_client" in r.problem for r in landed)
    with warehouse.connect() as con:
        dump = str(con.execute("SELECT * FROM raw_eduv_requests").fetchall())
    assert wrong not in dump and CLIENT_SECRET not in dump and wrong not in str([r.problem for r in landed])


@pytest.mark.parametrize("fault", ["429", "500", "drop", "cut"])
def test_a_transient_fault_is_retried_and_the_school_lands(
    tmp_path: Path, eduv_standin: EduVStandIn, eduv_client: EduVClient, fault: str
) -> None:
    eduv_client.access_token()
    eduv_standin.script_faults(fault)
    landed = run(eduv_client, write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"]))[0]
    assert landed.ok and raw_employees("a-po") == [E1, E2]
    statuses = [r.status for r in eduv_standin.requests_to("GET", "/employees")]
    assert statuses == [{"429": 429, "500": 500, "drop": 0, "cut": 200}[fault], 200]


def test_retries_are_bounded(tmp_path: Path, eduv_public_pem: bytes) -> None:
    with populate(EduVStandIn(), eduv_public_pem) as standin:
        policy = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.02)
        with EduVClient(standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=policy) as client:
            client.access_token()
            standin.script_faults("drop", "drop", "drop", "drop")
            landed = run(client, write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"]))[0]
        assert len(standin.requests_to("GET", "/employees")) == 3
    assert landed.http_status is None and "no answer after 3 attempts" in landed.problem


def test_a_disk_error_for_one_school_fails_that_school_and_the_others_land(
    tmp_path: Path, eduv_client
) -> None:
    long_key = "a" * 240  # a valid school_key, but its landing file name is too long for the file system
    lines = [ORG_ROWS["a-po"].replace("a-po,", f"{long_key},", 1), ORG_ROWS["b-po"]]
    landed = by_school(run(eduv_client, write_organisations(tmp_path / "cfg", *lines)))
    assert landed["b-po"].ok and raw_employees("b-po") == [E4]
    failed = landed[long_key]
    assert (failed.ok, failed.http_status, failed.response_path) == (False, None, None)
    assert f"Edu-V employees of school {long_key}: OSError: " in failed.problem
    with warehouse.connect() as con:
        assert con.execute(
            "SELECT ok FROM raw_eduv_requests WHERE school_key = ?", [long_key]
        ).fetchall() == [(False,)]


def test_a_token_granted_fewer_scopes_fails_every_school_and_keeps_the_snapshot(
    tmp_path: Path, eduv_standin: EduVStandIn
) -> None:
    organisations = write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["b-po"])
    with EduVClient(eduv_standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=FAST) as client:
        assert all(r.ok for r in run(client, organisations, "night-1"))
    # the board withdrew the roles and communication authorisation: the source grants basic only
    eduv_standin.add_client(
        CLIENT_ID, secret=CLIENT_SECRET, scopes=["eduv.employee.basic"], narrow_scope=True
    )
    with EduVClient(eduv_standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=FAST) as client:
        landed = run(client, organisations, "night-2")
    assert [(r.ok, r.http_status) for r in landed] == [(False, None), (False, None)]
    for r in landed:
        assert r.problem == (
            f"{r.school_key}: Edu-V token for client {CLIENT_ID} was granted without the scope(s) "
            "eduv.employee.communication eduv.employee.roles: its answers would lack those attributes, "
            "so it is not used"
        )
    assert (
        len(eduv_standin.requests_to("POST", "/oauth/token")) == 2
    )  # night 2: one token, not one per school
    assert len(eduv_standin.requests_to("GET", "/employees")) == 2  # only night 1 asked for employees
    assert raw_employees("a-po", "raw_eduv_employees_latest") == [E1, E2]  # staging keeps the full answer
    assert raw_employees("b-po", "raw_eduv_employees_latest") == [E4]


class OddBodies(EduVStandIn):
    """Answers 200 with whatever body a test registers for an orgId (HTML pages, objects, cut JSON)."""

    def __init__(self, bodies: dict[str, tuple[bytes, str]]) -> None:
        super().__init__()
        self.bodies = bodies

    def handle(self, request):
        if request.path == "/employees" and request.arg("orgId") in self.bodies:
            body, content_type = self.bodies[request.arg("orgId")]
            return Response(200, body, content_type=content_type)
        return super().handle(request)


def test_a_200_that_is_not_a_json_array_is_a_failed_request(tmp_path: Path, eduv_public_pem: bytes) -> None:
    bodies = {
        "04XY00": (b"<html><body>Service maintenance</body></html>", "text/html"),
        "bp-1": (b'{"employees": []}', "application/json"),
        "LAS-1": (b'[{"givenName": "Half"}, {"givenName": ', "application/json"),
        "DD-1": (b"", "application/json"),
    }
    lines = [
        ORG_ROWS["a-po"],
        ORG_ROWS["b-po"].replace(f"{OAB_B},,,", ",bp-1,BP_ID,"),
        ORG_ROWS["c-po"],
        "d-po,D,100004,Board D,1000040001,PO,false,,DD-1,DD_ID,,false,,DPO,delta,801",
    ]
    with populate(OddBodies(bodies), eduv_public_pem) as standin:
        standin.add_school("d-po", oab_id="oab-d", org_ids=[("DD_ID", "DD-1")])
        with EduVClient(standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=FAST) as client:
            landed = by_school(run(client, write_organisations(tmp_path / "cfg", *lines)))
    assert not any(r.ok for r in landed.values())
    assert "text/html" in landed["a-po"].problem and "first character is '<'" in landed["a-po"].problem
    assert "first character is '{'" in landed["b-po"].problem
    assert "Malformed JSON" in landed["c-po"].problem
    assert "empty body" in landed["d-po"].problem
    assert Path(landed["a-po"].response_path).read_bytes() == bodies["04XY00"][0]  # kept as received
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM raw_eduv_employees").fetchone()[0] == 0


def test_a_failed_night_keeps_the_previous_snapshot_in_latest(
    tmp_path: Path, eduv_standin, eduv_client
) -> None:
    organisations = write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["b-po"])
    run(eduv_client, organisations, "night-1")
    eduv_standin.add_employees("a-po", [E3])
    eduv_standin.script_faults("500", "500", "500", "500")  # a-po (asked first) fails for good
    landed = by_school(run(eduv_client, organisations, "night-2", concurrency=1))
    assert (landed["a-po"].ok, landed["b-po"].ok) == (False, True)
    with warehouse.connect() as con:
        latest = dict(
            con.execute(
                "SELECT school_key, any_value(run_id) FROM raw_eduv_employees_latest GROUP BY 1"
            ).fetchall()
        )
        history = con.execute("SELECT count(DISTINCT request_id) FROM raw_eduv_requests").fetchone()[0]
    assert latest == {"a-po": "night-1", "b-po": "night-2"}
    assert raw_employees("a-po", "raw_eduv_employees_latest") == [E1, E2]
    assert history == 4  # append-only: both nights' requests are kept


# -- the Dagster asset --------------------------------------------------------------------------------
def _resources(standin: EduVStandIn) -> dict:
    return {
        "eduv": EduVResource(base_url=standin.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                             backoff_base=0.01),
        "warehouse": WarehouseResource(),
    }  # fmt: skip


def test_asset_lands_and_reports_metadata(tmp_path: Path, monkeypatch, eduv_standin: EduVStandIn) -> None:
    monkeypatch.setenv("STAFF_CONFIG_DIR", str(tmp_path / "cfg"))
    write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["b-po"])
    result = materialize([raw_eduv_employees], resources=_resources(eduv_standin))
    assert result.success
    metadata = result.asset_materializations_for_node("raw_eduv_employees")[0].metadata
    assert metadata["schools_queried"].value == 2 and metadata["schools_failed"].value == 0
    assert metadata["rows_landed"].value == 3
    schools = [line.split("|")[1:-1] for line in metadata["schools"].value.splitlines()[2:]]
    assert [[cell.strip() for cell in row[:6]] for row in schools] == [
        ["100001", "a-po", "200", "True", "2", str(Path(raw_path("a-po")).stat().st_size)],
        ["100002", "b-po", "200", "True", "1", str(Path(raw_path("b-po")).stat().st_size)],
    ]
    assert "Özlem" in metadata["preview"].value
    assert CLIENT_SECRET not in str(metadata)


def test_asset_fails_naming_the_failed_school_after_landing_the_rest(
    tmp_path: Path, monkeypatch, eduv_standin: EduVStandIn
) -> None:
    monkeypatch.setenv("STAFF_CONFIG_DIR", str(tmp_path / "cfg"))
    write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["c-po"])
    result = materialize([raw_eduv_employees], resources=_resources(eduv_standin), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "failed for 1 of 2 schools" in str(failure.event_specific_data.error)
    assert "c-po: HTTP 403: The school has not given consent" in str(failure.event_specific_data.error)
    assert raw_employees("a-po") == [E1, E2]


class EchoesToken(EduVStandIn):
    """Refuses every employees request with a statusMessage that quotes the bearer token it got."""

    def handle(self, request):
        if request.path == "/employees":
            message = f"Token rejected: {request.headers.get('authorization')} is not valid here"
            return Response.json(403, {"status": 403, "statusMessage": message})
        return super().handle(request)


def test_a_status_message_echoing_the_access_token_is_redacted(
    tmp_path: Path, monkeypatch, caplog, eduv_public_pem: bytes
) -> None:
    monkeypatch.setenv("STAFF_CONFIG_DIR", str(tmp_path / "cfg"))
    write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["b-po"])
    with populate(EchoesToken(), eduv_public_pem) as standin, caplog.at_level("DEBUG"):
        result = materialize([raw_eduv_employees], resources=_resources(standin), raise_on_error=False)
        tokens = {r.headers["authorization"].split()[1] for r in standin.requests_to("GET", "/employees")}
    assert not result.success and len(tokens) == 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    with warehouse.connect() as con:
        messages = [m for (m,) in con.execute("SELECT status_message FROM raw_eduv_requests").fetchall()]
    assert messages == ["Token rejected: Bearer <redacted> is not valid here"] * 2
    assert "a-po: HTTP 403: Token rejected: Bearer <redacted>" in str(failure.event_specific_data.error)
    (token,) = tokens
    events = str([(e.message, e.event_specific_data) for e in result.all_events])
    assert token not in events and token not in caplog.text
