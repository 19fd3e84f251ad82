"""Each row rule rejects a crafted bad row with the right reason; the rest of the load goes on."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from staff_pipeline.config import load_settings
from staff_pipeline.transform.steps import stage
from staff_pipeline.warehouse import connect
from tests.raw_tables import (
    LAKEVIEW_ELEM,
    LAKEVIEW_HIGH,
    RIVERSIDE_ELEM,
    UNKNOWN_ORG,
    Raw,
    employee,
    role,
    run_both,
    sis_row,
)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with connect() as c:
        yield c


@pytest.fixture
def raw(con: duckdb.DuckDBPyConnection) -> Raw:
    return Raw(con)


def _rejected(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(
        "SELECT table_name, record_key, location, column_name, rule, value "
        "FROM rejected_rows ORDER BY location"
    ).fetchall()


def _eduv_cases() -> list[tuple]:
    """(case, bad employee, table, column, rule, value): one crafted bad element per rule."""
    return [
        (
            "email",
            employee(2, email="not-an-email"),
            "stg_eduv_employees",
            "email",
            "email_format",
            "not-an-email",
        ),
        ("phone", employee(3, phone="call me"), "stg_eduv_employees", "phone", "phone_format", "call me"),
        ("status", employee(4, status="gone"), "stg_eduv_employees", "status", "enum", "gone"),
        ("given name", employee(5, givenName=None), "stg_eduv_employees", "given_name", "required", None),
        (
            "name length",
            employee(6, familyName="x" * 76),
            "stg_eduv_employees",
            "family_name",
            "too_long",
            "x" * 76,
        ),
        (
            "timestamp",
            employee(7, dateLastModified="yesterday"),
            "stg_eduv_employees",
            "date_last_modified",
            "timestamp_format",
            "yesterday",
        ),
        ("no user ids", employee(8, userIds=[]), "stg_eduv_employees", "userIds", "required", None),
        (
            "user id type",
            employee(
                9, userIds=[{"userId": "x9", "userIdType": "eckId"}, {"userId": "1", "userIdType": "SSN"}]
            ),
            "stg_eduv_employee_ids",
            "user_id_type",
            "enum",
            "SSN",
        ),
        (
            "role enum",
            employee(10, roles=[role(LAKEVIEW_ELEM, "conciërge")]),
            "stg_eduv_employee_roles",
            "organisation_role",
            "enum",
            "conciërge",
        ),
        (
            "end before begin",
            employee(12, roles=[role(LAKEVIEW_ELEM, begin="2024-08-01", end="2024-08-01")]),
            "stg_eduv_employee_roles",
            "end_date",
            "date_order",
            "2024-08-01",
        ),
        (
            "bad date",
            employee(13, roles=[role(LAKEVIEW_ELEM, begin="2024-02-30")]),
            "stg_eduv_employee_roles",
            "begin_date",
            "date_format",
            "2024-02-30",
        ),
        # Values DuckDB's casts would take: each is a rejected row, never a crash or a made-up date.
        (
            "infinite end date",
            employee(14, roles=[role(LAKEVIEW_ELEM, end="infinity")]),
            "stg_eduv_employee_roles",
            "end_date",
            "date_format",
            "infinity",
        ),
        (
            "date not YYYY-MM-DD",
            employee(15, roles=[role(LAKEVIEW_ELEM, begin="2020-8-1")]),
            "stg_eduv_employee_roles",
            "begin_date",
            "date_format",
            "2020-8-1",
        ),
        (
            "timestamp without offset",
            employee(16, dateLastModified="2025-09-01 08:00"),
            "stg_eduv_employees",
            "date_last_modified",
            "timestamp_format",
            "2025-09-01 08:00",
        ),
        (
            "epoch",
            employee(17, dateCreated="epoch"),
            "stg_eduv_employees",
            "date_created",
            "timestamp_format",
            "epoch",
        ),
        (  # whitespace beyond spaces is blank too: a tab-only ASI would pass as a LinkIt LocalCode
            "tab-only user id",
            employee(
                18,
                userIds=[{"userId": "eck-18", "userIdType": "eckId"}, {"userId": "\t", "userIdType": "ASI"}],
            ),
            "stg_eduv_employee_ids",
            "user_id",
            "required",
            None,
        ),
        (  # the organisation's secondary ids: a known type, exactly, and an id
            "organisation id type",
            employee(
                19,
                roles=[
                    role(
                        {
                            **LAKEVIEW_ELEM,
                            "organisationIds": [{"organisationId": "12AB", "organisationIdType": "oie_code"}],
                        }
                    )
                ],
            ),
            "stg_eduv_employee_roles",
            "organisation",
            "enum",
            "M:6f1c2a7e-3b1d-4c55-9a0e-0b9f1e2d3c41 I:oie_code:12AB",
        ),
        (
            "organisation id missing",
            employee(
                20, roles=[role({**LAKEVIEW_ELEM, "organisationIds": [{"organisationIdType": "OIE_CODE"}]})]
            ),
            "stg_eduv_employee_roles",
            "organisation",
            "required",
            "M:6f1c2a7e-3b1d-4c55-9a0e-0b9f1e2d3c41",  # as read: the id-less entry names nothing
        ),
    ]


def _sis_cases() -> list[tuple]:
    """(case, fields spoiling one SIS row, column, rule, value)."""
    return [
        ("email", {"email": "x@@y"}, "email", "email_format", "x@@y"),
        ("alt email", {"alt_email": "nope"}, "alt_email", "email_format", "nope"),
        ("phone", {"phone": "12"}, "phone", "phone_format", "12"),
        ("required name", {"last_name": "  "}, "last_name", "required", None),
        ("31 February", {"begin_date": "31/02/2025"}, "begin_date", "date_format", "31/02/2025"),
        ("two-digit year", {"begin_date": "8/15/24"}, "begin_date", "date_format", "8/15/24"),
        ("infinite end date", {"end_date": "infinity"}, "end_date", "date_format", "infinity"),
        ("year 0000", {"begin_date": "0000-01-01"}, "begin_date", "date_format", "0000-01-01"),
        ("end before begin", {"end_date": "2024-08-01"}, "end_date", "date_order", "2024-08-01"),
        ("fte text", {"fte": "full"}, "fte", "number_format", "full"),
        ("fte range", {"fte": "1.5"}, "fte", "range", "1.5"),
        ("unknown school", {"school_code": "XYZ"}, "school_code", "unknown_school", "XYZ"),
        ("school of another LEA", {"school_code": "RSE"}, "school_code", "unknown_school", "RSE"),
        ("unknown position", {"position_code": "CHEF"}, "position_code", "unknown_role", "CHEF"),
        ("state id", {"state_staff_id": "12 34"}, "state_staff_id", "id_format", "12 34"),
        ("local id length", {"local_staff_id": "L" * 51}, "local_staff_id", "too_long", "L" * 51),
        ("tab-only local id", {"local_staff_id": "\t"}, "local_staff_id", "required", None),
        ("tab in a local id", {"local_staff_id": "T\t9"}, "local_staff_id", "control_character", "T\t9"),
        ("no-break space name", {"last_name": "\u00a0"}, "last_name", "required", None),
    ]


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One load holding every crafted bad row next to good ones, staged once for the module."""
    with connect(tmp_path_factory.mktemp("gate") / "warehouse.duckdb") as con:
        raw = Raw(con)
        request = raw.eduv("lakeview-elem", [employee(1), *(c[1] for c in _eduv_cases())])
        sis_rows = [sis_row("T0"), *(sis_row(f"T{i + 1}", **c[1]) for i, c in enumerate(_sis_cases()))]
        sis_file = raw.sis(100001, sis_rows)
        result = stage(con, "run-1", load_settings())
        return {
            "request": request,
            "sis_file": sis_file,
            "swapped": result.swapped,
            "rejected": _rejected(con),
            "employees": con.execute("SELECT record_key FROM stg_eduv_employees ORDER BY 1").fetchall(),
            "sis": con.execute("SELECT local_staff_id FROM stg_sis_staff_assignments").fetchall(),
        }


