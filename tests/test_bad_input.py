"""The bad-input corpus (tests/corpus/manifest.toml): each hostile input, on top of an accepted night,
ends in a clear error or a rejected row; never a crash trace, a partial write or a lost earlier record.

Night 1 (good SIS exports for every LEA, good Edu-V answers for every school) is built once per
module through the real extract, gate and conformed steps; each case copies that warehouse, serves or
drops its input for night 2 through the same steps, and checks the outcome the manifest names.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from staff_pipeline.clients.eduv import EduVClient
from staff_pipeline.config import lea_ids, load_organisations, load_settings
from staff_pipeline.extract import eduv as extract
from staff_pipeline.extract import sis
from staff_pipeline.generator import _organisation_ref
from staff_pipeline.settings import paths
from staff_pipeline.standins.common import Request, Response
from staff_pipeline.standins.eduv import EduVStandIn
from staff_pipeline.transform import steps
from staff_pipeline.warehouse import connect
from tests.fixtures_eduv import CLIENT_ID, CLIENT_SECRET, FAST, employee, role
from tests.fixtures_sis import HEADER

CORPUS = Path(__file__).parent / "corpus"
CASES = tomllib.loads((CORPUS / "manifest.toml").read_text(encoding="utf-8"))["case"]
LEA = "100001"
SCHOOL = "lakeview-elem"  # the Edu-V school whose answer the eduv cases replace
SIS_ROWS = 300  # per LEA: enough that the shared night's bad rows stay under the 5% gate
EMPLOYEES = 3  # per Edu-V school
BIG = 10 * 1024 * 1024


class CorpusEduV(EduVStandIn):
    """The Edu-V stand-in, except that ``body`` (when set) is what lakeview-elem answers, with 200."""

    body: tuple[bytes, str] | None = None

    def handle(self, request: Request) -> Response:
        master = _schools()[SCHOOL]["eduv_org_master_id"]
        if self.body is not None and request.path == "/employees" and request.arg("orgMasterId") == master:
            return Response(200, self.body[0], content_type=self.body[1])
        return super().handle(request)


@cache
def _organisations() -> tuple[dict[str, Any], ...]:
    """The configured schools (validated once: it is not cheap)."""
    return tuple(load_organisations().to_dict("records"))


@cache
def _schools() -> dict[str, dict[str, Any]]:
    """The schools Edu-V knows, by school key."""
    return {
        row["school_key"]: row
        for row in _organisations()
        if isinstance(row["eduv_org_master_id"], str) or isinstance(row["eduv_org_id"], str)
    }


def _good_employees(school_key: str) -> list[dict]:
    index, ref = list(_schools()).index(school_key), _organisation_ref(_schools()[school_key])
    return [employee(1000 * index + n, [role(ref)]) for n in range(EMPLOYEES)]


def _sis_rows(lea: str) -> list[str]:
    code = next(s["sis_school_code"] for s in _organisations() if str(s["lea_id"]) == lea)
    return [
        f"L{lea}-{i},,First{i},,Last{i},l{lea}.{i}@district.example.org,,,{code},TCH,Teacher,2024-08-15,,1,"
        for i in range(SIS_ROWS)
    ]


def _drop(lea: str, name: str, content: bytes) -> None:
    folder = paths().inbox / lea
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)


def _csv(rows: list[str]) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def night(standin: EduVStandIn, run_id: str) -> tuple[dict[str, extract.Landed], list[sis.FileOutcome]]:
    """Extract (both sources), gate and conform, as ``prepare_staff_job`` does."""
    with EduVClient(standin.url, CLIENT_ID, client_secret=CLIENT_SECRET, policy=FAST) as client:
        queries = extract.school_queries(load_organisations())
        fetched = extract.fetch_all(client, queries, run_id=run_id, landing_dir=paths().landing)
    settings = load_settings()
    with connect() as con:
        landed = {r.school_key: r for r in extract.land(con, fetched, run_id)}
        files = sis.land_inbox(con, paths(), run_id, known_leas=lea_ids()).files
        steps.stage(con, run_id, settings)
        steps.conform(con, run_id, settings)
    return landed, files


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusEduV]:
    server = CorpusEduV()
    server.add_client(CLIENT_ID, secret=CLIENT_SECRET)
    eduv_dir = tmp_path_factory.mktemp("eduv")
    for key in _schools():
        lines = [json.dumps(e) for e in _good_employees(key)]
        (eduv_dir / f"{key}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    server.load_generated(load_organisations(), eduv_dir)
    with server:
        yield server


@pytest.fixture(scope="module")
def night_one(standin: CorpusEduV, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The accepted first night's warehouse (copied by each case)."""
    root = tmp_path_factory.mktemp("night1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STAFF_DATA_DIR", str(root))
        for lea in lea_ids():
            _drop(lea, "night1.csv", _csv(_sis_rows(lea)))
        landed, files = night(standin, "night-1")
        assert all(r.ok for r in landed.values()) and all(f.status == "landed" for f in files)
        return paths().warehouse


