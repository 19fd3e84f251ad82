"""LinkIt! stand-in: signed-URL staff API, strict about the reference's fields, limits and pairing.

Calls (all signed as in :mod:`staff_pipeline.clients.linkit`; the access key picks the district):

- ``POST /staffs``: create (body JSON, or XML ``<UserElement>``); the reference's fields and limits.
- ``GET /staffs?localcode=..&username=..``: the district's accounts matching every filter given
  (``Data.Users``); ``GET /staffs/{UserID}``: one account.
- ``PUT /staffs/{UserID}``: change any field; ``Status`` ``Active``/``Inactive`` (deactivate).
- ``POST /staffs/{UserID}/schools`` with ``SchoolID``; ``DELETE /staffs/{UserID}/schools/{SchoolID}``.

Auth failures (unknown access key, bad tag, timestamp more than ``max_skew`` off) answer 401;
business errors (limits, role, pairing) answer HTTP 200 with ``Result: ERROR``, as LinkIt does.
Answers are XML when the request asks for it (``Accept: application/xml``) or sent an XML body.
"""

from __future__ import annotations

import functools
import hmac
import itertools
import json
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from staff_pipeline.clients.linkit import (
    SIGNERS,
    Signer,
    UnsafeXmlError,
    canonical_request,
    parse_timestamp,
    parse_xml,
)
from staff_pipeline.standins.common import Knobs, Request, Response, StandIn
from staff_pipeline.vocab import LINKIT_LIMITS, LINKIT_ROLES

FIELDS = (
    "Role",
    "SchoolID",
    "UserName",
    "FirstName",
    "LastName",
    "EmailAddress",
    "PhoneNumber",
    "LocalCode",
    "StateCode",
)
KEY_LIMIT = 128  # AccessKey and Tag: STRING (128)
USER_ORDER = (
    "UserID",
    "Role",
    "UserName",
    "FirstName",
    "LastName",
    "PhoneNumber",
    "LocalCode",
    "StateCode",
    "Status",
    "Schools",
    "EmailAddress",
    "ModifiedDate",
    "CreatedDate",
)


def format_date(moment: datetime) -> str:
    """Answer dates: ``6/1/2013 3:43:59 PM`` (minutes and seconds padded, as in the reference)."""
    return _format_second(moment.replace(microsecond=0))


@functools.lru_cache(maxsize=256)
def _format_second(moment: datetime) -> str:  # every answer formats two dates: once per second will do
    hour = moment.hour % 12 or 12
    noon = "AM" if moment.hour < 12 else "PM"
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment:%M:%S} {noon}"


