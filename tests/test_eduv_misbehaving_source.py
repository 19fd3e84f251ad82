"""The Edu-V client and extract against a small local source that bends the rules the stand-in keeps.

Real servers send ``Retry-After`` values that are negative, NaN or not numbers at all, and token
answers without ``scope`` (RFC 6749 lets them omit it) or with one that is not a string: none of it
may crash the run or let a school land without the attributes it asked for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from staff_pipeline import warehouse
from staff_pipeline.clients.eduv import EduVClient
from staff_pipeline.extract import eduv as extract
from staff_pipeline.settings import paths
from tests.fixtures_eduv import FAST
from tests.local_server import serve

TOKEN = "misbehaving-source-token-5c1e9a"
RETRY_AFTER = {"NEG": "-1", "NAN": "nan", "INF": "inf", "HUGE": "1e400", "WORD": "soon"}


class _Source(BaseHTTPRequestHandler):
    """Token: ``TOKEN`` plus ``token_extra``. Employees: a 503 with ``RETRY_AFTER[orgId]`` on the first
    request for that orgId, then ``[{"givenName": orgId}]``."""

    token_extra: ClassVar[dict[str, Any]] = {}
    asked: ClassVar[Counter[str]] = Counter()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(
            200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600, **self.token_extra}
        )

    def do_GET(self) -> None:
        org_id = parse_qs(urlsplit(self.path).query)["orgId"][0]
        _Source.asked[org_id] += 1
        if org_id in RETRY_AFTER and _Source.asked[org_id] == 1:
            self._send(503, {"status": 503, "statusMessage": "busy"}, {"Retry-After": RETRY_AFTER[org_id]})
        else:
            self._send(200, [{"givenName": org_id}])


@pytest.fixture
def source() -> Iterator[str]:
    _Source.token_extra, _Source.asked = {}, Counter()
    with serve(_Source) as url:
        yield url


def _run(url: str, *org_ids: str) -> dict[str, extract.Landed]:
    queries = [
        extract.SchoolQuery(org_id.lower(), 1, line, {"orgId": org_id, "orgIdType": "OIE_CODE"})
        for line, org_id in enumerate(org_ids, start=2)
    ]
    with EduVClient(url, "c", client_secret="source-secret", policy=FAST) as client:
        fetched = extract.fetch_all(client, queries, run_id="r", landing_dir=paths().landing)
    with warehouse.connect() as con:
        return {r.school_key: r for r in extract.land(con, fetched, "r")}


def test_unusable_retry_after_values_fall_back_to_the_backoff_and_every_school_lands(source: str) -> None:
    landed = _run(source, "GOOD", *RETRY_AFTER)
    assert {key: (r.ok, r.employee_count) for key, r in landed.items()} == {
        key.lower(): (True, 1) for key in ("GOOD", *RETRY_AFTER)
    }
    assert _Source.asked == Counter({"GOOD": 1, **dict.fromkeys(RETRY_AFTER, 2)})  # one retry each


def test_a_token_answer_without_scope_grants_the_requested_scopes(source: str) -> None:
    assert "scope" not in _Source.token_extra
    assert _run(source, "GOOD")["good"].ok


@pytest.mark.parametrize("scope", ["", ["eduv.employee.basic"], "eduv.employee.basic eduv.employee.roles"])
def test_a_token_answer_whose_scope_lacks_a_requested_one_fails_the_school(
    source: str, scope: object
) -> None:
    _Source.token_extra = {"scope": scope}
    landed = _run(source, "GOOD")["good"]
    assert (landed.ok, landed.http_status) == (False, None)
    assert (
        "granted without the scope(s)" in landed.problem and "eduv.employee.communication" in landed.problem
    )
    assert not _Source.asked  # the employees endpoint is never asked with that token
