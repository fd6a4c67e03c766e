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
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether.infra.http import LOOPBACK, ServeSettings, add_guard, error, explain, make_server, read_body  # noqa: F401 (LOOPBACK, make_server: for callers)
from tether.serve.batching import Batcher, JudgeFailed


class RewardRequest(BaseModel):
    """OpenRLHF's body; other keys are ignored, as OpenRLHF's own server does."""

    model_config = ConfigDict(extra="ignore", strict=True)
    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list | None = None


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


def _add_reward_route(app: FastAPI, batcher: Batcher, settings: ServeSettings, counters: dict) -> None:
    """POST /get_reward: OpenRLHF's protocol, judged in the batcher's dynamic batches."""
    names = batcher.names
    control = _control_pattern(batcher.evaluator.tokenizer) if settings.reject_special else None

    @app.post("/get_reward")
    async def get_reward(request: Request):
        counters["requests"] += 1
        problem, body = await read_body(request, settings.max_body_bytes)
        if problem:
            return error(problem, 400, counters)
        try:
            req = RewardRequest.model_validate_json(body)
        except ValidationError as e:
            return error(explain(e), 400, counters)
        problem, prompts, completions = _split(req, settings, control)
        if problem:
            return error(problem, 400, counters)
        texts = [p + c for p, c in zip(prompts, completions)] if settings.include_prompt else completions
        try:
            rows = await batcher.submit(prompts, completions, texts, req.labels)
        except JudgeFailed as e:
            return error(str(e), e.status, counters)
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


