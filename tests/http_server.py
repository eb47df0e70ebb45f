"""A small threaded HTTP server on 127.0.0.1 for download tests.

It serves in-memory files with ``Range`` support and can misbehave on purpose: cut the
connection mid-body, fail with 5xx a few times, ignore ``Range``, or put a Google-Drive-like
confirmation page in front of a file. Every request is recorded for assertions.

    with LocalHTTPServer() as server:
        server.add_file("/a.bin", data, cut_after=1000)
        fetch(Artifact("a.bin", server.url("/a.bin")), tmp_path)
        assert server.requests[1].headers["Range"] == "bytes=1000-"
"""

import html
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FileRoute:
    """A file served at one path, with optional misbehaviour."""

    data: bytes
    content_type: str = "application/octet-stream"
    cut_after: int | None = None  # first answer closes the connection after this many bytes
    fail_times: int = 0  # answer ``fail_status`` this many times before serving the file
    fail_status: int = 503
    ignore_range: bool = False  # always answer 200 with the whole file

    def handle(self, handler: "_Handler", request: Request) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            handler.send_body(self.fail_status, b"temporarily unavailable", "text/plain")
            return
        start = _range_start(request.headers.get("Range"))
        if start is None or self.ignore_range:
            status, body, extra = 200, self.data, {}
        elif start >= len(self.data):
            extra = {"Content-Range": f"bytes */{len(self.data)}"}
            handler.send_body(416, b"", "text/plain", extra)
            return
        else:
            status, body = 206, self.data[start:]
            extra = {"Content-Range": f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"}
        cut, self.cut_after = self.cut_after, None
        handler.send_body(status, body, self.content_type, extra, cut_after=cut)


@dataclass
class DrivePageRoute:
    """Google Drive's ``uc?export=download&id=...`` endpoint for a file too big to scan: it
    answers with an HTML confirmation page. ``variant="form"`` is today's page (a form with
    ``id``/``export``/``confirm``/``uuid`` submitted to ``action``); ``variant="cookie"`` is
    the older one (a ``download_warning_*`` cookie holding the token, to send back as
    ``confirm=``, which this route then answers with the file)."""

    file: FileRoute
    file_id: str
    action: str
    confirm: str
    uuid: str
    variant: str = "form"

    def form_fields(self) -> dict[str, str]:
        """The hidden fields of the confirmation form, as Drive names them."""
        return {
            "id": self.file_id,
            "export": "download",
            "confirm": self.confirm,
            "uuid": self.uuid,
        }

    def handle(self, handler: "_Handler", request: Request) -> None:
        if self.variant == "cookie" and request.query.get("confirm") == self.confirm:
            self.file.handle(handler, request)
            return
        if self.variant == "form":
            fields = self.form_fields()
            inputs = "".join(
                f'<input type="hidden" name="{key}" value="{html.escape(value)}">'
                for key, value in fields.items()
            )
            page = (
                "<html><body><p>Google Drive can't scan this file for viruses.</p>"
                f'<form id="download-form" action="{html.escape(self.action)}" method="get">'
                f'<input type="submit" value="Download anyway">{inputs}</form></body></html>'
            )
            handler.send_body(200, page.encode(), "text/html; charset=utf-8")
        else:
            cookie = {"Set-Cookie": f"download_warning_13058_{self.file_id}={self.confirm}"}
            page = "<html><body><p>Google Drive can't scan this file for viruses.</p></body></html>"
            handler.send_body(200, page.encode(), "text/html; charset=utf-8", cookie)


@dataclass
class DriveDownloadRoute:
    """drive.usercontent.google.com/download: serves the file only for the right fields."""

    file: FileRoute
    expected: dict[str, str]

    def handle(self, handler: "_Handler", request: Request) -> None:
        if any(request.query.get(key) != value for key, value in self.expected.items()):
            handler.send_body(403, b"bad confirmation", "text/plain")
            return
        self.file.handle(handler, request)


@dataclass
class PageRoute:
    """A fixed HTML page (e.g. Drive's quota-exceeded page, which offers no download)."""

    body: str

    def handle(self, handler: "_Handler", request: Request) -> None:
        handler.send_body(200, self.body.encode(), "text/html; charset=utf-8")


class LocalHTTPServer:
    """A threaded HTTP server on 127.0.0.1 with an ephemeral port; use it as a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (which may carry a query string) on this server."""
        return self.base_url + path

    def add_file(self, path: str, data: bytes, **behaviour) -> FileRoute:
        """Serve ``data`` at ``path``; ``behaviour`` takes FileRoute's fields."""
        route = FileRoute(data, **behaviour)
        self.routes[path] = route
        return route

    def add_drive_file(
        self,
        file_id: str,
        data: bytes,
        *,
        variant: str = "form",
        confirm: str = "t",
        uuid: str = "4f1c2a9e-uuid",
    ) -> str:
        """Serve ``data`` behind a Drive-like confirmation page; returns the ``uc`` URL."""
        file = FileRoute(data)
        page = DrivePageRoute(file, file_id, self.url("/download"), confirm, uuid, variant)
        self.routes["/uc"] = page
        self.routes["/download"] = DriveDownloadRoute(file, page.form_fields())
        return self.url(f"/uc?export=download&id={file_id}")

    def paths_requested(self) -> list[str]:
        """The paths of all requests so far, in order."""
        return [request.path for request in self.requests]

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def __enter__(self) -> "LocalHTTPServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner: LocalHTTPServer = self.server.owner
        parts = urlsplit(self.path)
        request = Request("GET", parts.path, dict(parse_qsl(parts.query)), dict(self.headers))
        owner.record(request)
        route = owner.routes.get(parts.path)
        if route is None:
            self.send_body(404, b"not found", "text/plain")
        else:
            route.handle(self, request)

    def send_body(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
        *,
        cut_after: int | None = None,
    ) -> None:
        """Answer with ``body``; with ``cut_after``, announce the full length but close the
        connection after that many bytes, as a dropped connection would."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if cut_after is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if cut_after is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut_after])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


def _range_start(header: str | None) -> int | None:
    """The first byte asked for by ``Range: bytes=N-`` (the only form the client sends)."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    start = header[len("bytes=") : -1]
    return int(start) if start.isdigit() else None
