"""HTTP plumbing shared by the three API clients.

One place decides how we talk to remote systems: every request has a timeout, TLS verification is
never turned off, retries are bounded with exponential backoff and jitter (honouring
``Retry-After``), and anything that might carry a secret (query strings, auth headers) is redacted
before it reaches a log line or an exception.

Two ways to send: a ``requests`` session (:func:`make_session`) for the occasional call, and
:class:`KeepAliveTransport` (standard library sockets, a fraction of the CPU per request) for a
client's hot path of many small requests to one host. Both go through :func:`send_with_retry`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import random
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def worth_retrying(status: int | None) -> bool:
    """An outcome another try may change: no answer at all (status None or 0: a dropped
    connection, a timeout), 429 or 5xx."""
    return not status or status in RETRY_STATUSES


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def api_base_url(url: str, api: str) -> str:
    """``url`` without a trailing slash, refused unless it is HTTPS or on this machine: keys, secrets
    and tokens go with every request, and TLS verification is only worth anything over TLS (the local
    stand-ins serve plain HTTP on loopback)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return url.rstrip("/")
    raise ValueError(
        f"{api} URL {redact_url(url)!r} must be https:// "
        f"(plain http only on loopback: {', '.join(_LOOPBACK)})"
    )


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


def basic_auth_forms(user: str, password: str) -> list[str]:
    """The forms a Basic credential takes on the wire, for redaction: the password itself, percent
    encoded, and the base64 ``Authorization: Basic`` value (an error page may echo the header)."""
    if not password:
        return []
    forms = [password, quote(password, safe="")]
    for pair in ((user, password), (quote(user, safe=""), quote(password, safe=""))):
        forms.append(base64.b64encode(":".join(pair).encode("latin-1", "replace")).decode("ascii"))
        forms.append(base64.b64encode(":".join(pair).encode("utf-8")).decode("ascii"))
    return list(dict.fromkeys(forms))


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
        """Seconds to wait before retry ``attempt + 1``: the server's ``Retry-After`` when usable.

        A server's hint is clamped to ``[0, backoff_max]`` so a negative value cannot make
        ``time.sleep`` raise and a huge one cannot stall the run; one that is not a finite
        number of seconds (NaN, inf, an HTTP date, garbage) falls back to the normal backoff.
        """
        hint = _retry_after_seconds(retry_after)
        if hint is not None:
            return min(max(hint, 0.0), self.backoff_max)
        wait = min(self.backoff_base * (2**attempt), self.backoff_max)
        return wait / 2 + random.uniform(0, wait / 2)


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as a finite number of seconds, else None (absent or unusable)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


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


