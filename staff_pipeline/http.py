"""HTTP plumbing shared by the three API clients.

One place decides how we talk to remote systems: every request has a timeout, TLS verification is
never turned off, retries are bounded with exponential backoff and jitter (honouring
``Retry-After``), and anything that might carry a secret (query strings, auth headers) is redacted
before it reaches a log line or an exception.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import re
import select
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
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


class TransportError(ConnectionError):
    """A request of :class:`KeepAliveTransport` that got no complete answer (retryable, like a drop)."""


class TransportResponse:
    """The part of ``requests.Response`` the clients use: status, headers, body, ``json()``."""

    __slots__ = ("content", "headers", "reason", "status_code")

    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage, content: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers  # case-insensitive .get(), like requests' headers
        self.content = content

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class KeepAliveTransport:
    """Keep-alive connections to one origin with the standard library's ``http.client``.

    Much less CPU per request than ``requests`` (which builds and merges settings, hooks, cookie
    jars and adapters on every call), for clients that send many small requests to one host.
    Thread-safe: each request takes a connection from a pool (or opens one) and gives it back
    after reading the whole answer. Every connection has ``timeout``; https verifies certificates
    and host names (``ssl.create_default_context``, or ``cafile``). It does not retry: wrap calls
    in :func:`send_with_retry`; a request that gets no complete answer raises :class:`TransportError`
    (its message never includes the request's headers or query). It does not speak to proxies:
    callers use ``requests`` when one applies.
    """

    IDLE_CHECK_SECONDS = 1.0  # a connection idle longer is checked for a server-side close before reuse

    def __init__(self, base_url: str, *, timeout: float, cafile: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL for KeepAliveTransport: {redact_url(base_url)}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self._idle: deque[tuple[http.client.HTTPConnection, float]] = deque()

    def _connection(self) -> http.client.HTTPConnection:
        while True:
            try:
                conn, last_used = self._idle.pop()
            except IndexError:
                break
            if time.monotonic() - last_used < self.IDLE_CHECK_SECONDS or not _dropped(conn):
                return conn
            conn.close()
        if self._context is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self,
        method: str,
        target: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TransportResponse:
        """Send ``method target`` (a path with an optional query) and read the whole answer."""
        conn = self._connection()
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            conn.request(method, target, body=body, headers=dict(headers or {}))
            answer = conn.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"{method} {target.split('?')[0]}: {type(exc).__name__}: {exc}") from None
        response = TransportResponse(answer.status, answer.reason, answer.headers, content)
        if answer.will_close:
            conn.close()
        else:
            self._idle.append((conn, time.monotonic()))
        return response

    def close(self) -> None:
        while self._idle:
            try:
                self._idle.pop()[0].close()
            except IndexError:
                break


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when the server closed (or wrote to) an idle keep-alive connection."""
    sock = conn.sock
    if sock is None:
        return False  # not connected: request() opens it
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


R = TypeVar("R")


def send_with_retry(
    send: Callable[[], R],
    *,
    policy: RetryPolicy,
    describe: str,
    on_unauthorized: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
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
        except (requests.ConnectionError, requests.Timeout, TransportError) as exc:
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