@pytest.mark.parametrize("n", range(len(_eduv_cases())), ids=[c[0] for c in _eduv_cases()])
def test_eduv_rule_rejects_its_row(gated: dict, n: int) -> None:
    _case, _bad, table, column, rule, value = _eduv_cases()[n]
    element = f"{gated['request']}:{n + 1}"
    mine = [(r[0], r[3], r[4], r[5]) for r in gated["rejected"] if r[2].split("/")[0] == element]
    assert mine == [(table, column, rule, value)]


def test_eduv_good_rows_go_on(gated: dict) -> None:
    assert gated["swapped"]
    staged = {r[0] for r in gated["employees"]}
    # employee(n) is Edu-V person eck-<n> (its first id, unless a case replaced the ids)
    rejected_keys = {
        f"eduv:eckId:{ids[0]['userId']}"
        for c in _eduv_cases()
        if c[2] == "stg_eduv_employees"
        for ids in [c[1]["userIds"]]
        if ids
    }
    assert "eduv:eckId:eck-1" in staged and rejected_keys
    assert not rejected_keys & staged
    assert "eduv:eckId:eck-10" in staged  # only its role was bad


@pytest.mark.parametrize("n", range(len(_sis_cases())), ids=[c[0] for c in _sis_cases()])
def test_sis_rule_rejects_its_row(gated: dict, n: int) -> None:
    _case, _fields, column, rule, value = _sis_cases()[n]
    location = f"{gated['sis_file']}:{n + 3}"  # header is line 1, the good row line 2
    assert [(r[3], r[4], r[5]) for r in gated["rejected"] if r[2] == location] == [(column, rule, value)]


