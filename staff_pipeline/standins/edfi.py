"""Stand-in of an Ed-Fi ODS/API 7.x as WISEdata runs it: the staff association resources, strictly.

Validation is driven by the official OpenAPI description (``edfi_openapi.json``): required fields,
types, lengths, ISO dates (``YYYY-MM-DD`` only), int32/int64 ranges, descriptors (the exact descriptor
type, and only code values the server holds: :meth:`EdFiStandIn.add_descriptor_values`), references
that must resolve (409 ``unresolved-reference``), records others refer to that cannot be deleted (409
``dependent-item-exists``), and identity (``x-Ed-Fi-isIdentity`` fields plus the required
references). WISEdata rules on top: per-LEA client keys that may only touch their own LEA's
education organisations, staff records come from WISEid (provisioned with :meth:`add_staff`, not
POSTed), and a contact association needs an assignment or employment association of that staff in
the LEA first. It also serves the discovery documents (root, OpenAPI, dependencies) that generic
loaders such as Education Analytics' lightbeam read.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from staff_pipeline import vocab
from staff_pipeline.config import load_organisations
from staff_pipeline.standins.common import Knobs, Request, Response, StandIn, TokenStore

OPENAPI_PATH = Path(__file__).with_name("edfi_openapi.json")
DATA_PREFIX = "/data/v3/ed-fi/"
RESOURCES = (
    "staffs",
    "staffEducationOrganizationEmploymentAssociations",
    "staffEducationOrganizationAssignmentAssociations",
    "staffEducationOrganizationContactAssociations",
)
_DESCRIPTOR_URI = re.compile(r"^(?P<namespace>uri://[^/#]+/(?P<name>[A-Za-z]+Descriptor))#(?P<code>.+)$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT_RANGES = {"int32": 2**31, "int64": 2**63}
# Descriptor properties whose name carries a role before the descriptor type.
_ROLE_NAMED_DESCRIPTORS = {"stateOfIssueStateAbbreviationDescriptor": "StateAbbreviationDescriptor"}
# Code values an ODS loaded with Ed-Fi's defaults holds, beyond StaffClassificationDescriptor (vocab).
_DEFAULT_DESCRIPTORS = {
    "uri://ed-fi.org/EmploymentStatusDescriptor": frozenset(
        {"Contractual", "Other", "Probationary", "Substitute/temporary", "Tenured or permanent"}
    ),
}
_EDORG_REFERENCE = "edFi_educationOrganizationReference"
_MAX_LIMIT = 500
_PREREQUISITES = (
    "staffEducationOrganizationAssignmentAssociations",
    "staffEducationOrganizationEmploymentAssociations",
)


def problem(status: int, type_: str, title: str, detail: str, **extra: Any) -> Response:
    """An RFC 7807 ProblemDetails answer as ODS/API 7.2+ sends it."""
    body = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "correlationId": uuid.uuid4().hex,
        "validationErrors": extra.pop("validation_errors", {}),
        "errors": extra.pop("errors", []),
    }
    return Response.json(status, body)


def _bad_request(errors: dict[str, list[str]]) -> Response:
    return problem(
        400,
        "urn:ed-fi:api:bad-request:data-validation-failed",
        "Data Validation Failed",
        "Data validation failed. See 'validationErrors' for details.",
        validation_errors=errors,
    )


@dataclass
class _Resource:
    """One resource's schema facts and its records (``id`` -> body) with an identity index."""

    name: str
    schema: dict[str, Any]
    identity: list[tuple[str, ...]]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_identity: dict[tuple, str] = field(default_factory=dict)
    fold_case: bool = False

    def key(self, body: dict[str, Any]) -> tuple:
        return self.folded(_get(body, path) for path in self.identity)

    def folded(self, values: Iterable[Any]) -> tuple:
        """Identity values as this server compares them."""
        return tuple(v.casefold() if self.fold_case and isinstance(v, str) else v for v in values)


