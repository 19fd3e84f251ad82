"""Seeded synthetic staff: Edu-V Employee files per school and messy SIS export files per LEA.

The demo, the integration tests and the benchmarks all need the same kind of data a real district
produces: Dutch and US names with prefixes and diacritics, people in several schools and LEAs,
several emails, ended roles, ``tobedeleted`` people, and a share of deliberately bad rows. The
output is a pure function of ``(people, seed, bad_share, organisations, today)``.

Scale: people are produced in fixed-size chunks whose random draws are vectorised with numpy and
written straight to open files, so 1,000,000 people never sit in memory at once.
"""

from __future__ import annotations

import csv
import json
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from staff_pipeline.config import load_organisations, load_role_crosswalk

CHUNK = 10_000  # people per vectorised draw; fixed so output does not depend on memory settings

DUTCH_FIRST = (
    "Jan", "Pieter", "Sanne", "Eva", "Daan", "Lotte", "Sem", "Noë", "Zoë", "Anouk", "Bram", "Fleur",
    "Thijs", "Joëlle", "Renée", "Chloë", "Mohamed", "Fatima", "Ömer", "Özlem", "Ilse", "Femke",
    "Maarten", "Geert", "Inge", "Wouter", "Floor", "Johannes", "Els", "Ruud",
)  # fmt: skip
US_FIRST = (
    "John", "Mary", "José", "María", "Jennifer", "Michael", "Aaliyah", "DeShawn", "Seán", "Chloé",
    "Siobhán", "Mary-Kate", "Ana Lucía", "Robert", "Linda", "James", "Patricia",
)  # fmt: skip
PREFERRED = ("Hans", "Joop", "Liz", "Bob", "Kim", "Sam", "Jo", "Mo")
PREFIXES = ("van", "de", "van der", "van den", "ter", "in 't", "van 't", "den")
DUTCH_LAST = (
    "Berg", "Jansen", "Vries", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos", "Vos",
    "Dijkstra", "Hoek", "Bruijn", "Berg-Özdemir", "Özdemir", "El Amrani", "Boukhari", "Çelik",
    "Kuipers-Ter Haar", "Heuvel", "Wijk", "Graaf",
)  # fmt: skip
US_LAST = (
    "Smith", "O'Brien", "Johnson", "García", "Núñez", "Nguyen", "Williams", "Brown", "McDonald",
    "Washington", "Müller", "D'Angelo", "St. John", "Martínez-López", "Ødegård",
)  # fmt: skip
MIDDLE = ("A.", "Lee", "Marie", "J.", "Ann", "Ray", "Élise")
FTE = ("1.0", "1.0", "1.0", "0.8", "0.6", "0.5")
TITLES = {"TCH": "Teacher", "SUB": "Substitute", "PRN": "Principal", "APR": "Assistant Principal"}

# Edu-V roles that match an SIS position code (one picked per assignment), so both sources tell a
# consistent story and every organisationRole value occurs.
EDUV_ROLES_FOR_POSITION = {
    "TCH": ("leraar", "leraar", "leraar", "mentor"), "SUB": ("invalkracht",),
    "PRN": ("onderwijsdirecteur",), "APR": ("onderwijsdirecteur",), "SUP": ("onderwijsbestuurder",),
    "CNS": ("begeleider", "ibp-er"), "AIDE": ("stagiair",), "LIB": ("leermiddelencoordinator",),
    "OFF": ("administratief-medewerker", "applicatiebeheerder"), "PSY": ("begeleider",),
}  # fmt: skip
POSITION_WEIGHTS = {"TCH": 60, "SUB": 8, "AIDE": 8, "OFF": 6, "CNS": 4, "LIB": 3, "PRN": 3, "APR": 3}

SIS_BAD_KINDS = ("bad_email", "unknown_position", "unknown_school", "end_before_begin", "missing", "long")
EDUV_BAD_KINDS = ("bad_email", "unknown_role", "end_before_begin", "missing", "long")


@dataclass(frozen=True)
class SisVariant:
    """How one LEA's SIS writes its export: the mess a landing must cope with."""

    encoding: str
    delimiter: str
    newline: str
    header: tuple[str, ...]
    trailing_blank_lines: int = 0


