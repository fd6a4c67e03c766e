"""A small OpenAI-compatible completions server over a local model's true logprobs: a test fixture.

POST /v1/completions runs the model on each prompt (token ids, as tether's `RemoteEvaluator` sends
them) and returns the next token's top-k logprobs in OpenAI's shape,
`choices[i].logprobs.top_logprobs[0] = {key: logprob}`. Keys are "token_id:ID" when the request
asks `return_tokens_as_token_ids` (vLLM's extension) and `keys="ids"`, otherwise the token's text
(as servers without that extension answer). GET /v1/models lists the one model.

    python tests/judge_server.py --port 8000      # the embedded Gemma, served as "embedded:gemma-3-270m"
"""

from __future__ import annotations

import threading

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from in_thread import InThread


def build_app(model, tokenizer, name: str, keys: str = "ids") -> FastAPI:
    app = FastAPI()
    lock = threading.Lock()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model"}]}

    @app.post("/v1/completions")
    def completions(body: dict):
        if body.get("model") != name:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not served"}}, status_code=404)
        prompts = body["prompt"]
        prompts = [prompts] if prompts and isinstance(prompts[0], int) else prompts
        k, as_ids = int(body.get("logprobs") or 1), keys == "ids" and body.get("return_tokens_as_token_ids")
        choices = []
        for i, ids in enumerate(prompts):
            with lock, torch.inference_mode():
                logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1]
            top = torch.log_softmax(logits.float(), -1).topk(k)
            tokens = [f"token_id:{t}" if as_ids else tokenizer.decode([t]) for t in top.indices.tolist()]
            choices.append({"index": i, "text": tokens[0], "finish_reason": "length",
                            "logprobs": {"tokens": tokens[:1], "token_logprobs": top.values[:1].tolist(),
                                         "top_logprobs": [dict(zip(tokens, top.values.tolist()))], "text_offset": [0]}})
        return {"id": "cmpl-test", "object": "text_completion", "model": name, "choices": choices}

    return app


class JudgeServer(InThread):
    """The app on uvicorn in a thread, on a free loopback port; `.url` ends in /v1."""

    def __init__(self, model, tokenizer, name: str, keys: str = "ids"):
        import uvicorn

        super().__init__(uvicorn.Server(uvicorn.Config(build_app(model, tokenizer, name, keys), log_level="warning")), "/v1")


if __name__ == "__main__":
    import argparse

    import uvicorn

    from tether.infra.models import EMBEDDED_LM, load_causal_lm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_LM)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    lm, tok = load_causal_lm(args.model)
    uvicorn.run(build_app(lm, tok, args.model), host="127.0.0.1", port=args.port, log_level="warning")