def _snapshot() -> dict[str, list[tuple]]:
    """What night 1 promised downstream: the LEA's conformed people and assignments."""
    with connect() as con:
        return {
            "staff": con.execute(
                "SELECT DISTINCT s.* FROM staff s JOIN staff_assignments a USING (person_id) "
                f"WHERE a.lea_id = {LEA} ORDER BY ALL"
            ).fetchall(),
            "assignments": con.execute(
                f"SELECT * FROM staff_assignments WHERE lea_id = {LEA} ORDER BY ALL"
            ).fetchall(),
        }


def _people(lea: str = LEA) -> set[str]:
    with connect() as con:
        rows = con.execute(
            "SELECT DISTINCT s.first_name || ' ' || s.last_name FROM staff s "
            "JOIN staff_assignments a USING (person_id) WHERE a.lea_id = ?",
            [int(lea)],
        ).fetchall()
    return {r[0] for r in rows}


# -- inputs made by the test (too big, or derived from night 1) ------------------------------------
def _half_the_staff() -> bytes:
    return _csv(_sis_rows(LEA)[::2])


def _sis_10mb_field() -> bytes:
    return _csv([f"X1,,{'A' * BIG},,Big,x1@lakeview.example.org,,,LVE,TCH,Teacher,2024-08-15,,1,"])


def _eduv_10mb_field() -> bytes:
    ref = _organisation_ref(_schools()[SCHOOL])
    return json.dumps(employee(9, [role(ref)], givenName="B" * BIG)).encode()


GENERATED: dict[str, Callable[[], bytes]] = {
    "half_the_staff": _half_the_staff,
    "sis_10mb_field": _sis_10mb_field,
    "eduv_10mb_field": _eduv_10mb_field,
}


def _input(case: dict[str, Any]) -> bytes:
    return GENERATED[case["generate"]]() if "generate" in case else (CORPUS / case["file"]).read_bytes()


def _hostile_rows(case: dict[str, Any], index: int) -> list[str]:
    """An append case's SIS rows, their ids made unique per case (``X1`` -> ``C3X1``)."""
    lines = _input(case).decode().split("\n")[1:]
    return [f"C{index}{line}" for line in lines if line]


def _elements(case: dict[str, Any]) -> list[bytes]:
    """An append case's Edu-V elements (JSON Lines: one element per line, bytes as written)."""
    return [line for line in _input(case).split(b"\n") if line.strip()]


def _eduv_body(elements: list[bytes]) -> tuple[bytes, str]:
    """lakeview-elem's good employees followed by ``elements``."""
    good = [json.dumps(e).encode() for e in _good_employees(SCHOOL)]
    return b"[" + b",".join([*good, *elements]) + b"]", "application/json"


@dataclass
class Night:
    """Night 2's outcome, as the checks read it."""

    landed: dict[str, extract.Landed]
    files: list[sis.FileOutcome]
    gate: dict[str, str]  # LEA -> reason, for LEAs whose gate failed
    rejected: list[tuple[str, str, str | None]]  # rule, location, value
    before: dict[str, list[tuple]]
    people_before: set[str]
    people_after: set[str]
    names: set[str]  # every first and last name in staff after night 2


def _night_two(standin: CorpusEduV, night_one: Path) -> Night:
    shutil.copyfile(night_one, paths().warehouse)
    before, people_before = _snapshot(), _people()
    try:
        landed, files = night(standin, "night-2")  # never a crash trace: it returns
    finally:
        standin.body = None
    with connect() as con:
        gate = dict(
            con.execute(
                "SELECT lea_id::VARCHAR, reason FROM gate_results WHERE run_id = 'night-2' AND NOT passed"
            ).fetchall()
        )
        rejected = con.execute(
            "SELECT rule, location, value FROM rejected_rows WHERE run_id = 'night-2'"
        ).fetchall()
        names = {n for row in con.execute("SELECT first_name, last_name FROM staff").fetchall() for n in row}
    return Night(landed, files, gate, rejected, before, people_before, _people(), names)