SIS_VARIANTS = (
    SisVariant(
        "utf-8-sig", ",", "\r\n",
        ("Staff ID", "WISEid", "First Name", "Middle Name", "Last Name", "Email", "Alt Email", "Phone",
         "School Code", "Position Code", "Position Title", "Begin Date", "End Date", "FTE", "Username"),
        trailing_blank_lines=2,
    ),
    SisVariant(
        "cp1252", ";", "\r\n",
        ("LocalID", "State Staff ID", "FIRST_NAME", "Middle_Name", "LAST_NAME", "E-Mail", "Email 2",
         "Phone Number", "SchoolCode", "Position", "Job Title", "Start Date", "End Date", "FTE", "User Name"),
    ),
    SisVariant(
        "utf-8", ",", "\n",
        ("local_staff_id", "state_staff_id", "first_name", "middle_name", "last_name", "email", "alt_email",
         "phone", "school_code", "position_code", "position_title", "begin_date", "end_date", "fte",
         "username", "Notes", "Notes"),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class GeneratedSet:
    """Where the files went and how many of each; the bad counts let tests expect the rejections."""

    root: Path
    eduv_dir: Path
    inbox_dir: Path
    people: int
    eduv_employees: int
    sis_rows: int
    bad_sis_rows: int = 0
    bad_eduv_employees: int = 0


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and value != value) and value is not pd.NA


def oab_id(school: Mapping) -> str:
    """The Edu-V Onderwijsaanbieder (board) a school belongs to: its master id, else one per LEA."""
    master = school.get("eduv_org_master_id")
    if _present(master) and str(master):
        return str(master)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"eduv-oab:{school['lea_id']}"))


@cache
def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return "".join(ch for ch in folded if ch.isalnum())


def _organisation_ref(school: Mapping) -> dict:
    master = school.get("eduv_org_master_id")
    if _present(master) and str(master):
        return {"organisationMasterIdentifier": str(master)}
    return {
        "organisationIds": [
            {
                "organisationId": str(school["eduv_org_id"]),
                "organisationIdType": str(school["eduv_org_id_type"]),
            }
        ]
    }


class _Plan:
    """The fixed facts every chunk needs: schools, LEAs, positions, file variants."""

    def __init__(self, organisations: pd.DataFrame, positions: list[str]) -> None:
        self.schools = organisations.to_dict("records")
        self.refs = [_organisation_ref(s) for s in self.schools]
        self.leas = list(dict.fromkeys(str(s["lea_id"]) for s in self.schools))
        self.lea_of = [self.leas.index(str(s["lea_id"])) for s in self.schools]
        self.domains = []
        for lea in self.leas:
            name = next(str(s["lea_name"]) for s in self.schools if str(s["lea_id"]) == lea)
            self.domains.append(f"{_ascii(name.split()[0]) or 'lea' + lea}.k12.example.org")
        self.variants = [SIS_VARIANTS[i % len(SIS_VARIANTS)] for i in range(len(self.leas))]
        self.positions = positions
        weights = np.array([POSITION_WEIGHTS.get(p, 1) for p in positions], dtype=float)
        self.position_p = weights / weights.sum()


