"""A failed run is posted to the configured webhook (a real local HTTP receiver), without secrets."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    SkipReason,
    build_run_status_sensor_context,
    job,
    op,
)

from assets.run_sensors import failure_webhook_sensor
from staff_pipeline.alerts import StepFailure, failure_message, post_alert

SECRET = "s3cr3t-edfi-client-secret-value"


class _Receiver(ThreadingHTTPServer):
    """Records every JSON body POSTed to it; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.status = status
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T000/B000/XXXX"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@op
def load_lea() -> None:
    raise RuntimeError(
        f"POST /ed-fi/staffs failed: 409 unresolved-reference (client secret {SECRET})\nTraceback detail"
    )


@job
def failing_job() -> None:
    load_lea()


def _failure_context(instance: DagsterInstance):
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    event = next(
        record.dagster_event
        for record in instance.all_logs(result.run_id)
        if record.dagster_event and record.dagster_event.event_type == DagsterEventType.RUN_FAILURE
    )
    return build_run_status_sensor_context(
        sensor_name="failure_webhook_sensor",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()


def test_a_failed_run_is_posted_with_job_run_step_and_error_but_no_secret(
    receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAFF_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("EDFI_CLIENT_SECRET", SECRET)
    with DagsterInstance.ephemeral() as instance:
        context = _failure_context(instance)
        assert failure_webhook_sensor(context) is None

    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["job"] == "failing_job"
    assert body["run_id"] == context.dagster_run.run_id
    assert [s["step"] for s in body["failed_steps"]] == ["load_lea"]
    assert "409 unresolved-reference" in body["error"]
    assert "Traceback detail" not in body["error"]
    assert "failing_job" in body["text"] and "load_lea" in body["text"]
    raw = json.dumps(body)
    assert SECRET not in raw
    assert "<redacted>" in body["error"]


def test_without_a_webhook_nothing_is_sent(receiver: _Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAFF_ALERT_WEBHOOK", raising=False)
    with DagsterInstance.ephemeral() as instance:
        assert isinstance(failure_webhook_sensor(_failure_context(instance)), SkipReason)
    assert receiver.bodies == []


def test_secret_query_parameters_are_redacted_from_the_summary() -> None:
    payload = failure_message(
        "linkit_load_job",
        "run-1",
        [StepFailure("linkit_staff_accounts", "POST /staffs?timestamp=1&accesskey=AK123&tag=abc: 500")],
        "run failed",
        secrets=[],
    )
    assert "AK123" not in json.dumps(payload)
    assert payload["failed_steps"][0]["step"] == "linkit_staff_accounts"


def test_a_webhook_that_refuses_or_is_down_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    refusing = _Receiver(status=403)
    thread = threading.Thread(target=refusing.serve_forever, daemon=True)
    thread.start()
    try:
        assert post_alert(refusing.url, {"text": "x"}) is False
    finally:
        refusing.shutdown()
        refusing.server_close()

    with socket.socket() as probe:  # a free port with nobody listening
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hooks/secret-path"
    assert post_alert(dead, {"text": "x"}, timeout=1.0) is False
    assert "secret-path" not in caplog.text
