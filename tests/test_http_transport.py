"""KeepAliveTransport: keep-alive reuse, the answer framings servers use, drops, timeouts and TLS."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import ClassVar
from urllib.parse import quote, unquote

import pytest

from staff_pipeline.http import KeepAliveTransport, RetryPolicy, TransportError, send_with_retry
from tests.local_server import serve


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: ClassVar[list[tuple[str, int]]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        _Handler.peers.append(self.client_address)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a": ', b"[1, 2]", b"}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"to the end")
            self.close_connection = True
        elif self.path.split("?")[0] == "/drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path.startswith("/busy?after="):
            self.send_response(503)
            self.send_header("Retry-After", unquote(self.path.split("=", 1)[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            threading.Event().wait(1.0)
            self.send_response(204)
            self.end_headers()
        else:
            payload = b"echo:" + self.command.encode() + b":" + self.path.encode() + b":" + body
            self.send_response(201)
            self.send_header("Location", "/things/abc")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.peers = []
    with serve(_Handler) as url:
        yield url


def test_reuses_one_connection_and_reads_length_chunked_and_close_framed_answers(server):
    transport = KeepAliveTransport(server, timeout=5)
    first = transport.request("POST", "/things?x=1", '{"n": 1}', {"Content-Type": "application/json"})
    second = transport.request("DELETE", "/things/abc")
    assert (first.status_code, first.content) == (201, b'echo:POST:/things?x=1:{"n": 1}')
    assert first.headers.get("location") == first.headers["Location"] == "/things/abc" and first.ok
    assert second.content == b"echo:DELETE:/things/abc:"
    assert transport.request("GET", "/chunked").json() == {"a": [1, 2]}
    assert transport.request("GET", "/until-close").text == "to the end"
    assert transport.request("GET", "/after").status_code == 201
    assert len(set(_Handler.peers[:4])) == 1  # keep-alive until the server said close
    assert _Handler.peers[4] != _Handler.peers[0]
    transport.close()


def test_a_dropped_connection_is_a_transport_error_that_send_with_retry_retries(server):
    transport = KeepAliveTransport(server, timeout=5)
    with pytest.raises(TransportError) as failed:
        transport.request("POST", "/drop?secret=xyz", "{}")
    assert "xyz" not in str(failed.value) and "POST /drop" in str(failed.value)
    calls: list[str] = []

    def send():
        calls.append("x")
        return transport.request("GET", "/drop" if len(calls) < 3 else "/ok")

    response = send_with_retry(send, policy=RetryPolicy(5, 0.0, 0.0), describe="GET /x", sleep=lambda s: None)
    assert response.status_code == 201 and len(calls) == 3


def test_every_request_has_a_timeout(server):
    transport = KeepAliveTransport(server, timeout=0.2)
    with pytest.raises(TransportError, match=r"timed out|Timeout"):
        transport.request("GET", "/slow")
    with pytest.raises(ValueError):
        KeepAliveTransport(server, timeout=0)


def test_https_verifies_certificates_and_host_names():
    transport = KeepAliveTransport("https://example.invalid", timeout=5)
    assert transport._context is not None
    assert transport._context.verify_mode == ssl.CERT_REQUIRED and transport._context.check_hostname


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("2", 2.0), ("0", 0.0), ("-1", 0.0), ("-inf", None), ("60", 5.0), ("nan", None), ("inf", None),
     ("1e400", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("soon", None), (None, None)],
)  # fmt: skip
def test_retry_after_is_clamped_to_the_backoff_range_and_unusable_values_ignored(
    retry_after: str | None, expected: float | None
) -> None:
    policy = RetryPolicy(attempts=3, backoff_base=1.0, backoff_max=5.0)
    wait = policy.delay(1, retry_after)
    if expected is None:  # the normal backoff: half of min(base * 2**attempt, max) plus jitter
        assert 1.0 <= wait <= 2.0
    else:
        assert wait == expected


@pytest.mark.parametrize("retry_after", ["-1", "nan", "-inf"])
def test_a_bad_retry_after_from_the_server_does_not_break_the_retry(server, retry_after: str) -> None:
    transport = KeepAliveTransport(server, timeout=5)
    targets = iter([f"/busy?after={quote(retry_after)}", "/after"])
    policy = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)
    response = send_with_retry(lambda: transport.request("GET", next(targets)), policy=policy, describe="GET")
    assert response.status_code == 201  # slept with the real time.sleep, then retried
