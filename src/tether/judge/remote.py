"""A judge served elsewhere: an OpenAI-compatible completions endpoint (vLLM, llama.cpp's server, TGI).

    judge = RemoteEvaluator("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", "examples/cheerful.yaml")
    judge.score(["A sunny day!"]).total()

In a config, a judge model written `openai:URL#MODEL` is one (`make_evaluator`); MODEL is the name
the server serves and where the tokenizer is read (vLLM serves a model under the hub id or path it
was started with). Why token ids: the prompt is built here exactly as the local `Evaluator` builds
it (same probes, same `SafeTokenizer.encode_untrusted`) and sent as a list of token ids, so the
server never tokenizes the judged text and no string in it becomes a control token.

Why top-k: the API returns only the `top_k` likeliest next tokens (vLLM allows 20 unless started
with a larger `--max-logprobs`). P(yes) and P(no) sum the yes/no variants among them; the rest is
`unseen_mass` (1 - the returned mass), reported per text and principle. When no yes (or no)
variant is among them, its probability is at most the smallest returned one; that bound is used,
so the log-odds are a bound too, never infinite. A judge that is sure has yes or no at the top,
so scores equal the local evaluator's wherever both words are in the top k.

Token keys: vLLM's `return_tokens_as_token_ids` (requested) makes each key "token_id:ID", exact;
servers without it key by token text, matched by the same rule as `word_variant_ids` (stripped,
lower-cased), where two tokens spelled alike share one key and one of them is lost.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.infra.tokens import SafeTokenizer, word_variant_ids
from tether.judge.constitution import (
    Constitution,
    load_constitution,
    read_chat_template,
)
from tether.judge.evaluator import DEFAULT_MAX_TEXT_TOKENS, Evaluator, LongText
from tether.judge.prompts import build_probes, text_lead

SCHEME = "openai:"


def is_remote(model) -> bool:
    return isinstance(model, str) and model.startswith(SCHEME)


def parse_remote(spec: str) -> tuple[str, str]:
    """`openai:URL#MODEL` -> (URL, MODEL), or a one-line error saying how to write it."""
    url, _, name = spec[len(SCHEME):].partition("#")
    parts = urllib.parse.urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not name:
        raise TetherError(f"judge model {spec!r}: write openai:http://HOST:PORT/v1#MODEL (the server's "
                          f"OpenAI-compatible base URL, then the model name it serves)")
    return url.rstrip("/"), name


def load_tokenizer(name: str):
    """The tokenizer of a hub id, local folder or the embedded Gemma, without its weights."""
    from transformers import AutoTokenizer

    from tether.infra.models import EMBEDDED_LM, _offline_first, embedded_gemma_dir

    source = str(embedded_gemma_dir()) if name == EMBEDDED_LM else name
    return _offline_first(AutoTokenizer.from_pretrained, source, name, {})


class RemoteEvaluator(Evaluator):
    """`Evaluator.score` with the forward pass on a server; same prompts, same `ScoreResult`.

    Args:
        url: the server's base URL, e.g. `http://127.0.0.1:8000/v1`.
        model_name: the model the server serves (sent as `model`).
        tokenizer: that model's tokenizer (default: loaded from `model_name`).
        top_k: logprobs asked per answer slot.
        timeout: seconds to wait for one request.
    Other arguments as `Evaluator`'s. The server is asked for its models once, here, so a
    wrong URL or model name fails before any scoring.
    """

    def __init__(self, url: str, model_name: str, constitution: Constitution | str | Path, *, tokenizer=None,
                 top_k: int = 20, batch_size: int = 8, debias: bool | None = None, with_negations: bool = False,
                 long_text: LongText = "truncate_left", max_text_tokens: int | None = None, timeout: float = 120.0):
        url = url.rstrip("/")
        parse_remote(f"{SCHEME}{url}#{model_name}")  # the same check as a config's
        if top_k < 1:
            raise TetherError(f"top_k={top_k}: ask for at least 1 logprob")
        if not isinstance(constitution, Constitution):
            constitution = load_constitution(constitution)
        self.constitution = read_chat_template(constitution.model_copy(update={"debias": debias} if debias is not None else {}))
        if debias is not None:
            self.constitution.principles = [p.model_copy(update={"debias": None}) for p in constitution.principles]
        self.url, self.model_name, self.top_k, self.timeout = url, model_name, top_k, timeout
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name)
        self.batch_size, self.long_text, self.model = batch_size, long_text, None
        self.safe = SafeTokenizer(self.tokenizer)
        self.yes_set = frozenset(word_variant_ids(self.tokenizer, "yes", self.safe.control_ids))
        self.no_set = frozenset(word_variant_ids(self.tokenizer, "no", self.safe.control_ids))
        self.probes = build_probes(self.constitution, self.safe, with_negations)
        self.lead = text_lead(self.constitution)
        self.text_budget = max_text_tokens or DEFAULT_MAX_TEXT_TOKENS
        self._check_model()

    def _yes_no(self, probe_index: int, rows: list[list[int]]):
        prefix = list(self.probes[probe_index].prefix_ids)
        answer = self._post("/completions", {
            "model": self.model_name, "prompt": [prefix + r for r in rows], "max_tokens": 1, "temperature": 0,
            "logprobs": self.top_k, "return_tokens_as_token_ids": True,
        })
        try:
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            tops = [c["logprobs"]["top_logprobs"][0] for c in choices]
        except (KeyError, TypeError, IndexError):
            raise TetherError(f"judge server {self.url}: the answer has no choices[i].logprobs.top_logprobs; "
                              f"is it an OpenAI-compatible completions endpoint?") from None
        if len(tops) != len(rows):
            raise TetherError(f"judge server {self.url}: {len(tops)} answers for {len(rows)} prompts")
        yes, no, unseen = zip(*(self._sums(top) for top in tops))
        return np.array(yes), np.array(no), np.array(unseen)

    def _sums(self, top: dict[str, float]) -> tuple[float, float, float]:
        """log P(yes), log P(no) and the unseen mass of one answer slot's top-k."""
        yes, no, seen = [], [], []
        for key, logprob in top.items():
            seen.append(logprob)
            kind = self._kind(key)
            (yes if kind == "yes" else no if kind == "no" else []).append(logprob)
        floor = min(seen)  # an unseen token is no likelier than the least likely seen one
        total = float(np.exp(seen).sum())
        return _logsumexp(yes or [floor]), _logsumexp(no or [floor]), max(0.0, 1.0 - total)

    def _kind(self, key: str) -> str | None:
        if key.startswith("token_id:"):
            token = int(key.split(":", 1)[1])
            return "yes" if token in self.yes_set else "no" if token in self.no_set else None
        word = key.strip().lower()
        return word if word in ("yes", "no") else None

    def _check_model(self) -> None:
        try:
            served = [m.get("id") for m in self._get("/models").get("data", [])]
        except _NotFound:
            return  # a server without /models: the first score says what is wrong
        if served and self.model_name not in served:
            raise TetherError(f"judge server {self.url} serves {', '.join(map(str, served))}, not {self.model_name!r}")

    @classmethod
    def check(cls, spec: str, timeout: float = 30.0) -> None:
        """Refuse a malformed `openai:URL#MODEL`, an unreachable server or an unserved model, before a run starts."""
        probe = cls.__new__(cls)
        (probe.url, probe.model_name), probe.timeout = parse_remote(spec), timeout
        probe._check_model()

    def _get(self, path: str) -> dict:
        return self._send(urllib.request.Request(self.url + path, method="GET"))

    def _post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        try:
            return self._send(urllib.request.Request(self.url + path, data=data, method="POST",
                                                     headers={"Content-Type": "application/json"}))
        except _NotFound:
            raise TetherError(f"judge server {self.url}: no {path} endpoint (HTTP 404); give the base URL "
                              f"that ends in /v1") from None

    def _send(self, request) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise _NotFound() from None
            detail = e.read()[:200].decode("utf-8", "replace").replace("\n", " ")
            raise TetherError(f"judge server {self.url}: HTTP {e.code} on {request.full_url} ({detail})") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TetherError(f"judge server {self.url}: cannot reach it ({reason}); is it running?") from None
        except ValueError:
            raise TetherError(f"judge server {self.url}: the answer to {request.full_url} is not JSON") from None


class _NotFound(Exception):
    pass


def _logsumexp(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def make_evaluator(model: str, constitution, *, device: str = "auto", dtype: str = "float32", batch_size: int = 16,
                   shared: tuple | None = None, top_k: int = 20, **kwargs) -> Evaluator:
    """A local `Evaluator` for a model name, or a `RemoteEvaluator` (asking `top_k`) for `openai:URL#MODEL`.

    `shared` = (model, tokenizer) already loaded under that name, reused rather than loaded twice.
    """
    if is_remote(model):
        url, name = parse_remote(model)
        return RemoteEvaluator(url, name, constitution, batch_size=batch_size, top_k=top_k, **kwargs)
    if shared is not None:
        return Evaluator(shared[0], constitution, tokenizer=shared[1], batch_size=batch_size, **kwargs)
    return Evaluator(model, constitution, device=device, dtype=dtype, batch_size=batch_size, **kwargs)
