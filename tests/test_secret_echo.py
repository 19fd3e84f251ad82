"""A token endpoint that echoes the request into its error page (some gateways' 401 pages do) must
not put the client secret into an error message in any form it took on the wire: itself, percent
encoded, or inside the base64 ``Authorization: Basic`` value."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import quote

import pytest

from staff_pipeline.clients.edfi import EdFiClient, forget_tokens
from staff_pipeline.clients.eduv import EduVClient
from staff_pipeline.http import ApiError
from tests.fixtures_eduv import FAST
from tests.local_server import serve

CLIENT_ID = "roster"
SECRET = "s3cr3t+/välue"


class _EchoingGateway(BaseHTTPRequestHandler):
    """Every request: 401 with an HTML page that shows the request's headers and body."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("latin-1")
        shown = f"Authorization: {self.headers.get('Authorization')}\n{body}"  # first: pages are cut
        page = f"<html><body><h1>401</h1><pre>{shown}</pre></body></html>".encode()
        self.send_response(401)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


@pytest.fixture
def gateway() -> Iterator[str]:
    forget_tokens()
    with serve(_EchoingGateway) as url:
        yield url


def _wire_forms() -> list[str]:
    quoted = (quote(CLIENT_ID, safe=""), quote(SECRET, safe=""))
    basic = [
        base64.b64encode(f"{user}:{password}".encode(encoding)).decode()
        for user, password in ((CLIENT_ID, SECRET), quoted)
        for encoding in ("latin-1", "utf-8")
    ]
    return [SECRET, quoted[1], *basic]


def _assert_clean(message: str) -> None:
    assert "401" in message and "Authorization: Basic" in message  # the echo reached the message
    for form in _wire_forms():
        assert form not in message


def test_edu_v_token_refusal_names_the_status_without_the_secret_in_any_wire_form(gateway: str) -> None:
    client = EduVClient(gateway, CLIENT_ID, client_secret=SECRET, policy=FAST)
    with client, pytest.raises(ApiError) as refused:
        client.access_token()
    _assert_clean(str(refused.value))


def test_ed_fi_token_refusal_names_the_status_without_the_secret_in_any_wire_form(gateway: str) -> None:
    client = EdFiClient(gateway, CLIENT_ID, SECRET, policy=FAST)
    try:
        with pytest.raises(ApiError) as refused:
            client.token()
    finally:
        client.close()
    _assert_clean(str(refused.value))
