"""The HTTP face of the reward service: OpenRLHF's remote reward-model protocol, on FastAPI.

    POST /get_reward  {"query": [prompt + response, ...], "prompts": [...], "labels": [...]}
                   -> {"rewards": [...], "scores": [...], "extra_logs": {"tether/NAME": [...]}}
    GET  /health      {"status": "ok", "samples": N, "step": S, "waiting": jobs}
    GET  /metrics     Prometheus text: requests, samples, batches, batch sizes, judge seconds

Why FastAPI on uvicorn: OpenRLHF's own `serve_rm` is FastAPI, so the stack is the one its
users run; async endpoints let many clients wait on one judge thread without a thread each;
uvicorn's HTTP parsing (h11/httptools) is maintained and fuzzed, unlike a hand-written one.

`prompts` and `labels` are optional (older OpenRLHF sends `query` alone). The service strips
each prompt from its query (whatever comes before it, such as left padding, goes too) and
judges prompt + completion, or the completion alone with `include_prompt=False`; `rewards`
and `scores` are the constitution's combined score, `extra_logs` each principle's. Every
bad input is a 400 with `{"error": "<one line naming the field>"}`; the judge never sees it.
Bound to loopback, only Host 127.0.0.1/localhost is served (no DNS rebinding); elsewhere a
bearer token is required (`Authorization: Bearer TOKEN`).
"""

from __future__ import annotations

import contextlib
import hmac
import re
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether.serve.batching import Batcher, JudgeFailed

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RewardRequest(BaseModel):
    """OpenRLHF's body; other keys are ignored, as OpenRLHF's own server does."""

    model_config = ConfigDict(extra="ignore", strict=True)
    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list | None = None


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


def build_app(batcher: Batcher, settings: ServeSettings) -> FastAPI:
    """The app; its lifespan starts the judge thread and, at shutdown, drains it and closes the run folder."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()
        if batcher.run is not None:
            batcher.run.close()

    app = FastAPI(title="tether serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    counters = {"requests": 0, "rejected": 0}
    add_guard(app, settings, counters)
    _add_reward_route(app, batcher, settings, counters)
    _add_status_routes(app, batcher, counters)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):  # a bug: still one line, never a traceback page
        return JSONResponse({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}, status_code=500)

    return app


def add_guard(app: FastAPI, settings: ServeSettings, counters: dict) -> None:
    """Loopback hosts only when bound to loopback (DNS rebinding), and the bearer token when one is set
    (`tether serve` and `tether deploy` alike)."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if settings.host in LOOPBACK and host not in LOOPBACK:
            return _error(f"Host {host or '(none)'} refused: this service answers 127.0.0.1 only", 400, counters)
        if settings.token is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return _error("missing or wrong bearer token (send Authorization: Bearer TOKEN)", 401, counters)
        return await call_next(request)


def _add_reward_route(app: FastAPI, batcher: Batcher, settings: ServeSettings, counters: dict) -> None:
    """POST /get_reward: OpenRLHF's protocol, judged in the batcher's dynamic batches."""
    names = batcher.names
    control = _control_pattern(batcher.evaluator.tokenizer) if settings.reject_special else None

    @app.post("/get_reward")
    async def get_reward(request: Request):
        counters["requests"] += 1
        problem, body = await read_body(request, settings.max_body_bytes)
        if problem:
            return _error(problem, 400, counters)
        try:
            req = RewardRequest.model_validate_json(body)
        except ValidationError as e:
            return _error(explain(e), 400, counters)
        problem, prompts, completions = _split(req, settings, control)
        if problem:
            return _error(problem, 400, counters)
        texts = [p + c for p, c in zip(prompts, completions)] if settings.include_prompt else completions
        try:
            rows = await batcher.submit(prompts, completions, texts, req.labels)
        except JudgeFailed as e:
            return _error(str(e), e.status, counters)
        rewards = [r["train"] for r in rows]
        extra = {f"tether/{name}": [r[f"train/{name}"] for r in rows] for name in names}
        return {"rewards": rewards, "scores": rewards, "extra_logs": extra}


def _add_status_routes(app: FastAPI, batcher: Batcher, counters: dict) -> None:
    """GET /health and GET /metrics (Prometheus text)."""

    @app.get("/health")
    async def health():
        run = batcher.run
        return {"status": "ok", "samples": run.count if run else batcher.stats.texts,
                "step": run.step if run else None, "waiting": batcher.waiting}

    @app.get("/metrics")
    async def metrics():
        s = batcher.stats
        lines = [
            ("tether_serve_requests_total", "counter", "reward requests received", counters["requests"]),
            ("tether_serve_rejected_total", "counter", "requests answered 4xx", counters["rejected"]),
            ("tether_serve_failed_total", "counter", "requests the judge failed on", s.failed_jobs),
            ("tether_serve_samples_total", "counter", "texts judged and logged", s.texts),
            ("tether_serve_batches_total", "counter", "judge calls", s.batches),
            ("tether_serve_batch_texts_max", "gauge", "most texts in one judge call", s.largest),
            ("tether_serve_judge_seconds_total", "counter", "seconds in the judge and the log", round(s.judge_seconds, 3)),
            ("tether_serve_waiting", "gauge", "requests queued for the judge", batcher.waiting),
        ]
        text = "".join(f"# HELP {n} {h}\n# TYPE {n} {t}\n{n} {v}\n" for n, t, h, v in lines)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _error(message: str, status: int, counters: dict) -> JSONResponse:
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


def _split(req: RewardRequest, settings: ServeSettings, control: re.Pattern | None):
    """(problem, prompts, completions): each query's prompt cut off, its completion's ends stripped."""
    n = len(req.query)
    if n > settings.max_texts:
        return f"query holds {n} texts, over the limit of {settings.max_texts} a request", [], []
    for name, values in (("prompts", req.prompts), ("labels", req.labels)):
        if values is not None and len(values) != n:
            return f"{name} has {len(values)} items but query has {n}: send one per query", [], []
    prompts, completions = [], []
    for i, query in enumerate(req.query):
        prompt = req.prompts[i] if req.prompts is not None else ""
        for field, text in (("query", query), ("prompts", prompt)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return f"{field}[{i}]: not valid Unicode (a lone surrogate escape such as \\ud800)", [], []
            if control is not None and (m := control.search(text)):
                return f"{field}[{i}]: holds the control-token string {m.group(0)!r} (--reject-special-tokens)", [], []
        at = query.find(prompt)
        if at < 0:
            return f"query[{i}] does not contain prompts[{i}]: send query = prompt + response", [], []
        completion = query[at + len(prompt):]
        for s in settings.strip:
            while s and completion.endswith(s):
                completion = completion[: -len(s)]
            while s and completion.startswith(s):
                completion = completion[len(s):]
        prompts.append(prompt)
        completions.append(completion)
    return None, prompts, completions


def _control_pattern(tokenizer) -> re.Pattern | None:
    """Every added or special token string of the judge's tokenizer (Gemma: ~6,200), as one regex."""
    strings = {t.content for t in tokenizer.added_tokens_decoder.values() if t.content.strip()}
    strings |= {s for s in tokenizer.all_special_tokens if s.strip()}
    return re.compile("|".join(map(re.escape, sorted(strings, key=len, reverse=True)))) if strings else None


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
