"""Enumerations fixed by the reference documents (the contract), in one place."""

from __future__ import annotations

from pathlib import Path

from staff_pipeline.settings import REPO_ROOT

ORG_ID_TYPES = ("OIE_CODE", "BP_ID", "DD_ID", "AS_ID", "V_ID")
USER_ID_TYPES = ("NEPPI", "BPI", "eduID", "NEPRI", "ASI", "eckId")
ORGANISATION_ROLES = (
    "administratief-medewerker",
    "applicatiebeheerder",
    "begeleider",
    "invalkracht",
    "ibp-er",
    "leermiddelencoordinator",
    "leraar",
    "mentor",
    "onderwijsbestuurder",
    "onderwijsdirecteur",
    "stagiair",
)
EMPLOYEE_STATUSES = ("active", "tobedeleted")
# OAuth2 scopes of the Edu-V Employees API: which attributes an answer carries.
EDUV_SCOPES = ("eduv.employee.basic", "eduv.employee.communication", "eduv.employee.roles")
SECTORS = ("PO", "VO")
LINKIT_ROLES = ("TEACHER", "SCHOOL ADMIN", "DISTRICT ADMIN")
# Highest first: a person with several roles in a district gets the highest.
LINKIT_ROLE_RANK = {"DISTRICT ADMIN": 3, "SCHOOL ADMIN": 2, "TEACHER": 1}
LINKIT_LIMITS = {
    "UserName": 50,
    "FirstName": 50,
    "LastName": 50,
    "EmailAddress": 100,
    "PhoneNumber": 50,
    "LocalCode": 50,
    "StateCode": 100,
}
EDFI_LIMITS = {
    "staffUniqueId": 32,
    "positionTitle": 100,
    "contactTitle": 75,
    "electronicMailAddress": 128,
    "firstName": 75,  # the Staff resource's names (WISEdata fills it from WISEid)
}
STAFF_CLASSIFICATION_NAMESPACE = "uri://ed-fi.org/StaffClassificationDescriptor"

_DESCRIPTORS_FILE = REPO_ROOT / "staff_pipeline" / "edfi_staff_classification_descriptors.txt"


def staff_classifications(path: Path = _DESCRIPTORS_FILE) -> tuple[str, ...]:
    """Code values of Ed-Fi's StaffClassificationDescriptor (deprecated ones still accepted)."""
    values = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            values.append(line.split("\t")[0].strip())
    return tuple(values)


def classification_uri(code_value: str) -> str:
    return f"{STAFF_CLASSIFICATION_NAMESPACE}#{code_value}"