def _get(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


class EdFiStandIn(StandIn):
    name = "edfi"

    def __init__(
        self,
        knobs: Knobs | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        case_insensitive_identity: bool = False,
    ) -> None:
        """``case_insensitive_identity``: match identities as an ODS on SQL Server does with its
        default collation ("Teacher" and "TEACHER" name one record); on PostgreSQL they are two."""
        super().__init__(knobs, host, port)
        self.openapi = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
        self._schemas = self.openapi["components"]["schemas"]
        self.tokens = TokenStore(self.knobs)
        self.clients: dict[str, tuple[str, frozenset[int] | None]] = {}
        self.edorg_lea: dict[int, int] = {}
        self.classifications = frozenset(vocab.staff_classifications())
        self.descriptors: dict[str, frozenset[str]] = dict(_DEFAULT_DESCRIPTORS)
        self.resources = {
            name: _Resource(name, schema, self._identity_paths(schema), fold_case=case_insensitive_identity)
            for name, schema in (
                (name, self._schemas[f"edFi_{name[:-1] if name != 'staffs' else 'staff'}"])
                for name in RESOURCES
            )
        }
        # resource -> [(reference property, target resource or None when this server holds none)]
        self._references = {name: self._reference_props(r.schema) for name, r in self.resources.items()}
        # (staffUniqueId, LEA) -> number of assignment/employment associations: the contact prerequisite.
        self._staff_in_lea: Counter[tuple[str, int | None]] = Counter()
        self._lock = threading.RLock()
        self._etags = itertools.count(1)

    # -- provisioning (tests, demo) ----------------------------------------------------------------
    def add_organisations(self, lea_id: int, school_ids: list[int]) -> None:
        """Make the LEA and its schools known education organisations."""
        with self._lock:
            self.edorg_lea[int(lea_id)] = int(lea_id)
            for school in school_ids:
                self.edorg_lea[int(school)] = int(lea_id)

    def load_organisations(self, config_dir: Path | None = None) -> None:
        """The LEAs and schools of ``organisations.csv``."""
        orgs = load_organisations(config_dir)
        for lea_id, group in orgs.groupby("lea_id"):
            self.add_organisations(int(lea_id), [int(s) for s in group["school_id"]])

    def add_client(self, client_id: str, secret: str, lea_id: int | None = None) -> None:
        """A key for one LEA (``lea_id``), or a state-wide key when ``lea_id`` is None."""
        self.clients[client_id] = (secret, None if lea_id is None else frozenset({int(lea_id)}))

    def add_staff(self, lea_id: int | None, staff_unique_id: str) -> None:
        """What WISEid would hold: the staff record a vendor's associations refer to."""
        staffs = self.resources["staffs"]
        with self._lock:
            if staffs.folded([staff_unique_id]) not in staffs.by_identity:
                body = {
                    "staffUniqueId": staff_unique_id,
                    "firstName": "WISEid",
                    "lastSurname": staff_unique_id,
                }
                self._store(staffs, body)

    def add_descriptor_values(self, namespace: str, codes: list[str]) -> None:
        """Code values the server holds for a descriptor, e.g. ``uri://ed-fi.org/ContactTypeDescriptor``."""
        with self._lock:
            self.descriptors[namespace] = self.descriptors.get(namespace, frozenset()) | frozenset(codes)

    def seed_demo(self) -> list[str]:
        self.load_organisations()
        self.add_client("demo-state", "demo-state-secret")
        lines = ["client demo-state / demo-state-secret (all LEAs)"]
        for lea in sorted({lea for lea in self.edorg_lea.values()}):
            self.add_client(f"demo-{lea}", f"demo-{lea}-secret", lea)
            lines.append(f"client demo-{lea} / demo-{lea}-secret (LEA {lea})")
        for wiseid in ("1001001001", "1001001002", "1001001003"):
            self.add_staff(None, wiseid)
        lines.append(
            "staff (WISEid) 1001001001..1001001003 exist; others via add_staff(); data under /data/v3/ed-fi/"
        )
        return lines

    def records(self, resource: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.resources[resource].records.values()]

    def writes(self) -> list:
        """Recorded POST/PUT/DELETE requests to the data API (not token requests)."""
        return [r for r in self.requests_to(path_prefix=DATA_PREFIX) if r.method in ("POST", "PUT", "DELETE")]

    # -- schema ------------------------------------------------------------------------------------
    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        return self._schemas[ref.rsplit("/", 1)[1]] if ref else schema

    def _identity_paths(self, schema: dict[str, Any]) -> list[tuple[str, ...]]:
        """Identity = fields marked x-Ed-Fi-isIdentity plus the identity of required references."""
        paths: list[tuple[str, ...]] = []
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            if prop.get("x-Ed-Fi-isIdentity"):
                paths.append((name,))
            elif "$ref" in prop and name in required:
                target = self._resolve(prop)
                paths += [
                    (name, sub) for sub, p in target["properties"].items() if p.get("x-Ed-Fi-isIdentity")
                ]
        return paths

    def _reference_props(self, schema: dict[str, Any]) -> list[tuple[str, str | None]]:
        """The body's reference properties and the resource each must resolve to.

        The education organisation reference is checked against the known edorgs instead (``""``);
        references to resources this server does not hold (credentials, persons) never resolve.
        """
        out: list[tuple[str, str | None]] = []
        for name, prop in schema["properties"].items():
            target = prop.get("$ref", "").rsplit("/", 1)[-1]
            if not target.endswith("Reference"):
                continue
            resource = target.removeprefix("edFi_").removesuffix("Reference")
            resource = "staffs" if resource == "staff" else f"{resource}s"
            out.append(
                (name, "" if target == _EDORG_REFERENCE else resource if resource in RESOURCES else None)
            )
        return out

    def _validate(self, schema: dict[str, Any], body: Any, path: str, errors: dict[str, list[str]]) -> None:
        schema = self._resolve(schema)
        if not isinstance(body, dict):
            errors.setdefault(path, []).append("must be an object")
            return
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if body.get(name) is None:
                errors.setdefault(f"{path}.{name}", []).append(f"{name} is required.")
        for name, value in body.items():
            where = f"{path}.{name}"
            if name not in props or (name == "id" and path == "$"):
                errors.setdefault(where, []).append(
                    "Resource identifiers cannot be assigned by the client."
                    if name == "id"
                    else f"'{name}' is not a known property."
                )
                continue
            if name in ("_etag", "_lastModifiedDate", "link"):
                continue
            prop = props[name]
            if value is None:
                if not prop.get("x-nullable") and name in schema.get("required", []):
                    errors.setdefault(where, []).append(f"{name} is required.")
                continue
            self._validate_value(prop, value, where, name, errors)

    def _validate_value(
        self, prop: dict[str, Any], value: Any, where: str, name: str, errors: dict[str, list[str]]
    ) -> None:
        if "$ref" in prop:
            self._validate(prop, value, where, errors)
            return
        kind = prop.get("type")
        fail = errors.setdefault(where, [])
        if kind == "array":
            if not isinstance(value, list):
                fail.append("must be an array")
            else:
                for i, item in enumerate(value):
                    self._validate(prop["items"], item, f"{where}[{i}]", errors)
        elif kind == "string":
            if not isinstance(value, str):
                fail.append(f"{name} must be a string.")
            elif prop.get("format") == "date":
                if not _is_iso_date(value):
                    fail.append(f"{name} must be a date (yyyy-mm-dd).")
            elif len(value) > prop.get("maxLength", 10**9) or len(value) < prop.get("minLength", 0):
                fail.append(
                    f"{name} must be a string with a minimum length of {prop.get('minLength', 0)} "
                    f"and a maximum length of {prop.get('maxLength')}."
                )
            elif name.endswith("Descriptor"):
                self._validate_descriptor(name, value, fail)
        elif kind == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                fail.append(f"{name} must be an integer.")
            elif prop.get("format") in _INT_RANGES and not (
                -_INT_RANGES[prop["format"]] <= value < _INT_RANGES[prop["format"]]
            ):
                fail.append(f"{name} is out of range for {prop['format']}.")
        elif kind == "number":
            if not isinstance(value, int | float) or isinstance(value, bool):
                fail.append(f"{name} must be a number.")
            elif "minimum" in prop and value < prop["minimum"]:
                fail.append(f"{name} must be at least {prop['minimum']}.")
        elif kind == "boolean" and not isinstance(value, bool):
            fail.append(f"{name} must be a boolean.")
        if not fail:
            del errors[where]

    def _validate_descriptor(self, name: str, value: str, fail: list[str]) -> None:
        """The URI must name exactly the property's descriptor type and a code value the server holds."""
        match = _DESCRIPTOR_URI.match(value)
        expected = _ROLE_NAMED_DESCRIPTORS.get(name, name[0].upper() + name[1:])
        if not match or match["name"] != expected:
            fail.append(f"{name} value '{value}' is not a valid {expected} URI.")
            return
        known = (
            self.classifications
            if match["namespace"] == vocab.STAFF_CLASSIFICATION_NAMESPACE
            else self.descriptors.get(match["namespace"], frozenset())
        )
        if match["code"] not in known:
            fail.append(f"{name} value '{value}' does not exist.")

    # -- HTTP --------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        base = f"http://{request.headers.get('host', self.url.removeprefix('http://'))}"
        path = request.path.rstrip("/") or "/"
        if path == "/oauth/token" and request.method == "POST":
            return self._token(request)
        if request.method == "GET" and path in (
            "/",
            "/metadata",
            "/metadata/data/v3/resources/swagger.json",
            "/metadata/data/v3/dependencies",
        ):
            return self._discovery(path, base)
        if not request.path.startswith(DATA_PREFIX):
            return problem(404, "urn:ed-fi:api:not-found", "Not Found", f"No route for {request.path}.")
        auth = self.tokens.check(request.headers.get("authorization"))
        if auth is None:
            return problem(
                401,
                "urn:ed-fi:api:security:authentication",
                "Authentication Failed",
                "The caller could not be authenticated (missing, unknown or expired token).",
            )
        client_id, _ = auth
        leas = self.clients[client_id][1]
        parts = request.path[len(DATA_PREFIX) :].strip("/").split("/")
        resource = self.resources.get(parts[0])
        if resource is None or len(parts) > 2:
            return problem(404, "urn:ed-fi:api:not-found", "Not Found", f"No resource at {request.path}.")
        record_id = parts[1] if len(parts) == 2 else None
        with self._lock:
            if request.method == "GET":
                return self._get(resource, record_id, request, leas)
            if request.method == "POST" and record_id is None:
                return self._post(resource, request, leas, base)
            if request.method == "PUT" and record_id:
                return self._put(resource, record_id, request, leas)
            if request.method == "DELETE" and record_id:
                return self._delete(resource, record_id, leas)
        return problem(
            405,
            "urn:ed-fi:api:method-not-allowed",
            "Method Not Allowed",
            f"{request.method} is not allowed on {request.path}.",
        )

    def _token(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        try:
            form = (
                request.json()
                if "json" in ctype
                else {k: v[0] for k, v in parse_qs(request.body.decode("utf-8")).items()}
            )
        except (ValueError, UnicodeDecodeError):
            form = {}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = None
        if form.get("grant_type") != "client_credentials":
            return Response.json(400, {"error": "unsupported_grant_type"})
        known = self.clients.get(client_id or "")
        if known is None or known[0] != secret:
            return Response.json(401, {"error": "invalid_client"})
        issued = self.tokens.issue(client_id)
        if issued is None:
            return problem(
                429,
                "urn:ed-fi:api:security:authentication:too-many-tokens",
                "Too Many Tokens",
                "The client has too many active tokens; reuse a token until it expires.",
            )
        token, ttl = issued
        return Response.json(200, {"access_token": token, "expires_in": ttl, "token_type": "bearer"})

    def _discovery(self, path: str, base: str) -> Response:
        if path == "/":
            return Response.json(
                200,
                {
                    "version": "7.1",
                    "apiMode": "Sandbox",
                    "dataModels": [{"name": "Ed-Fi", "version": "5.0.0"}],
                    "urls": {
                        "dependencies": f"{base}/metadata/data/v3/dependencies",
                        "openApiMetadata": f"{base}/metadata/",
                        "oauth": f"{base}/oauth/token",
                        "dataManagementApi": f"{base}/data/v3/",
                        "xsdMetadata": f"{base}/metadata/xsd",
                    },
                },
            )
        if path == "/metadata":
            return Response.json(
                200,
                [
                    {
                        "name": "Resources",
                        "prefix": "",
                        "endpointUri": f"{base}/metadata/data/v3/resources/swagger.json",
                    }
                ],
            )
        if path.endswith("swagger.json"):
            spec = {**self.openapi, "servers": [{"url": f"{base}/data/v3"}]}
            return Response.json(200, spec)
        return Response.json(
            200,
            [
                {"resource": f"/ed-fi/{name}", "order": order, "operations": ["Create", "Update"]}
                for order, name in enumerate(RESOURCES, start=1)
            ],
        )

    def _forbidden(self, edorg: Any, leas: frozenset[int] | None) -> Response | None:
        if leas is None or self.edorg_lea.get(edorg) in leas:
            return None
        return problem(
            403,
            "urn:ed-fi:api:security:authorization:access-denied:resource",
            "Authorization Denied",
            f"Access to the resource could not be authorized: educationOrganizationId {edorg} "
            "is not associated with the caller's education organizations.",
        )

    def _parse(self, resource: _Resource, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return None, _bad_request({"$": ["The request body is not valid JSON."]})
        errors: dict[str, list[str]] = {}
        self._validate(resource.schema, body, "$", errors)
        return (None, _bad_request(errors)) if errors else (body, None)

    def _unresolved(self, resource: _Resource, body: dict[str, Any]) -> Response | None:
        """409 for a reference that does not resolve, or a contact without its prerequisite."""
        for prop, target in self._references[resource.name]:
            ref = body.get(prop)
            if ref is None or target == "":
                continue
            if (
                target is None
                or self._key_of(self.resources[target], ref) not in self.resources[target].by_identity
            ):
                values = ", ".join(str(v) for k, v in ref.items() if k != "link")
                label = prop[0].upper() + prop[1:].removesuffix("Reference")
                return self._conflict(f"The referenced '{label}' resource ({values}) does not exist.")
        if resource.name == "staffEducationOrganizationContactAssociations":
            staff_id, lea = self._staff_lea(body)
            if self._staff_in_lea[(staff_id, lea)] > 0:
                return None
            return self._conflict(
                f"The staff ({staff_id}) has no assignment or employment association "
                f"in LEA {lea}: post that prerequisite first."
            )
        return None

    @staticmethod
    def _key_of(target: _Resource, ref: dict[str, Any]) -> tuple:
        """A reference's values in the target's identity order (references flatten the identity)."""
        return target.folded(ref.get(path[-1]) for path in target.identity)

    def _referenced(self, resource: _Resource, record: dict[str, Any]) -> str | None:
        """The name of a resource holding a record that refers to ``record``, if any."""
        key = resource.key(record)
        for name, props in self._references.items():
            for prop, target in props:
                if target == resource.name and any(
                    isinstance(other.get(prop), dict) and self._key_of(resource, other[prop]) == key
                    for other in self.resources[name].records.values()
                ):
                    return name
        return None

    def _staff_lea(self, body: dict[str, Any]) -> tuple[str, int | None]:
        edorg = _get(body, ("educationOrganizationReference", "educationOrganizationId"))
        return _get(body, ("staffReference", "staffUniqueId")), self.edorg_lea.get(edorg)

    @staticmethod
    def _conflict(detail: str) -> Response:
        return problem(
            409, "urn:ed-fi:api:data-conflict:unresolved-reference", "Unresolved Reference", detail
        )

    def _store(
        self, resource: _Resource, body: dict[str, Any], record_id: str | None = None
    ) -> dict[str, Any]:
        if record_id is None and resource.name in _PREREQUISITES:
            self._staff_in_lea[self._staff_lea(body)] += 1
        record_id = record_id or uuid.uuid4().hex
        etag = str(next(self._etags))
        stored = {"id": record_id, **body, "_etag": etag}
        resource.records[record_id] = stored
        resource.by_identity[resource.key(body)] = record_id
        return stored

    def _post(
        self, resource: _Resource, request: Request, leas: frozenset[int] | None, base: str
    ) -> Response:
        if resource.name == "staffs":
            return problem(
                403,
                "urn:ed-fi:api:security:authorization:access-denied:action",
                "Authorization Denied",
                "Staff records come from WISEid and cannot be posted.",
            )
        body, error = self._parse(resource, request)
        if error:
            return error
        edorg = _get(body, ("educationOrganizationReference", "educationOrganizationId"))
        if edorg not in self.edorg_lea:
            return self._conflict(
                f"The referenced 'EducationOrganization' resource ({edorg}) does not exist."
            )
        error = self._forbidden(edorg, leas) or self._unresolved(resource, body)
        if error:
            return error
        existing = resource.by_identity.get(resource.key(body))
        stored = self._store(resource, body, existing)
        headers = {"Location": f"{base}{DATA_PREFIX}{resource.name}/{stored['id']}", "ETag": stored["_etag"]}
        return Response(200 if existing else 201, b"", headers)

    def _put(
        self, resource: _Resource, record_id: str, request: Request, leas: frozenset[int] | None
    ) -> Response:
        current = resource.records.get(record_id)
        if current is None:
            return problem(404, "urn:ed-fi:api:not-found", "Not Found", "Resource to update was not found.")
        try:
            raw = request.json()
        except (ValueError, UnicodeDecodeError):
            raw = None
        if isinstance(raw, dict) and raw.get("id") == record_id:
            raw = {k: v for k, v in raw.items() if k != "id"}
            request = Request(
                request.method, request.path, request.query, request.headers, json.dumps(raw).encode()
            )
        body, error = self._parse(resource, request)
        if error:
            return error
        error = self._forbidden(
            _get(current, ("educationOrganizationReference", "educationOrganizationId")), leas
        )
        if error:
            return error
        if resource.key(body) != resource.key(current):
            return problem(
                400,
                "urn:ed-fi:api:bad-request:key-change-not-supported",
                "Key Change Not Supported",
                f"Identifying values for the {resource.name} resource cannot be changed. "
                "Delete and recreate the resource item instead.",
            )
        error = self._unresolved(resource, body)
        if error:
            return error
        stored = self._store(resource, body, record_id)
        return Response(204, b"", {"ETag": stored["_etag"]})

    def _delete(self, resource: _Resource, record_id: str, leas: frozenset[int] | None) -> Response:
        current = resource.records.get(record_id)
        if current is None:
            return problem(404, "urn:ed-fi:api:not-found", "Not Found", "Resource to delete was not found.")
        error = self._forbidden(
            _get(current, ("educationOrganizationReference", "educationOrganizationId")), leas
        )
        if error:
            return error
        referrer = self._referenced(resource, current)
        if referrer:
            return problem(
                409,
                "urn:ed-fi:api:data-conflict:dependent-item-exists",
                "Dependent Item Exists",
                f"The requested action cannot be performed because this item is referenced by an existing "
                f"'{referrer}' item.",
            )
        del resource.records[record_id]
        if resource.name in _PREREQUISITES:
            self._staff_in_lea[self._staff_lea(current)] -= 1
        resource.by_identity.pop(resource.key(current), None)
        return Response(204)

    def _get(
        self, resource: _Resource, record_id: str | None, request: Request, leas: frozenset[int] | None
    ) -> Response:
        def visible(rec: dict[str, Any]) -> bool:
            edorg = _get(rec, ("educationOrganizationReference", "educationOrganizationId"))
            return leas is None or resource.name == "staffs" or self.edorg_lea.get(edorg) in leas

        if record_id is not None:
            rec = resource.records.get(record_id)
            if rec is None or not visible(rec):
                return problem(404, "urn:ed-fi:api:not-found", "Not Found", "Resource was not found.")
            return Response.json(200, rec)
        try:
            offset = int(request.arg("offset") or 0)
            limit = int(request.arg("limit") or 25)
        except ValueError:
            offset, limit = -1, -1
        if offset < 0 or not 0 <= limit <= _MAX_LIMIT:
            return problem(
                400,
                "urn:ed-fi:api:bad-request:parameter-validation-failed",
                "Parameter Validation Failed",
                f"Limit must be omitted or set to a value between 0 and {_MAX_LIMIT}; offset >= 0.",
                validation_errors={"limit": [f"must be between 0 and {_MAX_LIMIT}"]},
            )
        filters = {k: v[0] for k, v in request.query.items() if k not in ("offset", "limit", "totalCount")}
        matches = [rec for rec in resource.records.values() if visible(rec) and _matches(rec, filters)]
        headers = {"Total-Count": str(len(matches))} if request.arg("totalCount") == "true" else {}
        return Response.json(200, matches[offset : offset + limit], headers)


def _is_iso_date(value: str) -> bool:
    """``YYYY-MM-DD`` and a real day; Python's ``fromisoformat`` alone also takes ``20250819``."""
    if not _ISO_DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _matches(rec: dict[str, Any], filters: dict[str, str]) -> bool:
    """Query parameters name fields at any depth of the body (as the ODS/API flattens references)."""
    for name, wanted in filters.items():
        value = rec.get(name)
        if value is None:
            for sub in rec.values():
                if isinstance(sub, dict) and name in sub:
                    value = sub[name]
                    break
        if value is None or str(value) != wanted:
            return False
    return True