def _draw(rng: np.random.Generator, n: int, plan: _Plan, bad_share: float, today: date) -> dict[str, list]:
    """All random choices for ``n`` people at once (column-wise), in a fixed order."""
    s = len(plan.schools)
    d = {
        "dutch": rng.random(n) < 0.55,
        "first": rng.integers(0, 1 << 30, n),
        "last": rng.integers(0, 1 << 30, n),
        "prefix": rng.integers(-len(PREFIXES), len(PREFIXES), n),  # negative: no prefix
        "middle": rng.integers(-2 * len(MIDDLE), len(MIDDLE), n),
        "preferred": rng.integers(-9 * len(PREFERRED), len(PREFERRED), n),
        "source": rng.choice(3, n, p=[0.8, 0.1, 0.1]),  # 0 both, 1 Edu-V only, 2 SIS only
        "wiseid": rng.random(n) < 0.92,
        "k": rng.choice([1, 2, 3], n, p=[0.78, 0.18, 0.04]) if s > 1 else np.ones(n, dtype=int),
        "s0": rng.integers(0, s, n),
        "s1": rng.integers(1, max(s, 2), n),
        "s2": rng.integers(1, max(s, 2), n),
        "position": rng.choice(len(plan.positions), (n, 3), p=plan.position_p),
        "begin": rng.integers(30, 3650, (n, 3)),
        "ending": rng.choice(3, (n, 3), p=[0.89, 0.08, 0.03]),  # 0 open, 1 ended, 2 ends in future
        "end_offset": rng.integers(1, 365, (n, 3)),
        "fte": rng.integers(0, len(FTE), (n, 3)),
        "alt_email": rng.random(n) < 0.15,
        "username": rng.random(n) < 0.7,
        "phone": rng.integers(0, 10_000_000, n),
        "tobedeleted": rng.random(n) < 0.02,
        "created": rng.integers(400, 4000, n),
        "modified": rng.integers(0, 400, n),
        "seconds": rng.integers(0, 86_400, (n, 2)),
        "eck": rng.integers(0, 1 << 62, (n, 2)),
        "neppi": rng.random(n) < 0.6,
        "bpi": rng.random(n) < 0.2,
        "eduid": rng.random(n) < 0.1,
        "bad_sis": np.where(rng.random((n, 3)) < bad_share, rng.integers(0, len(SIS_BAD_KINDS), (n, 3)), -1),
        "bad_eduv": np.where(rng.random(n) < bad_share, rng.integers(0, len(EDUV_BAD_KINDS), n), -1),
    }
    d["newline_title"] = rng.random((n, 3)) < 0.02
    d["role_pick"] = rng.integers(0, 12, (n, 3))
    midnight = np.datetime64(today, "s")
    seconds = d.pop("seconds")
    created = midnight - d["created"] * 86_400 + seconds[:, 0]
    modified = np.minimum(created + d["modified"] * 86_400 + seconds[:, 1], midnight)
    d["created_at"] = np.datetime_as_string(created, unit="s")
    d["modified_at"] = np.datetime_as_string(modified, unit="s")
    return {key: value.tolist() for key, value in d.items()}


def _schools_of(d: dict[str, list], j: int, count: int) -> list[int]:
    first = int(d["s0"][j])
    chosen = [first]
    for key in ("s1", "s2")[: int(d["k"][j]) - 1]:
        other = (first + int(d[key][j])) % count
        if other not in chosen:
            chosen.append(other)
    return chosen


class _Writers:
    """Open output files, one per Edu-V school and one per LEA, written as people stream by."""

    def __init__(self, stack: ExitStack, plan: _Plan, eduv_dir: Path, inbox_dir: Path, today: date) -> None:
        self.eduv: list[IO[str]] = [
            stack.enter_context(open(eduv_dir / f"{s['school_key']}.jsonl", "w", encoding="utf-8"))  # noqa: SIM115
            for s in plan.schools
        ]
        self.sis = []
        for lea, variant in zip(plan.leas, plan.variants, strict=True):
            folder = inbox_dir / lea
            folder.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(
                open(folder / f"staff_export_{today:%Y%m%d}.csv", "w", encoding=variant.encoding, newline="")  # noqa: SIM115
            )
            writer = csv.writer(handle, delimiter=variant.delimiter, lineterminator=variant.newline)
            writer.writerow(variant.header)
            self.sis.append((handle, writer, variant))

    def finish(self) -> None:
        for handle, _writer, variant in self.sis:
            handle.write(variant.newline * variant.trailing_blank_lines)


