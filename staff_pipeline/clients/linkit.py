"""LinkIt! REST client: signed URLs, JSON or XML answers, and the Dagster resource.

Every call carries ``timestamp`` (GMT, ``M/d/yyyy h:m:s AM/PM``), ``accesskey`` and ``tag`` in the
query string. The tag proves the private key over the request; the vendor hands out its exact
recipe with the key, so the signer is pluggable (:data:`SIGNERS`). The default,
:func:`hmac_sha256_signer`, is the hex HMAC-SHA256, keyed with the private key, of
:func:`canonical_request`: the path, ``?``, and the query parameters other than ``tag`` in the
order sent, form-encoded as :func:`urllib.parse.urlencode` does. The stand-in verifies the same.

The access key, private key and tag are secrets: the query string is redacted in every log line
and error, and API error texts pass through :func:`staff_pipeline.http.redact_text`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import requests
from dagster import ConfigurableResource

from staff_pipeline.http import (
    ApiError,
    RetryPolicy,
    TransportResponse,
    api_base_url,
    make_session,
    pin_environment,
    redact_text,
    redact_url,
    send_with_retry,
)
from staff_pipeline.settings import from_env, key_pair

log = logging.getLogger(__name__)

STANDIN_URL = "http://127.0.0.1:8102"  # the local stand-in's standard port


class _RedactQueryStrings(logging.Filter):
    """urllib3 logs every request line with its query string at DEBUG: strip the key and tag from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), ()
        return True


_URLLIB3_LOG = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _RedactQueryStrings) for f in _URLLIB3_LOG.filters):
    _URLLIB3_LOG.addFilter(_RedactQueryStrings())

Signer = Callable[[str, str], str]
"""``signer(canonical_request, private_key) -> tag``."""


