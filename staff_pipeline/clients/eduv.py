"""Edu-V Employees client: OAuth2 client credentials, and one streamed download per query.

The Edukoppeling profile authenticates the token request with a signed JWT (``private_key_jwt``,
RS256); a plain client secret (``client_secret_basic``) is supported for sources that issue one.
A token is reused until shortly before it expires and refreshed once when the API answers 401.
A token granted fewer scopes than asked (RFC 6749 3.3: the answer's ``scope`` says so) is refused
for every request: its answers would silently lack contacts or roles, which downstream would read as
"removed".

Answers are never parsed here: :meth:`EduVClient.download_employees` streams the body to a file
(a national school board can answer with hundreds of megabytes) and hashes it on the way, so the
extract can land exactly what was received and DuckDB reads it from disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from dagster import ConfigurableResource

from staff_pipeline.http import (
    ApiError,
    RetryPolicy,
    api_base_url,
    basic_auth_forms,
    make_session,
    redact_text,
    send_with_retry,
)
from staff_pipeline.settings import from_env
from staff_pipeline.vocab import EDUV_SCOPES

STANDIN_URL = "http://127.0.0.1:8100"  # the local stand-in's standard port
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ERROR_BODY_LIMIT = 64 * 1024  # larger error bodies are kept on disk but not quoted
_ASSERTION_LIFETIME = 60  # seconds


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """The RSA key from PEM text; ``\\n`` written as two characters (as in .env files) is accepted."""
    try:
        key = serialization.load_pem_private_key(pem.replace("\\n", "\n").encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("EDUV_PRIVATE_KEY is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("EDUV_PRIVATE_KEY must be an RSA key (private_key_jwt uses RS256)")
    return key


def client_assertion(key: rsa.RSAPrivateKey, client_id: str, audience: str) -> str:
    """A one-time RS256 JWT saying "I am client_id" to the token endpoint (RFC 7523)."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + _ASSERTION_LIFETIME,
    }
    signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True)
class Download:
    """One answer of the Employees endpoint as landed on disk."""

    status: int
    content_type: str
    path: Path
    bytes: int
    sha256: str
    status_message: str | None  # the API's statusMessage (or the start of the body) when not 200