def test_sis_good_rows_go_on(gated: dict) -> None:
    assert gated["sis"] == [("T0",)]


def test_a_school_not_configured_is_rejected_in_an_answer_filtered_to_its_school(con, raw) -> None:
    """riverside-elem is asked with filterByOrgId true: a role elsewhere is unexpected, an
    unknown_school reject (in an answer listing the whole provider it is out of scope instead:
    test_conformed)."""
    request = raw.eduv(
        "riverside-elem", [employee(1, roles=[role(RIVERSIDE_ELEM)]), employee(2, roles=[role(UNKNOWN_ORG)])]
    )
    stage(con, "run-1", load_settings())
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in _rejected(con)] == [
        (
            "stg_eduv_employee_roles",
            f"{request}:1/organisationRoles[0]",
            "organisation",
            "unknown_school",
            "I:OIE_CODE:99ZZ",
        )
    ]


def test_a_colleague_at_another_school_of_the_board_is_out_of_scope_in_a_filtered_answer(con, raw) -> None:
    """filterByOrgId true returns the employees *belonging* to riverside-elem, with all their roles:
    a teacher who also works at the board's school 99ZZ (not configured here) has that role in the
    answer, as expected. It is out of scope, not an unknown_school reject (a few such teachers would
    fail the LEA's rejected share every night); the role at riverside-elem is staged."""
    raw.eduv(
        "riverside-elem",
        [
            employee(1, roles=[role(RIVERSIDE_ELEM), role(UNKNOWN_ORG, "mentor")]),
            employee(2, roles=[role(RIVERSIDE_ELEM)]),
        ],
    )
    result = stage(con, "run-1", load_settings())
    assert _rejected(con) == []
    roles = con.execute(
        "SELECT record_key, school_key, organisation_role FROM stg_eduv_employee_roles ORDER BY 1"
    ).fetchall()
    assert roles == [
        ("eduv:eckId:eck-1", "riverside-elem", "leraar"),
        ("eduv:eckId:eck-2", "riverside-elem", "leraar"),
    ]
    assert result.out_of_scope.to_dict("records") == [
        {"school_key": "riverside-elem", "roles": 1, "employees": 0}
    ]


def test_a_malformed_organisation_is_rejected_in_an_answer_listing_the_whole_board(con, raw) -> None:
    """Out of scope is for a well-formed organisation that names a school not configured here. A
    secondary id of an unknown organisationIdType, one without its organisationId, or no organisation,
    is bad data in any answer: lakeview-high's answer lists the whole board, and still rejects it."""
    bad_type = {"organisationIds": [{"organisationId": "12AB", "organisationIdType": "OIE"}]}
    no_id = {"organisationIds": [{"organisationIdType": "OIE_CODE"}]}
    request = raw.eduv(
        "lakeview-high",
        [
            employee(1, roles=[role(LAKEVIEW_HIGH)]),
            employee(2, roles=[role(LAKEVIEW_HIGH), role(bad_type, "mentor")]),
            employee(3, roles=[role(no_id)]),
            employee(4, roles=[role(LAKEVIEW_HIGH), {**role(LAKEVIEW_HIGH, "mentor"), "organisation": None}]),
        ],
    )
    stage(con, "run-1", load_settings())
    assert sorted((r[2], r[4]) for r in _rejected(con)) == [
        (f"{request}:1/organisationRoles[1]", "enum"),
        (f"{request}:1/organisationRoles[1]", "unknown_school"),  # as in a filtered answer
        (f"{request}:2/organisationRoles[0]", "required"),
        (f"{request}:2/organisationRoles[0]", "unknown_school"),
        (f"{request}:3/organisationRoles[1]", "unknown_school"),  # no organisation at all
    ]
    assert con.execute("SELECT count(*) FROM stg_eduv_employee_roles").fetchall() == [(3,)]


