"""HTTP plumbing shared by the three API clients.

One place decides how we talk to remote systems: every request has a timeout, TLS verification is
never turned off, retries are bounded with exponential backoff and jitter (honouring
``Retry-After``), and anything that might carry a secret (query strings, auth headers) is redacted
before it reaches a log line or an exception.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def redact_url(url: str) -> str:
    """Drop the query string: LinkIt puts its access key and tag there, others may too."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "<redacted>" if parts.query else "", ""))


_SECRET_QS = re.compile(r"(?i)(accesskey|tag|client_secret|access_token|timestamp)=[^&\s\"']*")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secret values (and secret-looking query parameters) from free text."""
    out = _SECRET_QS.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "<redacted>")
    return out


class ApiError(RuntimeError):
    """A request that failed for good: what was asked, what the API said (secrets removed)."""

    def __init__(self, message: str, *, status: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all, sleeping ``base * 2**n`` (capped) plus jitter."""

    attempts: int = 5
    backoff_base: float = 0.2
    backoff_max: float = 10.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.backoff_max)
            except ValueError:
                pass
        wait = min(self.backoff_base * (2**attempt), self.backoff_max)
        return wait / 2 + random.uniform(0, wait / 2)


def make_session(pool_size: int = 8) -> requests.Session:
    """A keep-alive session sized for the client's concurrency (retries are ours, not urllib3's)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = True
    return session


def send_with_retry(
    send: Callable[[], requests.Response],
    *,
    policy: RetryPolicy,
    describe: str,
    on_unauthorized: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """Call ``send`` until it gives a non-retryable answer or the policy is spent.

    Retries 429/5xx and connection failures; on a first 401 calls ``on_unauthorized`` (a token
    refresh) and tries again once. Returns the last response (the caller interprets 4xx); raises
    :class:`ApiError` when the connection never succeeded. ``describe`` names the request in errors
    and must not contain secrets.
    """
    refreshed = False
    last_exc: Exception | None = None
    attempt = 0
    while True:
        try:
            response = send()
        except (requests.ConnectionError, requests.Timeout) as exc:
            last_exc = exc
            response = None
        if response is not None:
            if response.status_code == 401 and on_unauthorized is not None and not refreshed:
                refreshed = True
                on_unauthorized()
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
        attempt += 1
        if attempt >= policy.attempts:
            if response is not None:
                return response
            raise ApiError(
                f"{describe}: no answer after {policy.attempts} attempts "
                f"({type(last_exc).__name__}: {redact_text(str(last_exc))})"
            ) from None
        retry_after = response.headers.get("Retry-After") if response is not None else None
        wait = policy.delay(attempt - 1, retry_after)
        log.info(
            "%s: %s, retry %d/%d in %.2fs",
            describe,
            response.status_code if response is not None else type(last_exc).__name__,
            attempt,
            policy.attempts - 1,
            wait,
        )
        sleep(wait)
