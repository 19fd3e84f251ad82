"""Edu-V Employees stand-in: OAuth2 client credentials and ``GET /employees``, strict about the contract.

It answers what ``reference/eduv-employees-endpoint.txt`` allows and refuses the rest the way the
real API does (``{status, statusMessage}`` with 400/401/403/404), so the extract is tested against
the rules rather than against our own assumptions. Employees are kept as the JSON lines they were
given (bytes, or a memory-mapped generator file) and streamed out with chunked encoding, so a
school of a million employees costs no Python object per employee on the common path.

Endpoints:
- ``POST /oauth/token``: ``grant_type=client_credentials``; the client authenticates with
  ``client_secret_basic``, ``client_secret_post`` or ``private_key_jwt`` (RS256 assertion checked
  against the registered public key: iss/sub, aud, exp, iat, one-time jti). ``scope`` asks for a
  subset of ``eduv.employee.basic|communication|roles``; omitted means all the client may have.
  A scope the client may not have is refused (``invalid_scope``), or, for a client registered with
  ``narrow_scope=True``, left out of the grant and of the answer's ``scope`` (RFC 6749 3.3).
- ``GET /employees``: ``orgMasterId`` xor ``orgId`` + ``orgIdType``; ``filterByOrgId``;
  ``schoolPeriodId``. Scopes decide the attributes: communication -> email/phone/mobile, roles ->
  organisationRoles; basic is required.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mmap
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import pandas as pd
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from staff_pipeline.standins.common import Knobs, Request, Response, StandIn, TokenStore
from staff_pipeline.vocab import EDUV_SCOPES, ORG_ID_TYPES, SECTORS

SCOPE_BASIC, SCOPE_COMMUNICATION, SCOPE_ROLES = EDUV_SCOPES
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EMPLOYEE_PARAMS = frozenset({"orgMasterId", "orgId", "orgIdType", "filterByOrgId", "schoolPeriodId"})
COMMUNICATION_FIELDS = ("email", "phone", "mobile")
DEMO_CLIENT_ID = "demo-eduv-client"
DEMO_CLIENT_SECRET = "demo-eduv-secret"  # noqa: S105 - the demo's published credential, not a secret

_SCHOOL_YEAR = re.compile(r"^(\d{4})-(\d{4})$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BEGIN_DATE = re.compile(rb'"beginDate":\s*"(\d{4}-\d{2}-\d{2})"')
_CHUNK = 1 << 20  # bytes per streamed chunk
_ASSERTION_MAX_LIFETIME = 300  # seconds; a longer-lived client assertion is refused
_CLOCK_SKEW = 30


class _Refusal(Exception):
    """A request the API answers with an error body; carries the response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _status(status: int, message: str) -> _Refusal:
    return _Refusal(Response.json(status, {"status": status, "statusMessage": message}))


def _oauth_error(status: int, error: str, description: str) -> _Refusal:
    return _Refusal(Response.json(status, {"error": error, "error_description": description}))


@dataclass
class _Client:
    client_id: str
    secret: str | None
    public_key: rsa.RSAPublicKey | None
    scopes: frozenset[str]
    narrow_scope: bool  # grant the allowed part of the requested scopes instead of refusing


@dataclass
class _School:
    key: str
    oab_id: str
    org_ids: frozenset[tuple[str, str]]
    sector: str
    supports_filter: bool
    consent: frozenset[str] | None  # client ids that may read it; None: every client
    buffers: list[Any] = field(default_factory=list)  # JSON lines: bytes or mmap

    def consented(self, client_id: str) -> bool:
        return self.consent is None or client_id in self.consent


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _school_year(period_id: str) -> tuple[date, date] | None:
    """``2024-2025`` is the Dutch school year from 1 August 2024 up to (not including) 1 August 2025."""
    match = _SCHOOL_YEAR.match(period_id)
    if not match:
        return None
    first, second = int(match.group(1)), int(match.group(2))
    if second != first + 1:
        raise _status(400, f"schoolPeriodId {period_id!r}: a school year spans two consecutive years")
    return date(first, 8, 1), date(second, 8, 1)


def _overlaps(role: Mapping[str, Any], period: tuple[date, date]) -> bool:
    """beginDate is inclusive and endDate exclusive (reference), as is the period."""
    begin = date.fromisoformat(role["beginDate"])
    end = role.get("endDate")
    return begin < period[1] and (end is None or date.fromisoformat(end) > period[0])


