"""The LinkIt! stand-in over real HTTP: signed URLs, fields and limits, pairing, XML, edits; and the
client's signing, XML safety and retries against it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
import requests

from staff_pipeline.clients.linkit import (
    LinkItClient,
    LinkItError,
    LinkItResource,
    UnsafeXmlError,
    canonical_request,
    format_timestamp,
    hmac_sha256_signer,
    parse_timestamp,
    parse_xml,
)
from staff_pipeline.http import RetryPolicy
from staff_pipeline.standins.common import Knobs
from staff_pipeline.standins.linkit import LinkItStandIn
from staff_pipeline.vocab import LINKIT_LIMITS
from tests.fixtures_linkit import LINKIT_KEYS

ACCESS, PRIVATE = LINKIT_KEYS["lakeview"]
JOHN = {"UserName": "JohnSmith", "LocalCode": "JS12345", "Role": "Teacher"}


def _signed_url(base: str, path: str, *, access: str = ACCESS, private: str = PRIVATE, when=None) -> str:
    params = [("timestamp", format_timestamp(when or datetime.now(UTC))), ("accesskey", access)]
    tag = hmac_sha256_signer(canonical_request(path, params), private)
    return f"{base}{path}?{urlencode([*params, ('tag', tag)])}"


def test_timestamp_format_is_gmt_unpadded_12_hour() -> None:
    moment = datetime(2013, 5, 1, 17, 10, 5, tzinfo=UTC)
    assert format_timestamp(moment) == "5/1/2013 5:10:5 PM"
    assert format_timestamp(datetime(2013, 6, 1, 0, 3, 9, tzinfo=UTC)) == "6/1/2013 12:3:9 AM"
    assert parse_timestamp("6/1/2013 3:43:42 PM") == datetime(2013, 6, 1, 15, 43, 42, tzinfo=UTC)


def test_create_answers_the_reference_envelope(linkit_client: LinkItClient, linkit_standin) -> None:
    user = linkit_client.create_staff(JOHN)
    assert user["Role"] == "teacher"  # sent "Teacher": accepted case-insensitively, answered lower-case
    assert user["LastName"] == "JohnSmith"  # defaults to the username
    assert user["FirstName"] == "" and user["EmailAddress"] is None and user["Status"] == "Active"
    assert user["CreatedDate"] == user["ModifiedDate"]
    datetime.strptime(user["CreatedDate"], "%m/%d/%Y %I:%M:%S %p")
    raw = linkit_standin.requests_to("POST", "/staffs")[0]
    assert set(raw.query) == {"timestamp", "accesskey", "tag"}


def test_bad_tag_unknown_key_and_stale_timestamp_are_refused(linkit_standin) -> None:
    base = linkit_standin.url
    good = _signed_url(base, "/staffs")
    tampered = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    cases = {
        "Invalid tag": tampered,
        "Invalid access key": _signed_url(base, "/staffs", access="AK-nobody"),
        "Request expired": _signed_url(base, "/staffs", when=datetime.now(UTC) - timedelta(minutes=6)),
        "required": f"{base}/staffs?accesskey={ACCESS}",
    }
    for error, url in cases.items():
        answer = requests.post(url, json=JOHN, timeout=5)
        assert answer.status_code == 401, error
        assert answer.json()["Result"] == "ERROR" and error in answer.json()["Error"]
    assert linkit_standin.users("lakeview") == []
    # A tag made with the wrong private key is as bad as a tampered one.
    wrong = _signed_url(base, "/staffs", private="not-the-key")
    assert requests.post(wrong, json=JOHN, timeout=5).json()["Error"] == "Invalid tag"


def test_client_with_a_skewed_clock_gets_a_clear_stale_error(linkit_standin) -> None:
    late = LinkItClient(
        linkit_standin.url, ACCESS, PRIVATE, clock=lambda: datetime.now(UTC) - timedelta(hours=1)
    )
    with pytest.raises(LinkItError, match="HTTP 401: Request expired") as caught:
        late.create_staff(JOHN)
    assert ACCESS not in str(caught.value) and "tag=" not in str(caught.value)


@pytest.mark.parametrize("field", sorted(LINKIT_LIMITS))
def test_field_limits_are_enforced(linkit_client: LinkItClient, field: str) -> None:
    limit = LINKIT_LIMITS[field]
    body = {**JOHN, field: "x" * (limit + 1)}
    with pytest.raises(LinkItError, match=f"{field} exceeds {limit}") as caught:
        linkit_client.create_staff(body)
    assert caught.value.status == 200  # business errors are HTTP 200 with Result ERROR
    assert linkit_client.create_staff({**JOHN, field: "x" * limit})[field] == "x" * limit


def test_required_fields_role_values_and_schools(linkit_client: LinkItClient) -> None:
    for body, error in [
        ({"LocalCode": "A1", "Role": "TEACHER"}, "UserName is required"),
        ({"UserName": "a1", "Role": "TEACHER"}, "LocalCode is required"),
        ({"UserName": "a1", "LocalCode": "A1"}, "Role is required"),
        ({**JOHN, "Role": "PRINCIPAL"}, "Invalid Role"),
        ({**JOHN, "SchoolID": "five"}, "SchoolID must be an integer"),
        ({**JOHN, "SchoolID": 601}, "not a school of this district"),
        ({**JOHN, "Nickname": "Jo"}, "Unknown field"),
    ]:
        with pytest.raises(LinkItError, match=error):
            linkit_client.create_staff(body)
    admin = linkit_client.create_staff({**JOHN, "Role": "district admin", "SchoolID": 501})
    assert admin["Role"] == "district admin" and admin["Schools"] == [
        {"SchoolID": 501, "SchoolName": "School 501"}
    ]


def test_username_and_local_code_are_uniquely_paired(linkit_client: LinkItClient, linkit_standin) -> None:
    linkit_client.create_staff(JOHN)
    for body, error in [
        ({**JOHN, "LocalCode": "OTHER"}, "UserName already exists"),
        ({**JOHN, "UserName": "johnsmith", "LocalCode": "OTHER"}, "UserName already exists"),
        ({**JOHN, "UserName": "jsmith2"}, "LocalCode already exists"),
    ]:
        with pytest.raises(LinkItError, match=error) as caught:
            linkit_client.create_staff(body)
        assert caught.value.already_exists and caught.value.status == 200
    assert len(linkit_standin.users("lakeview")) == 1
    # Another district may use the same pair.
    riverside = LinkItClient(linkit_standin.url, *LINKIT_KEYS["riverside"])
    assert riverside.create_staff(JOHN)["UserName"] == "JohnSmith"


def test_lookup_update_schools_and_deactivate(linkit_client: LinkItClient, linkit_standin) -> None:
    created = linkit_client.create_staff({**JOHN, "SchoolID": 501})
    uid = created["UserID"]
    assert [u["UserID"] for u in linkit_client.find_staff(local_code="JS12345")] == [uid]
    assert [u["UserID"] for u in linkit_client.find_staff(username="JOHNSMITH")] == [uid]
    assert linkit_client.find_staff(local_code="JS12345", username="other") == []
    updated = linkit_client.update_staff(uid, {"FirstName": "John", "EmailAddress": "js@example.org"})
    assert (updated["FirstName"], updated["EmailAddress"], updated["Role"]) == (
        "John",
        "js@example.org",
        "teacher",
    )
    assert [s["SchoolID"] for s in linkit_client.assign_school(uid, 502)["Schools"]] == [501, 502]
    assert [s["SchoolID"] for s in linkit_client.unassign_school(uid, 501)["Schools"]] == [502]
    with pytest.raises(LinkItError, match="not a school of this district"):
        linkit_client.assign_school(uid, 603)
    assert linkit_client.update_staff(uid, {"Status": "Inactive"})["Status"] == "Inactive"
    with pytest.raises(LinkItError, match="Invalid Status"):
        linkit_client.update_staff(uid, {"Status": "Deleted"})
    other = linkit_client.create_staff({"UserName": "ann", "LocalCode": "A1", "Role": "TEACHER"})
    with pytest.raises(LinkItError, match="LocalCode already exists"):
        linkit_client.update_staff(other["UserID"], {"LocalCode": "JS12345"})
    # Another district's account is invisible through this key.
    riverside = LinkItClient(linkit_standin.url, *LINKIT_KEYS["riverside"])
    with pytest.raises(LinkItError, match="HTTP 404") as caught:
        riverside.update_staff(uid, {"Status": "Inactive"})
    assert caught.value.status == 404


def test_xml_request_body_gets_an_xml_answer(linkit_standin) -> None:
    body = (
        '<UserElement xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"> <UserName>JohnSmith</UserName> '
        "<LocalCode>JS12345</LocalCode> <Role>Teacher</Role> </UserElement>"
    )
    answer = requests.post(_signed_url(linkit_standin.url, "/staffs"), data=body, timeout=5)
    assert answer.headers["Content-Type"].startswith("application/xml")
    root = parse_xml(answer.text)
    assert root.tag == "Response" and root.findtext("Result") == "SUCCESS"
    assert root.findtext("Data/User/Role") == "teacher" and root.findtext("Data/User/LastName") == "JohnSmith"
    evil = '<!DOCTYPE x [<!ENTITY e "boom">]><UserElement><UserName>&e;</UserName></UserElement>'
    refused = requests.post(_signed_url(linkit_standin.url, "/staffs"), data=evil, timeout=5)
    assert refused.status_code == 400 and "<Result>ERROR</Result>" in refused.text


def test_client_reads_xml_answers(linkit_standin) -> None:
    client = LinkItClient(linkit_standin.url, ACCESS, PRIVATE, response_format="xml")
    user = client.create_staff({**JOHN, "SchoolID": 501})
    assert user["UserID"] > 0 and user["Role"] == "teacher"
    assert client.assign_school(user["UserID"], 502)["Schools"][1] == {
        "SchoolID": 502,
        "SchoolName": "School 502",
    }
    assert [u["LocalCode"] for u in client.find_staff(local_code="JS12345")] == ["JS12345"]
    assert client.find_staff(local_code="nobody") == []
    with pytest.raises(LinkItError, match="UserName already exists"):
        client.create_staff(JOHN)
    assert all("xml" in r.headers["accept"] for r in linkit_standin.received)


def test_xml_with_entities_is_refused_before_parsing() -> None:
    for text in (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>',
        '<!doctype r SYSTEM "file:///etc/passwd"><r/>',
        "<r><!ENTITY x 'y'></r>",
    ):
        with pytest.raises(UnsafeXmlError):
            parse_xml(text)
    assert parse_xml("<r><a>1</a></r>").findtext("a") == "1"


def test_pluggable_signer_is_verified_by_the_standin() -> None:
    def reversed_signer(canonical: str, key: str) -> str:
        return hmac_sha256_signer(canonical[::-1], key)

    with LinkItStandIn(signer=reversed_signer) as standin:
        standin.add_district("lakeview", ACCESS, PRIVATE, [501])
        assert LinkItClient(standin.url, ACCESS, PRIVATE, signer=reversed_signer).create_staff(JOHN)["UserID"]
        with pytest.raises(LinkItError, match="Invalid tag"):
            LinkItClient(standin.url, ACCESS, PRIVATE).find_staff(local_code="JS12345")


def test_retries_sign_each_attempt_afresh_under_injected_faults() -> None:
    knobs = Knobs(share_500=0.3, share_429=0.2, share_drop=0.1, seed=7)
    with LinkItStandIn(knobs=knobs) as standin:
        standin.add_district("lakeview", ACCESS, PRIVATE, [501])
        client = LinkItClient(
            standin.url, ACCESS, PRIVATE, policy=RetryPolicy(attempts=8, backoff_base=0.001)
        )
        for n in range(20):
            client.create_staff({"UserName": f"u{n}", "LocalCode": f"L{n}", "Role": "TEACHER"})
        assert len(standin.users("lakeview")) == 20
        assert {r.status for r in standin.received} >= {0, 200, 429, 500}
        for received in standin.received:  # every attempt carries a tag made for its own timestamp
            params = [(k, v[0]) for k, v in received.query.items()]
            assert received.query["tag"][0] == hmac_sha256_signer(
                canonical_request(received.path, params), PRIVATE
            )


def test_seed_demo_provisions_the_configured_districts() -> None:
    with LinkItStandIn() as standin:
        lines = standin.seed_demo()
        assert [line.split(":")[0] for line in lines] == [
            "district lakeview",
            "district riverside",
            "district northwoods",
        ]
        assert "LINKIT_ACCESS_KEY_LAKEVIEW=" in lines[0] and "[501, 502]" in lines[0]
        access, private = (part.split("=")[1] for part in lines[0].split()[2:4])
        assert LinkItClient(standin.url, access, private).find_staff(local_code="x") == []


def test_resource_prefers_per_district_keys_and_names_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    resource = LinkItResource(
        base_url="http://127.0.0.1:9", access_key="AK-default", private_key="PK-default"
    )
    monkeypatch.setenv("LINKIT_ACCESS_KEY_LAKEVIEW", "AK-lake")
    monkeypatch.setenv("LINKIT_PRIVATE_KEY_LAKEVIEW", "PK-lake")
    assert resource.keys_for("lakeview") == ("AK-lake", "PK-lake")
    assert resource.keys_for("riverside") == ("AK-default", "PK-default")
    with pytest.raises(ValueError, match="LINKIT_ACCESS_KEY_RIVERSIDE") as caught:
        LinkItResource(base_url="http://127.0.0.1:9").client_for("riverside")
    assert "PK-" not in str(caught.value)
    with pytest.raises(ValueError, match="unknown LinkIt signer"):
        LinkItResource(base_url="http://127.0.0.1:9", signer="md5").client_for("lakeview")
    with pytest.raises(ValueError, match="response_format"):
        LinkItResource(base_url="http://127.0.0.1:9", response_format="csv").client_for("lakeview")


def test_calls_reuse_keep_alive_connections_and_a_proxy_keeps_the_requests_session(
    linkit_standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = LinkItClient(linkit_standin.url, ACCESS, PRIVATE)
    try:
        client.create_staff(JOHN)
        for code in ("JS12345", "a b&c=d/é"):  # query values that need encoding are signed as sent
            client.find_staff(local_code=code)
        assert len(client._transport._idle) == 1  # one connection, reused for every call
    finally:
        client.close()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    proxied = LinkItClient("https://linkit.example", ACCESS, PRIVATE)
    assert proxied._transport is None and proxied.session.proxies["https"] == "http://proxy.example:3128"
    assert proxied.session.verify is not False


def test_a_base_url_with_a_path_is_signed_as_sent() -> None:
    """The tag signs the path on the wire: an API served under ``/api/v1`` checks ``/api/v1/staffs``."""
    with LinkItStandIn(base_path="/api/v1") as standin:
        standin.add_district("lakeview", ACCESS, PRIVATE, [501])
        client = LinkItClient(f"{standin.url}/api/v1", ACCESS, PRIVATE)
        try:
            assert client.create_staff(JOHN)["UserID"]
            assert client.find_staff(local_code="JS12345")[0]["UserName"] == "JohnSmith"
        finally:
            client.close()
        assert [r.path for r in standin.received] == ["/api/v1/staffs", "/api/v1/staffs"]
        with pytest.raises(LinkItError, match="No such resource"):
            LinkItClient(standin.url, ACCESS, PRIVATE).find_staff(local_code="JS12345")


@pytest.mark.parametrize("school", [501.9, "501.0", True, "five"])
def test_school_id_must_be_an_integer(linkit_client: LinkItClient, school) -> None:
    with pytest.raises(LinkItError, match="SchoolID must be an integer"):
        linkit_client.create_staff(JOHN | {"SchoolID": school})
    assert [s["SchoolID"] for s in linkit_client.create_staff(JOHN | {"SchoolID": 501})["Schools"]] == [501]


def test_access_key_and_tag_longer_than_128_are_refused(linkit_standin) -> None:
    long_key = "A" * 129
    linkit_standin.add_district("lakeview2", long_key, PRIVATE, [501])
    answer = requests.get(_signed_url(linkit_standin.url, "/staffs", access=long_key), timeout=10)
    assert answer.status_code == 401 and "at most 128" in answer.json()["Error"]