@dataclass
class District:
    name: str
    private_key: str
    schools: dict[int, str]
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_username: dict[str, int] = field(default_factory=dict)
    by_local_code: dict[str, int] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class LinkItStandIn(StandIn):
    name = "linkit"

    def __init__(
        self,
        knobs: Knobs | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_skew: timedelta = timedelta(minutes=5),
        signer: Signer = SIGNERS["hmac-sha256"],
        base_path: str = "",
    ) -> None:
        super().__init__(knobs, host, port)
        self.max_skew = max_skew
        self.base_path = base_path.rstrip("/")  # where the API is served, e.g. "/api/v1"
        self.signer = signer
        self._districts: dict[str, District] = {}  # by access key
        self._ids = itertools.count(324024)
        self._lock = threading.Lock()

    # -- provisioning ----------------------------------------------------------------------
    def add_district(
        self, district: str, access_key: str, private_key: str, school_ids: dict[int, str] | list[int]
    ) -> None:
        schools = school_ids if isinstance(school_ids, dict) else {i: f"School {i}" for i in school_ids}
        self._districts[access_key] = District(district, private_key, {int(k): v for k, v in schools.items()})

    def users(self, district: str) -> list[dict[str, Any]]:
        """The district's accounts (for tests), oldest first."""
        for d in self._districts.values():
            if d.name == district:
                with self._lock:
                    return [self._view(d, u) for u in d.users.values()]
        raise KeyError(district)

    def seed_demo(self) -> list[str]:
        """Demo districts matching ``data/organisations.csv``; keys are demo values, not secrets."""
        from staff_pipeline.config import load_organisations

        orgs = load_organisations()
        lines = []
        for district, rows in orgs.groupby("linkit_district", sort=False):
            schools = {
                int(r.linkit_school_id): r.school_name
                for r in rows.itertuples()
                if r.linkit_school_id is not None and str(r.linkit_school_id) != "<NA>"
            }
            access, private = f"demo-{district}-access", f"demo-{district}-private"
            self.add_district(str(district), access, private, schools)
            suffix = str(district).upper()
            lines.append(
                f"district {district}: LINKIT_ACCESS_KEY_{suffix}={access} "
                f"LINKIT_PRIVATE_KEY_{suffix}={private} schools {sorted(schools)}"
            )
        return lines

    # -- routing ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        as_xml = "xml" in request.headers.get("accept", "") or request.body.lstrip().startswith(b"<")
        try:
            if not request.path.startswith(f"{self.base_path}/"):
                raise _Refused(404, f"No such resource: {request.method} {request.path}")
            district = self._authenticate(request)
            parts = [p for p in request.path.removeprefix(self.base_path).split("/") if p]
            with self._lock:
                data = self._route(request, district, parts)
        except _Refused as refused:
            return self._answer(refused.status, "ERROR", None, refused.error, as_xml)
        return self._answer(200, "SUCCESS", data, None, as_xml)

    def _route(self, request: Request, district: District, parts: list[str]) -> dict[str, Any]:
        method = request.method
        if parts == ["staffs"] and method == "POST":
            return {"User": self._create(district, self._body(request))}
        if parts == ["staffs"] and method == "GET":
            return {"Users": self._find(district, request)}
        if len(parts) >= 2 and parts[0] == "staffs":
            user = self._user(district, parts[1])
            if len(parts) == 2 and method == "GET":
                return {"User": self._view(district, user)}
            if len(parts) == 2 and method == "PUT":
                return {"User": self._update(district, user, self._body(request))}
            if len(parts) == 3 and parts[2] == "schools" and method == "POST":
                return {"User": self._assign(district, user, self._body(request))}
            if len(parts) == 4 and parts[2] == "schools" and method == "DELETE":
                user["Schools"] = [s for s in user["Schools"] if str(s) != parts[3]]
                self._touch(user)
                return {"User": self._view(district, user)}
        raise _Refused(404, f"No such resource: {method} {request.path}")

    # -- auth ------------------------------------------------------------------------------
    def _authenticate(self, request: Request) -> District:
        stamp, access, tag = request.arg("timestamp"), request.arg("accesskey"), request.arg("tag")
        if not stamp or not access or not tag:
            raise _Refused(401, "timestamp, accesskey and tag are required")
        if len(access) > KEY_LIMIT or len(tag) > KEY_LIMIT:
            raise _Refused(401, f"accesskey and tag are at most {KEY_LIMIT} characters")
        district = self._districts.get(access)
        if district is None:
            raise _Refused(401, "Invalid access key")
        try:
            sent = parse_timestamp(stamp)
        except ValueError:
            raise _Refused(401, "Invalid timestamp") from None
        if abs(datetime.now(UTC) - sent) > self.max_skew:
            raise _Refused(401, "Request expired: timestamp is too far from the server time")
        params = [(k, v) for k, values in request.query.items() for v in values]
        expected = self.signer(canonical_request(request.path, params), district.private_key)
        if len(request.query.get("tag", [])) != 1 or not _same(expected, tag):
            raise _Refused(401, "Invalid tag")
        return district

    # -- bodies ----------------------------------------------------------------------------
    def _body(self, request: Request) -> dict[str, Any]:
        text = request.body.decode("utf-8", errors="replace").strip()
        try:
            if text.startswith("<"):
                root = parse_xml(text)
                return {child.tag: (child.text or "") for child in root}
            body = json.loads(text or "null")
        except (ValueError, ET.ParseError, UnsafeXmlError) as exc:
            raise _Refused(400, f"Malformed request body: {exc}") from None
        if not isinstance(body, dict):
            raise _Refused(400, "Request body must be an object")
        return body

    def _validate(self, district: District, body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        allowed = FIELDS + (() if creating else ("Status",))
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise _Refused(200, f"Unknown field(s): {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for name, value in body.items():
            if name == "SchoolID":
                out[name] = self._school(district, value) if value not in (None, "") else None
                continue
            if value is not None and not isinstance(value, str):
                raise _Refused(200, f"{name} must be a string")
            limit = LINKIT_LIMITS.get(name)
            if limit and value is not None and len(value) > limit:
                raise _Refused(200, f"{name} exceeds {limit} characters")
            out[name] = value
        if "Role" in out:
            role = (out["Role"] or "").upper()
            if role not in LINKIT_ROLES:
                raise _Refused(200, f"Invalid Role: must be one of {', '.join(LINKIT_ROLES)}")
            out["Role"] = role
        if "Status" in out and (out["Status"] or "").lower() not in ("active", "inactive"):
            raise _Refused(200, "Invalid Status: must be Active or Inactive")
        for name in ("UserName", "LocalCode", *(("Role",) if creating else ())):
            if (creating or name in out) and not (out.get(name) or "").strip():
                raise _Refused(200, f"{name} is required")
        return out

    def _school(self, district: District, value: Any) -> int:
        """An INTEGER: a JSON number without a fraction, or an XML element's digits (XML has no types)."""
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.strip().isdecimal())
        ):
            raise _Refused(200, "SchoolID must be an integer")
        school = int(value)
        if school not in district.schools:
            raise _Refused(200, f"SchoolID {school} is not a school of this district")
        return school

    # -- operations ------------------------------------------------------------------------
    def _check_pairing(
        self, district: District, username: str | None, local_code: str | None, user_id: int | None = None
    ) -> None:
        if username is not None and district.by_username.get(username.casefold(), user_id) != user_id:
            raise _Refused(200, "UserName already exists in this district")
        if local_code is not None and district.by_local_code.get(local_code, user_id) != user_id:
            raise _Refused(200, "LocalCode already exists in this district")

    def _create(self, district: District, body: dict[str, Any]) -> dict[str, Any]:
        fields = self._validate(district, body, creating=True)
        self._check_pairing(district, fields["UserName"], fields["LocalCode"])
        now = datetime.now(UTC)
        user = {
            "UserID": next(self._ids),
            "Role": fields["Role"],
            "UserName": fields["UserName"],
            "FirstName": fields.get("FirstName") or "",
            "LastName": fields.get("LastName") or fields["UserName"],
            "PhoneNumber": fields.get("PhoneNumber") or None,
            "LocalCode": fields["LocalCode"],
            "StateCode": fields.get("StateCode") or None,
            "Status": "Active",
            "Schools": [fields["SchoolID"]] if fields.get("SchoolID") else [],
            "EmailAddress": fields.get("EmailAddress") or None,
            "CreatedDate": now,
            "ModifiedDate": now,
        }
        district.users[user["UserID"]] = user
        district.by_username[user["UserName"].casefold()] = user["UserID"]
        district.by_local_code[user["LocalCode"]] = user["UserID"]
        return self._view(district, user)

    def _find(self, district: District, request: Request) -> list[dict[str, Any]]:
        local_code, username = request.arg("localcode"), request.arg("username")
        if local_code is None and username is None:
            raise _Refused(200, "localcode or username is required")
        ids = set(district.users)
        if local_code is not None:
            ids &= {district.by_local_code[local_code]} if local_code in district.by_local_code else set()
        if username is not None:
            key = username.casefold()
            ids &= {district.by_username[key]} if key in district.by_username else set()
        return [self._view(district, district.users[i]) for i in sorted(ids)]

    def _user(self, district: District, raw_id: str) -> dict[str, Any]:
        user = district.users.get(int(raw_id)) if raw_id.isdigit() else None
        if user is None:
            raise _Refused(404, f"Staff {raw_id} not found in this district")
        return user

    def _update(self, district: District, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        fields = self._validate(district, body, creating=False)
        self._check_pairing(district, fields.get("UserName"), fields.get("LocalCode"), user["UserID"])
        if "UserName" in fields:
            del district.by_username[user["UserName"].casefold()]
            district.by_username[fields["UserName"].casefold()] = user["UserID"]
        if "LocalCode" in fields:
            del district.by_local_code[user["LocalCode"]]
            district.by_local_code[fields["LocalCode"]] = user["UserID"]
        for name, value in fields.items():
            if name == "SchoolID":
                if value is not None and value not in user["Schools"]:
                    user["Schools"].append(value)
            elif name == "Status":
                user["Status"] = value.capitalize()
            elif name == "LastName":
                user[name] = value or user["UserName"]
            else:
                user[name] = value if value != "" or name == "FirstName" else None
        self._touch(user)
        return self._view(district, user)

    def _assign(self, district: District, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        if set(body) != {"SchoolID"}:
            raise _Refused(200, "SchoolID is required (and nothing else)")
        school = self._school(district, body["SchoolID"])
        if school not in user["Schools"]:
            user["Schools"].append(school)
            self._touch(user)
        return self._view(district, user)

    @staticmethod
    def _touch(user: dict[str, Any]) -> None:
        user["ModifiedDate"] = datetime.now(UTC)

    @staticmethod
    def _view(district: District, user: dict[str, Any]) -> dict[str, Any]:
        out = {name: user[name] for name in USER_ORDER}
        out["Role"] = user["Role"].lower()
        out["Schools"] = [{"SchoolID": s, "SchoolName": district.schools[s]} for s in user["Schools"]] or None
        out["CreatedDate"] = format_date(user["CreatedDate"])
        out["ModifiedDate"] = format_date(user["ModifiedDate"])
        return out

    # -- answers ---------------------------------------------------------------------------
    @staticmethod
    def _answer(
        status: int, result: str, data: dict[str, Any] | None, error: str | None, as_xml: bool
    ) -> Response:
        if not as_xml:
            return Response.json(status, {"Result": result, "Data": data, "Error": error})
        xml = "".join(
            [
                '<Response xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
                f"<Result>{result}</Result>",
                _xml("Data", data) if data is not None else "",
                f"<Error>{escape(error)}</Error>" if error else "",
                "</Response>",
            ]
        )
        return Response(status, xml.encode("utf-8"), content_type="application/xml; charset=utf-8")


def _xml(tag: str, value: Any) -> str:
    if value is None or value == "":
        return f"<{tag} />"
    if isinstance(value, dict):
        return f"<{tag}>{''.join(_xml(k, v) for k, v in value.items())}</{tag}>"
    if isinstance(value, list):
        child = "User" if tag == "Users" else "School"
        return f"<{tag}>{''.join(_xml(child, v) for v in value)}</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