class EduVClient:
    """Talks to one Edu-V source. Thread-safe: schools may be downloaded concurrently."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        *,
        client_secret: str = "",
        private_key: str = "",
        token_url: str = "",
        scopes: str = " ".join(EDUV_SCOPES),
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        policy: RetryPolicy | None = None,
        pool_size: int = 4,
    ) -> None:
        if not client_id:
            raise ValueError("Edu-V client id is empty (set EDUV_CLIENT_ID)")
        if not client_secret and not private_key:
            raise ValueError(
                "Edu-V needs EDUV_PRIVATE_KEY (private_key_jwt) or EDUV_CLIENT_SECRET; neither is set"
            )
        self.base_url = api_base_url(base_url, "Edu-V")
        self.token_url = (
            api_base_url(token_url, "Edu-V token") if token_url else f"{self.base_url}/oauth/token"
        )
        self.client_id = client_id
        self._secret = client_secret
        self._key = load_private_key(private_key) if private_key else None
        # + every token: redact(). The secret also in the forms Basic auth puts on the wire.
        self._secrets = [*basic_auth_forms(client_id, client_secret), *([private_key] if private_key else [])]
        self.scopes = scopes
        self.timeout = (connect_timeout, timeout)
        self.policy = policy or RetryPolicy()
        self._session = make_session(pool_size)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_valid_until = 0.0
        self._token_missing_scopes: list[str] = []

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> EduVClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def redact(self, text: str) -> str:
        """``text`` without this client's secret, private key or any bearer token it has held.

        Every token obtained is kept for this, not only the current one: an error answer may echo
        the token of the request, which another thread may have replaced already.
        """
        return redact_text(text, self._secrets)

    # -- tokens ----------------------------------------------------------------------------
    def access_token(self) -> str:
        """The current bearer token, fetched when missing or about to expire.

        Raises :class:`ApiError` while the token lacks a requested scope: the token is kept until
        it expires (not re-requested per school: tokens are limited per client), and every request
        that would use it fails.
        """
        with self._lock:
            if self._token is None or time.monotonic() >= self._token_valid_until:
                self._token, lifetime, self._token_missing_scopes = self._fetch_token()
                self._secrets.append(self._token)
                self._token_valid_until = time.monotonic() + lifetime - min(30.0, lifetime * 0.1)
            token, missing = self._token, self._token_missing_scopes
        if missing:
            raise ApiError(
                f"Edu-V token for client {self.client_id} was granted without the scope(s) "
                f"{' '.join(missing)}: its answers would lack those attributes, so it is not used"
            )
        return token

    def _invalidate(self, token: str) -> None:
        """Forget ``token`` after a 401, unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch_token(self) -> tuple[str, float, list[str]]:
        """A new token, its lifetime in seconds, and the requested scopes it was not granted."""
        auth = (
            None if self._key is not None else (quote(self.client_id, safe=""), quote(self._secret, safe=""))
        )

        def send() -> requests.Response:
            form = {"grant_type": "client_credentials", "scope": self.scopes}
            if self._key is not None:  # a fresh assertion (jti) per attempt: a replayed one is refused
                form["client_assertion_type"] = JWT_BEARER
                form["client_assertion"] = client_assertion(self._key, self.client_id, self.token_url)
            return self._session.post(self.token_url, data=form, auth=auth, timeout=self.timeout)

        response = send_with_retry(
            send, policy=self.policy, describe=f"Edu-V token request for {self.client_id}"
        )
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200 or not isinstance(payload, dict) or "access_token" not in payload:
            error = payload.get("error", "") if isinstance(payload, dict) else ""
            detail = payload.get("error_description", "") if isinstance(payload, dict) else ""
            if not error:
                detail = response.text[:200]
            raise ApiError(
                self.redact(
                    f"Edu-V token request for client {self.client_id} failed: HTTP {response.status_code} "
                    f"{error} {detail}".strip()
                ),
                status=response.status_code,
            )
        token, lifetime = str(payload["access_token"]), float(payload.get("expires_in") or 300)
        return token, lifetime, self._missing_scopes(payload)

    def _missing_scopes(self, payload: dict[str, Any]) -> list[str]:
        """Requested scopes the token answer says were not granted (RFC 6749 3.3).

        No ``scope`` in the answer means the requested scopes were granted; a ``scope`` that is
        not a space-separated string grants nothing we can rely on.
        """
        if "scope" not in payload:
            return []
        granted = payload["scope"].split() if isinstance(payload["scope"], str) else []
        return [scope for scope in self.scopes.split() if scope not in granted]

    # -- employees -------------------------------------------------------------------------
    def download_employees(self, params: dict[str, str], dest: Path, *, describe: str) -> Download:
        """GET /employees with ``params``, body streamed to ``dest`` (overwritten on each retry).

        Retries 429/5xx and dropped connections (also mid-body) with backoff; a 401 refreshes the
        token once. Any final status is returned, its body kept in ``dest``; raises
        :class:`ApiError` only when no answer came at all.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        landed: dict[str, Any] = {}
        used: list[str] = []

        def send() -> requests.Response:
            token = self.access_token()
            used.append(token)
            digest, size = hashlib.sha256(), 0
            try:
                with (
                    self._session.get(
                        f"{self.base_url}/employees",
                        params=params,
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                        timeout=self.timeout,
                        stream=True,
                    ) as response,
                    dest.open("wb") as out,
                ):
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except (
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                raise requests.ConnectionError(f"answer broke off after {size} bytes: {exc}") from None
            landed.update(bytes=size, sha256=digest.hexdigest())
            return response

        response = send_with_retry(
            send, policy=self.policy, describe=describe, on_unauthorized=lambda: self._invalidate(used[-1])
        )
        status = response.status_code
        return Download(
            status=status,
            content_type=response.headers.get("Content-Type", ""),
            path=dest,
            bytes=landed["bytes"],
            sha256=landed["sha256"],
            status_message=None if status == 200 else self._status_message(dest, landed["bytes"]),
        )

    def _status_message(self, path: Path, size: int) -> str:
        """The API's ``statusMessage`` from an error body, else its first characters."""
        if size > _ERROR_BODY_LIMIT:
            return f"(error body of {size} bytes kept at {path})"
        text = path.read_bytes().decode("utf-8", errors="replace")
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("statusMessage"):
            message = str(payload["statusMessage"])
        else:
            message = " ".join(text.split())[:200] or "(empty body)"
        return self.redact(message)


class EduVResource(ConfigurableResource):
    """Edu-V Employees API: base URL and OAuth2 client credentials.

    Give ``private_key`` (PEM, for ``private_key_jwt``) or ``client_secret``; the key wins when
    both are set. ``timeout`` is the longest silence tolerated while a large answer streams.

    Empty settings are read from the environment when a run builds its client (:meth:`client`),
    never at import, so a process that imported the Definitions before its environment was set
    still uses the run's values: ``base_url`` from ``STAFF_EDUV_URL`` (else the local stand-in),
    and, when neither credential is configured, ``EDUV_PRIVATE_KEY`` / ``EDUV_CLIENT_SECRET``
    (only one is needed, so neither can be a required ``EnvVar``). ``client_id`` is set from
    ``EnvVar("EDUV_CLIENT_ID")``.
    """

    base_url: str = ""  # "": STAFF_EDUV_URL, else STANDIN_URL
    client_id: str = ""
    client_secret: str = ""  # "" with private_key "" too: EDUV_CLIENT_SECRET / EDUV_PRIVATE_KEY
    private_key: str = ""
    token_url: str = ""
    scopes: str = " ".join(EDUV_SCOPES)
    timeout: float = 120.0
    connect_timeout: float = 10.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    max_concurrency: int = 4

    def url(self) -> str:
        """The base URL this run talks to."""
        return from_env(self.base_url, "STAFF_EDUV_URL", STANDIN_URL)

    def client(self) -> EduVClient:
        secret, key = self.client_secret, self.private_key
        if not secret and not key:  # configured credentials win as a pair; else the run's environment
            secret, key = from_env("", "EDUV_CLIENT_SECRET"), from_env("", "EDUV_PRIVATE_KEY")
        return EduVClient(
            self.url(),
            self.client_id,
            client_secret=secret,
            private_key=key,
            token_url=self.token_url,
            scopes=self.scopes,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            policy=RetryPolicy(attempts=self.max_attempts, backoff_base=self.backoff_base),
            pool_size=self.max_concurrency,
        )