def _person(i: int, j: int, d: dict[str, list], plan: _Plan, today: date) -> dict:
    """One person's names, ids and assignments (school, position, dates) from the chunk's draws."""
    dutch = bool(d["dutch"][j])
    firsts, lasts = (DUTCH_FIRST, DUTCH_LAST) if dutch else (US_FIRST, US_LAST)
    first = firsts[int(d["first"][j]) % len(firsts)]
    last = lasts[int(d["last"][j]) % len(lasts)]
    prefix = PREFIXES[int(d["prefix"][j])] if dutch and d["prefix"][j] >= 0 else ""
    middle = MIDDLE[int(d["middle"][j])] if not dutch and d["middle"][j] >= 0 else ""
    handle = f"{_ascii(first)}.{_ascii(prefix + last)}{i}"
    assignments = []
    for slot, school in enumerate(_schools_of(d, j, len(plan.schools))):
        begin = today - timedelta(days=int(d["begin"][j][slot]))
        ending = int(d["ending"][j][slot])
        end = None
        if ending == 1:
            end = min(today - timedelta(days=1), begin + timedelta(days=int(d["end_offset"][j][slot])))
        elif ending == 2:
            end = today + timedelta(days=int(d["end_offset"][j][slot]))
        assignments.append((slot, school, plan.positions[int(d["position"][j][slot])], begin, end))
    return {
        "first": first, "last": last, "prefix": prefix, "middle": middle, "handle": handle,
        "local_id": f"T{i + 1:07d}", "assignments": assignments,
        "phone": f"(608) 555-{int(d['phone'][j]) % 10_000:04d}" if not dutch
        else f"+31 6 {int(d['phone'][j]) % 100_000_000:08d}",
    }  # fmt: skip


def _employee(i: int, j: int, p: dict, d: dict[str, list], plan: _Plan, in_sis: bool) -> dict:
    """The full Edu-V Employee object (same object in every school file it appears in)."""
    lea = plan.lea_of[p["assignments"][0][1]]
    eck = f"https://ketenid.nl/201703/{int(d['eck'][j][0]):016x}{int(d['eck'][j][1]):016x}"
    user_ids = [{"userId": eck, "userIdType": "eckId"}]
    if d["neppi"][j]:
        user_ids.append({"userId": f"{900_000_000 + i}", "userIdType": "NEPPI"})
    if d["bpi"][j]:
        user_ids.append({"userId": f"bp-{i:08d}", "userIdType": "BPI"})
    if d["eduid"][j]:
        user_ids.append({"userId": str(uuid.UUID(int=int(d["eck"][j][0]) << 64 | i)), "userIdType": "eduID"})
    if in_sis:
        user_ids.append({"userId": p["local_id"], "userIdType": "ASI"})
    roles = []
    for slot, school, position, begin, end in p["assignments"]:
        options = EDUV_ROLES_FOR_POSITION.get(position, ("leraar",))
        role = {
            "organisationRole": options[d["role_pick"][j][slot] % len(options)],
            "beginDate": begin.isoformat(),
            "organisation": plan.refs[school],
        }
        if end is not None:
            role["endDate"] = end.isoformat()
        roles.append(role)
    employee = {
        "givenName": p["first"],
        "familyName": p["last"],
        "email": f"{p['handle']}@{plan.domains[lea]}",
        ("mobile" if p["phone"].startswith("+31 6") else "phone"): p["phone"],
        "status": "tobedeleted" if d["tobedeleted"][j] else "active",
        "dateCreated": f"{d['created_at'][j]}Z",
        "dateLastModified": f"{d['modified_at'][j]}Z",
        "userIds": user_ids,
        "organisationRoles": roles,
    }
    if p["prefix"]:
        employee["familyNamePrefix"] = p["prefix"]
    if d["preferred"][j] >= 0:
        employee["preferredFirstName"] = PREFERRED[int(d["preferred"][j])]
    _spoil_employee(employee, int(d["bad_eduv"][j]))
    return employee


def _spoil_employee(employee: dict, kind: int) -> None:
    if kind < 0:
        return
    name = EDUV_BAD_KINDS[kind]
    if name == "bad_email":
        employee["email"] = employee["email"].replace("@", " at ")
    elif name == "unknown_role":
        employee["organisationRoles"][0]["organisationRole"] = "conciërge"
    elif name == "end_before_begin":
        employee["organisationRoles"][0]["endDate"] = employee["organisationRoles"][0]["beginDate"]
    elif name == "missing":
        del employee["givenName"]
    else:
        employee["familyName"] = (employee["familyName"] + "-") * 8 + "Langeachternaam"


