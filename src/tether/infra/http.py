"""The HTTP pieces `tether serve` and `tether deploy` share: settings, the guard, the body reader, one-line errors.

FastAPI on uvicorn (OpenRLHF's `serve_rm` is FastAPI too). Bound to loopback, only Host
127.0.0.1/localhost is served (no DNS rebinding); elsewhere a bearer token is required.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tether.errors import TetherError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    token: str | None = None  # required off loopback
    include_prompt: bool = True  # judge prompt + completion (as `tether tune` does) or the completion alone
    max_body_bytes: int = 4 * 2**20  # 64 texts of 2048 tokens are about 0.5 MB
    max_texts: int = 4096  # texts in one request
    strip: tuple[str, ...] = ()  # strings cut from the ends of each completion (the policy's pad/eos)
    reject_special: bool = False  # answer 400 to texts holding the judge's control-token strings


def add_guard(app: FastAPI, settings: ServeSettings, counters: dict) -> None:
    """Loopback hosts only when bound to loopback (DNS rebinding), and the bearer token when one is set
    (`tether serve` and `tether deploy` alike)."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if settings.host in LOOPBACK and host not in LOOPBACK:
            return error(f"Host {host or '(none)'} refused: this service answers 127.0.0.1 only", 400, counters)
        if settings.token is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return error("missing or wrong bearer token (send Authorization: Bearer TOKEN)", 401, counters)
        return await call_next(request)


def error(message: str, status: int, counters: dict) -> JSONResponse:
    """The one shape of a refusal: `{"error": "<one line>"}`, counted."""
    counters["rejected"] += 1
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def read_body(request: Request, limit: int) -> tuple[str | None, bytes]:
    """The body, read no further than `limit` bytes; JSON only (a browser form cannot post it)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return f"send the body as JSON with Content-Type: application/json (got {kind or 'none'!r})", b""
    chunks, size = [], 0
    # An oversized body is read on and dropped (memory stays bounded), so the client gets the
    # 400 instead of a connection reset mid-upload; past 16x the limit the connection is cut.
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 16 * limit:
            break
    if size > limit:
        return f"body of {size if size <= 16 * limit else 'over ' + str(16 * limit)} bytes is over the limit of {limit} (--max-body-mb)", b""
    return None, b"".join(chunks)


def explain(e: ValidationError, usage: str = '{"query": [prompt + response, ...]}') -> str:
    """Pydantic's first error as one line: `query[3]: Input should be a valid string (got int)`; `usage` is the
    body to send, shown when the body is not an object or a field is missing (`tether deploy` has its own)."""
    err = e.errors()[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(err["loc"]))
    if err["type"] == "json_invalid":
        return f"malformed JSON: {err.get('ctx', {}).get('error', err['msg'])}"
    if err["type"] == "value_error":  # a model's own rule (deploy's feedback must say something)
        return err["msg"].removeprefix("Value error, ")
    if err["type"] == "model_type" or not where:
        return f"the body must be a JSON object: {usage}"
    if err["type"] == "missing":
        return f"`{where}` is missing: send {usage}"
    got = type(err["input"]).__name__ if err["type"] != "too_short" else "an empty list"
    got = {"NoneType": "null", "dict": "an object", "list": "a list", "int": "a number", "float": "a number",
           "bool": "true/false", "str": "a string"}.get(got, got)
    return f"{where}: {err['msg']} (got {got})"


def make_server(app: FastAPI, settings: ServeSettings):
    """A uvicorn server for the app; `.run()` it, or `.run(sockets=[...])` on a socket bound already (tests).

    `.interrupted` is True after a Ctrl-C (SIGINT) shut it down gracefully. uvicorn re-raises the signal on its
    way out, through asyncio's runner and its SIGINT handler; a clean-clone CI run saw that path end in exit 0
    instead of 130 (once in many runs), so the caller decides from this flag rather than from that path."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        interrupted = False

        def handle_exit(self, sig, frame):
            self.interrupted = self.interrupted or sig == signal.SIGINT
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                 timeout_graceful_shutdown=10, server_header=False))


def check_port(host: str, port: int) -> None:
    """A port in use is one line now, not a uvicorn log after the models have loaded."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise TetherError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); pass another --port") from None