class Headers(dict[str, str]):
    """Response headers with case-insensitive :meth:`get` and ``[]`` (keys are stored lower-case)."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


class TransportResponse:
    """The part of ``requests.Response`` the clients use: status, headers, body, ``json()``."""

    __slots__ = ("content", "headers", "reason", "status_code")

    def __init__(self, status: int, reason: str, headers: Headers, content: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.content = content

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection:
    """One socket (TLS-wrapped for https) with a buffered reader; ``last_used`` is monotonic time."""

    __slots__ = ("last_used", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.last_used = 0.0

    def close(self) -> None:
        for closable in (self.reader, self.sock):
            with contextlib.suppress(OSError):
                closable.close()


_MAX_LINE = 65536
_MAX_HEADERS = 100


class KeepAliveTransport:
    """Keep-alive HTTP/1.1 connections to one origin, on the standard library's sockets and ``ssl``.

    Much less CPU per request than ``requests`` (which builds and merges settings, hooks, cookie
    jars and adapters on every call) or ``http.client`` (which parses headers with the email
    package and writes headers and body in separate system calls), for clients that send many
    small requests to one host. Thread-safe: each request takes an idle connection from a pool (or
    opens one) and gives it back after reading the whole answer (Content-Length, chunked, or up
    to the close). Every socket operation has ``timeout``; https verifies certificates and host
    names (``ssl.create_default_context``, or ``cafile``). It does not retry: wrap calls in
    :func:`send_with_retry`; a request that gets no complete answer raises :class:`TransportError`
    (its message never includes the request's headers or query). It does not speak to proxies:
    callers use ``requests`` when one applies.
    """

    IDLE_CHECK_SECONDS = 1.0  # a connection idle longer is checked for a server-side close before reuse

    def __init__(self, base_url: str, *, timeout: float, cafile: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL for KeepAliveTransport: {redact_url(base_url)}")
        if not timeout or timeout <= 0:
            raise ValueError("KeepAliveTransport needs a positive timeout")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if default_port else f"{host}:{self.port}"
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self._idle: deque[_Connection] = deque()

    def _open(self) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _connection(self) -> _Connection:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return self._open()
            if time.monotonic() - conn.last_used < self.IDLE_CHECK_SECONDS or not _dropped(conn.sock):
                return conn
            conn.close()

    def request(
        self,
        method: str,
        target: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TransportResponse:
        """Send ``method target`` (a path with an optional query) and read the whole answer."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        conn = None
        try:
            conn = self._connection()
            conn.sock.sendall(data)  # one write: no small-segment stall between headers and body
            response, will_close = _read_response(conn.reader, method)
        except (OSError, ValueError) as exc:  # socket, TLS and timeout errors; a malformed answer
            if conn is not None:
                conn.close()
            raise TransportError(f"{method} {target.split('?')[0]}: {type(exc).__name__}: {exc}") from None
        if will_close:
            conn.close()
        else:
            conn.last_used = time.monotonic()
            self._idle.append(conn)
        return response

    def close(self) -> None:
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                return


def _readline(reader: Any) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise ValueError("header line too long")
    if not line:
        raise ConnectionResetError("server closed the connection without an answer")
    return line


def _read_response(reader: Any, method: str) -> tuple[TransportResponse, bool]:
    """Read one answer (skipping 1xx); returns it and whether the connection must be closed."""
    while True:
        status_line = _readline(reader).decode("latin-1").rstrip("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"malformed status line {status_line[:40]!r}")
        status = int(code)
        headers = Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = _readline(reader)
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ValueError("malformed header line")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise ValueError("too many headers")
        if status >= 200 or status == 101:
            break
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if method == "HEAD" or status in (204, 304) or status < 200:
        content = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        content = _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        content = reader.read(length)
        if len(content) != length:
            raise ConnectionResetError(f"answer cut short ({len(content)} of {length} bytes)")
    else:
        content, will_close = reader.read(), True
    return TransportResponse(status, reason, headers, content), will_close


def _read_chunked(reader: Any) -> bytes:
    parts = []
    while True:
        size = int(_readline(reader).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while _readline(reader) not in (b"\r\n", b"\n"):  # trailers
                pass
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) != size:
            raise ConnectionResetError("chunked answer cut short")
        parts.append(chunk)
        _readline(reader)  # the CRLF after each chunk


def _dropped(sock: socket.socket) -> bool:
    """True when the server closed (or wrote to) an idle keep-alive connection."""
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
    max_refreshes: int = 1,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """Call ``send`` until it gives a non-retryable answer or the policy is spent.

    Retries 429/5xx and connection failures; on a 401 calls ``on_unauthorized`` (a token refresh)
    and tries again, at most ``max_refreshes`` times. Returns the last response (the caller
    interprets 4xx); raises :class:`ApiError` when the connection never succeeded. ``describe``
    names the request in errors and must not contain secrets.
    """
    refreshes = 0
    last_exc: Exception | None = None
    attempt = 0
    while True:
        try:
            response = send()
        except (requests.ConnectionError, requests.Timeout, TransportError) as exc:
            last_exc = exc
            response = None
        if response is not None:
            if response.status_code == 401 and on_unauthorized is not None and refreshes < max_refreshes:
                refreshes += 1
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


def pin_environment(session: requests.Session, base_url: str, *, timeout: float) -> KeepAliveTransport | None:
    """Resolve proxies and the CA bundle once, and the keep-alive transport when no proxy applies.

    requests looks up proxy variables and ~/.netrc on every request while ``trust_env`` is on, which
    costs as much CPU as the request itself, so the session gets them pinned here. Calls go over the
    plain keep-alive transport (a fraction of requests' CPU per call); through a proxy they stay on
    the requests session (``None`` is returned).
    """
    proxies = requests.utils.get_environ_proxies(base_url)
    session.proxies.update(proxies)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    parts = urlsplit(base_url)
    if proxies.get(parts.scheme) or proxies.get("all") or parts.scheme not in ("http", "https"):
        return None
    if not parts.hostname:
        return None
    return KeepAliveTransport(base_url, timeout=timeout, cafile=bundle or None)