# Append cases share one night (their rows or elements together, each under its own ids); a case
# whose input fails the whole file or answer has a night of its own.
SHARED = [c for c in CASES if c["mode"] == "append" and c["expect"] != "file_failed"]
ALONE = [c for c in CASES if c not in SHARED]


@pytest.fixture(scope="module")
def shared_night(
    standin: CorpusEduV, night_one: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Night, dict[str, set[str]]]:
    """Night 2 with every append case at once; returns it and each case's locations."""
    root = tmp_path_factory.mktemp("shared")
    locations: dict[str, set[str]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STAFF_DATA_DIR", str(root))
        rows, elements = _sis_rows(LEA), []
        for index, case in enumerate(SHARED):
            if case["source"] == "sis":
                hostile = _hostile_rows(case, index)
                first_line = len(rows) + 2  # header is line 1
                locations[case["name"]] = {f"night2.csv:{first_line + n}" for n in range(len(hostile))}
                rows += hostile
            else:
                hostile = _elements(case)
                first = EMPLOYEES + len(elements) + 1  # element numbers count from 1
                locations[case["name"]] = {f":{first + n}" for n in range(len(hostile))}
                elements += hostile
        _drop(LEA, "night2.csv", _csv(rows))
        standin.body = _eduv_body(elements)
        outcome = _night_two(standin, night_one)
    request = outcome.landed[SCHOOL].request_id
    for case in SHARED:
        if case["source"] == "eduv":
            locations[case["name"]] = {request + suffix for suffix in locations[case["name"]]}
    return outcome, locations


@pytest.mark.parametrize("case", SHARED, ids=[c["name"] for c in SHARED])
def test_hostile_rows_and_elements(
    case: dict[str, Any], shared_night: tuple[Night, dict[str, set[str]]]
) -> None:
    outcome, locations = shared_night
    mine = locations[case["name"]]
    assert LEA not in outcome.gate, outcome.gate  # a few bad rows never hold the whole LEA
    assert outcome.people_before <= outcome.people_after  # nobody accepted before is lost
    if case["expect"] == "rows_rejected":
        hits = {loc.split("/")[0] for rule, loc, _ in outcome.rejected if rule == case["rule"]}
        assert len(hits & mine) == case["rejected"], (mine, outcome.rejected)
    else:
        assert case["expect"] == "accepted"
        assert not [r for r in outcome.rejected if r[1].split("/")[0] in mine]
        assert case["value"] in outcome.names


@pytest.mark.parametrize("case", ALONE, ids=[c["name"] for c in ALONE])
def test_hostile_file_or_answer(case: dict[str, Any], standin: CorpusEduV, night_one: Path) -> None:
    data = _input(case)
    if case["source"] == "sis":
        whole = _csv(_sis_rows(LEA)) + data.split(b"\n", 1)[1] if case["mode"] == "append" else data
        _drop(LEA, "night2.csv", whole)
    else:
        kind = "text/html" if case.get("file", "").endswith(".html") else "application/json"
        standin.body = _eduv_body(_elements(case)) if case["mode"] == "append" else (data, kind)
    outcome = _night_two(standin, night_one)
    expect, landed = case["expect"], outcome.landed[SCHOOL]
    if expect == "file_failed":
        (failed,) = [f for f in outcome.files if f.lea_id == LEA]
        assert failed.status == "failed" and case["message"] in failed.message
        assert failed.message.startswith(f"SIS export {LEA}/night2.csv")
        assert (paths().failed / LEA / "night2.csv").exists()  # kept as received
    elif expect == "request_failed":
        assert not landed.ok and case["message"] in landed.problem
    elif expect == "school_carried":
        assert landed.ok and landed.employee_count == 0
    elif expect == "lea_held":
        assert case["message"] in outcome.gate.get(LEA, "")
    else:
        pytest.fail(f"unknown expectation {expect!r} in the manifest")
    assert _snapshot() == outcome.before  # night 1's conformed rows of the LEA stand, untouched
