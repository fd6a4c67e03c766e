"""Judges of a labels file, by spec: the signals `tether agreement` checks against a person's labels.

    constitution:PATH[@MODEL]  an `Evaluator` on prompt + completion (default: the embedded Gemma)
    gold:DIR                   a gold judge fitted by `tether gold fit`
    monitor:NAME               a registered text monitor, negated when higher is worse
    field:NAME                 a number already in the labels' source (train, gold, drift, ...)
    similarity:prompt          MiniLM cosine of completion and prompt
    similarity:base=FILE       minus the embedding drift from a run's base samples

It lives with the monitors because it reads them; `labels.agreement` holds the statistics.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.labels.agreement import Judge

JUDGE_KINDS = ("constitution:PATH[@MODEL]", "gold:DIR", "monitor:NAME", "field:NAME", "similarity:prompt",
               "similarity:base=BASE_SAMPLES.jsonl")


def parse_judge(spec: str, device: str = "auto", labels_sha256: str | None = None,
                trust_remote_code: bool = False) -> Judge:
    """A judge from its spec; checked here (files, names) before any model loads.

    `trust_remote_code` reaches the models a spec names (a constitution's @MODEL, a gold's hidden:MODEL);
    the similarity judges use the embedded MiniLM, which has no code of its own."""
    kind, _, arg = spec.partition(":")
    if kind == "constitution" and arg:
        path, model = (arg, None) if Path(arg).exists() or "@" not in arg else arg.rsplit("@", 1)
        from tether.judge.constitution import load_constitution

        rubric = load_constitution(path)
        return Judge(spec, lambda rows: _constitution_scores(rubric, model, device, rows, trust_remote_code))
    if kind == "gold" and arg:
        from tether.labels.gold import GoldJudge

        gold = GoldJudge.load(arg, device, trust_remote_code)
        same = labels_sha256 is not None and gold.meta["labels"]["sha256"] == labels_sha256
        note = "fitted on these labels: in-sample, so optimistic; its cross-validated AUC is in gold.json" if same else ""
        return Judge(spec, lambda rows: gold.score([r.get("prompt") or "" for r in rows],
                                                   [r["completion"] for r in rows]), note)
    if kind == "monitor" and arg:
        from tether.watch.metrics import MONITORS

        if arg not in MONITORS:
            raise TetherError(f"--judge {spec}: unknown monitor {arg!r}; the monitors are {', '.join(MONITORS)}")
        mon = MONITORS[arg]
        one = mon.one or (lambda text: mon.batch([text]))  # a batch-only monitor of one text
        sign = -1.0 if mon.worse == "up" else 1.0
        return Judge(spec, lambda rows: np.array([sign * float(one(r["completion"])) for r in rows]))
    if kind == "field" and arg:
        return Judge(spec, lambda rows: np.array([_number(r.get(arg)) for r in rows]))
    if kind == "similarity" and arg == "prompt":
        return Judge(spec, lambda rows: _similarity_to_prompt(rows, device))
    if kind == "similarity" and arg.startswith("base="):
        from tether.infra.texts import load_base

        base = load_base(Path(arg[len("base="):]))  # a run's base_samples.jsonl: the base model's completions
        return Judge(spec, lambda rows: _similarity_to_base(rows, base, device),
                     "minus the embedding drift: cosine to the mean of the base model's completions of the prompt")
    raise TetherError(f"--judge {spec!r}: write one of {', '.join(JUDGE_KINDS)}")


def _similarity_to_prompt(rows: list[dict], device: str) -> np.ndarray:
    """MiniLM cosine of completion and prompt: does the text still talk about what the prompt set up?"""
    from tether.infra.models import embed

    model = _embedder(device)
    c, p = embed(model, [r["completion"] for r in rows]), embed(model, [r.get("prompt") or "" for r in rows])
    return (c * p).sum(axis=1)


def _similarity_to_base(rows: list[dict], base: dict[str, list[str]], device: str) -> np.ndarray:
    """1 - the drift monitor's distance; NaN for a prompt the base samples do not cover."""
    from tether.watch.drift import EmbeddingDrift

    drift = EmbeddingDrift(_embedder(device), base)
    return 1.0 - drift.distances([r.get("prompt") or "" for r in rows], [r["completion"] for r in rows])


@functools.cache
def _embedder(device: str):
    from tether.infra.models import load_embedder

    return load_embedder(device=device)


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


@functools.cache
def _judge_model(name: str, device: str, trust_remote_code: bool = False):
    from tether.infra.models import load_causal_lm

    # loaded once for every constitution on the same model
    return load_causal_lm(name, device=device, trust_remote_code=trust_remote_code, fast_head=True)


def _constitution_scores(rubric, model: str | None, device: str, rows: list[dict],
                         trust_remote_code: bool = False) -> np.ndarray:
    from tether.infra.models import EMBEDDED_LM
    from tether.judge.evaluator import Evaluator

    lm, tokenizer = _judge_model(model or EMBEDDED_LM, device, trust_remote_code)
    evaluator = Evaluator(lm, rubric, tokenizer=tokenizer)
    return evaluator.score([(r.get("prompt") or "") + r["completion"] for r in rows]).total()