def hmac_sha256_signer(canonical: str, private_key: str) -> str:
    """The documented default recipe: hex HMAC-SHA256 of the canonical request, keyed with the private key."""
    return hmac.new(private_key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


SIGNERS: dict[str, Signer] = {"hmac-sha256": hmac_sha256_signer}


def canonical_request(path: str, params: Sequence[tuple[str, str]]) -> str:
    """What the tag signs: ``path?query`` without the ``tag`` parameter, as sent on the wire."""
    return f"{path}?{urlencode([(k, v) for k, v in params if k != 'tag'])}"


def format_timestamp(moment: datetime) -> str:
    """LinkIt's request time: GMT, no zero padding, 12-hour clock (``5/1/2013 5:10:5 PM``)."""
    t = moment.astimezone(UTC)
    hour = t.hour % 12 or 12
    return f"{t.month}/{t.day}/{t.year} {hour}:{t.minute}:{t.second} {'AM' if t.hour < 12 else 'PM'}"


@functools.lru_cache(maxsize=256)
def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp` (also accepts zero-padded parts); ValueError if malformed.

    Cached: a server checking every request parses each second's timestamp once, not per request.
    """
    return datetime.strptime(text.strip(), "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)


_ID_SEGMENT = re.compile(r"/\d+")


class LinkItError(ApiError):
    """A LinkIt call that failed: HTTP error or ``Result: ERROR``; ``error`` is the API's text."""

    def __init__(self, message: str, *, status: int | None = None, error: str = "") -> None:
        super().__init__(message, status=status, body=error)
        self.error = error

    @property
    def already_exists(self) -> bool:
        """The pairing rule: a create with a username or local code that exists."""
        text = self.error.lower()
        return "exist" in text and ("username" in text or "local code" in text or "localcode" in text)


class UnsafeXmlError(ValueError):
    """An XML answer with a DTD or entity declaration (refused: no entity expansion, ever)."""


def parse_xml(text: str) -> ET.Element:
    """Parse an XML document, refusing any DTD or entity declaration before the parser sees it."""
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise UnsafeXmlError("XML document declares a DTD or entities; refused")
    return ET.fromstring(text)  # noqa: S314 - DTDs and entities are refused above


def _xml_value(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return element.text if element.text is not None else None
    if element.tag in ("Schools", "Users"):
        return [_xml_value(child) for child in children]
    return {child.tag: _xml_value(child) for child in children}


def xml_envelope(root: ET.Element) -> dict[str, Any]:
    """``<Response>`` as the JSON-shaped envelope: ``{"Result", "Data", "Error"}``."""
    return {
        "Result": root.findtext("Result"),
        "Data": _xml_value(root.find("Data")) if root.find("Data") is not None else None,
        "Error": root.findtext("Error"),
    }


def _normalise_user(user: Mapping[str, Any]) -> dict[str, Any]:
    """Integers where the contract says integer; ``Schools`` always a list of SchoolIDs' dicts."""
    out = dict(user)
    out["UserID"] = int(out["UserID"])
    schools = out.get("Schools") or []
    if isinstance(schools, dict):  # a single <School> in XML
        schools = [schools]
    out["Schools"] = [{**s, "SchoolID": int(s["SchoolID"])} for s in schools]
    return out


class LinkItClient:
    """One district's LinkIt! account (one access key per district)."""

    def __init__(
        self,
        base_url: str,
        access_key: str,
        private_key: str,
        *,
        signer: Signer = hmac_sha256_signer,
        timeout: float = 10.0,
        policy: RetryPolicy | None = None,
        response_format: str = "json",
        session: requests.Session | None = None,
        pool_size: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if response_format not in ("json", "xml"):
            raise ValueError(f"response_format must be json or xml, got {response_format!r}")
        if not access_key or not private_key:
            raise ValueError("LinkIt access key and private key are required")
        self.base_url = api_base_url(base_url, "LinkIt")
        self._access_key = access_key
        self._encoded_key = urlencode([("accesskey", access_key)])
        self._private_key = private_key
        self._signer = signer
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.response_format = response_format
        self.session = session or make_session(pool_size)
        # Calls go over the keep-alive transport (headers and body in one write) unless a proxy applies.
        self._transport = pin_environment(self.session, self.base_url, timeout=timeout)
        self._base_path = urlsplit(self.base_url).path
        self._clock = clock
        self.requests: Counter[str] = Counter()  # "PUT /staffs/{id}" -> requests answered
        self._count_lock = threading.Lock()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.session.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _signed_query(self, path: str, extra: Sequence[tuple[str, str]]) -> tuple[str, str]:
        """The query string to send (a fresh timestamp, the access key, ``extra``, then ``tag``) and the tag.

        The same encoding of the parameters makes the canonical request and the wire, so the tag
        signs exactly what is sent (:func:`canonical_request`), the base URL's path included: an API
        served under ``/api/v1`` sees ``/api/v1/staffs`` on the wire.
        """
        # = urlencode([("timestamp", ...), ("accesskey", ...), *extra]), with the constant part made once
        encoded = f"timestamp={quote_plus(format_timestamp(self._clock()))}&{self._encoded_key}"
        if extra:
            encoded += f"&{urlencode(extra)}"
        tag = self._signer(f"{self._base_path}{path}?{encoded}", self._private_key)
        return f"{encoded}&tag={quote_plus(tag)}", tag

    def _redact(self, text: str, tags: Sequence[str] = ()) -> str:
        return redact_text(text, [self._access_key, self._private_key, *tags])

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one signed request (a fresh timestamp and tag per attempt) and return its ``Data``."""
        describe = f"LinkIt {method} {path}"
        headers = {"Accept": "application/xml" if self.response_format == "xml" else "application/json"}
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        if payload is not None:
            headers["Content-Type"] = "application/json"

        tags: list[str] = []  # every tag sent for this call, so an API echoing one cannot leak it
        debug = log.isEnabledFor(logging.DEBUG)

        transport = self._transport

        def send() -> requests.Response | TransportResponse:
            signed, tag = self._signed_query(path, query)
            tags.append(tag)
            if debug:
                log.debug("%s %s", method, redact_url(f"{self.base_url}{path}?{signed}"))
            if transport is not None:  # TransportError (no query in its text) is retried
                return transport.request(method, f"{self._base_path}{path}?{signed}", payload, headers)
            try:
                url = f"{self.base_url}{path}?{signed}"
                return self.session.request(method, url, data=payload, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout):
                raise  # retried by send_with_retry, whose message is redacted
            except requests.RequestException as exc:
                raise LinkItError(
                    f"{describe}: {type(exc).__name__}: {self._redact(str(exc), tags)}"
                ) from None

        response = send_with_retry(send, policy=self.policy, describe=describe)
        with self._count_lock:
            self.requests[f"{method} {_ID_SEGMENT.sub('/{id}', path)}"] += 1
        envelope = self._envelope(response, describe, tags)
        if response.status_code >= 400 or envelope.get("Result") != "SUCCESS":
            error = self._redact(str(envelope.get("Error") or response.reason or "no error text"), tags)
            raise LinkItError(
                f"{describe}: HTTP {response.status_code}: {error}", status=response.status_code, error=error
            )
        return envelope.get("Data")

    def _envelope(
        self, response: requests.Response | TransportResponse, describe: str, tags: Sequence[str]
    ) -> dict[str, Any]:
        text = response.text
        try:
            if "xml" in response.headers.get("Content-Type", ""):
                return xml_envelope(parse_xml(text))
            envelope = json.loads(text)
        except (ValueError, ET.ParseError) as exc:
            reason = self._redact(str(exc), tags)
            raise LinkItError(
                f"{describe}: HTTP {response.status_code}: unreadable answer ({reason})",
                status=response.status_code,
            ) from None
        if not isinstance(envelope, dict):
            raise LinkItError(
                f"{describe}: HTTP {response.status_code}: answer is not an envelope",
                status=response.status_code,
            )
        return envelope

    # -- the calls a loader needs ------------------------------------------------------------
    def create_staff(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /staffs``: not idempotent; callers recover on :attr:`LinkItError.already_exists`."""
        return _normalise_user(self.call("POST", "/staffs", body=fields)["User"])

    def find_staff(
        self, *, local_code: str | None = None, username: str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /staffs?localcode=&username=``: the district's accounts matching every filter given."""
        query = [("localcode", local_code)] if local_code is not None else []
        query += [("username", username)] if username is not None else []
        if not query:
            raise ValueError("find_staff needs a local code or a username")
        data = self.call("GET", "/staffs", query=query) or {}
        return [_normalise_user(u) for u in (data.get("Users") or [])]

    def update_staff(self, user_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /staffs/{UserID}``: the fields given change; ``Status`` Active/Inactive (de)activates."""
        return _normalise_user(self.call("PUT", f"/staffs/{int(user_id)}", body=fields)["User"])

    def assign_school(self, user_id: int, school_id: int) -> dict[str, Any]:
        """``POST /staffs/{UserID}/schools`` with ``SchoolID``."""
        data = self.call("POST", f"/staffs/{int(user_id)}/schools", body={"SchoolID": int(school_id)})
        return _normalise_user(data["User"])

    def unassign_school(self, user_id: int, school_id: int) -> dict[str, Any]:
        """``DELETE /staffs/{UserID}/schools/{SchoolID}``."""
        return _normalise_user(
            self.call("DELETE", f"/staffs/{int(user_id)}/schools/{int(school_id)}")["User"]
        )


class LinkItResource(ConfigurableResource):
    """LinkIt! connection settings; per-district keys come from ``LINKIT_ACCESS_KEY_<DISTRICT>``.

    ``access_key``/``private_key`` are the fallback pair for districts without their own. ``signer``
    names a recipe in :data:`SIGNERS`. An empty ``base_url`` means ``STAFF_LINKIT_URL``, else the
    local stand-in, read when a run builds a client (never at import, so a process that imported
    the Definitions earlier sees the run's value).
    """

    base_url: str = ""  # "": STAFF_LINKIT_URL, else STANDIN_URL
    access_key: str = ""
    private_key: str = ""
    timeout: float = 10.0
    max_attempts: int = 5
    response_format: str = "json"
    signer: str = "hmac-sha256"
    concurrency: int = 8

    def url(self) -> str:
        """The base URL this run talks to."""
        return from_env(self.base_url, "STAFF_LINKIT_URL", STANDIN_URL)

    def keys_for(self, district: str) -> tuple[str, str]:
        return key_pair(
            ("LINKIT_ACCESS_KEY", "LINKIT_PRIVATE_KEY"),
            district.upper().replace("-", "_"),
            (self.access_key, self.private_key),
            f"LinkIt district {district!r}",
        )

    def client_for(self, district: str) -> LinkItClient:
        if self.signer not in SIGNERS:
            raise ValueError(f"unknown LinkIt signer {self.signer!r}; known: {', '.join(SIGNERS)}")
        access, private = self.keys_for(district)
        return LinkItClient(
            self.url(),
            access,
            private,
            signer=SIGNERS[self.signer],
            timeout=self.timeout,
            policy=RetryPolicy(attempts=self.max_attempts),
            response_format=self.response_format,
            pool_size=self.concurrency,
        )
