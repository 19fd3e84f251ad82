"""Ed-Fi ODS/API (WISEdata) client: OAuth2 client credentials, upsert, delete, paged reads.

One token is shared by all threads of a client, and by every client of the same base URL and
credentials in the process (a state-wide fallback key serves several LEA runs), and reused until
shortly before ``expires_in``: servers cap live tokens per client and answer 429 to a client that
asks for one per call. A 401 refreshes it, up to ``TOKEN_REFRESHES`` times per request: with many
threads on one token, the token a request fetched after its first 401 can itself expire before the
request is sent again. A token request that is refused after its bounded retries raises
:class:`TokenError`, and the client asks no more: every further request would be refused the same way.

Errors are turned into one line naming the request and the API's message, whether the server
speaks ProblemDetails (7.2+) or the older ``{"message": ...}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from dagster import ConfigurableResource

from staff_pipeline.http import (
    ApiError,
    RetryPolicy,
    TransportResponse,
    api_base_url,
    basic_auth_forms,
    make_session,
    pin_environment,
    redact_text,
    send_with_retry,
)
from staff_pipeline.settings import from_env, key_pair

STANDIN_URL = "http://127.0.0.1:8101"  # the local stand-in's standard port
TOKEN_MARGIN_SECONDS = 60.0
TOKEN_REFRESHES = 3  # per request; bounded, so a token that is useless from birth still surfaces
PAGE_LIMIT = 500


class TokenError(ApiError):
    """The token endpoint refused (401/403, 429 too-many-tokens, no answer) after its bounded retries.

    Not one record's failure: a load that meets it stops the LEA's run. The message names the API's
    answer, never the secret.
    """


@dataclass(repr=False)
class _SharedToken:
    """One cached token for a (base URL, client id, secret) in this process; never logged or stored."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    value: str | None = None
    expires_at: float = 0.0


_TOKENS: dict[tuple[str, str, str], _SharedToken] = {}
_TOKENS_LOCK = threading.Lock()


def _shared_token(base_url: str, client_id: str, secret: str) -> _SharedToken:
    """The process-wide token slot of these credentials.

    The key holds a digest of the secret, not the secret, so a client with a wrong secret never
    borrows the token another client got with the right one.
    """
    key = (base_url, client_id, hashlib.sha256(secret.encode("utf-8")).hexdigest())
    with _TOKENS_LOCK:
        return _TOKENS.setdefault(key, _SharedToken())