def _all_roles_in(line: bytes, period: tuple[date, date]) -> bool:
    """True when every role is open-ended and began before the period ends (most employees), read
    from the bytes without parsing; False means "parse to find out"."""
    if b'"endDate"' in line:
        return False
    begins = _BEGIN_DATE.findall(line)
    return (
        bool(begins)
        and len(begins) == line.count(b'"organisationRole"')
        and max(begins) < period[1].isoformat().encode()
    )


def _lines(buffer: Any) -> Iterator[bytes]:
    start, size = 0, len(buffer)
    while start < size:
        end = buffer.find(b"\n", start)
        end = size if end < 0 else end
        if end > start:
            yield buffer[start:end]
        start = end + 1


def _whole_lines(buffer: Any) -> Iterator[bytes]:
    """About ``_CHUNK`` bytes at a time, cut at line ends, without the final newline."""
    start, size = 0, len(buffer)
    while start < size:
        end = buffer.find(b"\n", min(start + _CHUNK, size - 1))
        end = size if end < 0 else end
        if end > start:
            yield buffer[start:end]
        start = end + 1


def _json_array(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``[`` + pieces joined by ``,\\n`` + ``]``, in chunks of about ``_CHUNK`` bytes."""
    out = [b"["]
    size = 1
    first = True
    for piece in pieces:
        if not first:
            out.append(b",\n")
        out.append(piece)
        first = False
        size += len(piece) + 2
        if size >= _CHUNK:
            yield b"".join(out)
            out, size = [], 0
    out.append(b"]")
    yield b"".join(out)


def _cut(stream: Iterator[bytes]) -> Iterator[bytes]:
    """Send the first chunk, then break the connection (the frame drops it on the exception)."""
    first = next(stream)
    yield first[: max(1, len(first) // 2)]
    raise ConnectionAbortedError("stand-in fault: answer cut off")


class EduVStandIn(StandIn):
    """An in-memory Edu-V source: clients, schools (with consent), employees; see the module docstring."""

    name = "eduv"

    def __init__(self, knobs: Knobs | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(knobs, host, port)
        self.tokens = TokenStore(self.knobs)
        self._clients: dict[str, _Client] = {}
        self._schools: dict[str, _School] = {}
        self._by_org_id: dict[tuple[str, str], str] = {}
        self._by_oab: dict[str, list[str]] = {}
        self._periods: dict[str, tuple[date, date]] = {}
        self._used_jti: set[str] = set()
        self._lock = threading.Lock()
        self._maps: list[mmap.mmap] = []
        self._temp_dirs: list[Path] = []
        self._script: deque[str] = deque()

    def script_faults(self, *faults: str) -> None:
        """Give the next requests these faults, in order, before the random knobs apply again.

        '429', '500' and 'drop' (no answer) are the frame's; 'cut' answers 200 and breaks the
        connection off in the middle of the employee list.
        """
        unknown = set(faults) - {"429", "500", "drop", "cut"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        with self._lock:
            self._script.extend(faults)

    def fault(self) -> str | None:
        with self._lock:
            if self._script and self._script[0] != "cut":
                return self._script.popleft()
        return super().fault()

    def _take_cut(self) -> bool:
        with self._lock:
            if self._script and self._script[0] == "cut":
                self._script.popleft()
                return True
        return False

    def stop(self) -> None:
        super().stop()
        for mapped in self._maps:
            mapped.close()
        for folder in self._temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    # -- provisioning ----------------------------------------------------------------------
    def add_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        public_key_pem: str | bytes | None = None,
        scopes: Iterable[str] = EDUV_SCOPES,
        narrow_scope: bool = False,
    ) -> None:
        """Register a consumer: a client secret, a public key for ``private_key_jwt``, or both.

        ``scopes`` are what the client may have. ``narrow_scope`` makes a request for more grant
        only those, as a server may (RFC 6749 3.3), instead of refusing it: the case of a board
        that withdrew part of a consumer's authorisation.
        """
        if secret is None and public_key_pem is None:
            raise ValueError("a client needs a secret or a public key")
        key = None
        if public_key_pem is not None:
            pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
            loaded = serialization.load_pem_public_key(pem)
            if not isinstance(loaded, rsa.RSAPublicKey):
                raise ValueError("private_key_jwt clients need an RSA public key (RS256)")
            key = loaded
        unknown = set(scopes) - set(EDUV_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}")
        self._clients[client_id] = _Client(client_id, secret, key, frozenset(scopes), narrow_scope)

    def add_school(
        self,
        key: str,
        *,
        oab_id: str,
        org_ids: Iterable[tuple[str, str]] = (),
        sector: str = "PO",
        supports_filter: bool = True,
        consent: Iterable[str] | None = None,
    ) -> None:
        """Register a school of the board (OAB) ``oab_id`` with secondary ids ``(type, id)``.

        ``consent`` lists the client ids the school has consented to; None means every client.
        """
        if sector not in SECTORS:
            raise ValueError(f"sector must be one of {SECTORS}")
        ids = frozenset((str(t), str(i)) for t, i in org_ids)
        for id_type, _ in ids:
            if id_type not in ORG_ID_TYPES:
                raise ValueError(f"organisationIdType {id_type!r} is not one of {ORG_ID_TYPES}")
        school = _School(
            key, oab_id, ids, sector, supports_filter, None if consent is None else frozenset(consent)
        )
        self._schools[key] = school
        for pair in ids:
            self._by_org_id[pair] = key
        self._by_oab.setdefault(oab_id, []).append(key)

    def add_employees(self, key: str, employees: Iterable[Mapping[str, Any]]) -> int:
        """Add Employee objects (served as given) to a school; returns how many."""
        lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for e in employees]
        if lines:
            self._schools[key].buffers.append(b"".join(lines))
        return len(lines)

    def add_period(self, period_id: str, begin: date, end: date) -> None:
        """A school period known by UUID (``end`` exclusive)."""
        self._periods[period_id.lower()] = (begin, end)

    def load_generated(self, organisations: pd.DataFrame, eduv_dir: Path) -> int:
        """Register every configured school with Edu-V ids and serve the generator's files.

        ``eduv_dir/<school_key>.jsonl`` holds one Employee per line; the files are memory-mapped,
        not read into Python objects. Returns the number of schools registered.
        """
        from staff_pipeline.generator import oab_id

        count = 0
        for row in organisations.to_dict("records"):
            org_id = row.get("eduv_org_id")
            has_org_id = isinstance(org_id, str) and bool(org_id)
            master = row.get("eduv_org_master_id")
            if not has_org_id and not (isinstance(master, str) and master):
                continue
            self.add_school(
                row["school_key"],
                oab_id=oab_id(row),
                org_ids=[(row["eduv_org_id_type"], org_id)] if has_org_id else [],
                sector=row["sector"],
                supports_filter=bool(row["eduv_supports_filter"]),
            )
            path = Path(eduv_dir) / f"{row['school_key']}.jsonl"
            if path.exists() and path.stat().st_size:
                with path.open("rb") as handle:
                    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                self._maps.append(mapped)
                self._schools[row["school_key"]].buffers.append(mapped)
            count += 1
        return count

    def seed_demo(self, people: int = 200) -> list[str]:
        """Demo credentials and a small generated roster for the configured schools (printable)."""
        from staff_pipeline.config import load_organisations
        from staff_pipeline.generator import generate

        self.add_client(DEMO_CLIENT_ID, secret=DEMO_CLIENT_SECRET)
        folder = Path(tempfile.mkdtemp(prefix="eduv-demo-"))
        self._temp_dirs.append(folder)
        organisations = load_organisations()
        generated = generate(folder, people, organisations=organisations)
        schools = self.load_generated(organisations, generated.eduv_dir)
        return [
            f"demo client id {DEMO_CLIENT_ID}, client secret {DEMO_CLIENT_SECRET} (demo credentials)",
            f"{generated.eduv_employees} employees in {schools} schools; token: POST /oauth/token, "
            "then GET /employees?orgId=12AB&orgIdType=OIE_CODE",
        ]

    # -- HTTP ------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        try:
            if request.path == "/oauth/token":
                if request.method != "POST":
                    raise _status(405, "use POST for the token endpoint")
                return self._token(request)
            if request.path == "/employees":
                if request.method != "GET":
                    raise _status(405, "use GET for /employees")
                return self._employees(request)
            raise _status(404, f"no such resource {request.path}")
        except _Refusal as refusal:
            return refusal.response

    # token endpoint
    def _token(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise _oauth_error(400, "invalid_request", "the token request must be form-urlencoded")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8"), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials":
            raise _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        client = self._authenticate(request, form)
        requested = form.get("scope", "").split()
        unknown = [s for s in requested if s not in client.scopes]
        if unknown and not client.narrow_scope:
            raise _oauth_error(
                400, "invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}"
            )
        granted = [s for s in EDUV_SCOPES if s in client.scopes and (s in requested or not requested)]
        issued = self.tokens.issue(client.client_id, scopes=frozenset(granted))
        if issued is None:
            raise _oauth_error(429, "slow_down", "too many live tokens for this client; reuse one")
        token, expires_in = issued
        return Response.json(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": " ".join(granted),
            },
            {"Cache-Control": "no-store"},
        )

    def _authenticate(self, request: Request, form: dict[str, str]) -> _Client:
        """Exactly one client authentication method (RFC 6749 2.3, RFC 7523)."""
        basic = request.headers.get("authorization", "")
        methods = [bool(basic), "client_secret" in form, "client_assertion" in form]
        if sum(methods) != 1:
            raise _oauth_error(400, "invalid_request", "use exactly one client authentication method")
        if basic:
            if not basic.startswith("Basic "):
                raise _oauth_error(401, "invalid_client", "unsupported Authorization scheme")
            try:
                client_id, _, secret = base64.b64decode(basic[6:], validate=True).decode().partition(":")
            except ValueError:
                raise _oauth_error(401, "invalid_client", "malformed Basic credentials") from None
            return self._check_secret(unquote_plus(client_id), unquote_plus(secret))
        if "client_secret" in form:
            return self._check_secret(form.get("client_id", ""), form["client_secret"])
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _oauth_error(400, "invalid_request", f"client_assertion_type must be {JWT_BEARER}")
        client = self._check_assertion(request, form["client_assertion"])
        if form.get("client_id", client.client_id) != client.client_id:
            raise _oauth_error(401, "invalid_client", "client_id does not match the assertion")
        return client

    def _check_secret(self, client_id: str, secret: str) -> _Client:
        client = self._clients.get(client_id)
        if (
            client is None
            or client.secret is None
            or not hmac.compare_digest(client.secret.encode(), secret.encode())
        ):
            raise _oauth_error(401, "invalid_client", "client authentication failed")
        return client

    def _check_assertion(self, request: Request, assertion: str) -> _Client:
        fail = _oauth_error(401, "invalid_client", "client assertion rejected")
        try:
            head, body, signature = assertion.split(".")
            header = json.loads(_b64url_decode(head))
            claims = json.loads(_b64url_decode(body))
            sig = _b64url_decode(signature)
        except ValueError:
            raise fail from None
        if header.get("alg") != "RS256":
            raise _oauth_error(401, "invalid_client", "client assertion must be signed with RS256")
        client = self._clients.get(str(claims.get("iss")))
        if client is None or client.public_key is None or claims.get("sub") != client.client_id:
            raise fail
        try:
            client.public_key.verify(sig, f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise fail from None
        audience = claims.get("aud")
        audiences = set(audience) if isinstance(audience, list) else {audience}
        expected = {f"{self.url}/oauth/token", f"http://{request.headers.get('host', '')}/oauth/token"}
        if not audiences & expected:
            raise _oauth_error(401, "invalid_client", "client assertion audience is not this token endpoint")
        now = time.time()
        exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
        if not isinstance(exp, int | float) or exp <= now:
            raise _oauth_error(401, "invalid_client", "client assertion has expired")
        if not isinstance(iat, int | float) or iat > now + _CLOCK_SKEW or exp - iat > _ASSERTION_MAX_LIFETIME:
            raise _oauth_error(401, "invalid_client", "client assertion iat/exp out of range")
        with self._lock:
            if not jti or jti in self._used_jti:
                raise _oauth_error(401, "invalid_client", "client assertion jti missing or already used")
            self._used_jti.add(jti)
        return client

    # employees endpoint
    def _employees(self, request: Request) -> Response:
        checked = self.tokens.check(request.headers.get("authorization"))
        if checked is None:
            raise _status(401, "Access token is missing, invalid or expired")
        client_id, claims = checked
        scopes: frozenset[str] = claims["scopes"]
        if SCOPE_BASIC not in scopes:
            raise _status(403, f"The access token lacks the {SCOPE_BASIC} scope")
        query = self._query(request)
        period = self._period(query.get("schoolPeriodId"))
        keys = self._scope(query, client_id)
        full = period is None and SCOPE_COMMUNICATION in scopes and SCOPE_ROLES in scopes
        buffers = [b for k in keys for b in self._schools[k].buffers]
        if full and len(keys) == 1:
            pieces = (chunk.replace(b"\n", b",\n") for b in buffers for chunk in _whole_lines(b))
        else:
            pieces = self._pieces(buffers, scopes, period, dedupe=len(keys) > 1)
        stream = _json_array(pieces)
        return Response(200, stream=_cut(stream) if self._take_cut() else stream)

    def _query(self, request: Request) -> dict[str, str]:
        unknown = sorted(set(request.query) - EMPLOYEE_PARAMS)
        if unknown:
            raise _status(400, f"Unknown query parameter(s): {', '.join(unknown)}")
        repeated = sorted(k for k, v in request.query.items() if len(v) > 1)
        if repeated:
            raise _status(400, f"Query parameter(s) given more than once: {', '.join(repeated)}")
        query = {k: v[0] for k, v in request.query.items()}
        empty = sorted(k for k, v in query.items() if not v.strip())
        if empty:
            raise _status(400, f"Query parameter(s) without a value: {', '.join(empty)}")
        master, org_id, org_type = query.get("orgMasterId"), query.get("orgId"), query.get("orgIdType")
        if master and (org_id or org_type):
            raise _status(400, "Use either orgMasterId or orgId with orgIdType, not both")
        if not master and not (org_id and org_type):
            if org_id or org_type:
                raise _status(400, "orgId and orgIdType must be given together")
            raise _status(400, "Either orgMasterId or orgId with orgIdType is required")
        if org_type and org_type not in ORG_ID_TYPES:
            raise _status(400, f"orgIdType {org_type!r} is not one of {', '.join(ORG_ID_TYPES)}")
        flag = query.get("filterByOrgId")
        if flag is not None and flag not in ("true", "false"):
            raise _status(400, f"filterByOrgId must be true or false, got {flag!r}")
        if master and flag == "true":
            raise _status(400, "filterByOrgId must be absent or false when orgMasterId is used")
        period = query.get("schoolPeriodId")
        if period is not None and not (_SCHOOL_YEAR.match(period) or _UUID.match(period)):
            raise _status(400, f"schoolPeriodId {period!r} must be a school year like 2024-2025 or a UUID")
        return query

    def _period(self, period_id: str | None) -> tuple[date, date] | None:
        if period_id is None:
            return None
        year = _school_year(period_id)
        if year is not None:
            return year
        if period_id.lower() not in self._periods:
            raise _status(400, f"Unknown schoolPeriodId {period_id}")
        return self._periods[period_id.lower()]

    def _scope(self, query: dict[str, str], client_id: str) -> list[str]:
        """The school keys a query covers: only schools that consented to this client."""
        refused = _status(403, f"The school has not given consent to client {client_id}")
        master = query.get("orgMasterId")
        if master:
            if master not in self._by_oab:
                raise _status(404, f"No school known with orgMasterId {master}")
            keys = [k for k in self._by_oab[master] if self._schools[k].consented(client_id)]
            if not keys:
                raise refused
            return keys
        key = self._by_org_id.get((query["orgIdType"], query["orgId"]))
        if key is None:
            raise _status(404, f"No school known with orgId {query['orgId']} of type {query['orgIdType']}")
        school = self._schools[key]
        flag = query.get("filterByOrgId")
        if flag is not None and not school.supports_filter:
            raise _status(400, "This source does not support filterByOrgId")
        if not school.consented(client_id):
            raise refused
        if (flag == "true") if flag is not None else school.sector == "PO":
            return [key]
        return [k for k in self._by_oab[school.oab_id] if self._schools[k].consented(client_id)]

    @staticmethod
    def _pieces(
        buffers: list[Any], scopes: frozenset[str], period: tuple[date, date] | None, *, dedupe: bool
    ) -> Iterator[bytes]:
        """Per-employee path: drop duplicates across schools, filter roles by period, apply scopes."""
        seen: set[bytes] = set()
        full_scopes = SCOPE_COMMUNICATION in scopes and SCOPE_ROLES in scopes
        for buffer in buffers:
            for line in _lines(buffer):
                if dedupe:
                    digest = hashlib.blake2b(line, digest_size=16).digest()
                    if digest in seen:
                        continue
                    seen.add(digest)
                if full_scopes and (period is None or _all_roles_in(line, period)):
                    yield line
                    continue
                employee = json.loads(line)
                if period is not None:
                    roles = [r for r in employee.get("organisationRoles", []) if _overlaps(r, period)]
                    if not roles:
                        continue
                    employee["organisationRoles"] = roles
                if SCOPE_COMMUNICATION not in scopes:
                    for name in COMMUNICATION_FIELDS:
                        employee.pop(name, None)
                if SCOPE_ROLES not in scopes:
                    employee.pop("organisationRoles", None)
                yield json.dumps(employee, ensure_ascii=False, separators=(",", ":")).encode()
