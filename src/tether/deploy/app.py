"""The HTTP face of a deployment: an OpenAI-compatible policy that says which version wrote each reply.

    POST /v1/completions       {"prompt": "...", "max_tokens": 32, "temperature": 1.0, "stream": false}
    POST /v1/chat/completions  {"messages": [{"role": "user", "content": "..."}], ...}
    GET  /v1/models            the versions: live, passed, failed (never served)
    POST /v1/feedback          {"id": "cmpl-...", "thumb": "up"} | {"answers": {"good": "yes"}} | {"comment": "..."}
    GET  /health               {"status": "ok", "version": "v3", "served": N, "waiting": W}

Every reply's `model` is `tether-vN`, the version that wrote it, and its `id` is what feedback
names. A reply is on disk before it is sent (serving.py). `stream: true` answers as server-sent
events: the reply as one chunk, then `[DONE]` (generation is batched, not token by token).
Bad input is a 400 with `{"error": "<one line>"}`; FastAPI on uvicorn as `tether serve`, with
its guard (loopback Host only, or a bearer token) and body reader.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tether.deploy.serving import Policy
from tether.deploy.store import new_id, now
from tether.infra.http import ServeSettings, add_guard, error, explain, read_body


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None  # accepted and ignored: the live version answers, and says so
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | int | None = Field(None, ge=0, le=2)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    user: str | None = Field(None, max_length=256)


class CompletionRequest(_Common):
    prompt: str = Field(min_length=1)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(min_length=1, max_length=128)
    thumb: Literal["up", "down"] | None = None
    answers: dict[str, Literal["yes", "no"]] | None = None
    comment: str | None = Field(None, max_length=4000)
    key: str | None = Field(None, min_length=1, max_length=128)  # idempotency: a retry with the same key is stored once

    @model_validator(mode="after")
    def _says_something(self):
        if self.thumb is None and not self.answers and not self.comment:
            raise ValueError("send thumb (up|down), answers ({question: yes|no}) or comment")
        return self


def build_app(policy: Policy, settings: ServeSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        policy.start()
        policy.store.event("start", version=policy.live.version, pid=os.getpid())
        yield
        policy.stop()
        policy.store.event("stop", served=policy.stats.requests)

    app = FastAPI(title="tether deploy", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    routes = _Routes(policy, settings)
    add_guard(app, settings, routes.counters)
    _add_generation_routes(app, routes)
    _add_version_routes(app, routes)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):  # a bug: still one line, never a traceback page
        return JSONResponse({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}, status_code=500)

    return app


class _Routes:
    """What every route shares: reading a body into its schema, and answering a generation request."""

    def __init__(self, policy: Policy, settings: ServeSettings):
        self.policy, self.settings, self.config = policy, settings, policy.config
        self.counters = {"requests": 0, "rejected": 0}
        self.limit = 8 * self.config.max_new_tokens

    def refuse(self, message: str, status: int = 400) -> JSONResponse:
        return error(message, status, self.counters)

    async def parse(self, request: Request, schema):
        """(the request, None), or (None, the 400 that refuses it)."""
        self.counters["requests"] += 1
        problem, body = await read_body(request, self.settings.max_body_bytes)
        if problem:
            return None, self.refuse(problem)
        try:
            return schema.model_validate_json(body), None
        except ValidationError as e:
            return None, self.refuse(explain(e, _usage(schema)))

    async def answer(self, req: _Common, kind: str, prompt):
        max_tokens = req.max_tokens or self.config.max_new_tokens
        if max_tokens > self.limit:
            return self.refuse(f"max_tokens {max_tokens} is over this deployment's limit of {self.limit}")
        temperature = self.config.temperature if req.temperature is None else float(req.temperature)
        try:
            row = await self.policy.submit(kind, prompt, max_tokens, temperature, req.user)
        except RuntimeError as e:
            return self.refuse(f"the policy failed on this batch: {e}", 503)
        body = _openai(row, kind, self.policy.store.model_name(row["version"]))
        if req.stream:
            return StreamingResponse(_events(body, kind), media_type="text/event-stream")
        return body


def _add_generation_routes(app: FastAPI, routes: _Routes) -> None:
    @app.post("/v1/completions")
    async def completions(request: Request):
        req, refused = await routes.parse(request, CompletionRequest)
        return refused or await routes.answer(req, "completion", req.prompt)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req, refused = await routes.parse(request, ChatRequest)
        if refused:
            return refused
        if req.messages[-1].role == "assistant":
            return routes.refuse("messages: the last message is the assistant's; end with a user (or system) message")
        return await routes.answer(req, "chat", [m.model_dump() for m in req.messages])


def _add_version_routes(app: FastAPI, routes: _Routes) -> None:
    """GET /v1/models, POST /v1/feedback, GET /health."""
    policy = routes.policy

    @app.get("/v1/models")
    async def models():
        live = policy.store.live()["version"]
        return {"object": "list", "data": [
            {"id": policy.store.model_name(v["version"]), "object": "model", "owned_by": "tether",
             "status": "live" if v["version"] == live else v["status"], "parent": v.get("parent"),
             "created": v.get("created"), "why": v.get("why")} for v in policy.store.versions()]}

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        req, refused = await routes.parse(request, FeedbackRequest)
        if refused:
            return refused
        if req.id not in policy.known:
            return routes.refuse(f"id {req.id!r}: no reply of this deployment has this id", 404)
        row = {"feedback": new_id("fb"), "time": now(), "of": req.id,
               **{k: v for k, v in req.model_dump().items() if k != "id" and v is not None}}
        stored = policy.store.add_feedback(row)
        return {"feedback": stored["feedback"], "of": req.id, "stored": stored is row}

    @app.get("/health")
    async def health():
        return {"status": "ok", "version": policy.live.version if policy.live else None,
                "served": policy.stats.requests, "waiting": policy.waiting, "swaps": policy.stats.swaps}


def _usage(schema) -> str:
    return {CompletionRequest: '{"prompt": "..."}', ChatRequest: '{"messages": [{"role": "user", "content": "..."}]}',
            FeedbackRequest: '{"id": "cmpl-...", "thumb": "up"}'}[schema]


def _openai(row: dict, kind: str, model: str) -> dict:
    usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
             "total_tokens": row["prompt_tokens"] + row["completion_tokens"]}
    base = {"id": row["id"], "created": int(row["time"]), "model": model, "usage": usage}
    if kind == "completion":
        return {**base, "object": "text_completion",
                "choices": [{"index": 0, "text": row["completion"], "finish_reason": row["finish_reason"], "logprobs": None}]}
    return {**base, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": row["completion"]},
                         "finish_reason": row["finish_reason"]}]}


async def _events(body: dict, kind: str):
    """The reply as OpenAI's stream: one chunk with the whole text, a closing chunk, then [DONE]."""
    choice = body["choices"][0]
    if kind == "completion":
        chunks = [{**body, "choices": [{**choice, "finish_reason": None}]},
                  {**body, "choices": [{"index": 0, "text": "", "finish_reason": choice["finish_reason"], "logprobs": None}]}]
    else:
        head = {k: v for k, v in body.items() if k != "usage"} | {"object": "chat.completion.chunk"}
        chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]},
                                        "finish_reason": None}]},
                  {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}]
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"



