"""Loads survive 429/500 answers and dropped connections, reuse one token, and refresh it on expiry."""

from __future__ import annotations

import pytest

from staff_pipeline.clients.edfi import TOKEN_REFRESHES, EdFiClient
from staff_pipeline.http import RetryPolicy
from staff_pipeline.loads.edfi_mart import ASSIGNMENTS, CONTACTS
from staff_pipeline.standins.common import Knobs
from tests.fixtures_edfi import LEA_A, load_lea, one_school_world

PEOPLE = 30


@pytest.fixture
def edfi_knobs() -> Knobs:
    return Knobs(share_429=0.2, share_500=0.1, share_drop=0.05, seed=7)


def test_retries_429_500_and_drops_until_everything_is_sent(edfi_standin):
    one_school_world(edfi_standin, PEOPLE, "f")
    # The seeded faults hold a run of 9 bad answers in a row (around the 830th request): with fewer
    # attempts, whether one request meets all of them depends on how the threads interleave.
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a", policy=RetryPolicy(12, 0.01, 0.05))
    reports = load_lea(client, LEA_A)
    statuses = [r.status for r in edfi_standin.received]
    assert statuses.count(429) > 0 and statuses.count(500) > 0 and statuses.count(0) > 0
    assert [r.failed for r in reports.values()] == [{}, {}]
    assert len(edfi_standin.records(ASSIGNMENTS)) == len(edfi_standin.records(CONTACTS)) == PEOPLE


def test_one_token_is_reused_and_an_expired_one_is_refreshed_once(edfi_standin):
    edfi_standin.knobs.share_429 = edfi_standin.knobs.share_500 = edfi_standin.knobs.share_drop = 0.0
    one_school_world(edfi_standin, PEOPLE, "f")
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a")
    done = []

    def expire_midway(entry: dict) -> None:
        done.append(entry)
        if len(done) == 10:
            edfi_standin.tokens.expire_all()

    reports = load_lea(client, LEA_A, on_entry=expire_midway)
    assert [r.failed for r in reports.values()] == [{}, {}]
    assert client.tokens_fetched == 2  # 60 requests, one token, one refresh after the expiry
    assert len(edfi_standin.requests_to("POST", "/oauth/token")) == 2
    assert any(r.status == 401 for r in edfi_standin.received)


def test_a_token_revoked_again_before_the_retry_is_refreshed_again_within_a_bound(edfi_standin):
    """Threads share one token: the token a request fetched after a 401 can be revoked before that
    request is sent again (the fault suite's race). It is refreshed again, a bounded number of times."""
    edfi_standin.knobs.share_429 = edfi_standin.knobs.share_500 = edfi_standin.knobs.share_drop = 0.0
    client = EdFiClient(edfi_standin.url, f"lea-{LEA_A}", "secret-a", policy=RetryPolicy(2, 0.0, 0.0))
    fetch = client.token

    def revoke(times: int) -> None:
        handed = []

        def token() -> str:  # the first `times` tokens handed out are revoked before they are sent
            value = fetch()
            handed.append(value)
            if len(handed) <= times:
                edfi_standin.tokens.expire_all()
            return value

        client.token = token  # type: ignore[method-assign]

    client.token()
    revoke(2)  # twice in a row: the request still succeeds
    assert client.request("GET", ASSIGNMENTS).status_code == 200
    revoke(99)  # every time: surfaced after the bound, not retried forever
    assert client.request("GET", ASSIGNMENTS).status_code == 401
    unauthorized = [r for r in edfi_standin.received if r.status == 401]
    assert len(unauthorized) == 2 + 1 + TOKEN_REFRESHES
