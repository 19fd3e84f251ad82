"""A refused token stops the LEA's run (no request per record); one token serves every client of a key."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, materialize

from assets.edfi import edfi_assignment_associations, edfi_contact_associations, edfi_mart
from staff_pipeline import warehouse
from staff_pipeline.clients.edfi import EdFiClient, EdFiResource, TokenError
from staff_pipeline.http import RetryPolicy
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS
from staff_pipeline.resources import WarehouseResource
from staff_pipeline.standins.edfi import EdFiStandIn
from tests.fixtures_edfi import LEA_A, load_lea, one_school_world

PEOPLE = 30
POLICY = RetryPolicy(5, 0.001, 0.002)


def _token_posts(standin: EdFiStandIn) -> int:
    return len(standin.requests_to("POST", "/oauth/token"))


def test_a_wrong_secret_stops_the_run_after_one_token_request(edfi_standin):
    one_school_world(edfi_standin, PEOPLE, "t")
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "WRONG", policy=POLICY)
    with pytest.raises(TokenError, match="401 invalid_client") as caught:
        load_lea(client, LEA_A)
    assert "WRONG" not in str(caught.value)
    assert _token_posts(edfi_standin) == 1 and edfi_standin.requests_to(path_prefix="/data") == []


def test_too_many_tokens_is_retried_within_the_policy_then_stops_the_run(edfi_standin):
    one_school_world(edfi_standin, PEOPLE, "u")
    for _ in range(15):  # another process of the same client holds all 15 tokens
        edfi_standin.tokens.issue(f"lea-{LEA_A}")
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a", policy=POLICY)
    with pytest.raises(TokenError, match="too-many-tokens"):
        load_lea(client, LEA_A)
    assert _token_posts(edfi_standin) == POLICY.attempts
    assert edfi_standin.requests_to(path_prefix="/data") == []


def test_a_key_revoked_mid_run_stops_it_and_what_was_sent_is_in_the_ledger(edfi_standin):
    one_school_world(edfi_standin, PEOPLE, "v")
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a", policy=POLICY)
    done = []

    def revoke_after_10(entry: dict) -> None:
        done.append(entry)
        if len(done) == 10:
            edfi_standin.add_client(f"lea-{LEA_A}", "rotated-secret", LEA_A)
            edfi_standin.tokens.expire_all()

    with pytest.raises(TokenError, match="401"):
        load_lea(client, LEA_A, on_entry=revoke_after_10)
    assert _token_posts(edfi_standin) == 2  # the first token, then one refused refresh
    posted = len(edfi_standin.records(ASSIGNMENTS))
    assert 10 <= posted < PEOPLE
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM ledger_edfi").fetchall()[0][0] == posted


def test_clients_of_one_key_share_a_token_and_a_wrong_secret_never_borrows_it(edfi_standin):
    clients = [EdFiClient(edfi_standin.url, "state", "state-secret", policy=POLICY) for _ in range(16)]
    tokens = {c.token() for c in clients}
    assert len(tokens) == 1 and _token_posts(edfi_standin) == 1
    edfi_standin.tokens.expire_all()
    assert clients[0].request("GET", ASSIGNMENTS).status_code == 200  # one refresh...
    assert clients[1].request("GET", ASSIGNMENTS).status_code == 200  # ...which the others use
    assert _token_posts(edfi_standin) == 2
    impostor = EdFiClient(edfi_standin.url, "state", "not-the-secret", policy=POLICY)
    with pytest.raises(TokenError):
        impostor.token()
    for c in [*clients, impostor]:
        c.close()


def test_the_asset_fails_naming_the_lea_and_the_apis_message_without_the_secret(edfi_env, monkeypatch):
    one_school_world(edfi_env, 3, "w")
    monkeypatch.setenv(f"EDFI_CLIENT_SECRET_{LEA_A}", "a-wrong-secret")
    result = materialize(
        [edfi_mart, edfi_assignment_associations, edfi_contact_associations],
        resources={"warehouse": WarehouseResource(), "edfi": EdFiResource(backoff_base=0.001)},
        partition_key=str(LEA_A),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    # refused credentials stay refused: the step's retry policy is not used (a 5xx would be)
    assert "STEP_UP_FOR_RETRY" not in {e.event_type_value for e in result.all_events}
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message + repr(failure.event_specific_data.error)
    assert f"Ed-Fi LEA {LEA_A}" in message and "401 invalid_client" in message
    assert "a-wrong-secret" not in repr(result.all_events)
    assert _token_posts(edfi_env) == 1
