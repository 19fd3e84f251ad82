"""The access key, private key and tag appear nowhere: logs, Dagster metadata and event log, the
warehouse tables, journals, exception text. Materialised through Dagster, against the stand-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.linkit import linkit_mart, linkit_staff_accounts
from staff_pipeline import warehouse
from staff_pipeline.clients.linkit import LinkItClient, LinkItError, LinkItResource
from staff_pipeline.http import ApiError, RetryPolicy
from staff_pipeline.resources import WarehouseResource
from staff_pipeline.standins.common import Request, Response
from staff_pipeline.standins.linkit import LinkItStandIn
from tests.fixtures_linkit import LINKIT_KEYS, assignment, staff_row, write_conformed


def _warehouse_text() -> str:
    out = []
    with warehouse.connect() as con:
        for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            out.append(con.execute(f'SELECT * FROM "{name}"').df().to_csv())
    return "\n".join(out)


def _assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret leaked into {where}"


def test_secrets_never_reach_logs_metadata_event_log_tables_or_errors(
    linkit_standin, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    staff = [staff_row(f"p{i}", f"L{i}") for i in range(4)]
    write_conformed(
        staff,
        [assignment(f"p{i}") for i in range(3)] + [assignment("p3", district="riverside", school=601)],
    )
    # riverside's private key is wrong: every request there fails, and the run must say so safely.
    monkeypatch.setenv("LINKIT_PRIVATE_KEY_RIVERSIDE", "wrong-private-key-9a8b7c")
    instance = DagsterInstance.ephemeral()
    resources = {
        "warehouse": WarehouseResource(),
        "linkit": LinkItResource(base_url=linkit_standin.url, max_attempts=2),
    }
    runs = {}
    for district in ("lakeview", "riverside"):
        runs[district] = materialize(
            [linkit_mart, linkit_staff_accounts],
            partition_key=district,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    assert runs["lakeview"].success and not runs["riverside"].success
    # LinkIt refused the tag (an answer, not an outage): the step's retry policy is not used
    assert "STEP_UP_FOR_RETRY" not in {e.event_type_value for e in runs["riverside"].all_events}
    assert len(linkit_standin.users("lakeview")) == 3

    secrets = [key for pair in LINKIT_KEYS.values() for key in pair] + ["wrong-private-key-9a8b7c"]
    secrets += [r.query["tag"][0] for r in linkit_standin.received]
    assert len(secrets) > 6

    metadata = runs["lakeview"].asset_materializations_for_node("linkit_staff_accounts")[0].metadata
    assert metadata["created"].value == 3 and metadata["write_requests"].value == 3
    event_log = "\n".join(
        str(entry) for result in runs.values() for entry in instance.all_logs(result.run_id)
    )
    assert "Invalid tag" in event_log  # the failure is explained...
    _assert_clean(event_log, secrets, "the Dagster event log")  # ...without its secrets
    _assert_clean(caplog.text, secrets, "log lines")
    _assert_clean("\n".join(str(r.exc_info) + str(r.args) for r in caplog.records), secrets, "log records")
    _assert_clean(_warehouse_text(), secrets, "warehouse tables")
    journals = data_dir / "journal"
    _assert_clean(
        "".join(p.read_text() for p in journals.rglob("*") if p.is_file()) if journals.exists() else "",
        secrets,
        "journals",
    )


class _EchoingStandIn(LinkItStandIn):
    """A server that quotes the whole request (query string included) in its error text."""

    def handle(self, request: Request) -> Response:
        query = "&".join(f"{k}={v[0]}" for k, v in request.query.items())
        return Response.json(200, {"Result": "ERROR", "Data": None, "Error": f"bad: {query} {request.query}"})


def test_exception_text_is_redacted_even_when_the_api_echoes_the_request() -> None:
    access, private = LINKIT_KEYS["lakeview"]
    with _EchoingStandIn() as standin:
        client = LinkItClient(standin.url, access, private, policy=RetryPolicy(attempts=1))
        with pytest.raises(LinkItError) as caught:
            client.create_staff({"UserName": "a", "LocalCode": "b", "Role": "TEACHER"})
        tag = standin.received[0].query["tag"][0]
    text = f"{caught.value} {caught.value!r} {caught.value.error} {caught.value.args}"
    _assert_clean(text, [access, private, tag], "exception text")
    assert "bad:" in text and "<redacted>" in text


def test_connection_failures_do_not_leak_the_query_string(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    access, private = LINKIT_KEYS["lakeview"]
    with LinkItStandIn() as standin:
        url = standin.url  # the port is closed once the stand-in stops
    client = LinkItClient(url, access, private, policy=RetryPolicy(attempts=2, backoff_base=0.001), timeout=1)
    with pytest.raises(ApiError) as caught:
        client.find_staff(local_code="L1")
    _assert_clean(f"{caught.value!r} {caught.value} {caplog.text}", [access, private], "connection errors")
    assert "no answer after 2 attempts" in str(caught.value)
