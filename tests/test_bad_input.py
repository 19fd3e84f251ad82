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
SIS_ROWS = 80  # per LEA: enough that a few rejected rows stay under the 5% gate
EMPLOYEES = 3  # per Edu-V school
BIG = 10 * 1024 * 1024


class CorpusEduV(EduVStandIn):
    """The Edu-V stand-in, except that ``body`` (when set) is what lakeview-elem answers, with 200."""

    body: tuple[bytes, str] | None = None

    def handle(self, request: Request) -> Response:
        master = load_organisations().set_index("school_key").at[SCHOOL, "eduv_org_master_id"]
        if self.body is not None and request.path == "/employees" and request.arg("orgMasterId") == master:
            return Response(200, self.body[0], content_type=self.body[1])
        return super().handle(request)


def _schools() -> list[dict[str, Any]]:
    orgs = load_organisations()
    has_eduv = orgs["eduv_org_master_id"].notna() | orgs["eduv_org_id"].notna()
    return orgs[has_eduv].to_dict("records")


def _good_employees(index: int, school: dict[str, Any]) -> list[dict]:
    return [employee(1000 * index + n, [role(_organisation_ref(school))]) for n in range(EMPLOYEES)]


def _sis_rows(lea: str) -> list[str]:
    code = load_organisations().query(f"lea_id == {lea}")["sis_school_code"].iloc[0]
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
    for index, school in enumerate(_schools()):
        lines = [json.dumps(e) for e in _good_employees(index, school)]
        (eduv_dir / f"{school['school_key']}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
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
            "assignments": con.execute(f"SELECT * FROM staff_assignments WHERE lea_id = {LEA} ORDER BY ALL").fetchall(),
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
    return json.dumps([employee(9, [role(_organisation_ref(_schools()[0]))], givenName="B" * BIG)]).encode()


GENERATED: dict[str, Callable[[], bytes]] = {
    "half_the_staff": _half_the_staff,
    "sis_10mb_field": _sis_10mb_field,
    "eduv_10mb_field": _eduv_10mb_field,
}


def _input(case: dict[str, Any]) -> bytes:
    return GENERATED[case["generate"]]() if "generate" in case else (CORPUS / case["file"]).read_bytes()


def _serve(standin: CorpusEduV, case: dict[str, Any], data: bytes) -> None:
    if case["mode"] == "whole":
        kind = "text/html" if case.get("file", "").endswith(".html") else "application/json"
        standin.body = (data, kind)
        return
    school = next(s for s in _schools() if s["school_key"] == SCHOOL)
    good = [json.dumps(e).encode() for e in _good_employees(_schools().index(school), school)]
    hostile = data.strip()[1:-1].strip()  # the elements of the case's JSON array, bytes as written
    standin.body = (b"[" + b",".join([*good, hostile]) + b"]", "application/json")


def _drop_case(case: dict[str, Any], data: bytes) -> None:
    if case["mode"] == "append":
        data = _csv(_sis_rows(LEA)) + data.split(b"\n", 1)[1]  # night 1's rows, then the hostile ones
    _drop(LEA, "night2.csv", data)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_hostile_input(case: dict[str, Any], standin: CorpusEduV, night_one: Path) -> None:
    shutil.copyfile(night_one, paths().warehouse)
    before, people_before = _snapshot(), _people()
    data = _input(case)
    standin.body = None
    if case["source"] == "sis":
        _drop_case(case, data)
    else:
        _serve(standin, case, data)
    try:
        landed, files = night(standin, "night-2")  # never a crash trace: it returns
    finally:
        standin.body = None
    expect = case["expect"]
    with connect() as con:
        gate = dict(
            con.execute(
                "SELECT lea_id::VARCHAR, reason FROM gate_results WHERE run_id = 'night-2' AND NOT passed"
            ).fetchall()
        )
        rejected = con.execute(
            "SELECT rule, location, value FROM rejected_rows WHERE run_id = 'night-2'"
        ).fetchall()

    if expect == "file_failed":
        (outcome,) = [f for f in files if f.lea_id == LEA]
        assert outcome.status == "failed" and case["message"] in outcome.message
        assert outcome.message.startswith(f"SIS export {LEA}/night2.csv")
        assert (paths().failed / LEA / "night2.csv").read_bytes() == data  # kept as received
        assert _snapshot() == before
    elif expect == "request_failed":
        assert not landed[SCHOOL].ok and case["message"] in landed[SCHOOL].problem
        assert _snapshot() == before
    elif expect == "school_carried":
        assert landed[SCHOOL].ok and landed[SCHOOL].employee_count == 0
        assert _snapshot() == before
    elif expect == "lea_held":
        assert case["message"] in gate.get(LEA, "")
        assert _snapshot() == before
    elif expect == "rows_rejected":
        hits = [r for r in rejected if r[0] == case["rule"]]
        assert len({r[1] for r in hits}) == case["rejected"], rejected
        assert LEA not in gate, gate  # a few bad rows never hold the whole LEA
        assert people_before <= _people()  # nobody accepted before is lost
        big = [r for r in rejected if r[2] is not None and len(r[2]) > 10_000]
        assert not big or case["rule"] == "too_long"
    elif expect == "accepted":
        with connect() as con:
            values = {r[0] for r in con.execute(f"SELECT {case['column']} FROM staff").fetchall()}
            assert {"staff", "staff_assignments"} <= {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert case["value"] in values
        assert people_before <= _people()
    else:
        pytest.fail(f"unknown expectation {expect!r} in the manifest")
