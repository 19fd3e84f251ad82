"""The server frame the three stand-ins share: routing, recording, fault knobs, OAuth2 tokens."""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Knobs:
    """Faults to inject. Shares are probabilities per request; all draws come from one seeded RNG."""

    latency: float = 0.0
    share_429: float = 0.0
    share_500: float = 0.0
    share_drop: float = 0.0
    token_ttl: float = 1800.0
    seed: int = 0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: bytes | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    stream: Any = None  # an iterable of bytes chunks, sent with chunked transfer encoding

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode("utf-8"), headers or {})


@dataclass
class Recorded:
    """What the stand-in received (for tests); ``at`` is monotonic time."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class TokenStore:
    """OAuth2 bearer tokens with a lifetime and a cap per client, like the real servers."""

    def __init__(self, knobs: Knobs, max_per_client: int = 15) -> None:
        self._knobs = knobs
        self._max = max_per_client
        self._tokens: dict[str, tuple[str, float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.issued = 0

    def issue(self, client_id: str, **claims: Any) -> tuple[str, int] | None:
        """A new token for ``client_id``, or None when it holds too many live ones."""
        now = time.monotonic()
        with self._lock:
            live = [t for t, (c, exp, _) in self._tokens.items() if c == client_id and exp > now]
            if len(live) >= self._max:
                return None
            token = secrets.token_hex(16)
            self._tokens[token] = (client_id, now + self._knobs.token_ttl, claims)
            self.issued += 1
            return token, max(1, int(self._knobs.token_ttl))

    def check(self, authorization: str | None) -> tuple[str, dict[str, Any]] | None:
        """The client (and claims) behind a ``Bearer`` header, or None if absent, unknown or expired."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        with self._lock:
            entry = self._tokens.get(authorization[len("Bearer ") :].strip())
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0], entry[2]

    def expire_all(self) -> None:
        """Make every issued token invalid now (tests of mid-run expiry)."""
        with self._lock:
            self._tokens = {t: (c, 0.0, claims) for t, (c, _, claims) in self._tokens.items()}


class StandIn:
    """Base class: subclasses implement :meth:`handle`. Use as a context manager or start()/stop()."""

    name = "standin"

    def __init__(self, knobs: Knobs | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.knobs = knobs or Knobs()
        self._rng = random.Random(self.knobs.seed)
        self._rng_lock = threading.Lock()
        self.received: list[Recorded] = []
        self._recv_lock = threading.Lock()
        self.record_bodies = True
        self._server = _Server((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandIn:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=self.name, daemon=True
        )  # a short poll: stop() returns in 50 ms, not 500
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        with self._recv_lock:
            return [
                r
                for r in self.received
                if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]

    # -- fault injection -------------------------------------------------------------------
    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def fault(self) -> str | None:
        """Which fault (if any) this request gets: 'drop', '429' or '500'."""
        k = self.knobs
        if k.share_drop and self._draw() < k.share_drop:
            return "drop"
        roll = self._draw() if (k.share_429 or k.share_500) else 1.0
        if roll < k.share_429:
            return "429"
        if roll < k.share_429 + k.share_500:
            return "500"
        return None

    def handle(self, request: Request) -> Response:  # pragma: no cover - overridden
        raise NotImplementedError

    def record(self, request: Request, status: int) -> None:
        with self._recv_lock:
            self.received.append(
                Recorded(
                    request.method,
                    request.path,
                    request.query,
                    request.headers,
                    request.body if self.record_bodies else b"",
                    status,
                    time.monotonic(),
                )
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _make_handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .received
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query, keep_blank_values=True),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            if standin.knobs.latency:
                time.sleep(standin.knobs.latency)
            fault = standin.fault()
            if fault == "drop":
                standin.record(request, 0)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault in ("429", "500"):
                status = int(fault)
                response = Response.json(
                    status,
                    {"status": status, "title": "injected fault", "detail": f"stand-in knob {fault}"},
                    {"Retry-After": "0"} if status == 429 else {},
                )
            else:
                try:
                    response = standin.handle(request)
                except Exception as exc:  # a stand-in bug must show as a 500, not hang the client
                    response = Response.json(
                        500, {"status": 500, "title": "stand-in error", "detail": repr(exc)}
                    )
            standin.record(request, response.status)
            self._write(response)

        def _write(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if response.stream is not None:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in response.stream:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
                return
            body = response.body if isinstance(response.body, bytes) else json.dumps(response.body).encode()
            self.send_header("Content-Length", str(len(body)))
            # Headers and body in one write (end_headers() would send the headers on their own):
            # one system call, and the client reads the whole answer in one wake-up.
            if self.command == "HEAD":
                self.end_headers()
            else:
                self._end_headers_with(body)

        def _end_headers_with(self, body: bytes) -> None:
            buffered = getattr(self, "_headers_buffer", None)  # absent only for an HTTP/0.9 request
            if buffered is None:
                self.wfile.write(body)
                return
            buffered += [b"\r\n", body]
            self.flush_headers()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    return Handler
