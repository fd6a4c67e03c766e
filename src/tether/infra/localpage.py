"""A page on 127.0.0.1 where a person reads and decides: the one server the review and labeling pages share.

Guarantees, the same for every page: bound to 127.0.0.1; answered only when the request is
addressed to that host (no DNS rebinding); POST bodies only as JSON (no cross-site form
posts) with a checked Content-Length (not a plain non-negative integer: 400; over the cap:
413; a client that stalls mid-body is dropped after READ_TIMEOUT, never waited on); a
strict Content-Security-Policy; the page is static and puts text on screen through
`textContent`. Each page supplies its HTML, its GET routes (state as JSON) and its POST
routes (an answer in, JSON out); a route persists what it is given before it returns.
"""

from __future__ import annotations

import json
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tether.errors import TetherError
from tether.infra import progress

MAX_BODY = 1_000_000
READ_TIMEOUT = 30.0
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"


def body_length(header: str | None) -> int | None:
    """The Content-Length as a byte count (0 when absent), or None when it is not a plain non-negative integer."""
    value = (header or "0").strip()
    return int(value) if value.isascii() and value.isdigit() else None


class PageHandler(BaseHTTPRequestHandler):
    """One page and its JSON routes; `make_server` gives each server a subclass holding them."""

    page: bytes = b""
    gets: dict = {}
    posts: dict = {}
    malformed = "malformed JSON"
    timeout = READ_TIMEOUT  # a client that stalls mid-request is dropped, never waited on forever

    def log_message(self, format, *args):  # quiet: the terminal shows answers, not every request
        pass

    def do_GET(self):
        if not self._host_ok():
            return
        if self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        elif self.path in self.gets:
            try:
                self._json(HTTPStatus.OK, self.gets[self.path]())
            except TetherError as e:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self):
        if not self._host_ok():
            return
        if self.path not in self.posts:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
        length = body_length(self.headers.get("Content-Length"))
        if length is None:
            self.close_connection = True  # the body's end is unknown: never read it
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "Content-Length: write the body's size in bytes"})
        if length > MAX_BODY:
            self.close_connection = True
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError
            reply = self.posts[self.path](body)
        except (ValueError, UnicodeDecodeError):
            return self._json(HTTPStatus.BAD_REQUEST, {"error": self.malformed})
        except TetherError as e:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        self._json(HTTPStatus.OK, reply)

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            self._json(HTTPStatus.FORBIDDEN, {"error": "open the page at http://127.0.0.1"})
            return False
        return True

    def _json(self, status, obj):
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _send(self, status, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)


def make_server(page: bytes, gets: dict[str, Callable[[], dict]], posts: dict[str, Callable[[dict], dict]],
                port: int = 0, *, malformed: str = "malformed JSON") -> ThreadingHTTPServer:
    """A server on 127.0.0.1 (port 0: any free one) for one page and its JSON routes; call serve_forever().

    A route raising TetherError answers 400 (POST) or 500 (GET: a file damaged meanwhile) with its one line.
    """

    routes = {"page": page, "gets": gets, "posts": posts, "malformed": malformed, "timeout": READ_TIMEOUT}
    handler = type("Handler", (PageHandler,), routes)  # READ_TIMEOUT read now, so a test can shorten it
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise TetherError(f"port {port}: cannot listen on 127.0.0.1 ({e.strerror}); choose another with --port") from None


def serve(server: ThreadingHTTPServer, what: str, open_browser: bool = False) -> None:
    """Serve until Ctrl-C, saying where; every answer is saved as it is given, so stopping loses nothing."""
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    progress.console.print(f"{what} at {url} (Ctrl-C to stop; every answer is already saved)")
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
