"""`tether audit-corpus`: a local page where a person accepts, rejects or edits each sample.

    tether audit-corpus corpus/cheerful --port 8765     # then open http://127.0.0.1:8765/

The server binds 127.0.0.1 only and answers only requests addressed to that host (no DNS
rebinding) with a JSON body (no cross-site form posts). Persistence: every decision is
appended to decisions.jsonl (fsynced, under the corpus lock) and corpus.jsonl is rebuilt
before the request returns, so closing the browser or the server loses nothing; with two
tabs open, the later decision on a sample wins. The page (review_page.html) is static and
fetches the samples as JSON; it shows all sample text through `textContent`, so HTML in a
sample is displayed, never run.
"""

from __future__ import annotations

import json
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from tether.corpus.store import CorpusDir
from tether.errors import TetherError
from tether.infra import progress

MAX_BODY = 1_000_000
READ_TIMEOUT = 30.0


def body_length(header: str | None) -> int | None:
    """The Content-Length as a byte count (0 when absent), or None when it is not a plain non-negative integer."""
    value = (header or "0").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def make_server(corpus_dir: str | Path, port: int = 0) -> ThreadingHTTPServer:
    """A server for one corpus on 127.0.0.1 (port 0: any free one); call serve_forever()."""
    corpus = CorpusDir(corpus_dir).require()
    corpus.check_constitution(corpus.constitution())
    corpus.heal()  # apply a decision a kill left logged but not yet in corpus.jsonl
    page = resources.files("tether.corpus").joinpath("review_page.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT  # a client that stalls mid-request is dropped, never waited on forever

        def log_message(self, format, *args):  # quiet: the terminal shows decisions, not every request
            pass

        def do_GET(self):
            if not self._host_ok():
                return
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif self.path == "/api/samples":
                try:
                    self._json(HTTPStatus.OK, samples_payload(corpus))
                except TetherError as e:  # a damaged file: the page shows the one line
                    self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self):
            if not self._host_ok():
                return
            if self.path != "/api/decision":
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
                decision = corpus.decide(str(body.get("id")), str(body.get("action")), body.get("text"),
                                         str(body.get("note") or ""))
            except (ValueError, UnicodeDecodeError):
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "malformed JSON"})
            except TetherError as e:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            progress.console.print(f"{decision['action']}: {decision['id']}")
            self._json(HTTPStatus.OK, {"decision": decision, "in_corpus": len(corpus.corpus())})

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
            self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; connect-src 'self'")
            self.end_headers()
            self.wfile.write(body)

    try:
        return ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as e:
        raise TetherError(f"port {port}: cannot listen on 127.0.0.1 ({e.strerror}); choose another with --port") from None


def samples_payload(corpus: CorpusDir) -> dict:
    """Every candidate with its latest decision, and the principles to filter by."""
    decisions = corpus.decisions()
    samples = [{**c, "decision": decisions.get(c["id"])} for c in corpus.candidates()]
    meta = corpus.meta()
    return {"corpus": str(corpus.path), "constitution": meta["constitution"], "principles": meta["principles"],
            "samples": samples}


def serve(corpus_dir: str | Path, port: int = 8765, open_browser: bool = False) -> None:
    server = make_server(corpus_dir, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    progress.console.print(f"auditing {corpus_dir} at {url} (Ctrl-C to stop; every decision is already saved)")
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