def test_unknown_role_for_the_sector_is_rejected(con, raw, tmp_path, monkeypatch) -> None:
    """``leraar`` is mapped per sector; a crosswalk without the VO row leaves a VO teacher unknown."""
    config = tmp_path / "config"
    config.mkdir()
    from staff_pipeline.settings import REPO_ROOT

    for name in ("organisations.csv", "pipeline.toml"):
        (config / name).write_text((REPO_ROOT / "data" / name).read_text())
    crosswalk = (REPO_ROOT / "data" / "role_crosswalk.csv").read_text().splitlines()
    (config / "role_crosswalk.csv").write_text(
        "\n".join(x for x in crosswalk if not x.startswith("eduv,leraar,VO"))
    )
    monkeypatch.setenv("STAFF_CONFIG_DIR", str(config))
    raw.eduv(
        "lakeview-high", [employee(1, roles=[role(LAKEVIEW_HIGH, "leraar"), role(LAKEVIEW_HIGH, "mentor")])]
    )

    stage(con, "run-1", load_settings())

    assert [(r[0], r[3], r[4], r[5]) for r in _rejected(con)] == [
        ("stg_eduv_employee_roles", "organisation_role", "unknown_role", "leraar")
    ]
    assert con.execute("SELECT organisation_role FROM stg_eduv_employee_roles").fetchall() == [("mentor",)]


def test_us_dates_are_read_and_duplicates_keep_the_first(con, raw) -> None:
    file_name = raw.sis(100001, [sis_row("T1", begin_date="08/15/2024"), sis_row("T1"), sis_row("T2")])
    stage(con, "run-1", load_settings())

    assert [(r[2], r[4]) for r in _rejected(con)] == [(f"{file_name}:3", "duplicate_key")]
    assert con.execute(
        "SELECT local_staff_id, line_number, begin_date::VARCHAR FROM stg_sis_staff_assignments ORDER BY 1"
    ).fetchall() == [("T1", 2, "2024-08-15"), ("T2", 4, "2024-08-15")]


def test_a_bad_first_copy_does_not_take_the_good_duplicate_with_it(con, raw) -> None:
    raw.sis(100001, [sis_row("T1", email="bad"), sis_row("T1")])
    stage(con, "run-1", load_settings())

    assert [r[4] for r in _rejected(con)] == ["email_format"]
    assert con.execute("SELECT line_number FROM stg_sis_staff_assignments").fetchall() == [(3,)]


def test_a_rejected_row_rejects_that_row_only_when_leas_share_an_export_file_name(con, raw) -> None:
    """Every LEA's SIS export may carry the same name: line 2 rejected in one LEA is not line 2 of another."""
    raw.sis(100001, [sis_row("T1", email="bad")], file_name="staff_export.csv")
    raw.sis(100002, [sis_row("R1", school="RSE")], file_name="staff_export.csv")
    stage(con, "run-1", load_settings())

    assert [(r[2], r[4]) for r in _rejected(con)] == [("staff_export.csv:2", "email_format")]
    assert con.execute("SELECT lea_id, local_staff_id FROM stg_sis_staff_assignments").fetchall() == [
        (100002, "R1")
    ]


def test_record_no_numbers_each_record_once_across_the_staged_tables(con, raw) -> None:
    """The model joins on record_no: one number per record key, Edu-V numbers below SIS numbers."""
    two_schools = [role(LAKEVIEW_ELEM), role(LAKEVIEW_HIGH, "mentor")]
    raw.eduv("lakeview-elem", [employee(1, roles=two_schools), employee(2)])
    raw.eduv("lakeview-high", [employee(1, roles=[role(LAKEVIEW_HIGH, "mentor")])])
    raw.sis(100001, [sis_row("T1"), sis_row("T1", begin_date="2025-08-15"), sis_row("T2")])
    raw.sis(100002, [sis_row("T1", school="RSE")])
    assert stage(con, "run-1", load_settings()).swapped
    assert _rejected(con) == []

    numbers = con.execute(
        """
        SELECT record_key, list(DISTINCT record_no) FROM (
            SELECT record_key, record_no FROM stg_eduv_employees
            UNION ALL SELECT record_key, record_no FROM stg_eduv_employee_ids
            UNION ALL SELECT record_key, record_no FROM stg_eduv_employee_roles
            UNION ALL SELECT record_key, record_no FROM stg_sis_staff_assignments
        ) GROUP BY record_key ORDER BY record_key
        """
    ).fetchall()
    assert [key for key, _ in numbers] == [
        "eduv:eckId:eck-1", "eduv:eckId:eck-2", "sis:100001:T1", "sis:100001:T2", "sis:100002:T1"
    ]  # fmt: skip
    assert all(len(n) == 1 for _, n in numbers)  # one number per record, in every table
    flat = [n[0] for _, n in numbers]
    assert len(set(flat)) == len(flat)  # and never shared by two records
    assert max(flat[:2]) < min(flat[2:])  # Edu-V below SIS