def _sis_rows(
    i: int, j: int, p: dict, d: dict[str, list], plan: _Plan
) -> Iterator[tuple[int, list[str], bool]]:
    """(LEA index, row in canonical column order, is_bad) for each SIS assignment of a person."""
    wiseid = f"{(i * 7919 + 12345) % 9_000_000_000 + 1_000_000_000}" if d["wiseid"][j] else ""
    last = f"{p['prefix']} {p['last']}" if p["prefix"] else p["last"]
    for slot, school, position, begin, end in p["assignments"]:
        lea = plan.lea_of[school]
        email = f"{p['handle']}@{plan.domains[lea]}"
        title = TITLES.get(position, "")
        if title and d["newline_title"][j][slot]:
            title = f"{title}\n(part-time)"
        row = [
            p["local_id"], wiseid, p["first"], p["middle"], last, email,
            f"{p['handle']}@staff.{plan.domains[lea]}" if d["alt_email"][j] else "",
            p["phone"], str(plan.schools[school]["sis_school_code"]), position, title,
            begin.isoformat(), end.isoformat() if end else "", FTE[int(d["fte"][j][slot])],
            p["handle"] if d["username"][j] else "",
        ]  # fmt: skip
        kind = int(d["bad_sis"][j][slot])
        _spoil_sis_row(row, kind)
        yield lea, row, kind >= 0


def _spoil_sis_row(row: list[str], kind: int) -> None:
    if kind < 0:
        return
    name = SIS_BAD_KINDS[kind]
    if name == "bad_email":
        row[5] = row[5].replace("@", "#")
    elif name == "unknown_position":
        row[9] = "ZZZ"
    elif name == "unknown_school":
        row[8] = "XXX"
    elif name == "end_before_begin":
        row[12] = (date.fromisoformat(row[11]) - timedelta(days=1)).isoformat()
    elif name == "missing":
        row[2] = ""
    else:
        row[2] = (row[2] + " ") * 6 + "Maximiliaan-Alexander"


def _sis_positions(config_dir: Path | None) -> list[str]:
    crosswalk = load_role_crosswalk(config_dir)
    return list(dict.fromkeys(crosswalk.loc[crosswalk["source"] == "sis", "source_role"]))


def generate(
    out_dir: Path,
    people: int,
    *,
    seed: int = 42,
    bad_share: float = 0.01,
    organisations: pd.DataFrame | None = None,
    today: date | None = None,
) -> GeneratedSet:
    """Write ``people`` synthetic staff as Edu-V school files and SIS inbox files under ``out_dir``."""
    if people < 1:
        raise ValueError(f"people must be at least 1, got {people}")
    if not 0 <= bad_share <= 1:
        raise ValueError(f"bad_share must be between 0 and 1, got {bad_share}")
    organisations = load_organisations() if organisations is None else organisations
    today = today or date.today()
    plan = _Plan(organisations, _sis_positions(None))
    root = Path(out_dir)
    eduv_dir, inbox_dir = root / "eduv", root / "inbox"
    eduv_dir.mkdir(parents=True, exist_ok=True)
    inbox_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    eduv_count = sis_count = bad_sis = bad_eduv = 0
    with ExitStack() as stack:
        out = _Writers(stack, plan, eduv_dir, inbox_dir, today)
        for start in range(0, people, CHUNK):
            d = _draw(rng, min(CHUNK, people - start), plan, bad_share, today)
            for j in range(len(d["dutch"])):
                i = start + j
                p = _person(i, j, d, plan, today)
                source = int(d["source"][j])
                if source != 2:
                    employee = _employee(i, j, p, d, plan, in_sis=source == 0)
                    line = json.dumps(employee, ensure_ascii=False, separators=(",", ":")) + "\n"
                    for school in dict.fromkeys(a[1] for a in p["assignments"]):
                        out.eduv[school].write(line)
                    eduv_count += 1
                    bad_eduv += int(d["bad_eduv"][j] >= 0)
                if source != 1:
                    for lea, row, bad in _sis_rows(i, j, p, d, plan):
                        _handle, writer, variant = out.sis[lea]
                        row.extend([""] * (len(variant.header) - len(row)))  # unknown extra columns
                        writer.writerow(row)
                        sis_count += 1
                        bad_sis += bad
        out.finish()
    return GeneratedSet(root, eduv_dir, inbox_dir, people, eduv_count, sis_count, bad_sis, bad_eduv)
