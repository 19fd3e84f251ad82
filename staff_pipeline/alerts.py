"""Tell people a run failed: a short message to a chat or incident webhook (``STAFF_ALERT_WEBHOOK``).

The message goes to a third party, so it carries what an on-call person needs (job, run, failing
step, the first line of the error) and nothing else: secret values from the environment and
secret-looking query parameters are removed, and the webhook URL itself (often a bearer secret)
never appears in a log line or an exception.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import requests

from staff_pipeline.http import ApiError, RetryPolicy, redact_text, send_with_retry

log = logging.getLogger(__name__)

WEBHOOK_ENV = "STAFF_ALERT_WEBHOOK"
_SECRET_NAME = re.compile(r"SECRET|PRIVATE_KEY|ACCESS_KEY|TOKEN|PASSWORD|WEBHOOK")
_MAX_ERROR = 500


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names mark them as secrets (client secrets, keys...)."""
    env = os.environ if environ is None else environ
    return [value for name, value in env.items() if _SECRET_NAME.search(name.upper()) and len(value) >= 4]


@dataclass(frozen=True)
class StepFailure:
    step_key: str
    error: str


def failure_message(
    job_name: str, run_id: str, failures: Iterable[StepFailure], run_message: str, secrets: Iterable[str]
) -> dict[str, object]:
    """A Slack/Teams-compatible payload (``text``) with the same facts as structured fields."""
    secrets = list(secrets)
    steps = [
        {"step": f.step_key, "error": redact_text(_first_line(f.error), secrets)[:_MAX_ERROR]}
        for f in failures
    ]
    summary = steps[0]["error"] if steps else redact_text(_first_line(run_message), secrets)[:_MAX_ERROR]
    failing = ", ".join(s["step"] for s in steps) or "(no step failed: the run itself failed)"
    return {
        "text": f"Staff pipeline run failed: job {job_name}, run {run_id}, step {failing}: {summary}",
        "job": job_name,
        "run_id": run_id,
        "failed_steps": steps,
        "error": summary,
    }


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def post_alert(url: str, payload: Mapping[str, object], *, timeout: float = 10.0) -> bool:
    """POST the payload; a webhook that is down is logged (without its URL), never raised.

    Returns whether the webhook accepted it. Alerting must not turn one failure into two.
    """
    try:
        response = send_with_retry(
            lambda: requests.post(url, json=payload, timeout=timeout),
            policy=RetryPolicy(attempts=3, backoff_base=0.5, backoff_max=5.0),
            describe="failure webhook",
        )
    except ApiError:
        log.warning("failure webhook unreachable after retries; the alert was not delivered")
        return False
    if response.status_code >= 300:
        log.warning("failure webhook answered HTTP %s", response.status_code)
        return False
    return True