def test_employee_in_two_schools_is_one_staged_person_with_both_roles(con, raw) -> None:
    raw.eduv("lakeview-elem", [employee(1, roles=[role(LAKEVIEW_ELEM), role(LAKEVIEW_HIGH, "mentor")])])
    raw.eduv("lakeview-high", [employee(1, roles=[role(LAKEVIEW_ELEM), role(LAKEVIEW_HIGH, "mentor")])])
    stage(con, "run-1", load_settings())

    assert con.execute("SELECT count(*) FROM stg_eduv_employees").fetchall() == [(1,)]
    assert con.execute(
        "SELECT school_key, organisation_role FROM stg_eduv_employee_roles ORDER BY 1"
    ).fetchall() == [("lakeview-elem", "leraar"), ("lakeview-high", "mentor")]
    assert _rejected(con) == []


def test_a_person_in_two_answers_keeps_the_same_school_from_night_to_night(con, raw) -> None:
    """Equally recent elements tie on stable keys (the smallest school_key), never on request ids:
    those are new every night, and the person's school (so their contacts' schools) would flip."""
    person = employee(1, roles=[role(LAKEVIEW_HIGH, "mentor")])
    nights = []
    for first, second in (("lakeview-high", "lakeview-elem"), ("lakeview-elem", "lakeview-high")):
        ids = {school: raw.eduv(school, [person]) for school in (first, second)}
        assert sorted(ids, key=ids.get) == [first, second]  # request ids sort the other way each night
        run_both(con, f"night-{len(nights)}")
        nights.append(
            (
                con.execute("SELECT school_key FROM stg_eduv_employees").fetchall(),
                con.execute(
                    "SELECT c.school_id, c.kind, c.value FROM staff_contacts c ORDER BY ALL"
                ).fetchall(),
            )
        )
    assert nights[0] == nights[1]
    assert nights[0][0] == [("lakeview-elem",)]
    # Contacts go to the school of the role (lakeview-high), not to every school whose answer lists
    # the person: an answer by master id covers the whole provider.
    assert {school for school, _, _ in nights[0][1]} == {1000010002}


def test_element_that_is_not_an_object_is_rejected_not_a_crash(con, raw) -> None:
    raw.eduv("lakeview-elem", [employee(1), '"just a string"'])
    result = stage(con, "run-1", load_settings())

    assert {r[4] for r in _rejected(con)} >= {"required"}
    assert result.swapped
    assert con.execute("SELECT count(*) FROM stg_eduv_employees").fetchall() == [(1,)]


def test_rejected_rows_accumulate_per_run_and_counts_per_lea(con, raw) -> None:
    raw.sis(100001, [sis_row("T1"), sis_row("T2", email="bad")])
    stage(con, "run-1", load_settings())
    stage(con, "run-2", load_settings())

    assert con.execute("SELECT run_id, count(*) FROM rejected_rows GROUP BY 1 ORDER BY 1").fetchall() == [
        ("run-1", 1),
        ("run-2", 1),
    ]
    assert con.execute("SELECT lea_id, rows, rejected FROM stg_lea_counts").fetchall() == [(100001, 2, 1)]