def forget_tokens() -> None:
    """Drop every cached token (tests start a fresh stand-in per test, and ports get reused)."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


@dataclass(frozen=True)
class EdFiAnswer:
    """What a write came back with: status, the resource id (from Location) and the API's message."""

    status: int
    resource_id: str | None = None
    etag: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def api_message(response: requests.Response | TransportResponse) -> str:
    """The API's own words: ProblemDetails type/detail/validationErrors, or the older ``message``."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "")[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    if "message" in body and "type" not in body:
        return str(body["message"])[:300]
    parts = [str(body.get("type") or body.get("title") or body.get("error") or "")]
    if body.get("detail"):
        parts.append(str(body["detail"]))
    for field, messages in (body.get("validationErrors") or {}).items():
        parts.append(f"{field}: {'; '.join(map(str, messages))}")
    parts += [str(e) for e in body.get("errors") or []]
    return " | ".join(p for p in parts if p)[:500]


class EdFiClient:
    """A thread-safe client for one set of credentials (one LEA's key, or a state-wide key)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
        pool_size: int = 8,
        data_path: str = "/data/v3/ed-fi",
    ) -> None:
        if not client_id or not client_secret:
            raise ApiError("Ed-Fi credentials are missing (EDFI_CLIENT_ID / EDFI_CLIENT_SECRET)")
        self.base_url = api_base_url(base_url, "Ed-Fi")
        self.data_url = self.base_url + data_path
        self._client_id = client_id
        self._secret = client_secret
        self._secret_forms = basic_auth_forms(client_id, client_secret)  # as an error page may echo it
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.session = make_session(pool_size)
        # Data requests (the hot path) go over the keep-alive transport unless a proxy applies.
        self._transport = pin_environment(self.session, self.base_url, timeout=timeout)
        self._data_path = urlsplit(self.data_url).path
        self._shared = _shared_token(self.base_url, client_id, client_secret)
        self._refused: TokenError | None = None
        self.tokens_fetched = 0
        self._routes: dict[str, bool] = {}
        self._routes_lock = threading.Lock()

    # -- auth --------------------------------------------------------------------------------------
    def _fetch_token(self) -> None:
        """Ask for a token (bounded retries on 429/5xx/drops); any refusal is a :class:`TokenError`."""
        try:
            response = send_with_retry(
                lambda: self.session.post(
                    f"{self.base_url}/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self._client_id, self._secret),
                    timeout=self.timeout,
                ),
                policy=self.policy,
                describe="POST /oauth/token",
            )
        except ApiError as exc:
            raise TokenError(self._redact(str(exc)), status=exc.status) from None
        if response.status_code != 200:
            raise TokenError(
                f"POST /oauth/token: {response.status_code} {self._redact(api_message(response))}",
                status=response.status_code,
            )
        body = response.json()
        self._shared.value = body["access_token"]
        self._shared.expires_at = time.monotonic() + float(body.get("expires_in", 0))
        self.tokens_fetched += 1

    def token(self) -> str:
        """The cached token, fetched again only when it is about to expire.

        Once the token endpoint has refused this client, the refusal is raised again without a
        request: asking once per record would only hammer an endpoint that keeps saying no.
        """
        shared = self._shared
        with shared.lock:
            if self._refused is not None:
                raise TokenError(str(self._refused), status=self._refused.status)
            margin = min(TOKEN_MARGIN_SECONDS, (shared.expires_at - time.monotonic()) / 2)
            if shared.value is None or time.monotonic() >= shared.expires_at - max(margin, 0):
                try:
                    self._fetch_token()
                except TokenError as exc:
                    self._refused = exc
                    raise
            return shared.value  # type: ignore[return-value]

    def _invalidate(self, stale: str) -> None:
        """On a 401: drop the token unless another thread or client has already replaced it."""
        with self._shared.lock:
            if self._shared.value == stale:
                self._shared.value = None

    def _redact(self, text: str) -> str:
        return redact_text(text, [*self._secret_forms, self._shared.value or ""])

    # -- requests ----------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response | TransportResponse:
        """Send with a bearer token, bounded retries on 429/5xx/drops, one refresh on 401."""
        used: list[str] = []
        extra_headers = headers or {}
        transport = self._transport

        if transport is not None:
            target = f"{self._data_path}/{path}"
            if params:
                target += "?" + urlencode(params)
            body = data.encode("utf-8") if isinstance(data, str) else data

            def send() -> requests.Response | TransportResponse:
                token = self.token()
                used.append(token)
                return transport.request(
                    method, target, body, {"Authorization": f"Bearer {token}", **extra_headers}
                )

        else:

            def send() -> requests.Response | TransportResponse:
                token = self.token()
                used.append(token)
                return self.session.request(
                    method,
                    f"{self.data_url}/{path}",
                    params=params,
                    data=data,
                    headers={"Authorization": f"Bearer {token}", **extra_headers},
                    timeout=self.timeout,
                )

        return send_with_retry(
            send,
            policy=self.policy,
            describe=f"{method} {path.split('?')[0]}",
            on_unauthorized=lambda: self._invalidate(used[-1]),
            max_refreshes=TOKEN_REFRESHES,
        )

    def upsert(self, resource: str, body: bytes | str) -> EdFiAnswer:
        """POST (create 201 / update 200) a JSON body that has no ``id``."""
        response = self.request("POST", resource, data=body, headers={"Content-Type": "application/json"})
        return self._answer(response)

    def delete(self, resource: str, resource_id: str) -> EdFiAnswer:
        return self._answer(self.request("DELETE", f"{resource}/{resource_id}"))

    def serves(self, resource: str) -> bool:
        """Whether the API has a route for ``resource`` (a GET of one record answers 200), asked once.

        A DELETE answered 404 means the record is gone only then: a wrong data path (a year-specific
        ODS, a proxy prefix) answers 404 too, and taking that for "deleted" would make the ledger
        forget records that stay in the ODS for good."""
        with self._routes_lock:
            if resource not in self._routes:
                response = self.request("GET", resource, params={"limit": 1})
                self._routes[resource] = response.status_code == 200
            return self._routes[resource]

    def find(self, resource: str, identity: dict[str, Any]) -> list[dict[str, Any]]:
        """GET by identity fields as query parameters (how Ed-Fi finds the ``id`` for a DELETE)."""
        response = self.request("GET", resource, params=identity)
        self._raise_for(response, f"GET {resource}")
        return response.json()

    def pages(self, resource: str, limit: int = PAGE_LIMIT) -> Iterator[list[dict[str, Any]]]:
        """Every record visible to this key, page by page (offset/limit, ``limit`` <= 500)."""
        offset = 0
        while True:
            response = self.request("GET", resource, params={"offset": offset, "limit": limit})
            self._raise_for(response, f"GET {resource} offset={offset}")
            page = response.json()
            if page:
                yield page
            if len(page) < limit:
                return
            offset += limit

    def _raise_for(self, response: requests.Response | TransportResponse, describe: str) -> None:
        if response.status_code != 200:
            raise ApiError(
                f"{describe}: {response.status_code} {self._redact(api_message(response))}",
                status=response.status_code,
            )

    def _answer(self, response: requests.Response | TransportResponse) -> EdFiAnswer:
        location = response.headers.get("Location") or ""
        return EdFiAnswer(
            status=response.status_code,
            resource_id=location.rstrip("/").rsplit("/", 1)[-1] if location else None,
            etag=response.headers.get("ETag"),
            message="" if response.ok else self._redact(api_message(response)),
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.session.close()


class EdFiResource(ConfigurableResource):
    """Ed-Fi connection settings. Per-LEA keys come from ``EDFI_CLIENT_ID_<lea>`` /
    ``EDFI_CLIENT_SECRET_<lea>`` (WISEdata issues one per LEA); the pair here, else
    ``EDFI_CLIENT_ID`` / ``EDFI_CLIENT_SECRET``, is the optional fallback (see :meth:`keys_for`).

    An empty ``base_url`` means ``STAFF_EDFI_URL``, else the local stand-in, read when a run builds a
    client (never at import, so a process that imported the Definitions earlier sees the run's value).
    """

    base_url: str = ""  # "": STAFF_EDFI_URL, else STANDIN_URL
    client_id: str = ""
    client_secret: str = ""
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_base: float = 0.2
    max_concurrency: int = 0  # 0: [edfi] max_concurrency of pipeline.toml
    # below base_url: ODS/API 7's shared instance; a year- or instance-specific ODS adds its segment
    data_path: str = "/data/v3/ed-fi"

    def url(self) -> str:
        """The base URL this run talks to."""
        return from_env(self.base_url, "STAFF_EDFI_URL", STANDIN_URL)

    def keys_for(self, lea_id: str | int) -> tuple[str, str]:
        """The LEA's own pair, else the fallback (this resource's, else ``EDFI_CLIENT_ID`` /
        ``EDFI_CLIENT_SECRET``): optional, since a WISEdata deployment has one key per LEA."""
        return key_pair(
            ("EDFI_CLIENT_ID", "EDFI_CLIENT_SECRET"),
            str(lea_id),
            (self.client_id, self.client_secret),
            f"Ed-Fi LEA {lea_id}",
        )

    def client_for(self, lea_id: str | int, pool_size: int = 8) -> EdFiClient:
        client_id, secret = self.keys_for(lea_id)
        return EdFiClient(
            self.url(),
            client_id,
            secret,
            timeout=self.timeout,
            policy=RetryPolicy(attempts=self.max_attempts, backoff_base=self.backoff_base),
            pool_size=pool_size,
            data_path=self.data_path,
        )
