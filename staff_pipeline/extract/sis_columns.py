"""The SIS staff export's columns: canonical names, which are required, and the headers accepted for each.

This is the one place that says what an SIS export must contain; docs/sis-exports.md shows the same
table (a test keeps the two in step). Header matching ignores case, spaces, underscores, hyphens and
dots, so ``Staff ID``, ``staff_id`` and ``STAFF-ID`` are one header, and ``E-Mail`` is ``email``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Canonical column -> accepted header spellings (the canonical name itself is always accepted).
ALIASES: dict[str, tuple[str, ...]] = {
    "local_staff_id": ("Staff ID", "Local ID", "Employee ID", "Staff Number"),
    "state_staff_id": ("WISEid", "State Staff ID", "State ID", "State Code"),
    "first_name": ("Given Name",),
    "middle_name": ("Middle Initial",),
    "last_name": ("Surname", "Family Name"),
    "email": ("Email Address", "Work Email"),
    "alt_email": ("Alternate Email", "Email 2", "Secondary Email"),
    "phone": ("Phone Number", "Work Phone", "Telephone"),
    "school_code": ("School", "Building Code", "Location Code"),
    "position_code": ("Position", "Job Code", "Assignment Code"),
    "position_title": ("Job Title", "Title"),
    "begin_date": ("Start Date", "Assignment Start"),
    "end_date": ("Exit Date", "Assignment End"),
    "fte": ("Full Time Equivalent",),
    "username": ("Login",),
}
CANONICAL: tuple[str, ...] = tuple(ALIASES)
REQUIRED: frozenset[str] = frozenset(
    {"local_staff_id", "first_name", "last_name", "school_code", "position_code", "begin_date"}
)


def normalise(header: str) -> str:
    """The matching key of a header: lower case, BOM and separators (space _ - .) removed."""
    return re.sub(r"[\s_\-.\ufeff]+", "", header).lower()


_LOOKUP: dict[str, str] = {
    normalise(spelling): canonical
    for canonical, spellings in ALIASES.items()
    for spelling in (canonical, *spellings)
}


@dataclass(frozen=True)
class HeaderMap:
    """Where each canonical column sits in a file, and the other columns kept as ``extra``."""

    canonical: dict[str, int]  # canonical name -> field position
    extra: dict[str, int]  # key in the extra JSON -> field position

    @property
    def missing_required(self) -> list[str]:
        return [name for name in CANONICAL if name in REQUIRED and name not in self.canonical]


def map_headers(headers: list[str]) -> HeaderMap:
    """Match a file's header fields to canonical columns.

    The first field naming a canonical column wins; a later field with the same meaning, and any
    unknown field, is kept in ``extra`` under its header as written (``#2``, ``#3`` appended when a
    header repeats there), so nothing a file offers is dropped.
    """
    canonical: dict[str, int] = {}
    extra: dict[str, int] = {}
    for position, header in enumerate(headers):
        name = _LOOKUP.get(normalise(header))
        if name is not None and name not in canonical:
            canonical[name] = position
            continue
        key = header.strip().lstrip("\ufeff") or f"column{position + 1}"
        repeat = 1
        while (candidate := key if repeat == 1 else f"{key}#{repeat}") in extra:
            repeat += 1
        extra[candidate] = position
    return HeaderMap(canonical, extra)


def accepted_headers(name: str) -> str:
    """The accepted spellings of a column, for error messages."""
    return ", ".join((name, *ALIASES[name]))