def test_people_known_only_by_one_asi_in_two_leas_stay_two_people(con, raw) -> None:
    """An ASI is made by one LEA's administration system: the same value in two LEAs' answers is a
    coincidence, not a person, so the record key carries the LEA."""
    only_asi = [{"userId": "1001", "userIdType": "ASI"}]
    anna = employee(1, userIds=only_asi, givenName="Anna", roles=[role(LAKEVIEW_ELEM)])
    bert = employee(2, userIds=only_asi, givenName="Bert", roles=[role(RIVERSIDE_ELEM)])
    raw.eduv("lakeview-elem", [anna])
    raw.eduv("riverside-elem", [bert])
    result = run_both(con)
    assert result.swapped, result.failures
    assert con.execute("SELECT record_key, given_name FROM stg_eduv_employees ORDER BY 1").fetchall() == [
        ("eduv:ASI:100001:1001", "Anna"),
        ("eduv:ASI:100002:1001", "Bert"),
    ]
    assert con.execute("SELECT count(*) FROM staff").fetchall() == [(2,)]
    assert con.execute("SELECT count(*) FROM staff_match_issues").fetchall() == [(0,)]


def test_an_email_valid_for_ed_fi_but_over_linkits_limit_is_not_rejected_at_the_gate(con, raw) -> None:
    """Ed-Fi takes 128 characters; LinkIt's 100 is the LinkIt mart's to enforce for its own field."""
    long_email = "a" * 100 + "@x.example"  # 110 characters
    raw.sis(100001, [sis_row("T1", email=long_email), sis_row("T2", email="b" * 120 + "@x.example")])
    assert stage(con, "run", load_settings()).swapped
    assert con.execute("SELECT local_staff_id, email FROM stg_sis_staff_assignments").fetchall() == [
        ("T1", long_email)
    ]
    assert [r[3:5] for r in _rejected(con)] == [("email", "too_long")]


def test_a_role_naming_its_provider_and_its_school_goes_to_the_school(con, raw) -> None:
    """The master id names the whole provider (lakeview-elem's, here); the secondary id names the
    school itself (lakeview-high): the role is at lakeview-high."""
    raw.eduv("lakeview-elem", [employee(1, roles=[role({**LAKEVIEW_ELEM, **LAKEVIEW_HIGH}, "leraar")])])
    assert stage(con, "run", load_settings()).swapped
    assert con.execute("SELECT school_key, organisation_role FROM stg_eduv_employee_roles").fetchall() == [
        ("lakeview-high", "leraar")
    ]


def test_two_ids_of_the_top_type_key_the_person_by_the_first_in_the_element(con, raw) -> None:
    """The record key is the first id of the most trusted type in the element's order, not whichever
    the aggregate met first: a key that changed between runs would delete and recreate the person."""
    ids = [
        {"userId": "n-1", "userIdType": "NEPPI"},
        {"userId": "z-first", "userIdType": "eckId"},
        {"userId": "a-second", "userIdType": "eckId"},
    ]
    raw.eduv("lakeview-elem", [employee(1, userIds=ids, roles=[role(LAKEVIEW_ELEM)])])
    assert stage(con, "run", load_settings()).swapped
    assert con.execute("SELECT record_key FROM stg_eduv_employees").fetchall() == [("eduv:eckId:z-first",)]


def test_a_name_over_linkits_limit_but_within_ed_fis_is_not_rejected_at_the_gate(con, raw) -> None:
    """LinkIt takes 50 characters, Ed-Fi's Staff 75: the person still goes to Ed-Fi, and the LinkIt
    mart lists them (too_long) instead of the gate taking them out of both targets."""
    long_name = "Van Oldenbarnevelt-Hohenzollern-Sigmaringen-Wittelsbach"  # 55 characters
    raw.eduv("lakeview-elem", [employee(1, familyName=long_name, roles=[role(LAKEVIEW_ELEM)])])
    assert stage(con, "run", load_settings()).swapped
    assert con.execute("SELECT family_name FROM stg_eduv_employees").fetchall() == [(long_name,)]
    assert _rejected(con) == []


def test_the_alias_that_tells_namesakes_apart_is_staged(con, raw) -> None:
    twins = [
        employee(1, givenName="Jan", familyName="Jansen", alias="Jan (gym)", roles=[role(LAKEVIEW_ELEM)]),
        employee(2, givenName="Jan", familyName="Jansen", alias=" ", roles=[role(LAKEVIEW_ELEM)]),
    ]
    raw.eduv("lakeview-elem", twins)
    assert stage(con, "run", load_settings()).swapped
    staged = con.execute("SELECT given_name, alias FROM stg_eduv_employees ORDER BY alias NULLS LAST")
    assert staged.fetchall() == [("Jan", "Jan (gym)"), ("Jan", None)]  # blank is missing
